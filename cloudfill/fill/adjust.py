"""Same-date adjustment: a fill made to agree with the clear pixels of its own date.

A synthesized (or interpolated) image is built from other dates, so it misses what changed
scene-wide or regionally on the target date and no input shows: the sun's angle on the
slopes, the snow line, a haze of green-up. The clear pixels of the same date show it. The
adjustment adds to the fill the residual ``real - fill`` of those clear pixels, smoothed
by a Gaussian of ``sigma`` pixels (normalised convolution: a weighted mean of the nearby
residuals)::

    fill + G(residual * clear) / (G(clear) + ADJUST_FLOOR)

``ADJUST_FLOOR`` damps the correction where clear pixels are scarce (deep inside a large
cloud it fades to 0), so a few distant residuals are never extrapolated far. A date with no
clear pixel is left as it is. The approach is that of the residual step of gap-filling
methods such as NSPI (Chen et al., 2011); sigma and the floor were chosen on the default
model's training cube (benchmarks/RESULTS.md, "Blend reference and same-date adjustment").

The Gaussian runs block by block with a halo of its radius (:func:`dask.array.map_overlap`),
so the result is the same whatever the chunking, and on CuPy blocks with
``cupyx.scipy.ndimage``.

A sigma that helps one date can hurt another (on real series the residual of the clear
pixels also carries thin cloud, shadow and haze the mask missed). ``adjust="auto"``
(:func:`choose_sigma`) therefore decides per date from the date's own clear pixels: some of
them are held out, shaped like the date's real gaps (its own unusable mask, shifted), each
candidate in :data:`AUTO_SIGMAS` (and off) predicts them from the rest, and a sigma is kept
only if it beats off on both the held-out MAE and RMSE by :data:`AUTO_MARGIN`; otherwise
the date is left unadjusted. The choice reads one window of the date (:data:`AUTO_WINDOW`
px a side, the most mixed clear/cloudy one) lying inside one chunk of the fill (or of the
fewest neighbouring chunks, where chunks are smaller than the window), so it computes one
chunk of the fill's graph whatever the scene's size, and needs no halo (the window is
adjusted on its own). A synthesized fill's chunk is a whole inference block (at least four
model tiles a side), so on a scene of one block the choice synthesizes the whole date.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import dask
import dask.array as da
import numpy as np
import xarray as xr

from cloudfill._backend import map_with_halo, namespace, ndimage, to_numpy
from cloudfill.errors import ParameterError

__all__ = [
    "ADJUST_FLOOR",
    "ADJUST_SIGMA_ATTRS",
    "AUTO",
    "AUTO_MARGIN",
    "AUTO_MIN_HOLDOUT",
    "AUTO_SEED",
    "AUTO_SHIFTS",
    "AUTO_SIGMAS",
    "AUTO_WINDOW",
    "DEFAULT_ADJUST",
    "DEFAULT_ADJUST_SIGMA",
    "Adjust",
    "AdjustChoice",
    "adjust_to_date",
    "check_adjust",
    "check_sigma",
    "choose_sigma",
    "gaussian_smooth",
    "holdout_mask",
    "resolve_sigma",
    "sample_window",
]

DEFAULT_ADJUST_SIGMA = 12.0
"""Gaussian sigma (pixels) of the residual smoothing; 120 m at Sentinel-2's 10 m."""

ADJUST_FLOOR = 0.0025
"""Added to the smoothed clear-pixel weight: the correction is halved where the clear pixels
within reach weigh this much (about 3 sigma inside a large cloud)."""

AUTO = "auto"
"""``adjust=AUTO``: each date's sigma chosen from its own clear pixels (:func:`choose_sigma`)."""

Adjust = float | Literal["auto"]
"""The ``adjust`` setting: a sigma in pixels (0 = off) or :data:`AUTO`."""

DEFAULT_ADJUST: Adjust = AUTO
"""What ``fill_series`` does by default: a sigma per date, or none where none helps."""

AUTO_SIGMAS = (6.0, 12.0, 24.0)
"""The sigmas (pixels) ``adjust="auto"`` tries besides off: half, once and twice the
simulator-tuned :data:`DEFAULT_ADJUST_SIGMA`."""

AUTO_MARGIN = 0.02
"""A sigma must cut both the held-out MAE and RMSE of off by this fraction to be used: a
near-tie leaves the date unadjusted."""

AUTO_WINDOW = 256
"""Side in pixels of the window the choice reads (the whole date when it is smaller)."""

AUTO_MIN_HOLDOUT = 64
"""Fewer held-out clear pixels than this: too few to judge, the date is left unadjusted."""

AUTO_SHIFTS = 4
"""How many shifted copies of a date's gaps are held out, one after the other."""

AUTO_SEED = 0
"""Seed of the held-out pixels' shifts: the same cube gives the same choice."""

ADJUST_SIGMA_ATTRS = {
    "long_name": "sigma of the same-date adjustment applied to the date's fill",
    "units": "pixel",
    "comment": "0 = not adjusted; with adjust='auto' chosen per date on held-out clear pixels",
}
"""Attributes of the per-date ``adjust_sigma`` provenance of ``fill_series``."""

_TRUNCATE = 4.0  # scipy's default: the kernel reaches int(4 * sigma + 0.5) pixels


def _smooth_block(block: Any, sigma: float) -> Any:
    """Gaussian of every 2-D image of a (..., y, x) block, 'nearest' at the edges."""
    sigmas = (0,) * (block.ndim - 2) + (sigma, sigma)
    return ndimage(block).gaussian_filter(block, sigmas, mode="nearest", truncate=_TRUNCATE)


def gaussian_smooth(array: xr.DataArray, sigma: float) -> xr.DataArray:
    """Gaussian smoothing over ``y`` and ``x`` (sigma in pixels), the same for any chunking.

    Examples
    --------
    >>> a = xr.DataArray(np.eye(1, 9, 4, dtype="float32"), dims=("y", "x"))
    >>> round(float(gaussian_smooth(a, 1.0).sum()), 6)  # the kernel is normalised
    1.0
    """
    if array.dims[-2:] != ("y", "x"):
        raise ParameterError(f"gaussian_smooth needs (..., y, x) dims, got {array.dims}")
    radius = int(_TRUNCATE * sigma + 0.5)
    return map_with_halo(array, _smooth_block, radius, array.dtype, sigma=sigma)


def check_sigma(sigma: float) -> None:
    """Raise :class:`~cloudfill.errors.ParameterError` unless ``sigma`` is a finite number
    of pixels >= 0 (0: no adjustment).

    >>> check_sigma(12.0)
    """
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ParameterError(f"adjust: sigma must be >= 0 pixels, got {sigma}")


def check_adjust(adjust: Adjust) -> None:
    """Raise :class:`~cloudfill.errors.ParameterError` unless ``adjust`` is :data:`AUTO` or
    a sigma accepted by :func:`check_sigma`.

    >>> check_adjust("auto"); check_adjust(0)
    >>> check_adjust("on")
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: adjust: 'auto' or a sigma >= 0 pixels, got 'on'
    """
    if isinstance(adjust, str):
        if adjust != AUTO:
            raise ParameterError(f"adjust: 'auto' or a sigma >= 0 pixels, got {adjust!r}")
        return
    check_sigma(adjust)


def adjust_to_date(
    fill: xr.DataArray,
    real: xr.DataArray,
    clear: xr.DataArray,
    sigma: float = DEFAULT_ADJUST_SIGMA,
    *,
    floor: float = ADJUST_FLOOR,
) -> xr.DataArray:
    """``fill`` (band, y, x) plus the smoothed residual of the date's ``clear`` pixels.

    Parameters
    ----------
    fill
        The fill of the whole date (synthesized or interpolated), NaN where there is none.
    real
        The date's observation (band, y, x).
    clear
        (y, x) bool, True where ``real`` is usable. Pixels where ``real`` or ``fill`` is
        NaN in any band do not contribute.
    sigma
        Gaussian sigma in pixels; 0 returns ``fill`` unchanged.
    floor
        Damping where clear pixels are scarce (:data:`ADJUST_FLOOR`).

    Returns
    -------
    xarray.DataArray
        Like ``fill`` (coords and attrs kept), lazily where the inputs are dask-backed.

    Examples
    --------
    >>> real = xr.DataArray(np.full((1, 5, 5), 0.3, "float32"), dims=("band", "y", "x"))
    >>> fill = real - 0.1  # the fill is 0.1 too dark everywhere
    >>> clear = xr.DataArray(np.arange(25).reshape(5, 5) % 2 == 0, dims=("y", "x"))
    >>> out = adjust_to_date(fill, real, clear, sigma=2.0)
    >>> round(float(out[0, 1, 1]), 3)  # cloudy pixel next to clear ones: corrected
    0.3
    """
    check_sigma(sigma)
    if not floor > 0:
        raise ParameterError(f"adjust: floor must be positive, got {floor}")
    if sigma == 0:
        return fill
    zero = np.float32(0)
    usable = clear & real.notnull().all("band") & fill.notnull().all("band")
    residual = (real - fill).where(usable, zero).astype("float32")
    weight = usable.astype("float32")
    correction = gaussian_smooth(residual.transpose(..., "y", "x"), sigma) / (
        gaussian_smooth(weight.transpose(..., "y", "x"), sigma) + np.float32(floor)
    )
    out = (fill + correction.astype("float32")).astype(fill.dtype)
    return out.transpose(*fill.dims).assign_attrs(fill.attrs)


@dataclass(frozen=True)
class AdjustChoice:
    """What :func:`choose_sigma` decided for one date, and on what.

    Attributes
    ----------
    sigma
        The sigma to apply, in pixels; 0 = leave the fill as it is.
    scores
        Per candidate sigma (0 = off): held-out (MAE, RMSE) of the adjusted fill.
    n_holdout
        Held-out clear pixels the scores rest on.
    """

    sigma: float
    scores: dict[float, tuple[float, float]] = field(default_factory=dict)
    n_holdout: int = 0


def sample_window(
    unusable: xr.DataArray,
    size: int = AUTO_WINDOW,
    chunks: Mapping[str, Sequence[int]] | None = None,
    pick: Literal["mixed", "clearest"] = "mixed",
) -> dict[str, slice]:
    """The ``size`` x ``size`` tile of ``unusable`` (y, x) with the most even mix of clear
    and unusable pixels (``{}``: the whole image, when it is no larger than that); with
    ``pick="clearest"`` the tile with the smallest sum of ``unusable`` (which may then be a
    count per pixel, e.g. of unusable dates).

    Tiles lie inside one chunk of the grid ``chunks`` (chunk sizes along ``y`` and ``x``,
    e.g. those of the fill a window is computed from), so reading a tile computes one chunk,
    or the fewest neighbouring ones where chunks are smaller than a tile: along each axis the
    chunks are taken in runs of at least ``size`` pixels and each run is cut into tiles
    from its start. Without ``chunks`` (or on chunks that are multiples of ``size``) the
    tiles are those of one grid from the top-left corner. One small reduction of the mask (a
    count per tile); the first tile wins a tie.

    >>> m = xr.DataArray(np.zeros((8, 8), bool), dims=("y", "x"))
    >>> m[4:, 4:6] = True
    >>> sample_window(m, 4)
    {'y': slice(4, 8, None), 'x': slice(4, 8, None)}
    >>> m = xr.DataArray(np.zeros((10, 10), bool), dims=("y", "x"))
    >>> sample_window(m, 4, chunks={"y": (5, 5), "x": (5, 5)})  # inside one 5 x 5 chunk
    {'y': slice(0, 4, None), 'x': slice(0, 4, None)}
    """
    ny, nx = unusable.sizes["y"], unusable.sizes["x"]
    if ny <= size and nx <= size:
        return {}
    chunks = chunks or {}
    sides = {"y": min(size, ny), "x": min(size, nx)}
    runs = {d: _runs(unusable.sizes[d], chunks.get(d, ()), sides[d]) for d in ("y", "x")}
    bad = to_numpy(_tile_counts(unusable.transpose("y", "x").data, runs, sides))
    if pick == "clearest":
        best = int(np.argmin(bad))
    else:
        best = int(np.argmax(np.minimum(bad, sides["y"] * sides["x"] - bad)))
    iy, ix = (int(i) for i in np.unravel_index(best, bad.shape))
    y0 = _tile_starts(runs["y"], sides["y"])[iy]
    x0 = _tile_starts(runs["x"], sides["x"])[ix]
    return {"y": slice(y0, y0 + sides["y"]), "x": slice(x0, x0 + sides["x"])}


def _tile_starts(runs: Sequence[tuple[int, int]], side: int) -> list[int]:
    """Where the tiles of ``side`` pixels start along an axis: from the start of each run."""
    return [start + k * side for start, stop in runs for k in range((stop - start) // side)]


def _runs(n: int, chunks: Sequence[int], side: int) -> list[tuple[int, int]]:
    """(start, stop) of runs of consecutive ``chunks`` along an axis of ``n`` pixels, each
    at least ``side`` long (a short remainder joins the run before it; no chunks: one run)."""
    if chunks and sum(chunks) != n:
        raise ParameterError(f"sample_window: chunks {tuple(chunks)} do not add up to {n} px")
    runs: list[tuple[int, int]] = []
    start = 0
    for edge in (*(int(e) for e in np.cumsum(chunks)[:-1]), n):
        if edge - start >= side:
            runs.append((start, edge))
            start = edge
    if start < n:
        runs[-1] = (runs[-1][0], n)
    return runs


def _tile_counts(
    mask: Any, runs: Mapping[str, list[tuple[int, int]]], sides: Mapping[str, int]
) -> Any:
    """Unusable pixels per tile (tiles of ``sides`` from the start of each run), lazily on a
    dask ``mask`` (one block per pair of runs), else in memory."""
    sy, sx = sides["y"], sides["x"]

    def count(block: Any) -> Any:
        ky, kx = block.shape[0] // sy, block.shape[1] // sx
        tiles = block[: ky * sy, : kx * sx].reshape(ky, sy, kx, sx)
        return tiles.sum(axis=(1, 3), dtype="int64")

    spans = {d: tuple(e - s for s, e in runs[d]) for d in ("y", "x")}
    if isinstance(mask, da.Array):
        blocks = mask.rechunk((spans["y"], spans["x"]))
        out_chunks = (
            tuple(n // sy for n in spans["y"]),
            tuple(n // sx for n in spans["x"]),
        )
        return blocks.map_blocks(count, dtype="int64", chunks=out_chunks).compute()
    xp = namespace(mask)
    rows = [
        xp.concatenate([count(mask[ys:ye, xs:xe]) for xs, xe in runs["x"]], axis=1)
        for ys, ye in runs["y"]
    ]
    return xp.concatenate(rows, axis=0)


def _chunk_grid(*arrays: xr.DataArray) -> dict[str, tuple[int, ...]]:
    """Chunk sizes along ``y`` and ``x`` whose borders are those of every dask-backed array
    (a chunk of this grid lies inside one chunk of each); none where all are in memory."""
    grid = {}
    for dim in ("y", "x"):
        borders: set[int] = set()
        for array in arrays:
            if array.chunks and dim in array.dims:
                borders.update(np.cumsum(array.chunksizes[dim]).tolist())
        if len(borders) > 1:
            grid[dim] = tuple(int(n) for n in np.diff(sorted({0, *borders})))
    return grid


def holdout_mask(unusable: Any, seed: int = AUTO_SEED, shift: int = 0) -> Any:
    """Clear pixels to hold out, shaped like the date's real gaps: its own ``unusable``
    (y, x) bool array (NumPy or CuPy), shifted by a seeded offset of a quarter to three
    quarters of each side (wrapping around), where it falls on clear pixels.

    ``shift`` numbers the offsets drawn from one ``seed``.

    >>> gaps = np.zeros((8, 8), bool); gaps[:2, :2] = True
    >>> int(holdout_mask(gaps).sum())  # the 2 x 2 gap, moved onto clear pixels
    4
    """
    rng = np.random.default_rng([seed, shift])
    ny, nx = unusable.shape
    dy = int(rng.integers(ny // 4, max(3 * ny // 4, ny // 4 + 1)))
    dx = int(rng.integers(nx // 4, max(3 * nx // 4, nx // 4 + 1)))
    xp = namespace(unusable)
    return xp.roll(unusable, (dy, dx), axis=(0, 1)) & ~unusable


def _held_out_errors(
    fill: xr.DataArray,
    real: xr.DataArray,
    usable: xr.DataArray,
    hold: xr.DataArray,
    sigma: float,
    floor: float,
) -> tuple[float, float, int]:
    """Sum of |error|, sum of error^2 and count, over the held-out (band, pixel) values of
    ``fill`` adjusted with ``sigma`` from the usable pixels not held out."""
    pred = adjust_to_date(fill, real, usable & ~hold, sigma, floor=floor)
    err = (pred - real).where(hold).data
    xp = namespace(err)
    err = err[xp.isfinite(err)].astype("float64")
    return float(xp.abs(err).sum()), float((err * err).sum()), int(err.size)


def choose_sigma(
    fill: xr.DataArray,
    real: xr.DataArray,
    clear: xr.DataArray,
    candidates: Sequence[float] = AUTO_SIGMAS,
    *,
    margin: float = AUTO_MARGIN,
    window: int = AUTO_WINDOW,
    seed: int = AUTO_SEED,
    shifts: int = AUTO_SHIFTS,
    floor: float = ADJUST_FLOOR,
) -> AdjustChoice:
    """The sigma of the same-date adjustment for one date, from its own clear pixels.

    In one window of the date (:func:`sample_window`), clear pixels shaped like the date's
    gaps are held out (:func:`holdout_mask`, ``shifts`` seeded offsets pooled); off and
    each candidate sigma predict them from the other clear pixels. The candidate with the
    lowest held-out MAE is chosen if, pooled over the held-out sets, it beats off by
    ``margin`` (a fraction) on both MAE and RMSE (so on PSNR too), and on no single set has
    a higher MAE than off; otherwise 0 (off), which is also the answer when fewer than
    :data:`AUTO_MIN_HOLDOUT` pixels can be held out.

    Parameters
    ----------
    fill, real, clear
        As in :func:`adjust_to_date` (lazy or in memory, NumPy or CuPy); only the window
        is computed, and it lies inside one chunk of each (:func:`sample_window`).
    candidates
        Sigmas in pixels to try besides off.
    margin
        The least relative gain over off, on both MAE and RMSE.
    window
        The window's side in pixels.
    seed
        Seed of the held-out pixels: the same inputs give the same choice.
    shifts
        How many shifted copies of the gaps are held out (each scored on its own).
    floor
        As in :func:`adjust_to_date`.

    Returns
    -------
    AdjustChoice
        The sigma, the held-out scores and how many pixels they rest on.

    Examples
    --------
    >>> yy, xx = np.mgrid[0:64, 0:64]
    >>> real = xr.DataArray(np.broadcast_to(0.3 + 0.001 * xx, (1, 64, 64)).astype("float32"),
    ...                     dims=("band", "y", "x"))
    >>> clear = xr.DataArray((yy - 32) ** 2 + (xx - 32) ** 2 > 100, dims=("y", "x"))
    >>> choose_sigma(real - 0.05, real, clear).sigma  # a fill 0.05 too dark everywhere
    24.0
    >>> choose_sigma(real, real, clear).sigma  # a perfect fill: left alone
    0.0
    """
    for sigma in candidates:
        check_sigma(sigma)
    cut = sample_window(~clear, window, _chunk_grid(fill, real, clear))
    parts = xr.Dataset({"fill": fill, "real": real, "clear": clear}).isel(cut)
    (parts,) = dask.compute(parts)
    parts = parts.drop_vars(list(parts.coords))  # no index to align: the scoring is per pixel
    fill_w, real_w = parts["fill"].transpose(..., "y", "x"), parts["real"].transpose(..., "y", "x")
    usable = parts["clear"] & real_w.notnull().all("band") & fill_w.notnull().all("band")
    sigmas = (0.0, *candidates)
    # errors[k][sigma]: (sum |e|, sum e^2, count) on the k-th held-out set
    errors: list[dict[float, tuple[float, float, int]]] = []
    for k in range(shifts):
        hold = usable.copy(data=holdout_mask(~usable.data, seed, k))
        errors.append({s: _held_out_errors(fill_w, real_w, usable, hold, s, floor) for s in sigmas})
    n_holdout = sum(e[0.0][2] for e in errors) // max(real_w.sizes["band"], 1)
    if n_holdout < AUTO_MIN_HOLDOUT:
        return AdjustChoice(0.0, {}, n_holdout)
    scores = {s: _pooled([e[s] for e in errors]) for s in sigmas}
    off_mae, off_rmse = scores[0.0]
    best = min(candidates, key=lambda s: scores[s][0])
    mae, rmse = scores[best]
    # A real gain: by the margin over all held-out sets, and no set with a higher MAE. Not
    # RMSE per set: a date with small gaps holds out a few hundred pixels per set, and one
    # set's RMSE then turns on a handful of values (the demo's 2 %-cloud date lost a sigma
    # that cut its MAE by half; RESULTS, "auto on small gaps").
    better = mae < (1 - margin) * off_mae and rmse < (1 - margin) * off_rmse
    steady = all(_pooled([e[best]])[0] <= _pooled([e[0.0]])[0] for e in errors if e[0.0][2])
    return AdjustChoice(float(best) if better and steady else 0.0, scores, n_holdout)


def _pooled(parts: Sequence[tuple[float, float, int]]) -> tuple[float, float]:
    """(MAE, RMSE) from (sum |e|, sum e^2, count) parts; NaN for no values."""
    total, squares, n = (sum(p[i] for p in parts) for i in range(3))
    if not n:
        return math.nan, math.nan
    return total / n, math.sqrt(squares / n)


def resolve_sigma(
    adjust: Adjust, fill: xr.DataArray, real: xr.DataArray, clear: xr.DataArray
) -> float:
    """The sigma ``adjust`` means for this date: itself, or with :data:`AUTO` the choice of
    :func:`choose_sigma`.

    >>> one = xr.DataArray(np.ones((1, 4, 4), "float32"), dims=("band", "y", "x"))
    >>> resolve_sigma(8, one, one, one[0] > 0)
    8.0
    """
    check_adjust(adjust)
    if adjust == AUTO:
        return choose_sigma(fill, real, clear).sigma
    return float(adjust)
