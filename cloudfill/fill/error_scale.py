"""``error_scale`` of a filled date: the features the calibration reads, and the scale.

What ranks a filled value's error is what the fill knew when it made it
(:mod:`cloudfill.model.calibration`); :func:`error_features` computes it per value, from the
same inputs for synthesized and interpolated values, and the model card's
:class:`~cloudfill.model.calibration.Calibration` turns it into the Laplace scale ``b``.
One function serves the fill and the fit (:func:`cloudfill.fill.calibrate.calibrate` reads
the features back from ``fill_series(..., error_features=True)``), so the two never differ.

The features (all float32, (band, y, x) or broadcast to it; ``ln`` is the natural log):

- ``raw``: ``ln(raw + 1e-4)``, the confidence head's scale, for synthesized values that
  have one; ``ln(1e-3 + 1e-4)`` for the others;
- ``age_near``, ``age_gap``: ``ln(1 + days)`` to the nearer clear observation of the pixel,
  and between the clear observations on either side (a missing side counts 365 days);
- ``one_side``: 1 where the pixel lacks a clear observation on a side (or on both);
- ``disagreement``: ``ln(|after - before| + 1e-3)``, the two sides' difference
  (``ln(1e-3)`` with one side);
- ``departure``: ``ln(|fill - interpolation| + 1e-3)``, the fill after the adjustment
  against linear interpolation in time;
- ``level``: the linear interpolation's value (reflectance);
- ``cloud_fraction``: the date's;
- ``date_residual``, ``no_clear``: ``ln(median |interpolation - observation| + 1e-3)`` per
  band over the date's clear pixels in one window (:func:`date_residuals`), how well
  interpolation does on this date; ``no_clear`` = 1 (and the residual
  :data:`NO_CLEAR_RESIDUAL`) where the window has too few clear pixels;
- ``adjusted``: 1 where the same-date adjustment was applied (sigma > 0);
- ``synthesized``: 1 for values the model made, 0 for interpolated ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from cloudfill._backend import full_like, namespace, to_numpy
from cloudfill.core.temporal import ClearSides
from cloudfill.fill.adjust import AUTO_WINDOW, sample_window
from cloudfill.model.calibration import Calibration, per_band

__all__ = [
    "MIN_RESIDUAL_PIXELS",
    "NO_CLEAR_RESIDUAL",
    "date_residuals",
    "error_features",
    "fill_error_scale",
    "model_calibration",
    "residuals_if_needed",
]

RAW_NONE = 1e-3
"""The raw scale a value without one counts as (``raw`` feature)."""

MISSING_SIDE_DAYS = 365.0
"""The age a missing side counts as."""

NO_CLEAR_RESIDUAL = 0.01
"""The ``date_residual`` of a date without enough clear pixels (``no_clear`` flags it)."""

MIN_RESIDUAL_PIXELS = 50
"""Fewest clear pixels of the window a ``date_residual`` is measured on."""

_EPS = 1e-3


def model_calibration(model: Any) -> Calibration | None:
    """The calibration in the model's card, or None (no model, or an uncalibrated one)."""
    data = getattr(getattr(model, "card", None), "calibration", None)
    return None if data is None else Calibration.from_dict(data)


def residuals_if_needed(
    ds: xr.Dataset, mask: xr.DataArray, model: Any, *, features: bool = False
) -> pd.DataFrame | None:
    """:func:`date_residuals` of the cube when its fills' error scale reads them (``model``
    calibrated, or the features asked for), else None: what ``fill_series``, a fill job and
    an evaluation compute once for all their dates."""
    if not features and model_calibration(model) is None:
        return None
    return date_residuals(ds, mask)


def date_residuals(ds: xr.Dataset, mask: xr.DataArray, size: int = AUTO_WINDOW) -> pd.DataFrame:
    """Per S2 date and band, the median ``|interpolation - observation|`` over the date's
    clear pixels in one window: how well linear interpolation in time (from the clear
    observations of the other dates, as :func:`~cloudfill.core.temporal.linear_interpolation`,
    the nearest one where a side has none) predicts the date. NaN where the window holds
    fewer than :data:`MIN_RESIDUAL_PIXELS` such pixels.

    The window is the ``size`` x ``size`` tile with the most clear pixel-dates, inside one
    chunk (:func:`~cloudfill.fill.adjust.sample_window`), read once for every date: one
    reduction of the mask and one read of the window's series, whatever the number of dates
    (:func:`cloudfill.fill.job.fill_to_zarr` computes them once per job).

    The interpolation is written here, vectorised over dates (the latest and earliest clear
    date per pixel by a running max/min), rather than calling ``linear_interpolation`` per
    date, which walks every date for each one: on a 256 px window that took 2.0 s against
    0.46 s at 16 dates and 21.6 s against 1.75 s at 60 (same values to 1.5e-8;
    benchmarks/RESULTS.md). ``tests/test_error_scale.py`` checks it against
    ``linear_interpolation``.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
    >>> table = date_residuals(ds, ds.cloudfill.cloud_mask())
    >>> table.shape, bool((table.stack() > 0).all())
    ((6, 4), True)
    """
    s2 = ds["s2"].transpose("time", "band", "y", "x")
    unusable = mask.transpose("time", "y", "x")
    chunks = {d: s2.chunksizes[d] for d in ("y", "x")} if s2.chunks else None
    cut = sample_window(unusable.sum("time"), size, chunks=chunks, pick="clearest")
    values, bad = dask.compute(s2.isel(cut).data, unusable.isel(cut).data)
    values, bad = np.asarray(to_numpy(values), "float64"), np.asarray(to_numpy(bad), bool)
    clear = ~bad & np.isfinite(values).all(axis=1)
    t, n_band = values.shape[0], values.shape[1]
    days = (pd.DatetimeIndex(ds["time"].values) - pd.Timestamp(ds["time"].values[0])).days
    days = np.asarray(days, "float64")
    # Per date and pixel, the index of the latest clear date up to it and the earliest from it.
    index = np.arange(t)[:, None, None]
    last = np.maximum.accumulate(np.where(clear, index, -1), axis=0)
    first = np.minimum.accumulate(np.where(clear, index, t)[::-1], axis=0)[::-1]
    rows = []
    for k in range(t):
        before = last[k - 1] if k else np.full(clear.shape[1:], -1)
        after = first[k + 1] if k + 1 < t else np.full(clear.shape[1:], t)
        has_b, has_a = before >= 0, after < t
        vb = np.take_along_axis(values, np.clip(before, 0, t - 1)[None, None], 0)[0]
        va = np.take_along_axis(values, np.clip(after, 0, t - 1)[None, None], 0)[0]
        db = days[k] - days[np.clip(before, 0, t - 1)]
        dn = days[np.clip(after, 0, t - 1)] - days[k]
        with np.errstate(invalid="ignore", divide="ignore"):
            interp = vb + (va - vb) * (db / (db + dn))
        interp = np.where(has_b & has_a, interp, np.where(has_b, vb, va))
        use = clear[k] & (has_b | has_a)
        diff = np.abs(interp - values[k])[:, use]
        if diff.shape[1] < MIN_RESIDUAL_PIXELS:
            rows.append(np.full(n_band, np.nan))
        else:
            rows.append(np.median(diff, axis=1))
    return pd.DataFrame(
        rows, index=pd.DatetimeIndex(ds["time"].values), columns=[str(b) for b in s2["band"].values]
    )


def _per_band(like: xr.DataArray, values: Sequence[float]) -> xr.DataArray:
    """(band, y, x) shaped and chunked like ``like``, each band its value (chunk type kept)."""
    column = np.asarray(values, "float32")

    def fill(block: Any) -> Any:  # bands last
        xp = namespace(block)
        return xp.broadcast_to(xp.asarray(column), block.shape).astype("float32")

    return per_band(like.transpose("band", "y", "x").astype("float32"), fill)


def error_features(
    *,
    sides: ClearSides,
    interp: xr.DataArray,
    fill: xr.DataArray,
    raw: xr.DataArray | None,
    synthesized: xr.DataArray | None,
    sigma: float,
    cloud_fraction: float,
    residual: Sequence[float],
) -> dict[str, xr.DataArray]:
    """The calibration's features of a date's filled values (see the module notes), lazily.

    Parameters
    ----------
    sides
        The clear observations around the date (:func:`cloudfill.core.temporal.clear_sides`).
    interp
        Linear interpolation in time (band, y, x).
    fill
        The fill after the same-date adjustment (band, y, x).
    raw
        The confidence head's scale (band, y, x), or None.
    synthesized
        (y, x) True where the model made the value, or None (an interpolated date).
    sigma, cloud_fraction
        The adjustment's sigma and the date's cloud fraction.
    residual
        Per band, the date's :func:`date_residuals` (NaN: too few clear pixels).

    Returns
    -------
    dict
        Per name in :data:`~cloudfill.model.calibration.ERROR_FEATURES`, a float32
        DataArray (band, y, x), chunked like ``interp``.
    """
    like = interp.transpose("band", "y", "x").astype("float32")
    f32 = np.float32
    zero = full_like(like, 0.0, "float32")
    days = f32(MISSING_SIDE_DAYS)
    before_age = sides.age_before.fillna(days)
    after_age = sides.age_after.fillna(days)
    if raw is None or synthesized is None:
        raw_term = zero + f32(np.log(RAW_NONE + 1e-4))
    else:
        head = np.log(raw.fillna(f32(RAW_NONE)) + f32(1e-4))
        raw_term = head.where(synthesized, f32(np.log(RAW_NONE + 1e-4)))
    residual = np.asarray(residual, "float64")
    no_clear = ~np.isfinite(residual)
    residual = np.where(no_clear, NO_CLEAR_RESIDUAL, residual)
    features = {
        "raw": raw_term,
        "age_near": np.log1p(np.minimum(before_age, after_age)),
        "age_gap": np.log1p(before_age + after_age),
        "one_side": (sides.age_before.isnull() | sides.age_after.isnull()).astype("float32"),
        "disagreement": np.log(abs(sides.after - sides.before).fillna(f32(0)) + f32(_EPS)),
        "departure": np.log(abs(fill - interp).fillna(f32(0)) + f32(_EPS)),
        "level": interp.fillna(f32(0)),
        "cloud_fraction": zero + f32(cloud_fraction),
        "date_residual": _per_band(like, np.log(residual + _EPS)),
        "no_clear": _per_band(like, no_clear.astype("float32")),
        "adjusted": zero + f32(sigma > 0),
        "synthesized": zero if synthesized is None else zero + synthesized.astype("float32"),
    }
    return {
        k: (zero + v)
        .astype("float32")
        .transpose("band", "y", "x")
        .drop_vars("time", errors="ignore")
        for k, v in features.items()
    }


def fill_error_scale(
    calibration: Calibration | None,
    features: Mapping[str, xr.DataArray] | None,
    raw: xr.DataArray | None,
    synthesized: xr.DataArray | None,
    like: xr.DataArray,
) -> xr.DataArray:
    """The error scale (band, y, x) of a date's fill: the calibration's, from ``features``;
    uncalibrated, the head's ``raw`` scale where the model made the value and NaN elsewhere
    (interpolated values have no scale without a calibration)."""
    if calibration is not None and features is not None:
        return calibration.scale(features).transpose("band", "y", "x")
    nan = full_like(like.transpose("band", "y", "x"), np.nan, dtype="float32")
    if raw is None or synthesized is None:
        return nan
    return raw.astype("float32").where(synthesized, nan).transpose("band", "y", "x")
