"""Argument handling of ``simulate_scene``: check the user's values and put them in the one
form the scene builder takes (pixel counts, date indexes, one cloud fraction per date, chunk
sizes), raising :class:`~cloudfill.errors.ParameterError` on anything it cannot use.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cloudfill._dates import as_dates
from cloudfill.cube.simulate.noise import _M64
from cloudfill.errors import ParameterError

DEFAULT_CHUNK = 1024


def _grid_shape(shape: Any, resolution: Any) -> tuple[int, int]:
    """``(ny, nx)`` from ``shape``, after checking it and the pixel size."""
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"shape: expected (ny, nx), got {shape!r}") from exc
    if ny < 2 or nx < 2:
        raise ParameterError(f"shape: need at least 2 x 2 pixels, got {(ny, nx)}")
    if not resolution > 0:
        raise ParameterError(f"resolution: must be positive, got {resolution}")
    return ny, nx


def _s2_dates(dates: Any) -> pd.DatetimeIndex:
    if dates is None:
        dates = 6
    if isinstance(dates, (int, np.integer)) and not isinstance(dates, bool):
        n = int(dates)
        if n < 1:
            raise ParameterError(f"dates: need at least one date, got {n}")
        # About a year of acquisitions, never denser than Sentinel-2's 5-day revisit.
        step = max(5, round(360 / n))
        return pd.date_range("2023-01-10", periods=n, freq=f"{step}D").as_unit("ns")
    return as_dates(dates, "dates", strict=True)


def _s1_dates(s1_dates: Any, s2: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if s1_dates is not None:
        return as_dates(s1_dates, "s1_dates", strict=True)
    first, last = s2[0].normalize(), s2[-1].normalize()
    s2_days = np.asarray((s2.normalize() - first).days)
    best, best_score = 2, -1
    # A 12-day repeat starting a few days before the first S2 date. Every S2 date is then
    # within 6 days of an S1 date; pick the phase that puts none on the same day as S1 (the
    # paper pairs images a day or more apart), preferring a lead of 2 days.
    for lead in (2, 3, 1, 4, 5, 6, 7, 8, 9, 10, 11, 0):
        score = int(np.count_nonzero((s2_days + lead) % 12))
        if score > best_score:
            best, best_score = lead, score
    start = first - pd.Timedelta(days=best)
    count = (last - start).days // 12 + 2
    return pd.date_range(start, periods=count, freq="12D").as_unit("ns")


def _cloud_fractions(cloud_fraction: Any, n: int, seed: int) -> list[float]:
    if cloud_fraction is None:
        rng = np.random.default_rng([seed & _M64, 0xC10D])
        fractions = np.round(rng.uniform(0.0, 0.4, n), 2)
        fractions[0] = 0.0
        if n >= 4:
            full, heavy = rng.choice(np.arange(1, n), size=2, replace=False)
            fractions[full] = 1.0
            fractions[heavy] = round(float(rng.uniform(0.6, 0.9)), 2)
        values = [float(f) for f in fractions]
    elif np.ndim(cloud_fraction) == 0:
        values = [float(cloud_fraction)] * n
    else:
        values = [float(f) for f in cloud_fraction]
        if len(values) != n:
            raise ParameterError(
                f"cloud_fraction: {len(values)} values for {n} dates; give one per date"
            )
    for f in values:
        if not 0.0 <= f <= 1.0:
            raise ParameterError(f"cloud_fraction: {f} is outside [0, 1]")
    return values


def _surface_change(value: Any) -> float:
    try:
        share = float(value)
    except (TypeError, ValueError):
        raise ParameterError(
            f"surface_change: expected a number in [0, 1], got {value!r}"
        ) from None
    if not 0.0 <= share <= 1.0:
        raise ParameterError(f"surface_change: {share} is outside [0, 1]")
    return share


def _chunk_sizes(chunks: Any, shape: tuple[int, int]) -> tuple[int, int]:
    if chunks is None:
        sizes = (DEFAULT_CHUNK, DEFAULT_CHUNK)
    elif isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        sizes = (int(chunks), int(chunks))
    elif isinstance(chunks, dict):
        unknown = set(chunks) - {"y", "x", "time", "s1_time", "band", "pol"}
        if unknown:
            raise ParameterError(f"chunks: unknown dim {sorted(unknown)[0]!r}; use 'y' and 'x'")
        sizes = (int(chunks.get("y", DEFAULT_CHUNK)), int(chunks.get("x", DEFAULT_CHUNK)))
    else:
        raise ParameterError(f"chunks: expected an int or a dict with 'y'/'x', got {chunks!r}")
    if min(sizes) < 1:
        raise ParameterError(f"chunks: sizes must be positive, got {sizes}")
    return min(sizes[0], shape[0]), min(sizes[1], shape[1])
