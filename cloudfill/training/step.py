"""One training step: the pix2pix objective, and the networks a run updates.

One step (a batch of patches):

1. the generator predicts the target bands from the condition stack;
2. the discriminator learns to tell ``(condition, real)`` from ``(condition, fake)``. The
   "real" image is the target where it is valid and the (detached) prediction elsewhere, so
   clouds in the target, which the generator must not reproduce, give the discriminator no
   cue;
3. the generator minimises ``adversarial + lambda_l1 * masked L1``, over valid pixels only.
   With the confidence head, ``lambda_l1 *`` the Laplace NLL of the *detached* mean is
   added: it trains the scale only. A joint NLL would weight each pixel's error by
   ``1 / scale``, so the mean would learn least where the change is largest (the pixels that
   matter for filling); detaching keeps the mean on the L1 objective the model is judged by,
   while the scale still learns the expected absolute error.

With ``ema`` (e.g. 0.999) an exponential moving average of the generator's weights is kept
besides the trained ones (:attr:`Networks.average`); it is what is scored, saved and
returned. Averaging over the last ~``1 / (1 - ema)`` steps removes most of the step-to-step
noise of Adam and the adversarial term, which otherwise shows as grain on pixels that did
not change.

With ``precision="bf16"`` the networks' forward passes run under bfloat16 autocast
(:func:`torch.autocast`: convolutions in bfloat16, normalisation and reductions in float32);
the losses are computed in float32 from the float32-cast outputs, and weights, gradients and
Adam's moments stay float32, so no loss scaling is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch

from cloudfill.errors import ParameterError
from cloudfill.model.discriminator import PatchDiscriminator
from cloudfill.model.generator import Generator
from cloudfill.model.losses import adversarial_loss, change_weighted_l1, laplace_nll, masked_l1
from cloudfill.training.config import TrainConfig

__all__ = ["LOSSES", "Networks", "autocast", "config_generator", "train_step"]

LOSSES: tuple[str, ...] = ("loss_g", "loss_d", "loss_adv", "loss_rec")
"""The losses :func:`train_step` reports, in its order."""


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """The autocast context of ``precision`` on ``device`` (a no-op for ``"fp32"``).

    Examples
    --------
    >>> with autocast(torch.device("cpu"), "bf16"):
    ...     y = torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 1, 1))
    >>> y.dtype
    torch.bfloat16
    """
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def config_generator(config: TrainConfig) -> Generator:
    """A generator of the configuration's architecture, freshly initialised.

    Examples
    --------
    >>> config_generator(TrainConfig("S")).config()["n_blocks"]
    9
    """
    net = config.network
    return Generator(
        config.variant,
        base_filters=net.base_filters,
        n_blocks=net.n_blocks,
        attention=net.attention,
        norm=net.norm,
        confidence=net.confidence,
        reference_skip=net.reference_skip,
        skip=net.skip,
        pixel_features=net.pixel_features,
    )


def train_step(
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    batch: Sequence[torch.Tensor],
    *,
    lambda_l1: float = 100.0,
    confidence: bool = False,
    precision: str = "fp32",
    change_weight: float = 1.0,
    change_threshold: torch.Tensor | None = None,
) -> dict[str, float]:
    """One discriminator and one generator update on a batch (see the module docstring).

    Parameters
    ----------
    generator, discriminator
        The networks, in training mode, on the batch's device.
    opt_g, opt_d
        Their optimisers.
    batch
        ``(condition, target, valid)`` as :class:`~cloudfill.training.dataset.PatchDataset`
        gives them, stacked.
    lambda_l1
        Weight of the reconstruction term.
    confidence
        Also train the scale head by the Laplace NLL of the detached mean (the generator
        needs the confidence head).
    precision
        ``"fp32"``, or ``"bf16"`` for bfloat16 autocast of the forward passes.
    change_weight, change_threshold
        With ``change_weight > 1`` the reconstruction term counts the pixels whose target
        differs from the condition's reference by more than ``change_threshold`` (per band,
        normalised units) that many times (:func:`~cloudfill.model.losses.change_weighted_l1`).

    Returns
    -------
    dict
        ``loss_g``, ``loss_d``, ``loss_adv``, ``loss_rec`` as floats.

    Examples
    --------
    >>> g, d = Generator("S", base_filters=4, n_blocks=1), PatchDiscriminator("S", base_filters=4)
    >>> opts = [torch.optim.Adam(m.parameters()) for m in (g, d)]
    >>> batch = (torch.zeros(2, 2, 32, 32), torch.zeros(2, 4, 32, 32), torch.ones(2, 1, 32, 32) > 0)
    >>> sorted(train_step(g, d, *opts, batch))
    ['loss_adv', 'loss_d', 'loss_g', 'loss_rec']
    """
    cond, target, valid = batch
    cast = autocast(cond.device, precision)
    with cast:
        out = generator(cond)
    fake = out.mean.float()
    real = torch.where(valid, target, fake.detach())

    for p in discriminator.parameters():
        p.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    with cast:
        logits_real, logits_fake = discriminator(cond, real), discriminator(cond, fake.detach())
    loss_d = 0.5 * (
        adversarial_loss(logits_real.float(), True) + adversarial_loss(logits_fake.float(), False)
    )
    loss_d.backward()
    opt_d.step()

    # The generator step needs gradients through D, not of D's weights.
    for p in discriminator.parameters():
        p.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    with cast:
        logits = discriminator(cond, fake)
    loss_adv = adversarial_loss(logits.float(), True)
    if change_weight != 1.0:
        if change_threshold is None:
            raise ParameterError("change_weight needs change_threshold")
        reference = cond[:, generator.reference_index].float()
        loss_rec = change_weighted_l1(
            fake, target, reference, valid, factor=change_weight, threshold=change_threshold
        )
    else:
        loss_rec = masked_l1(fake, target, valid)
    if confidence:
        loss_rec = loss_rec + laplace_nll(fake.detach(), out.scale.float(), target, valid)
    loss_g = loss_adv + lambda_l1 * loss_rec
    loss_g.backward()
    opt_g.step()
    for p in discriminator.parameters():
        p.requires_grad_(True)
    return {
        "loss_g": loss_g.item(),
        "loss_d": loss_d.item(),
        "loss_adv": loss_adv.item(),
        "loss_rec": loss_rec.item(),
    }


@dataclass(eq=False)
class Networks:
    """The generator, the discriminator, their optimisers and the generator's weight average.

    Attributes
    ----------
    generator, discriminator
        The networks being trained.
    opt_g, opt_d
        Their Adam optimisers.
    average
        The exponential moving average of the generator (None without ``ema``).
    """

    generator: torch.nn.Module
    discriminator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    average: torch.nn.Module | None = None

    @classmethod
    def build(cls, config: TrainConfig, device: torch.device) -> Networks:
        """Fresh networks for ``config``, initialised from ``config.seed``.

        Examples
        --------
        >>> from cloudfill.training.config import NetworkSettings
        >>> config = TrainConfig("S", network=NetworkSettings(base_filters=4, n_blocks=1))
        >>> nets = Networks.build(config, torch.device("cpu"))
        >>> nets.scored is nets.generator
        True
        """
        net, optim = config.network, config.optim
        # The seed fixes the initial weights (generator first, then discriminator).
        torch.manual_seed(config.seed)
        generator = config_generator(config).to(device)
        discriminator = PatchDiscriminator(
            config.variant, base_filters=net.d_filters, n_layers=net.d_layers
        ).to(device)
        betas = tuple(optim.betas)
        return cls(
            generator=generator,
            discriminator=discriminator,
            opt_g=torch.optim.Adam(generator.parameters(), lr=optim.lr, betas=betas),
            opt_d=torch.optim.Adam(discriminator.parameters(), lr=optim.lr, betas=betas),
            average=(None if optim.ema is None else copy.deepcopy(generator).requires_grad_(False)),
        )

    def start_from(self, state: dict[str, torch.Tensor]) -> None:
        """Load a trained generator's state (weights and batch-norm statistics) into the
        generator and the weight average: a warm start (:mod:`cloudfill.training.warm_start`).
        """
        self.generator.load_state_dict(state, strict=True)
        if self.average is not None:
            self.average.load_state_dict(state, strict=True)

    @property
    def scored(self) -> torch.nn.Module:
        """The generator that is validated, kept and returned (the average if any)."""
        return self.generator if self.average is None else self.average

    def train(self) -> None:
        """Put both trained networks in training mode."""
        self.generator.train()
        self.discriminator.train()

    def step(
        self,
        batch: Sequence[torch.Tensor],
        config: TrainConfig,
        change_threshold: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """:func:`train_step` with the configuration's loss settings, then the average.

        ``change_threshold``: the configuration's threshold per band in normalised units
        (needed when ``config.optim.change_weight > 1``).
        """
        losses = train_step(
            self.generator,
            self.discriminator,
            self.opt_g,
            self.opt_d,
            batch,
            lambda_l1=float(config.optim.lambda_l1),
            confidence=bool(config.network.confidence),
            precision=config.runtime.precision,
            change_weight=float(config.optim.change_weight),
            change_threshold=change_threshold,
        )
        self._update_average(config.optim.ema)
        return losses

    def _update_average(self, ema: float | None) -> None:
        if self.average is None or ema is None:
            return
        weight = 1.0 - float(ema)
        with torch.no_grad():
            for mine, theirs in zip(
                self.average.parameters(), self.generator.parameters(), strict=True
            ):
                mine.lerp_(theirs, weight)
            # Batch-norm running statistics are averaged like the weights they normalise for
            # (a copy of the live ones would pair the average's weights with the last steps'
            # statistics); integer counters are copied.
            for mine, theirs in zip(self.average.buffers(), self.generator.buffers(), strict=True):
                if mine.is_floating_point():
                    mine.lerp_(theirs, weight)
                else:
                    mine.copy_(theirs)
