"""The scene's settings (``_Scene``) and the calendar that drives them: sun position, season,
snow line, per-date weather and the cloud thresholds that give each date its cloud fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloudfill.cube.simulate.constants import (
    _CLOUD_CELLS,
    _CLOUD_GAIN,
    _CLOUD_HEIGHT_M,
    _F_CLOUD,
    _F_DATE,
    _LATITUDE,
    _MELT_DOY,
    _MELT_WIDTH,
    _OVERPASS_HOUR_ANGLE,
)
from cloudfill.cube.simulate.noise import _fbm, _key, _unit


@dataclass(frozen=True)
class _Scene:
    """Everything the block functions need; small, picklable and hashable by value."""

    seed: int
    shape: tuple[int, int]
    resolution: float
    s2_days: tuple[int, ...]  # days since 1970-01-01, keys the per-date random fields
    s2_doy: tuple[int, ...]
    sun: tuple[tuple[float, float, float], ...]  # unit vector (east, north, up) per S2 date
    shadow_shift: tuple[tuple[int, int], ...]  # (rows, cols) from a cloud to its shadow
    threshold: tuple[float, ...]  # cloud field threshold per S2 date
    fraction: tuple[float, ...]
    s1_days: tuple[int, ...]
    s1_doy: tuple[int, ...]
    moisture: tuple[float, ...]  # mean soil moisture 0..1 per S1 date
    wind: tuple[float, ...]  # mean water roughness 0..1 per S1 date
    surface_change: float = 0.0  # share of eligible land changed by an event (0 = none)

    def cells(self, metres: Sequence[float]) -> list[float]:
        """Octave cell sizes in pixels, dropping octaves finer than two pixels."""
        return [m / self.resolution for m in metres if m / self.resolution >= 2.0]


def _sun(doy: int) -> tuple[float, float]:
    """Solar elevation and azimuth (degrees) at the Sentinel-2 overpass on day ``doy``."""
    decl = math.radians(23.44) * math.sin(2 * math.pi * (doy - 81) / 365.0)
    lat = math.radians(_LATITUDE)
    hour = math.radians(_OVERPASS_HOUR_ANGLE)
    sin_el = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour)
    el = math.asin(sin_el)
    cos_az = (math.sin(decl) - sin_el * math.sin(lat)) / (math.cos(el) * math.cos(lat))
    az = math.acos(max(-1.0, min(1.0, cos_az)))  # morning: east of the meridian
    return math.degrees(el), math.degrees(az)


def _season(doy: float) -> float:
    """0 in late February, 1 in late August: the greenness of natural vegetation."""
    return 0.5 * (1.0 + math.cos(2 * math.pi * (doy - 235) / 365.0))


def _winter(doy: float) -> float:
    """1 in mid January, 0 in mid July."""
    return 0.5 * (1.0 + math.cos(2 * math.pi * (doy - 15) / 365.0))


def _snowline(doy: float) -> float:
    """Snow line in normalised elevation: low in winter, above every summit in summer."""
    return 1.15 - 0.5 * _winter(doy)


def _melt(doy: float) -> float:
    """0..1: how much of the snow cover is wet (melting), peaking in April."""
    return math.exp(-(((doy - _MELT_DOY) / _MELT_WIDTH) ** 2))


def _sample_axis(n: int) -> np.ndarray:
    # Every pixel of small scenes (exact fractions); 256 spread samples per axis beyond that,
    # plenty for a quantile and cheap even for scenes of 10^9 pixels.
    count = n if n <= 512 else 256
    return np.unique(np.round(np.linspace(0, n - 1, count)).astype(np.int64))


def _scene(
    shape: tuple[int, int],
    s2: pd.DatetimeIndex,
    s1: pd.DatetimeIndex,
    fractions: list[float],
    seed: int,
    resolution: float,
    surface_change: float = 0.0,
) -> _Scene:
    epoch = pd.Timestamp("1970-01-01")
    s2_days = tuple(int((d.normalize() - epoch).days) for d in s2)
    s1_days = tuple(int((d.normalize() - epoch).days) for d in s1)
    sun, shifts = [], []
    for d in s2:
        el, az = _sun(d.dayofyear)
        e, a = math.radians(el), math.radians(az)
        sun.append((math.cos(e) * math.sin(a), math.cos(e) * math.cos(a), math.sin(e)))
        # Shadows fall away from the sun, further when it is low.
        length = _CLOUD_HEIGHT_M / math.tan(e) / resolution
        shifts.append((round(length * math.cos(a)), round(-length * math.sin(a))))
    moisture, wind = [], []
    for d, day in zip(s1, s1_days, strict=True):
        monsoon = math.exp(-(((d.dayofyear - 205) / 45.0) ** 2))
        rain = _unit(seed, _F_DATE, day, 1)
        moisture.append(0.15 + 0.45 * monsoon + 0.3 * rain)
        wind.append(_unit(seed, _F_DATE, day, 2))
    sc = _Scene(
        seed=seed,
        shape=shape,
        resolution=resolution,
        s2_days=s2_days,
        s2_doy=tuple(int(d.dayofyear) for d in s2),
        sun=tuple(sun),
        shadow_shift=tuple(shifts),
        threshold=(),
        fraction=tuple(fractions),
        s1_days=s1_days,
        s1_doy=tuple(int(d.dayofyear) for d in s1),
        moisture=tuple(moisture),
        wind=tuple(wind),
        surface_change=float(surface_change),
    )
    return _with_thresholds(sc)


def _with_thresholds(sc: _Scene) -> _Scene:
    """Cloud thresholds: quantiles of the cloud-or-shadow field on a coarse scene-wide grid.

    A pixel is unusable where the cloud field exceeds the threshold at the pixel or at the
    point casting a shadow on it, so thresholding the larger of the two at the (1 - f)
    quantile makes the unusable fraction f. The grid depends only on the shape, never on the
    chunks, and holds every pixel of scenes up to 512 x 512.
    """
    ys, xs = _sample_axis(sc.shape[0]), _sample_axis(sc.shape[1])
    cells = sc.cells(_CLOUD_CELLS)
    thresholds = []
    for t, frac in enumerate(sc.fraction):
        if frac <= 0.0:
            thresholds.append(float("inf"))
            continue
        if frac >= 1.0:
            thresholds.append(float("-inf"))
            continue
        key = _key(sc.seed, _F_CLOUD, sc.s2_days[t])
        dy, dx = sc.shadow_shift[t]
        either = np.maximum(
            _fbm(ys, xs, cells, key, gain=_CLOUD_GAIN),
            _fbm(ys - dy, xs - dx, cells, key, gain=_CLOUD_GAIN),
        )
        thresholds.append(float(np.quantile(either, 1.0 - frac)))
    return _Scene(**{**sc.__dict__, "threshold": tuple(thresholds)})
