"""The pix2pix training loop: adversarial + lambda * L1 (+ Laplace NLL), early stopping, resume.

One step (batch of ``batch_size`` patches, paper defaults in :func:`train`):

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
besides the trained ones; it is what is scored, saved and returned. Averaging over the last
~``1 / (1 - ema)`` steps removes most of the step-to-step noise of Adam and the adversarial
term, which otherwise shows as grain on pixels that did not change.

After each epoch the generator (or its average) is scored on the validation split (MAE on
reflectance 0..1 over valid pixels); the best one is kept as ``out/best.safetensors`` (a model
checkpoint with its card: normalisation statistics, split, training configuration, metrics)
and training stops after ``patience`` epochs without improvement. At the end the best
generator is scored on the test split and those metrics are added to its card.

Determinism: seeds, ``torch.use_deterministic_algorithms`` (restored afterwards), a sample
order and augmentation that depend only on (seed, epoch, sample), and a complete state in
``out/last/`` (weights, batch-norm statistics, optimiser moments, RNG, counters, history;
safetensors + JSON, see :mod:`cloudfill.training.state`) make ``resume=True`` continue exactly
where an interrupted run stopped, mid-epoch included: on the CPU, N steps then M resumed steps
give bit-identical weights to N + M steps in one go.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from cloudfill.core.variants import get_variant
from cloudfill.cube.schema import BANDS
from cloudfill.errors import OutputError, ParameterError
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import save_model
from cloudfill.model.discriminator import PatchDiscriminator
from cloudfill.model.generator import Generator
from cloudfill.model.losses import adversarial_loss, laplace_nll, masked_l1
from cloudfill.model.runtime import CloudfillModel, resolve_device
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.sampler import ChunkSampler, PatchDataset, PatchIndex, build_index
from cloudfill.training.state import flatten_optimizer, read_state, restore_optimizer, write_state

__all__ = ["evaluate_patches", "train", "train_step"]

BEST_NAME = "best.safetensors"
LAST_NAME = "last"
METRICS_NAME = "metrics.csv"

# Settings that define a run: a resumed run must use the same ones.
_FIXED = (
    "variant",
    "attention",
    "base_filters",
    "n_blocks",
    "norm",
    "confidence",
    "reference_skip",
    "reference_mode",
    "ema",
    "d_filters",
    "d_layers",
    "batch_size",
    "lr",
    "betas",
    "lambda_l1",
    "patch_size",
    "overlap",
    "block_size",
    "fractions",
    "seed",
    "max_cloud",
    "despeckle",
    "dates",
)
_HISTORY_COLUMNS = (
    "epoch",
    "step",
    "partial",
    "loss_g",
    "loss_d",
    "loss_adv",
    "loss_rec",
    "val_mae",
    "val_rmse",
    "val_l1",
    "seconds",
    "best",
)


# --- evaluation ---------------------------------------------------------------------------
def _band_affine(stats: NormStats) -> tuple[torch.Tensor, torch.Tensor]:
    labels = list(stats.variables["s2"].labels)
    offsets, scales = stats.offset("s2"), stats.scale("s2")
    order = [labels.index(b) for b in BANDS]
    offset = torch.tensor([offsets[i] for i in order], dtype=torch.float32).view(1, -1, 1, 1)
    scale = torch.tensor([scales[i] for i in order], dtype=torch.float32).view(1, -1, 1, 1)
    return offset, scale


def _mosaic(patches: list[np.ndarray], gap: int = 11) -> np.ndarray:
    """Patches (band, s, s) on a grid separated by NaN gaps as wide as the SSIM window.

    SSIM drops every window that touches NaN, so no window mixes two patches, and
    pixel-wise metrics pool over all patches: one :func:`~cloudfill.metrics.all_metrics`
    call scores a whole split.
    """
    n, (bands, s, _) = len(patches), patches[0].shape
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    out = np.full((bands, rows * (s + gap), cols * (s + gap)), np.nan, dtype=np.float32)
    for i, patch in enumerate(patches):
        r, c = divmod(i, cols)
        out[:, r * (s + gap) : r * (s + gap) + s, c * (s + gap) : c * (s + gap) + s] = patch
    return out


def evaluate_patches(
    generator: torch.nn.Module,
    dataset: PatchDataset,
    *,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    full: bool = False,
) -> dict[str, float]:
    """Score a generator on a split's patches (valid target pixels only).

    Parameters
    ----------
    generator
        A :class:`~cloudfill.model.generator.Generator` (run in eval mode; its mode is
        restored).
    dataset
        A :class:`~cloudfill.training.sampler.PatchDataset` (augmentation is ignored).
    batch_size
        Patches per forward pass.
    device
        Where to run.
    full
        Also compute PSNR, SSIM and SAM (:func:`cloudfill.metrics.all_metrics`).

    Returns
    -------
    dict
        ``l1`` (masked L1 in normalised units, the training loss), ``mae`` and ``rmse`` on
        reflectance 0..1, ``samples``, ``pixels`` (valid pixels); with ``full`` also
        ``psnr``, ``ssim``, ``sam``. Values are NaN for an empty split.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.training.sampler import sample_patches
    >>> data = sample_patches(cloudfill.simulate_scene((96, 96), seed=0), "S", size=32,
    ...                       overlap=0, block_size=32, despeckle=3, split="test")
    >>> scores = evaluate_patches(Generator("S", base_filters=4, n_blocks=1), data)
    >>> sorted(scores)
    ['l1', 'mae', 'pixels', 'rmse', 'samples']
    """
    device = torch.device(device)
    offset, scale = (v.to(device) for v in _band_affine(dataset.stats))
    was_training, was_augmenting = generator.training, dataset.augment
    generator.eval()
    dataset.augment = False
    sums = {"l1": 0.0, "abs": 0.0, "sq": 0.0, "pixels": 0.0, "count": 0.0}
    preds, truths = [], []
    order = ChunkSampler(dataset.groups, shuffle=False).order()
    try:
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                items = [dataset[int(i)] for i in order[start : start + batch_size]]
                cond, target, valid = (torch.stack(x).to(device) for x in zip(*items, strict=True))
                pred = generator(cond).mean
                weight = valid.expand_as(pred).to(pred.dtype)
                count = float(weight.sum())
                sums["l1"] += float(((pred - target).abs() * weight).sum())
                diff = (pred - target) * scale  # reflectance difference (offsets cancel)
                sums["abs"] += float((diff.abs() * weight).sum())
                sums["sq"] += float((diff.square() * weight).sum())
                sums["count"] += count
                sums["pixels"] += float(valid.sum())
                if full:
                    refl_pred = (pred * scale + offset).cpu().numpy()
                    refl_true = (target * scale + offset).masked_fill(~valid, float("nan"))
                    preds.extend(refl_pred)
                    truths.extend(refl_true.cpu().numpy())
    finally:
        generator.train(was_training)
        dataset.augment = was_augmenting
    n = sums["count"]
    scores = {
        "l1": sums["l1"] / n if n else math.nan,
        "mae": sums["abs"] / n if n else math.nan,
        "rmse": math.sqrt(sums["sq"] / n) if n else math.nan,
        "samples": float(len(dataset)),
        "pixels": sums["pixels"],
    }
    if full:
        from cloudfill.metrics import all_metrics

        if preds:
            truth = _mosaic(truths)
            result = all_metrics(_mosaic(preds), truth, np.isfinite(truth).all(0))
        else:
            result = dict.fromkeys(("psnr", "ssim", "sam"), math.nan)
        scores.update({k: float(result[k]) for k in ("psnr", "ssim", "sam")})
    return scores


# --- helpers ------------------------------------------------------------------------------
@contextmanager
def _deterministic(device: torch.device):
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    # CUDA has kernels without a deterministic version: warn there instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def _check_arguments(**kw: Any) -> None:
    positive = ("epochs", "batch_size", "base_filters", "patch_size", "d_filters", "d_layers")
    for name in positive:
        if kw[name] is not None and (not isinstance(kw[name], int) or kw[name] < 1):
            raise ParameterError(f"{name} must be a positive integer, got {kw[name]!r}")
    if not kw["lr"] > 0:
        raise ParameterError(f"lr must be positive, got {kw['lr']}")
    if kw["lambda_l1"] < 0:
        raise ParameterError(f"lambda_l1 must not be negative, got {kw['lambda_l1']}")
    if kw["n_blocks"] < 0:
        raise ParameterError(f"n_blocks must not be negative, got {kw['n_blocks']}")
    if kw["patience"] is not None and kw["patience"] < 1:
        raise ParameterError(f"patience must be >= 1 or None, got {kw['patience']}")
    if kw["max_steps"] is not None and kw["max_steps"] < 0:
        raise ParameterError(f"max_steps must be >= 0 or None, got {kw['max_steps']}")
    betas = kw["betas"]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ParameterError(f"betas must be two numbers in [0, 1), got {betas!r}")


def _write_csv(path: Path, history: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=_HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in _HISTORY_COLUMNS})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def _tensorboard(out: Path | None) -> Any:
    """A SummaryWriter when TensorBoard is installed and there is an output folder."""
    if out is None:
        return None
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
    )


def _none_if_nan(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _state_tensors(
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {f"G.{k}": v for k, v in generator.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in discriminator.state_dict().items()})
    t_g, meta_g = flatten_optimizer(opt_g, "opt_g")
    t_d, meta_d = flatten_optimizer(opt_d, "opt_d")
    tensors.update(t_g)
    tensors.update(t_d)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return tensors, {"opt_g": meta_g, "opt_d": meta_d}


def _load_tensors(
    tensors: dict[str, torch.Tensor],
    document: dict[str, Any],
    generator: torch.nn.Module,
    discriminator: torch.nn.Module,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
) -> None:
    for prefix, module in (("G.", generator), ("D.", discriminator)):
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    restore_optimizer(opt_g, tensors, document["optim"]["opt_g"], "opt_g")
    restore_optimizer(opt_d, tensors, document["optim"]["opt_d"], "opt_d")
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _compare_config(saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key in _FIXED:
        # Runs saved before composites existed used single reference dates.
        a = saved.get(key, "date" if key == "reference_mode" else None)
        b = wanted.get(key)
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        if a != b:
            raise ParameterError(
                f"cannot resume: the run in the output folder has {key}={a!r} but {key}={b!r} "
                "was asked for (use the same settings, or another --out)"
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
) -> dict[str, float]:
    """One discriminator and one generator update on a batch (see the module docstring).

    Parameters
    ----------
    generator, discriminator
        The networks, in training mode, on the batch's device.
    opt_g, opt_d
        Their optimisers.
    batch
        ``(condition, target, valid)`` as :class:`~cloudfill.training.sampler.PatchDataset`
        gives them, stacked.
    lambda_l1
        Weight of the reconstruction term.
    confidence
        Also train the scale head by the Laplace NLL of the detached mean (the generator
        needs the confidence head).

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
    out = generator(cond)
    fake = out.mean
    real = torch.where(valid, target, fake.detach())

    for p in discriminator.parameters():
        p.requires_grad_(True)
    opt_d.zero_grad(set_to_none=True)
    loss_d = 0.5 * (
        adversarial_loss(discriminator(cond, real), True)
        + adversarial_loss(discriminator(cond, fake.detach()), False)
    )
    loss_d.backward()
    opt_d.step()

    # The generator step needs gradients through D, not of D's weights.
    for p in discriminator.parameters():
        p.requires_grad_(False)
    opt_g.zero_grad(set_to_none=True)
    loss_adv = adversarial_loss(discriminator(cond, fake), True)
    loss_rec = masked_l1(fake, target, valid)
    if confidence:
        loss_rec = loss_rec + laplace_nll(fake.detach(), out.scale, target, valid)
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


# --- the loop -----------------------------------------------------------------------------
def train(
    ds: xr.Dataset | str | os.PathLike[str],
    variant: str = "SOD",
    attention: bool | str = True,
    *,
    out: str | os.PathLike[str] | None = None,
    epochs: int = 50,
    batch_size: int = 2,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    lambda_l1: float = 100.0,
    patch_size: int = 256,
    overlap: int = 25,
    patience: int | None = 20,
    confidence: bool = False,
    base_filters: int = 64,
    n_blocks: int = 9,
    norm: str = "batch",
    reference_skip: bool | None = None,
    d_filters: int = 64,
    d_layers: int = 3,
    max_steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_workers: int = 0,
    resume: bool = False,
    progress: bool = True,
    log_every: int = 10,
    index: PatchIndex | None = None,
    stats: NormStats | None = None,
    dates: Sequence[Any] | None = None,
    block_size: int | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    max_cloud: float = 0.5,
    despeckle: int | None = 5,
    eval_batch_size: int = 8,
    reference: str = "date",
    ema: float | None = None,
) -> CloudfillModel:
    """Train a generator of ``variant`` on a cube (pix2pix objective, paper defaults).

    Parameters
    ----------
    ds
        A contract cube or the path of a zarr store (patches are read straight from it).
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    attention
        ``True`` (CBAM), ``"self"`` or ``False``.
    out
        Output folder: ``best.safetensors`` (best model + card), ``last/`` (resumable
        state), ``metrics.csv`` (and ``tensorboard/`` when installed). None keeps everything
        in memory.
    epochs, batch_size, lr, betas, lambda_l1, patch_size, overlap, patience
        The paper's table 2: 50 epochs, batch 2, Adam lr 2e-4 with betas (0.5, 0.999),
        lambda 100, 256 px patches with 25 px overlap, early stopping after 20 epochs
        without a better validation MAE (None: never).
    confidence
        Add the Laplace-scale head and train with the Laplace NLL instead of L1.
    base_filters, n_blocks, norm
        Generator width, residual blocks and normalisation.
    reference_skip
        Predict SO/SOD targets as the reference plus a learned change (see
        :class:`~cloudfill.model.generator.Generator`; default: on where there is a reference).
    d_filters, d_layers
        PatchGAN discriminator width and strided layers.
    max_steps
        Stop after this many optimiser steps in total (counting resumed ones).
    seed
        Seeds weights, split, sample order and augmentation.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    num_workers
        DataLoader worker processes (``forkserver``: each opens the store itself; a script
        needs the usual ``if __name__ == "__main__":`` guard).
    resume
        Continue the run in ``out/last/`` exactly (same settings required; ``epochs``,
        ``max_steps``, ``patience``, ``device`` may change). Starts afresh if there is none.
    progress
        Show a progress bar with the losses.
    log_every
        Steps between progress-bar / TensorBoard loss updates.
    index
        A prebuilt :class:`~cloudfill.training.sampler.PatchIndex` (shared between runs by
        :func:`~cloudfill.training.experiment.run_experiment`); otherwise built from ``ds``.
    stats, dates, block_size, fractions, max_cloud, despeckle
        Passed to :func:`~cloudfill.training.sampler.build_index`.
    eval_batch_size
        Patches per forward pass when scoring validation / test patches.
    reference
        How SO/SOD references are built: ``"date"`` (one clear earlier date, the paper's
        rule), ``"composite"`` (each pixel's nearest clear observation) or ``"blend"`` (the
        nearest clear observations before and after, weighted by time and S1 similarity:
        :func:`~cloudfill.core.condition.blend_reference`); recorded in the
        card (``reference_mode``) so inference builds it the same way. A prebuilt
        ``index`` brings its own.
    ema
        Decay of an exponential moving average of the generator's weights (e.g. 0.999), which
        is then the model scored, kept and returned; None (default) uses the weights as
        trained.

    Returns
    -------
    CloudfillModel
        The best generator (by validation MAE) with its card; the card's ``metrics`` hold
        the validation and test scores.

    Raises
    ------
    ParameterError
        Bad settings, no training samples, or a resume with different settings.
    ModelMismatchError
        The cube lacks an input of the variant.
    OutputError
        ``out`` already holds a run and ``resume`` is False.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> model = train(ds, "S", patch_size=32, overlap=0, block_size=32, base_filters=4,
    ...               n_blocks=1, d_filters=4, max_steps=2, progress=False, despeckle=3)
    >>> model.card.variant, model.card.training["steps"]
    ('S', 2)
    """
    spec = get_variant(variant)
    _check_arguments(
        epochs=epochs,
        batch_size=batch_size,
        base_filters=base_filters,
        patch_size=patch_size,
        d_filters=d_filters,
        d_layers=d_layers,
        lr=lr,
        lambda_l1=lambda_l1,
        n_blocks=n_blocks,
        patience=patience,
        max_steps=max_steps,
        betas=betas,
    )
    torch_device = resolve_device(device)
    out_dir = None if out is None else Path(out)
    saved: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
    if out_dir is not None:
        last = out_dir / LAST_NAME
        has_state = last.exists() or any(out_dir.glob(f".{LAST_NAME}.old-*"))
        if has_state and not resume:
            raise OutputError(
                f"{str(out_dir)!r} already holds a training run; pass resume=True "
                "(--resume) to continue it, or choose another output folder"
            )
        if has_state:
            saved = read_state(last)
        elif resume:
            warnings.warn(f"nothing to resume in {str(out_dir)!r}: starting afresh", stacklevel=2)
    if saved is not None and stats is None:
        stats = NormStats.from_dict(saved[1]["stats"])

    if index is None:
        index = build_index(
            ds,
            spec.name,
            patch_size,
            overlap,
            stats=stats,
            block_size=block_size,
            fractions=fractions,
            seed=seed,
            max_cloud=max_cloud,
            dates=dates,
            despeckle=despeckle,
            reference=reference,
        )
    elif index.size != patch_size:
        raise ParameterError(f"the index has patch size {index.size}, not {patch_size}")
    train_data = index.dataset("train", variant=spec.name)
    val_data = index.dataset("val", variant=spec.name)
    test_data = index.dataset("test", variant=spec.name)
    if len(train_data) == 0:
        raise ParameterError("no training samples: the training blocks hold no usable patch")
    if len(val_data) == 0:
        warnings.warn(
            "the validation split is empty: no early stopping, the last model is kept",
            stacklevel=2,
        )
    stats = index.stats
    config: dict[str, Any] = {
        "variant": spec.name,
        "attention": str(attention) if isinstance(attention, str) else bool(attention),
        "base_filters": base_filters,
        "n_blocks": n_blocks,
        "norm": norm,
        "confidence": bool(confidence),
        "reference_skip": spec.uses_reference if reference_skip is None else bool(reference_skip),
        "reference_mode": index.config.get("reference", "date") if spec.uses_reference else "date",
        "d_filters": d_filters,
        "d_layers": d_layers,
        "batch_size": batch_size,
        "lr": float(lr),
        "betas": [float(b) for b in betas],
        "lambda_l1": float(lambda_l1),
        "patch_size": index.size,
        "overlap": index.config.get("overlap", overlap),
        "block_size": index.grid.block_size,
        "fractions": index.config.get("fractions", list(fractions)),
        "seed": int(seed),
        "max_cloud": index.config.get("max_cloud", max_cloud),
        "despeckle": index.despeckle,
        "dates": index.split_record()["dates"],
        "max_s1_gap": index.config.get("max_s1_gap"),
        "max_ref_age": index.config.get("max_ref_age"),
        "max_ref_cloud": index.config.get("max_ref_cloud"),
        "loss": "l1 + laplace_nll(detached mean)" if confidence else "l1",
        "optimizer": "adam",
        "epochs": epochs,
        "max_steps": max_steps,
        "patience": patience,
    }
    if ema is not None and not 0.0 < float(ema) < 1.0:
        raise ParameterError(f"ema must be within (0, 1), got {ema}")
    config["ema"] = None if ema is None else float(ema)
    if saved is not None:
        _compare_config(saved[1]["config"], config)

    with _deterministic(torch_device):
        torch.manual_seed(seed)
        generator = Generator(
            spec.name,
            base_filters=base_filters,
            n_blocks=n_blocks,
            attention=attention,
            norm=norm,
            confidence=confidence,
            reference_skip=reference_skip,
        ).to(torch_device)
        discriminator = PatchDiscriminator(spec.name, base_filters=d_filters, n_layers=d_layers).to(
            torch_device
        )
        opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=tuple(betas))
        opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=tuple(betas))
        run = _Run(
            generator=generator,
            discriminator=discriminator,
            opt_g=opt_g,
            opt_d=opt_d,
            index=index,
            train_data=train_data,
            val_data=val_data,
            test_data=test_data,
            config=config,
            out=out_dir,
            device=torch_device,
            lambda_l1=float(lambda_l1),
            confidence=bool(confidence),
            num_workers=num_workers,
            eval_batch_size=eval_batch_size,
            log_every=max(1, int(log_every)),
        )
        if saved is not None:
            run.restore(*saved)
        run.fit(epochs=epochs, max_steps=max_steps, patience=patience, progress=progress)
        return run.finish()


class _Run:
    """The mutable state of one training run (kept out of :func:`train` for readability)."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.bad_epochs = 0
        self.running = {"loss_g": 0.0, "loss_d": 0.0, "loss_adv": 0.0, "loss_rec": 0.0}
        self.running_count = 0
        self.seconds = 0.0
        self.stop_reason: str | None = None
        self.steps_per_epoch = math.ceil(len(self.train_data) / self.config["batch_size"])
        self.average: torch.nn.Module | None = None
        if self.config.get("ema") is not None:
            self.average = copy.deepcopy(self.generator).requires_grad_(False)

    @property
    def scored(self) -> torch.nn.Module:
        """The generator that is validated, kept and returned (the average if any)."""
        return self.generator if self.average is None else self.average

    def _update_average(self) -> None:
        if self.average is None:
            return
        weight = 1.0 - self.config["ema"]
        with torch.no_grad():
            for mine, theirs in zip(
                self.average.parameters(), self.generator.parameters(), strict=True
            ):
                mine.lerp_(theirs, weight)
            # Batch-norm statistics are already running averages: copied as they are.
            for mine, theirs in zip(self.average.buffers(), self.generator.buffers(), strict=True):
                mine.copy_(theirs)

    # --- persistence -----------------------------------------------------------------
    def restore(self, tensors: dict[str, torch.Tensor], document: dict[str, Any]) -> None:
        if document["split"] != self.index.split_record():
            raise ParameterError(
                "cannot resume: the cube's samples or split differ from the saved run's "
                "(was the cube changed?)"
            )
        _load_tensors(tensors, document, self.generator, self.discriminator, self.opt_g, self.opt_d)
        if self.average is not None:
            state = {k[2:]: v for k, v in tensors.items() if k.startswith("A.")}
            self.average.load_state_dict(state, strict=True)
        self.epoch = document["epoch"]
        self.step_in_epoch = document["step_in_epoch"]
        self.global_step = document["global_step"]
        self.history = document["history"]
        self.best = document["best"]
        self.bad_epochs = document["bad_epochs"]
        self.running = document["running"]
        self.running_count = document["running_count"]
        self.seconds = document["seconds"]
        if self.out is not None and (self.out / BEST_NAME).exists():
            from cloudfill.model.runtime import load_model

            best = load_model(self.out / BEST_NAME)
            self.best_state = {k: v.clone() for k, v in best.generator.state_dict().items()}

    def checkpoint(self) -> None:
        if self.out is None:
            return
        tensors, optim = _state_tensors(self.generator, self.discriminator, self.opt_g, self.opt_d)
        if self.average is not None:
            tensors.update({f"A.{k}": v for k, v in self.average.state_dict().items()})
        document = {
            "config": self.config,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "global_step": self.global_step,
            "history": self.history,
            "best": self.best,
            "bad_epochs": self.bad_epochs,
            "running": self.running,
            "running_count": self.running_count,
            "seconds": self.seconds,
            "stop_reason": self.stop_reason,
            "stats": self.index.stats.to_dict(),
            "split": self.index.split_record(),
            "optim": optim,
        }
        write_state(self.out / LAST_NAME, tensors, document)
        _write_csv(self.out / METRICS_NAME, self.history)

    def card(self, metrics: dict[str, Any]) -> ModelCard:
        training = {
            **self.config,
            "steps": self.global_step,
            "epochs_run": self.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "stop_reason": self.stop_reason,
            "seconds": round(self.seconds, 1),
            "reader": self.index.config.get("reader"),
        }
        if self.best is not None:
            training.update(best_epoch=self.best["epoch"], best_step=self.best["step"])
        return ModelCard.from_generator(
            self.generator,
            reference_mode=self.config["reference_mode"],
            normalisation=self.index.stats.to_dict(),
            patch_size=self.index.size,
            training=training,
            split=self.index.split_record(),
            metrics=metrics,
        )

    # --- steps -----------------------------------------------------------------------
    def _loader(self) -> torch.utils.data.DataLoader:
        sampler = ChunkSampler(self.train_data.groups, seed=self.config["seed"])
        sampler.set_epoch(self.epoch, self.step_in_epoch * self.config["batch_size"])
        self.train_data.set_epoch(self.epoch)
        workers = int(self.num_workers)
        return torch.utils.data.DataLoader(
            self.train_data,
            batch_size=self.config["batch_size"],
            sampler=sampler,
            num_workers=workers,
            multiprocessing_context="forkserver" if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating an iterator must not draw from the global RNG.
            generator=torch.Generator().manual_seed(self.config["seed"] + self.epoch),
        )

    def step(self, batch: Sequence[torch.Tensor]) -> dict[str, float]:
        batch = [x.to(self.device, non_blocking=True) for x in batch]
        losses = train_step(
            self.generator,
            self.discriminator,
            self.opt_g,
            self.opt_d,
            batch,
            lambda_l1=self.lambda_l1,
            confidence=self.confidence,
        )
        self._update_average()
        return losses

    def validate(self, partial: bool) -> dict[str, Any]:
        scores = evaluate_patches(
            self.scored, self.val_data, batch_size=self.eval_batch_size, device=self.device
        )
        count = max(1, self.running_count)
        row: dict[str, Any] = {
            "epoch": self.epoch,
            "step": self.global_step,
            "partial": partial,
            **{k: (v / count if self.running_count else None) for k, v in self.running.items()},
            "val_mae": _none_if_nan(scores["mae"]),
            "val_rmse": _none_if_nan(scores["rmse"]),
            "val_l1": _none_if_nan(scores["l1"]),
            "seconds": round(self.seconds, 2),
            "best": False,
        }
        return row

    def _consider_best(self, row: dict[str, Any]) -> bool:
        score = row["val_mae"]
        # Without a validation split the latest model is the best one known.
        improved = (
            self.best is None
            or score is None
            or self.best["val_mae"] is None
            or score < self.best["val_mae"]
        )
        if improved:
            self.best = {
                "val_mae": score,
                "val_rmse": row["val_rmse"],
                "epoch": row["epoch"],
                "step": row["step"],
            }
            row["best"] = True
            self.best_state = {
                k: v.detach().cpu().clone() for k, v in self.scored.state_dict().items()
            }
            if self.out is not None:
                metrics = {"val_mae": row["val_mae"], "val_rmse": row["val_rmse"]}
                save_model(self.scored, self.card(metrics), self.out / BEST_NAME)
        return improved

    def fit(
        self, *, epochs: int, max_steps: int | None, patience: int | None, progress: bool
    ) -> None:
        self.config.update(epochs=epochs, max_steps=max_steps, patience=patience)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        if not self.history:
            # Step-0 scores: the yardstick, and a candidate: with the reference skip an
            # untrained SO/SOD generator is persistence, which training must beat to be kept.
            row = self.validate(partial=True)
            self._consider_best(row)
            self.history.append(row)
        total = self.steps_per_epoch * epochs
        if max_steps is not None:
            total = min(total, max_steps)
        bar = _progress(progress)
        writer = _tensorboard(self.out)
        task = None
        if bar is not None:
            bar.start()
            task = bar.add_task("training", total=total, completed=self.global_step, losses="")
        try:
            self._epochs(epochs, max_steps, patience, bar, task, writer)
        finally:
            if bar is not None:
                bar.stop()
            if writer is not None:
                writer.close()

    def _epochs(
        self,
        epochs: int,
        max_steps: int | None,
        patience: int | None,
        bar: Any,
        task: Any,
        writer: Any,
    ) -> None:
        self.stop_reason = None
        while self.epoch < epochs:
            if max_steps is not None and self.global_step >= max_steps:
                self.stop_reason = "max_steps"
                break
            self.generator.train()
            self.discriminator.train()
            started = time.perf_counter()
            hit_limit = False
            for batch in self._loader():
                losses = self.step(batch)
                for key, value in losses.items():
                    self.running[key] += value
                self.running_count += 1
                self.global_step += 1
                self.step_in_epoch += 1
                if self.global_step % self.log_every == 0 or self.step_in_epoch == 1:
                    text = "  ".join(f"{k[5:]}={v:.3f}" for k, v in losses.items())
                    if bar is not None:
                        desc = f"epoch {self.epoch + 1}/{epochs}"
                        bar.update(task, completed=self.global_step, description=desc, losses=text)
                    if writer is not None:
                        for key, value in losses.items():
                            writer.add_scalar(f"train/{key}", value, self.global_step)
                elif bar is not None:
                    bar.update(task, completed=self.global_step)
                if max_steps is not None and self.global_step >= max_steps:
                    hit_limit = True
                    break
            self.seconds += time.perf_counter() - started
            complete = self.step_in_epoch >= self.steps_per_epoch
            row = self.validate(partial=not complete)
            improved = self._consider_best(row)
            self.history.append(row)
            if writer is not None and row["val_mae"] is not None:
                writer.add_scalar("val/mae", row["val_mae"], self.global_step)
            if complete:
                self.bad_epochs = 0 if improved else self.bad_epochs + 1
                self.epoch += 1
                self.step_in_epoch = 0
                self.running = dict.fromkeys(self.running, 0.0)
                self.running_count = 0
            if hit_limit:
                self.stop_reason = "max_steps"
            elif patience is not None and self.bad_epochs >= patience and len(self.val_data):
                self.stop_reason = "early_stopping"
            self.checkpoint()
            if self.stop_reason is not None:
                break
        if self.stop_reason is None:
            self.stop_reason = "epochs"

    def finish(self) -> CloudfillModel:
        # The best weights go into the returned model only; out/last keeps the latest state.
        model = self.scored
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        model.eval()
        metrics: dict[str, Any] = {}
        if self.best is not None:
            metrics.update(val_mae=self.best["val_mae"], val_rmse=self.best["val_rmse"])
        if len(self.test_data):
            scores = evaluate_patches(
                model,
                self.test_data,
                batch_size=self.eval_batch_size,
                device=self.device,
                full=True,
            )
            metrics.update({f"test_{k}": _none_if_nan(v) for k, v in scores.items()})
        card = self.card(metrics)
        if self.out is not None:
            save_model(model, card, self.out / BEST_NAME)
        return CloudfillModel(model, card, device=self.device)
