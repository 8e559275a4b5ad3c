"""The training configuration: one validated, frozen value instead of three dozen arguments.

:class:`TrainConfig` gathers the settings of a run, grouped by what travels together:

- :class:`NetworkSettings`: generator and discriminator architecture;
- :class:`OptimSettings`: batch, Adam, loss weight and the weight average;
- :class:`Schedule`: how long to train (the only settings a resumed run may change, besides
  :class:`RuntimeSettings`);
- :class:`~cloudfill.training.index.PatchSettings`: patch grid, split, patch cloud limit;
- :class:`~cloudfill.core.pairs.PairingRule`: which S1 and reference dates serve a target;
- :class:`RuntimeSettings`: device, loader workers, logging, patch cache, precision (not part
  of what a resumed run must keep).

Each value checks itself when built, with the messages :func:`~cloudfill.training.run.train`
always gave. What a run records of its configuration (the model card's ``training`` record)
is :mod:`cloudfill.training.record`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

from cloudfill._dates import as_dates
from cloudfill.core.grid import ALIGN, min_train_size
from cloudfill.core.pairs import PairingRule
from cloudfill.core.variants import get_variant
from cloudfill.errors import ParameterError
from cloudfill.model.card import REFERENCE_MODES
from cloudfill.training.index import PatchSettings
from cloudfill.training.targets import check_despeckle

__all__ = [
    "PATCH_CACHE_KEYWORDS",
    "PRECISIONS",
    "NetworkSettings",
    "OptimSettings",
    "RuntimeSettings",
    "Schedule",
    "TrainConfig",
]


def _positive(owner: object, *names: str) -> None:
    for name in names:
        value = getattr(owner, name)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ParameterError(f"{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class NetworkSettings:
    """Generator and discriminator architecture (paper: 64 filters, 9 blocks, batch norm).

    Parameters
    ----------
    attention
        ``True`` (CBAM), ``"self"`` or ``False``.
    base_filters, n_blocks, norm
        Generator width, residual blocks and normalisation.
    confidence
        Add the Laplace-scale head and train it by the Laplace NLL of the detached mean.
    reference_skip
        Predict SO/SOD targets as the reference plus a learned change (see
        :class:`~cloudfill.model.generator.Generator`; default: on where there is a reference).
    skip, pixel_features
        The reference skip's form (``"add"``: reference + head) and the width of the
        generator's per-pixel path (see :class:`~cloudfill.model.generator.Generator`).
    d_filters, d_layers
        PatchGAN discriminator width and strided layers.

    Examples
    --------
    >>> NetworkSettings(base_filters=16, n_blocks=4).d_filters
    64
    >>> NetworkSettings(n_blocks=-1)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: n_blocks must not be negative, got -1
    """

    attention: bool | str = True
    base_filters: int = 64
    n_blocks: int = 9
    norm: str = "batch"
    confidence: bool = False
    reference_skip: bool | None = None
    skip: str = "add"
    pixel_features: int = 32
    d_filters: int = 64
    d_layers: int = 3

    def __post_init__(self) -> None:
        _positive(self, "base_filters", "d_filters", "d_layers")
        if self.n_blocks < 0:
            raise ParameterError(f"n_blocks must not be negative, got {self.n_blocks}")


@dataclass(frozen=True)
class OptimSettings:
    """Batch, Adam, the reconstruction weight and the weight average (paper's table 2).

    Parameters
    ----------
    batch_size
        Patches per step (paper: 2).
    lr, betas
        Adam's learning rate and betas (paper: 2e-4, (0.5, 0.999)).
    lambda_l1
        Weight of the reconstruction term (paper: 100).
    ema
        Decay of an exponential moving average of the generator's weights (e.g. 0.999),
        which is then the model scored, kept and returned; None uses the weights as trained.
    change_weight
        How many times a "change pixel" counts in the reconstruction term (1: plain L1; see
        :func:`cloudfill.model.losses.change_weighted_l1`). Needs a variant with a reference.
    change_threshold
        A pixel is a change pixel where its target differs from the reference by more than
        this in some band, in S2 reflectance (0.05, the threshold the benchmarks use against
        linear interpolation); validation also reports these pixels' MAE.

    Examples
    --------
    >>> OptimSettings(lr=1e-3).betas
    (0.5, 0.999)
    >>> OptimSettings(ema=1.0)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: ema must be within (0, 1), got 1.0
    """

    batch_size: int = 2
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_l1: float = 100.0
    ema: float | None = None
    change_weight: float = 1.0
    change_threshold: float = 0.05

    def __post_init__(self) -> None:
        _positive(self, "batch_size")
        if not 1 <= self.change_weight < math.inf:
            raise ParameterError(
                f"change_weight must be a finite number >= 1, got {self.change_weight}"
            )
        if not self.change_threshold > 0:
            raise ParameterError(f"change_threshold must be positive, got {self.change_threshold}")
        if not self.lr > 0:
            raise ParameterError(f"lr must be positive, got {self.lr}")
        if self.lambda_l1 < 0:
            raise ParameterError(f"lambda_l1 must not be negative, got {self.lambda_l1}")
        betas = self.betas
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ParameterError(f"betas must be two numbers in [0, 1), got {betas!r}")
        object.__setattr__(self, "betas", tuple(betas))  # hashable, whatever was passed
        if self.ema is not None and not 0.0 < float(self.ema) < 1.0:
            raise ParameterError(f"ema must be within (0, 1), got {self.ema}")


@dataclass(frozen=True)
class Schedule:
    """How long to train: epochs, a step budget, early stopping.

    Parameters
    ----------
    epochs
        Passes over the training split (paper: 50).
    max_steps
        Stop after this many optimiser steps in total, resumed ones included (None: no
        limit).
    patience
        Stop after this many epochs without a better validation MAE (the change-weighted
        one with ``change_weight``; paper: 20; None: never).

    Examples
    --------
    >>> Schedule(max_steps=100).epochs
    50
    """

    epochs: int = 50
    max_steps: int | None = None
    patience: int | None = 20

    def __post_init__(self) -> None:
        _positive(self, "epochs")
        if self.patience is not None and self.patience < 1:
            raise ParameterError(f"patience must be >= 1 or None, got {self.patience}")
        if self.max_steps is not None and self.max_steps < 0:
            raise ParameterError(f"max_steps must be >= 0 or None, got {self.max_steps}")


PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
"""Arithmetic of the training step: float32, or bfloat16 autocast (weights, optimiser state
and losses stay float32)."""

PATCH_CACHE_KEYWORDS: tuple[str, ...] = ("auto", "on", "off")
"""The patch-cache settings that are not a folder (read in any case)."""


@dataclass(frozen=True)
class RuntimeSettings:
    """Where and how a run executes; none of it changes what is trained (but ``precision``).

    Parameters
    ----------
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    num_workers
        DataLoader worker processes (``forkserver``: each opens the store itself; a script
        needs the usual ``if __name__ == "__main__":`` guard); they also build the patch
        cache.
    log_every
        Steps between progress-bar / TensorBoard loss updates (at least 1).
    eval_batch_size
        Patches per forward pass when scoring validation / test patches.
    patch_cache
        Where the samples' tensors are kept once made (:mod:`cloudfill.training.cache`):
        ``"auto"`` (``OUT/patch-cache`` on a CUDA device, where reading patches bounds the
        step rate, none on the CPU), ``"on"`` (``OUT/patch-cache``), ``"off"`` (read every
        epoch from the cube) or a folder (shareable between runs). The keywords are read in any
        case (``"On"`` is ``"on"``); a folder named like one is written ``"./on"``. Cached or
        not, a run trains the same weights.
    precision
        ``"fp32"`` or ``"bf16"`` (bfloat16 autocast of the networks' forward passes, for
        GPUs and CPUs with AMX: on a CPU with AVX-512 BF16 but no AMX it measured 0.7-0.8x
        fp32's speed; not bit-identical to fp32).

    Examples
    --------
    >>> RuntimeSettings(log_every=0).log_every
    1
    >>> [RuntimeSettings(patch_cache=v).patch_cache for v in ("On", "./On")]
    ['on', './On']
    >>> RuntimeSettings(precision="fp16")
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: precision must be one of ['fp32', 'bf16'], got 'fp16'
    """

    device: str = "cpu"
    num_workers: int = 0
    log_every: int = 10
    eval_batch_size: int = 8
    patch_cache: str | None = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "log_every", max(1, int(self.log_every)))
        cache = "off" if self.patch_cache is None else str(os.fspath(self.patch_cache))
        if not cache.strip():
            raise ParameterError("patch_cache must be 'auto', 'on', 'off' or a folder, got ''")
        if cache.lower() in PATCH_CACHE_KEYWORDS:
            cache = cache.lower()
        object.__setattr__(self, "patch_cache", cache)
        if self.precision not in PRECISIONS:
            raise ParameterError(
                f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )


_NESTED = {
    "network": NetworkSettings,
    "optim": OptimSettings,
    "schedule": Schedule,
    "patches": PatchSettings,
    "pairing": PairingRule,
    "runtime": RuntimeSettings,
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that configures a training run (defaults: the paper's table 2).

    Parameters
    ----------
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    network
        Architecture: :class:`NetworkSettings`.
    optim
        Batch and optimiser: :class:`OptimSettings`.
    schedule
        Epochs, step budget, early stopping: :class:`Schedule`.
    patches
        Patch size and overlap, split blocks and fractions, patch cloud limit:
        :class:`~cloudfill.training.index.PatchSettings` (paper: 256 px, 25 px overlap).
    pairing
        Which S1 and reference dates pair with a target:
        :class:`~cloudfill.core.pairs.PairingRule`.
    reference
        How SO/SOD references are built: ``"date"`` (one clear earlier date, the paper's
        rule), ``"composite"`` (each pixel's nearest clear observation) or ``"blend"`` (the
        nearest clear observations before and after, weighted by time and S1 similarity:
        :func:`~cloudfill.core.reference.blend_reference`); recorded in the card
        (``reference_mode``) so inference builds it the same way. A prebuilt index brings
        its own.
    despeckle
        Median window for S1 (3..11, odd); None or 0 for none.
    dates
        Target dates to train on (default: every eligible date).
    seed
        Seeds weights, split, sample order and augmentation.
    runtime
        Device, loader workers, logging, patch cache, precision: :class:`RuntimeSettings`.

    Examples
    --------
    >>> config = TrainConfig("S", network=NetworkSettings(base_filters=4, n_blocks=1),
    ...                      patches=PatchSettings(32, overlap=0), despeckle=0)
    >>> config.variant, config.patches.size, config.despeckle, config.optim.lr
    ('S', 32, None, 0.0002)
    >>> TrainConfig(reference="mosaic")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: reference must be one of [...], got 'mosaic'
    """

    variant: str = "SOD"
    network: NetworkSettings = field(default_factory=NetworkSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    schedule: Schedule = field(default_factory=Schedule)
    patches: PatchSettings = field(default_factory=PatchSettings)
    pairing: PairingRule = field(default_factory=PairingRule)
    reference: str = "date"
    despeckle: int | None = 5
    dates: Sequence[pd.Timestamp] | None = None
    seed: int = 0
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)

    def __post_init__(self) -> None:
        for name, kind in _NESTED.items():
            value = getattr(self, name)
            if not isinstance(value, kind):
                raise ParameterError(f"{name} must be a {kind.__name__}, got {value!r}")
        object.__setattr__(self, "variant", get_variant(self.variant).name)
        if self.reference not in REFERENCE_MODES:
            raise ParameterError(
                f"reference must be one of {list(REFERENCE_MODES)}, got {self.reference!r}"
            )
        if get_variant(self.variant).uses_sides and self.reference != "blend":
            raise ParameterError(
                f"variant {self.variant} sees both sides of the target: it needs "
                f"reference='blend' (--reference blend), got {self.reference!r}"
            )
        if self.optim.change_weight != 1 and not get_variant(self.variant).uses_reference:
            raise ParameterError(
                f"change_weight needs a variant with a reference (SO, SOD, SODC, SODCT), "
                f"got {self.variant}"
            )
        object.__setattr__(self, "despeckle", check_despeckle(self.despeckle))
        # The discriminator halves the patch d_layers times and needs 3 pixels left: a smaller
        # patch would fail mid-run (and leave a checkpoint behind), so it is refused here.
        # The generator's two stride-2 stages need a multiple of ALIGN.
        least = min_train_size(self.network.d_layers)
        if self.patches.size < least or self.patches.size % ALIGN:
            raise ParameterError(
                f"patch_size must be at least {least} and a multiple of {ALIGN}, got "
                f"{self.patches.size} (the discriminator halves the patch size "
                f"{self.network.d_layers} times and needs 3 pixels left)"
            )
        if self.dates is not None:
            # A tuple of Timestamps: the configuration stays hashable and compares by value.
            object.__setattr__(self, "dates", tuple(as_dates(self.dates)))
        object.__setattr__(self, "seed", int(self.seed))
