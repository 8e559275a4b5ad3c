"""Scoring a generator on a split's patches, and choosing the model to keep.

After each epoch the generator (or its weight average) is scored on the validation split
(:func:`evaluate_patches`: MAE on reflectance 0..1 over valid pixels); :class:`Selection`
keeps the best one and counts the epochs without improvement for early stopping. At the end
the best generator is scored on the test split, PSNR, SSIM and SAM included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cloudfill.cube.schema import BANDS
from cloudfill.metrics import all_metrics
from cloudfill.model.losses import change_pixels
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.sampler import ChunkSampler

__all__ = ["Selection", "band_affine", "evaluate_patches", "none_if_nan"]


def none_if_nan(value: float | None) -> float | None:
    """None for NaN (JSON has no NaN), the value otherwise.

    Examples
    --------
    >>> none_if_nan(float("nan")), none_if_nan(0.5)
    (None, 0.5)
    """
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def band_affine(stats: NormStats) -> tuple[torch.Tensor, torch.Tensor]:
    """S2's normalisation offset and scale per band, (1, 4, 1, 1), in the order of
    :data:`~cloudfill.cube.schema.BANDS` (the targets' order)."""
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
    change_threshold: torch.Tensor | None = None,
    change_weight: float = 1.0,
) -> dict[str, float]:
    """Score a generator on a split's patches (valid target pixels only).

    Parameters
    ----------
    generator
        A :class:`~cloudfill.model.generator.Generator` (run in eval mode; its mode is
        restored).
    dataset
        A :class:`~cloudfill.training.dataset.PatchDataset` (augmentation is ignored).
    batch_size
        Patches per forward pass.
    device
        Where to run.
    full
        Also compute PSNR, SSIM and SAM (:func:`cloudfill.metrics.all_metrics`).
    change_threshold, change_weight
        With a threshold (per band, normalised units) and a generator with a reference:
        also score the change pixels (:func:`~cloudfill.model.losses.change_pixels`: target
        off the condition's reference by more than the threshold in some band) and the MAE
        with them counted ``change_weight`` times, the measure a change-weighted run is
        selected by (:func:`~cloudfill.model.losses.change_weighted_l1`).

    Returns
    -------
    dict
        ``l1`` (masked L1 in normalised units, the training loss), ``mae`` and ``rmse`` on
        reflectance 0..1, ``samples``, ``pixels`` (valid pixels); with ``full`` also
        ``psnr``, ``ssim``, ``sam``; with ``change_threshold`` also ``change_mae``,
        ``weighted_mae`` and ``change_pixels``. Values are NaN for an empty split.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.model.generator import Generator
    >>> from cloudfill.training.dataset import sample_patches
    >>> from cloudfill.training.index import PatchSettings
    >>> patches = PatchSettings(32, overlap=0, block_size=32)
    >>> data = sample_patches(cloudfill.simulate_scene((96, 96), seed=0), "S", patches, "test",
    ...                       despeckle=3)
    >>> scores = evaluate_patches(Generator("S", base_filters=4, n_blocks=1), data)
    >>> sorted(scores)
    ['l1', 'mae', 'pixels', 'rmse', 'samples']
    """
    device = torch.device(device)
    offset, scale = (v.to(device) for v in band_affine(dataset.stats))
    was_training, was_augmenting = generator.training, dataset.augment
    generator.eval()
    dataset.augment = False
    sums = {"l1": 0.0, "abs": 0.0, "sq": 0.0, "pixels": 0.0, "count": 0.0}
    reference_index = list(getattr(generator, "reference_index", []))
    changes = change_threshold is not None and bool(reference_index)
    if changes:
        threshold = change_threshold.to(device)
        sums.update(change_abs=0.0, change_pixels=0.0, w_abs=0.0, w_count=0.0)
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
                if changes:
                    changed = change_pixels(target, cond[:, reference_index], threshold)
                    changed = changed & valid
                    c_weight = changed.expand_as(pred).to(pred.dtype)
                    sums["change_abs"] += float((diff.abs() * c_weight).sum())
                    sums["change_pixels"] += float(changed.sum())
                    w = weight * (1.0 + (change_weight - 1.0) * c_weight)
                    sums["w_abs"] += float((diff.abs() * w).sum())
                    sums["w_count"] += float(w.sum())
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
    if changes:
        m, w = sums["change_pixels"] * len(BANDS), sums["w_count"]
        scores["change_mae"] = sums["change_abs"] / m if m else math.nan
        scores["weighted_mae"] = sums["w_abs"] / w if w else math.nan
        scores["change_pixels"] = sums["change_pixels"]
    if full:
        if preds:
            truth = _mosaic(truths)
            result = all_metrics(_mosaic(preds), truth, np.isfinite(truth).all(0))
        else:
            result = dict.fromkeys(("psnr", "ssim", "sam"), math.nan)
        scores.update({k: float(result[k]) for k in ("psnr", "ssim", "sam")})
    return scores


@dataclass
class Selection:
    """The best model so far by validation MAE (a change-weighted run's: by the weighted
    MAE), and the epochs since it improved.

    Attributes
    ----------
    best
        ``val_mae``, ``val_rmse``, ``epoch`` and ``step`` of the best validation (None
        before the first).
    bad_epochs
        Complete epochs in a row that ended without a better model.
    state
        The best generator's weights, on the CPU (None until a model was kept).

    Examples
    --------
    >>> selection = Selection()
    >>> row = {"val_mae": 0.1, "val_rmse": 0.2, "epoch": 0, "step": 0}
    >>> selection.consider(row, torch.nn.Linear(1, 1)), row["best"]
    (True, True)
    >>> selection.consider({**row, "val_mae": 0.3}, torch.nn.Linear(1, 1))
    False
    """

    best: dict[str, Any] | None = None
    bad_epochs: int = 0
    state: dict[str, torch.Tensor] | None = None

    def consider(self, row: dict[str, Any], model: torch.nn.Module, key: str = "val_mae") -> bool:
        """Keep ``model`` if its validation ``row`` improves on the best by ``key`` (the
        MAE, or a change-weighted run's ``val_weighted_mae``); marks the row."""
        score = row[key]
        # Without a validation split the latest model is the best one known.
        improved = (
            self.best is None
            or score is None
            or self.best.get(key) is None
            or score < self.best[key]
        )
        if improved:
            self.best = {
                "val_mae": row["val_mae"],
                "val_rmse": row["val_rmse"],
                "epoch": row["epoch"],
                "step": row["step"],
                **({key: score} if key != "val_mae" else {}),
            }
            row["best"] = True
            self.state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        return improved

    def end_epoch(self, improved: bool) -> None:
        """Count a complete epoch that did (not) improve the model."""
        self.bad_epochs = 0 if improved else self.bad_epochs + 1

    def exhausted(self, patience: int | None) -> bool:
        """Whether ``patience`` epochs passed without improvement (never for None)."""
        return patience is not None and self.bad_epochs >= patience

    def metrics(self) -> dict[str, Any]:
        """The best validation scores, as the model card's metrics record them."""
        if self.best is None:
            return {}
        return {k: v for k, v in self.best.items() if k.startswith("val_")}
