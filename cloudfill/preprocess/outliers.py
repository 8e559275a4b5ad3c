"""Histogram-based outlier clipping with thresholds computed once over the whole scene.

Each band (``s2``), polarisation (``s1``) and the DEM gets a lower and an upper threshold, the
``lower`` and ``upper`` percentiles of its values over *all* dates and pixels of the cube, and
is clipped to them. Thresholds never come from a single chunk or tile, so clipping leaves no
seams, and they are identical for any chunking (histogram counts are integer sums).

How the percentiles are found (two reads of the data, both dask reductions over all chunks):

1. the finite minimum and maximum of each band;
2. a histogram of :data:`N_BINS` equal bins over ``[min, max]``; the threshold is the centre of
   the bin that holds the percentile's order statistic (``np.percentile``'s linear rule: the
   two order statistics around ``q = p / 100 * (n - 1)`` are located and interpolated).

The threshold is therefore within one bin width, ``(max - min) / N_BINS``, of
``np.nanpercentile`` (half a bin plus rounding); percentiles 0 and 100 are the exact minimum
and maximum. Linear-unit S1 is histogrammed in dB (``10 log10``; values <= 0 are left out of
the statistics), where its heavy tail does not squeeze the bulk of the values into a few bins.

S2 percentiles leave out unusable pixels (:func:`cloudfill.cube.mask.cloud_mask`: clouds are
bright and would raise the upper threshold) when the cube has ``cloud`` or ``scl``; all pixels
are clipped. NaN and infinite values are left out of the statistics; NaN stays NaN, infinities
are clipped to the thresholds. A band with no finite value is left as it is, with a warning,
and its threshold is recorded as ``None``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr

from cloudfill._backend import namespace, to_numpy
from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import BandError, MissingVariableError, ParameterError

__all__ = [
    "BAND_DIMS",
    "DEFAULT_PERCENTILES",
    "N_BINS",
    "ClipRanges",
    "filter_outliers",
    "outlier_thresholds",
]

N_BINS = 16384
"""Histogram bins per band: e.g. 0.6e-4 reflectance over a 0..1 S2 band, 0.004 dB over a
60 dB S1 range, 0.5 m over an 8000 m DEM."""

DEFAULT_PERCENTILES: dict[str, tuple[float, float]] = {
    "s1": (0.5, 99.5),
    "s2": (0.1, 99.9),
    "dem": (0.1, 99.9),
}
"""Default (lower, upper) percentiles per variable. S1 keeps 99 % of the values: speckle and
corner reflectors make its tails long even after despeckling. S2 and the DEM keep 99.8 %:
their tails are mostly real (snow, glint, summits) but carry sensor spikes and voids."""

BAND_DIMS: dict[str, str | None] = {"s2": "band", "truth": "band", "s1": "pol", "dem": None}
"""The per-band dim of each variable that can be clipped (None: one threshold pair)."""

ClipRanges = dict[str, dict[str, tuple[float, float] | None]]
"""``{variable: {band label: (low, high) or None}}``; a variable without a band dim (``dem``)
uses its own name as the single label. JSON-safe, in the variable's band order."""


def _labels(da_: xr.DataArray, name: str) -> list[str]:
    dim = BAND_DIMS.get(name)
    if dim is None:
        return [name]
    if dim not in da_.dims:
        raise BandError(f"variable {name!r} has no {dim!r} dim (dims {da_.dims})")
    return [str(v) for v in da_[dim].values]


def _band_arrays(var: xr.DataArray, name: str) -> list[Any]:
    dim = BAND_DIMS.get(name)
    if dim is None:
        return [var.data]
    return [var.isel({dim: i}).data for i in range(var.sizes[dim])]


def _like(values: np.ndarray, data: Any) -> Any:
    """``values`` on the device of ``data`` (CuPy chunks refuse NumPy operands)."""
    return namespace(data).asarray(values)


def _check_percentiles(name: str, lower: float, upper: float) -> None:
    if not (0.0 <= lower < upper <= 100.0):
        raise ParameterError(
            f"variable {name!r}: need 0 <= lower < upper <= 100 percentiles, "
            f"got lower={lower}, upper={upper}"
        )


def _percentiles_for(
    names: Iterable[str],
    lower: float | Mapping[str, float] | None,
    upper: float | Mapping[str, float] | None,
) -> dict[str, tuple[float, float]]:
    out = {}
    for name in names:
        default = DEFAULT_PERCENTILES.get(name, (0.1, 99.9))
        lo = lower.get(name, default[0]) if isinstance(lower, Mapping) else lower
        hi = upper.get(name, default[1]) if isinstance(upper, Mapping) else upper
        lo = default[0] if lo is None else float(lo)
        hi = default[1] if hi is None else float(hi)
        _check_percentiles(name, lo, hi)
        out[name] = (lo, hi)
    return out


def _select_variables(ds: xr.Dataset, variables: Iterable[str] | None) -> list[str]:
    if variables is None:
        names = [n for n in ("s1", "s2", "dem") if n in ds.data_vars]
        if not names:
            raise MissingVariableError(
                f"nothing to filter: the cube has none of 's1', 's2', 'dem' "
                f"(it has {sorted(str(v) for v in ds.data_vars)})"
            )
        return names
    names = [variables] if isinstance(variables, str) else list(variables)
    for name in names:
        if name not in ds.data_vars:
            raise MissingVariableError(f"cannot filter variable {name!r}: not in the cube")
        if name not in BAND_DIMS:
            raise ParameterError(f"variable {name!r} cannot be clipped (one of {list(BAND_DIMS)})")
    return names


def _statistics_source(ds: xr.Dataset, name: str) -> tuple[xr.DataArray, bool]:
    """The values whose percentiles are wanted, and whether they are S1 linear -> dB."""
    var = ds[name]
    if name in ("s2", "truth") and ("cloud" in ds.data_vars or "scl" in ds.data_vars):
        var = var.where(~cloud_mask(ds))
    in_db = name == "s1" and var.attrs.get("units") == "linear"
    if in_db:
        var = 10 * np.log10(var.where(var > 0))
    return var, in_db


def _block_histogram(block: Any, bins: int, low: float, high: float) -> np.ndarray:
    # Integer ``bins`` with a range take numpy's fast equal-width path (``da.histogram`` passes
    # bin edges, which is slower and which CuPy does not accept from NumPy).
    counts = to_numpy(namespace(block).histogram(block, bins, range=(low, high))[0])
    return counts.astype(np.int64).reshape((1,) * block.ndim + (bins,))


def _histogram(array: da.Array, bins: int, low: float, high: float) -> da.Array:
    """Counts of ``array`` in ``bins`` equal bins over ``[low, high]`` (NaN, inf left out)."""
    per_block = array.map_blocks(
        _block_histogram,
        bins,
        low,
        high,
        new_axis=array.ndim,
        chunks=(*((1,) * len(c) for c in array.chunks), (bins,)),
        dtype=np.int64,
        meta=np.empty((0,) * (array.ndim + 1), dtype=np.int64),
    )
    return per_block.sum(axis=tuple(range(array.ndim)))


def _order_statistic_bins(counts: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(counts)
    return np.searchsorted(cumulative, ranks + 1, side="left")


def _threshold(counts: np.ndarray, low: float, high: float, percentile: float) -> float:
    if percentile <= 0.0:
        return low
    if percentile >= 100.0:
        return high
    total = int(counts.sum())
    q = percentile / 100.0 * (total - 1)
    ranks = np.array([math.floor(q), math.ceil(q)])
    bins = _order_statistic_bins(counts, ranks)
    width = (high - low) / counts.size
    centres = low + (bins + 0.5) * width
    frac = q - ranks[0]
    value = (1.0 - frac) * centres[0] + frac * centres[1]
    return float(min(max(value, low), high))


def outlier_thresholds(
    ds: xr.Dataset,
    lower: float | Mapping[str, float] | None = None,
    upper: float | Mapping[str, float] | None = None,
    variables: Iterable[str] | None = None,
    *,
    bins: int = N_BINS,
) -> ClipRanges:
    """Scene-wide clipping thresholds per variable and band (computes; reads the data twice).

    Parameters
    ----------
    ds
        A contract cube, NumPy- or dask-backed.
    lower, upper
        Percentiles in 0..100, one number for every variable or a ``{variable: percentile}``
        mapping; None (or a variable missing from the mapping) takes
        :data:`DEFAULT_PERCENTILES`.
    variables
        Variables to treat (default: those of ``s1``, ``s2``, ``dem`` present).
    bins
        Histogram bins per band (default :data:`N_BINS`); the threshold is within
        ``(max - min) / bins`` of the exact percentile.

    Returns
    -------
    ClipRanges
        ``{variable: {label: (low, high)}}`` as float32-representable Python floats, or
        ``None`` for a band without finite values.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"dem": (("y", "x"), np.arange(100.0, dtype="float32").reshape(10, 10))})
    >>> outlier_thresholds(ds, lower=0, upper=100)
    {'dem': {'dem': (0.0, 99.0)}}
    """
    if int(bins) < 1:
        raise ParameterError(f"bins must be a positive integer, got {bins}")
    names = _select_variables(ds, variables)
    percentiles = _percentiles_for(names, lower, upper)

    sources = {}
    for name in names:
        var, in_db = _statistics_source(ds, name)
        arrays = [da.asarray(a) for a in _band_arrays(var, name)]
        finite = [da.where(da.isfinite(a), a, np.nan) for a in arrays]
        sources[name] = (_labels(ds[name], name), finite, in_db)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands are handled below
        extremes = dask.compute(
            {
                name: [(da.nanmin(a), da.nanmax(a)) for a in finite]
                for name, (_, finite, _) in sources.items()
            }
        )[0]

    histograms: dict[str, list[Any]] = {}
    for name, (_, finite, _) in sources.items():
        histograms[name] = []
        for array, (low, high) in zip(finite, extremes[name], strict=True):
            low, high = float(to_numpy(low)), float(to_numpy(high))
            if math.isfinite(low) and high > low:
                histograms[name].append(_histogram(array, int(bins), low, high))
            else:
                histograms[name].append(None)
    histograms = dask.compute(histograms)[0]

    ranges: ClipRanges = {}
    for name, (labels, _, in_db) in sources.items():
        p_low, p_high = percentiles[name]
        ranges[name] = {}
        for label, (low, high), counts in zip(
            labels, extremes[name], histograms[name], strict=True
        ):
            low, high = float(to_numpy(low)), float(to_numpy(high))
            if not math.isfinite(low):
                warnings.warn(
                    f"variable {name!r} band {label!r} has no finite value: left unclipped",
                    UserWarning,
                    stacklevel=2,
                )
                ranges[name][label] = None
                continue
            if counts is None:  # constant band
                pair = (low, high)
            else:
                counts = to_numpy(counts)
                pair = (
                    _threshold(counts, low, high, p_low),
                    _threshold(counts, low, high, p_high),
                )
            if in_db:
                pair = tuple(10.0 ** (v / 10.0) for v in pair)
            ranges[name][label] = tuple(float(np.float32(v)) for v in pair)
    return ranges


def _range_arrays(
    var: xr.DataArray, name: str, per_band: Mapping[str, Sequence[float] | None]
) -> tuple[Any, Any]:
    labels = _labels(var, name)
    missing = [label for label in labels if label not in per_band]
    if missing:
        raise BandError(
            f"variable {name!r}: no clip range for {missing[0]!r} (ranges given for "
            f"{list(per_band)})"
        )
    low = np.array(
        [-np.inf if per_band[b] is None else per_band[b][0] for b in labels], dtype=var.dtype
    )
    high = np.array(
        [np.inf if per_band[b] is None else per_band[b][1] for b in labels], dtype=var.dtype
    )
    dim = BAND_DIMS.get(name)
    if dim is None:
        return low[0], high[0]
    coords = {dim: var[dim].values}
    return (
        xr.DataArray(_like(low, var.data), dims=dim, coords=coords),
        xr.DataArray(_like(high, var.data), dims=dim, coords=coords),
    )


def filter_outliers(
    ds: xr.Dataset,
    lower: float | Mapping[str, float] | None = None,
    upper: float | Mapping[str, float] | None = None,
    variables: Iterable[str] | None = None,
    stats: Mapping[str, Mapping[str, Sequence[float] | None]] | Any | None = None,
    *,
    bins: int = N_BINS,
) -> xr.Dataset:
    """Clip each variable and band to scene-wide percentile thresholds.

    The thresholds are computed once over the whole cube (see the module docstring: two
    reductions over all chunks, within one histogram bin of ``np.nanpercentile``), unless
    ``stats`` gives them (e.g. the training scene's, from a model card). The clipping itself is
    lazy. Each clipped variable records its thresholds in ``attrs["clip_range"]`` (a
    ``[low, high]`` list per band, in band order; ``None`` for a band left unclipped) and the
    percentiles in ``attrs["clip_percentiles"]``.

    Parameters
    ----------
    ds
        A contract cube.
    lower, upper
        Percentiles (0..100), a number for all variables or ``{variable: percentile}``;
        defaults in :data:`DEFAULT_PERCENTILES` (s1 0.5/99.5, s2 0.1/99.9, dem 0.1/99.9).
    variables
        Variables to clip (default: ``s1``, ``s2``, ``dem`` where present).
    stats
        Thresholds to apply instead of computing them: a :data:`ClipRanges` mapping or a
        :class:`~cloudfill.preprocess.normalise.NormStats`.
    bins
        Histogram bins per band.

    Returns
    -------
    xarray.Dataset
        A new Dataset; variables not clipped are untouched.

    Raises
    ------
    MissingVariableError
        A requested variable is absent (or none of the defaults is present).
    ParameterError
        Percentiles out of order or outside 0..100.
    BandError
        ``stats`` lacks a band of the cube.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> dem = np.arange(100.0, dtype="float32").reshape(10, 10)
    >>> out = filter_outliers(xr.Dataset({"dem": (("y", "x"), dem)}), lower=10, upper=90)
    >>> low, high = out.dem.attrs["clip_range"][0]  # np.percentile: 9.9, 89.1
    >>> round(low, 1), round(high, 1), float(out.dem.max()) == high
    (9.9, 89.1, True)
    """
    if stats is None:
        names = _select_variables(ds, variables)
        ranges: Mapping[str, Mapping[str, Sequence[float] | None]] = outlier_thresholds(
            ds, lower, upper, names, bins=bins
        )
        percentiles: dict[str, tuple[float, float] | None] = dict(
            _percentiles_for(names, lower, upper)
        )
    else:
        ranges = stats.clip_ranges() if hasattr(stats, "clip_ranges") else stats
        wanted = _select_variables(ds, variables) if variables is not None else None
        ranges = {
            name: per_band
            for name, per_band in ranges.items()
            if name in ds.data_vars and (wanted is None or name in wanted)
        }
        percentiles = dict.fromkeys(ranges)

    updates = {}
    for name, per_band in ranges.items():
        var = ds[name]
        low, high = _range_arrays(var, name, per_band)
        clipped = var.clip(low, high).astype(var.dtype, copy=False)
        record = [None if per_band[b] is None else list(per_band[b]) for b in _labels(var, name)]
        clipped.attrs = {**var.attrs, "clip_range": record}
        if percentiles[name] is not None:
            clipped.attrs["clip_percentiles"] = list(percentiles[name])
        clipped.encoding = dict(var.encoding)
        updates[name] = clipped
    return ds.assign(updates)
