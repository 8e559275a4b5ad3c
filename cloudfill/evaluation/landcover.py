"""The paper's downstream check: does a land-cover classifier still work on synthesized images?

A random forest learns land cover from the four band values of the real clear image's
*training* pixels, then classifies the *test* pixels of the real image and of the
synthesized image of the same date. The paper reports overall accuracy 93.21 % on the real
image and 89.96 % on the synthesized one, with per-class F1 slightly lower everywhere on the
synthesized image.

Training and test pixels are split by spatial blocks (:func:`block_split`), never pixel by
pixel: neighbouring pixels are nearly copies of each other, so a pixel-level split would let
the forest recognise test pixels from their training neighbours and inflate both accuracies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score

from cloudfill.errors import ParameterError

__all__ = ["LandcoverCheck", "block_split", "landcover_check"]


def block_split(
    shape: tuple[int, int], *, block: int = 32, test_fraction: float = 0.5, seed: int = 0
) -> np.ndarray:
    """Assign whole ``block`` x ``block`` pixel blocks at random to the test set.

    Parameters
    ----------
    shape
        ``(ny, nx)`` of the image; edge blocks may be smaller.
    block
        Block side in pixels.
    test_fraction
        Share of the blocks that go to the test set (rounded; at least one block in each set).
    seed
        Seed of the random draw of test blocks.

    Returns
    -------
    numpy.ndarray
        Boolean (ny, nx), True = test pixel, False = training pixel. Every block is
        entirely one or the other.

    Raises
    ------
    ParameterError
        If the image holds fewer than two blocks or the arguments are out of range.

    Examples
    --------
    >>> test = block_split((64, 64), block=32, seed=0)
    >>> int(test.sum()), test.shape
    (2048, (64, 64))
    """
    ny, nx = shape
    if block < 1:
        raise ParameterError(f"block must be a positive number of pixels, got {block}")
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be within (0, 1), got {test_fraction}")
    nby, nbx = -(-ny // block), -(-nx // block)
    n_blocks = nby * nbx
    if n_blocks < 2:
        raise ParameterError(
            f"a {ny} x {nx} image holds a single {block} px block; use a smaller block"
        )
    n_test = min(max(round(test_fraction * n_blocks), 1), n_blocks - 1)
    test_blocks = np.zeros(n_blocks, dtype=bool)
    test_blocks[np.random.default_rng(seed).permutation(n_blocks)[:n_test]] = True
    block_id = (np.arange(ny)[:, None] // block) * nbx + np.arange(nx)[None, :] // block
    return test_blocks[block_id]


def _pixels(image: xr.DataArray, name: str) -> np.ndarray:
    """(band, y, x) image as a (y, x, band) float64 numpy array (one compute if lazy)."""
    if not isinstance(image, xr.DataArray) or set(image.dims) != {"band", "y", "x"}:
        dims = getattr(image, "dims", type(image).__name__)
        raise ParameterError(f"{name} must be a DataArray with dims (band, y, x), got {dims}")
    return np.asarray(image.transpose("y", "x", "band").values, dtype="float64")


@dataclass(frozen=True)
class LandcoverCheck:
    """Settings of the land-cover check: which date, and how :func:`landcover_check` trains
    and scores its forest.

    ``evaluate(..., landcover=True)`` means ``LandcoverCheck()``; ``landcover=False`` skips it.

    Attributes
    ----------
    date
        The date of the check (an evaluated date); None: the cloudiest evaluated date of a
        cube with ``truth``, the clearest otherwise. Only :func:`evaluate
        <cloudfill.evaluation.evaluate.evaluate>` reads it.
    block
        Side (pixels) of the blocks of the spatial train/test split.
    seed
        Seed of the split, the training subsample and the forest.
    n_estimators
        Trees in the forest.
    ignore_label
        A label meaning "no data" (e.g. 0): its pixels are neither trained on nor scored.
        None uses every label.
    test_fraction
        Share of blocks used for testing.
    max_train_pixels
        Train on at most this many pixels, drawn at random (None: all), to bound the time
        on a 1200 x 1200 scene.
    n_jobs
        Passed to the forest (None: one core).

    Examples
    --------
    >>> LandcoverCheck(date="2020-05-01", n_estimators=10).date
    Timestamp('2020-05-01 00:00:00')
    """

    date: pd.Timestamp | None = None
    block: int = 32
    seed: int = 0
    n_estimators: int = 100
    ignore_label: int | None = None
    test_fraction: float = 0.5
    max_train_pixels: int | None = 200_000
    n_jobs: int | None = None

    def __post_init__(self) -> None:
        # Accept any date-like (a string, numpy datetime64) and compare as a Timestamp.
        if self.date is not None:
            object.__setattr__(self, "date", pd.Timestamp(self.date))
        # Checked when the settings are made, before any evaluation work.
        if self.n_estimators < 1:
            raise ParameterError(f"n_estimators must be positive, got {self.n_estimators}")


def landcover_check(
    real: xr.DataArray,
    synth: xr.DataArray,
    lulc: xr.DataArray,
    check: LandcoverCheck = LandcoverCheck(),
) -> dict[str, Any]:
    """Land-cover accuracy of a random forest on the real and on the synthesized image.

    The forest (scikit-learn ``RandomForestClassifier``, ``random_state=check.seed``) is trained on
    the band values of the real image's training pixels with their ``lulc`` labels, then
    predicts the test pixels of both images. Test pixels are those of the test blocks of
    :func:`block_split` that are finite in both images, so both scores use the same pixels.

    Parameters
    ----------
    real
        The real, clear S2 image (band, y, x).
    synth
        The synthesized image of the same date and grid (band, y, x).
    lulc
        Integer land-cover classes (y, x) on the same grid.
    check
        The split, the forest and its training sample (:class:`LandcoverCheck`).

    Returns
    -------
    dict
        ``overall_accuracy_real``, ``overall_accuracy_synth`` (floats in 0..1), ``f1`` (a
        DataFrame indexed by ``class`` with columns ``real``, ``synth`` and ``support``, the
        number of test pixels of the class), ``n_train`` and ``n_test``.

    Raises
    ------
    ParameterError
        If the images or labels do not share a grid, or a split holds no usable pixel.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> real = ds.truth.isel(time=-1)
    >>> result = landcover_check(real, real, ds.lulc, LandcoverCheck(block=16, n_estimators=10))
    >>> result["overall_accuracy_real"] == result["overall_accuracy_synth"]
    True
    """
    seed, ignore_label = check.seed, check.ignore_label
    real_px, synth_px = _pixels(real, "real"), _pixels(synth, "synth")
    if real_px.shape != synth_px.shape:
        raise ParameterError(f"real has shape {real_px.shape} but synth has {synth_px.shape}")
    if not isinstance(lulc, xr.DataArray) or set(lulc.dims) != {"y", "x"}:
        raise ParameterError("lulc must be a DataArray with dims (y, x)")
    try:
        xr.align(real, synth, lulc, join="exact")
    except ValueError as exc:
        raise ParameterError(f"real, synth and lulc are not on one grid: {exc}") from exc
    labels = np.asarray(lulc.transpose("y", "x").values)
    if labels.shape != real_px.shape[:2]:
        raise ParameterError(f"lulc has shape {labels.shape}, images have {real_px.shape[:2]}")

    test = block_split(
        labels.shape, block=check.block, test_fraction=check.test_fraction, seed=seed
    )
    labelled = labels != ignore_label if ignore_label is not None else np.ones_like(test)
    real_ok = np.isfinite(real_px).all(axis=-1) & labelled
    train_idx = np.flatnonzero(~test & real_ok)
    test_idx = np.flatnonzero(test & real_ok & np.isfinite(synth_px).all(axis=-1))
    if train_idx.size == 0 or test_idx.size == 0:
        raise ParameterError(
            f"no usable {'training' if train_idx.size == 0 else 'test'} pixels "
            "(finite in the images and not ignore_label); try another block or seed"
        )
    rng = np.random.default_rng(seed)
    cap = check.max_train_pixels
    if cap is not None and train_idx.size > cap:
        train_idx = np.sort(rng.choice(train_idx, cap, replace=False))

    flat_labels = labels.reshape(-1)
    n_bands = real_px.shape[-1]
    forest = RandomForestClassifier(
        n_estimators=check.n_estimators, random_state=seed, n_jobs=check.n_jobs
    )
    forest.fit(real_px.reshape(-1, n_bands)[train_idx], flat_labels[train_idx])

    truth = flat_labels[test_idx]
    pred_real = forest.predict(real_px.reshape(-1, n_bands)[test_idx])
    pred_synth = forest.predict(synth_px.reshape(-1, n_bands)[test_idx])
    classes = np.unique(np.concatenate([truth, flat_labels[train_idx]]))
    f1 = pd.DataFrame(
        {
            "real": f1_score(truth, pred_real, labels=classes, average=None, zero_division=0),
            "synth": f1_score(truth, pred_synth, labels=classes, average=None, zero_division=0),
            "support": [int((truth == c).sum()) for c in classes],
        },
        index=pd.Index(classes, name="class"),
    )
    return {
        "overall_accuracy_real": float(accuracy_score(truth, pred_real)),
        "overall_accuracy_synth": float(accuracy_score(truth, pred_synth)),
        "f1": f1,
        "n_train": int(train_idx.size),
        "n_test": int(test_idx.size),
    }
