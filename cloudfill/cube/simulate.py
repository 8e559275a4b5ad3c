"""A physically motivated synthetic S1/S2/DEM cube with known cloud-free truth.

No large real Sentinel-1/Sentinel-2/DEM time series is available offline, so tests, examples and
benchmarks use this simulator. The scene is built so that the paper's ordering of model variants
(S < SD < SO < SOD) is learnable:

- a fractal DEM with carved river valleys drives land cover (water low and flat, crops and towns
  on low gentle slopes, forest on mid slopes, grass higher, bare rock at the top), terrain
  illumination of the optical image and winter snow on high ground -- so the DEM carries
  information the SAR lacks;
- optical reflectance mixes per-class soil and canopy spectra with seasonal phenology (crop
  parcels with their own sowing dates and a sharp harvest) and a persistent within-class
  brightness field that the SAR does not see -- so the reference S2 image carries information
  the SAR lacks;
- SAR backscatter (dB) depends on class, local incidence angle, a per-date soil moisture / wind
  field and crop growth, with multiplicative gamma speckle and a thermal noise floor;
- clouds are thresholded fractal fields (bright, soft-edged) with shadows offset along the sun
  direction; the threshold is a quantile so each date gets the cloud fraction asked for.

Every value is a pure function of global pixel indices, the date and the seed: lattice noise
values come from an integer hash of (lattice index, octave, field, seed), slopes come from the
DEM evaluated one pixel beyond each block, and speckle from a per-pixel hash. Results are
therefore bit-identical whatever the chunking, and large scenes are built lazily, one dask task
per block and date, without ever allocating the whole cube.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from dask.array.core import PerformanceWarning
from dask.base import tokenize

from cloudfill.cube.schema import BANDS, POLS
from cloudfill.errors import ParameterError

__all__ = ["LULC_CLASSES", "simulate_scene"]

LULC_CLASSES: tuple[str, ...] = ("water", "forest", "crop", "grass", "urban", "bare")
"""Land-cover classes of the ``lulc`` variable, by code 0..5."""

WATER, FOREST, CROP, GRASS, URBAN, BARE = range(6)

LAZY_PIXELS = 2048 * 2048
"""Scenes with more pixels than this are returned dask-backed even without ``chunks``."""

DEFAULT_CHUNK = 1024

# --- spectra (B02, B03, B04, B08) -----------------------------------------------------------
# Rows are land-cover codes. "Soil" is the background seen through the canopy (open water for
# class 0, roofs and asphalt for urban), "canopy" the green vegetation spectrum.
_SOIL = np.array(
    [
        [0.060, 0.055, 0.035, 0.015],  # water
        [0.060, 0.080, 0.100, 0.180],  # forest floor
        [0.090, 0.120, 0.150, 0.220],  # crop soil
        [0.075, 0.100, 0.130, 0.230],  # dry grass
        [0.110, 0.120, 0.130, 0.170],  # urban
        [0.120, 0.150, 0.180, 0.240],  # bare rock
    ],
    dtype=np.float32,
)
_CANOPY = np.array(
    [
        [0.030, 0.060, 0.030, 0.400],
        [0.020, 0.040, 0.020, 0.300],  # conifer/broadleaf canopy is darker than crops
        [0.030, 0.070, 0.035, 0.450],
        [0.035, 0.065, 0.040, 0.350],
        [0.030, 0.060, 0.030, 0.350],
        [0.030, 0.060, 0.030, 0.350],
    ],
    dtype=np.float32,
)
_SNOW = np.array([0.88, 0.86, 0.83, 0.66], dtype=np.float32)
_CLOUD = np.array([1.0, 0.98, 0.97, 0.95], dtype=np.float32)  # slightly blue-white

# --- backscatter (dB) per class: base, soil-moisture and vegetation sensitivities ----------
_VV_BASE = np.array([-24.0, -7.5, -13.5, -12.0, -2.5, -14.0], dtype=np.float32)
_VH_BASE = np.array([-30.0, -12.5, -23.0, -20.0, -9.5, -23.5], dtype=np.float32)
# Sensitivities (dB per unit) of VV; VH responds with the gains in _VH_GAIN: half as much to
# soil moisture, the other way round and much more to green vegetation (volume scattering),
# less to wind on water.
_SM_DB = np.array([0.0, 1.0, 5.0, 4.0, 0.0, 6.0], dtype=np.float32)
_VEG_DB = np.array([0.0, 0.0, -1.6, -0.8, 0.0, 0.0], dtype=np.float32)
_WIND_DB = np.array([7.0, 0.0, 0.0, 0.0, 0.0, 0.0], dtype=np.float32)
_VH_GAIN = {"moisture": 0.5, "veg": -5.0, "wind": 0.45}
_NESZ_DB = -26.0  # Sentinel-1 IW noise-equivalent sigma0, roughly
S1_LOOKS = 4.4  # equivalent number of looks of GRD high-resolution IW data

# Green cover outside crops: A + B * season + C * season**1.5 (see _season).
_COVER = np.array(
    [
        [0.0, 0.0, 0.0],  # water
        [0.72, 0.16, 0.0],  # forest: evergreen-ish, mild seasonal cycle
        [0.0, 0.0, 0.0],  # crop: parcels with their own calendar, see _cover
        [0.12, 0.0, 0.62],  # grass: brown in the dry season, green in the monsoon
        [0.12, 0.0, 0.0],  # urban gardens
        [0.03, 0.0, 0.0],  # bare
    ],
    dtype=np.float32,
)

# --- geometry ----------------------------------------------------------------------------------
_LATITUDE = 28.0  # central Nepal, where the paper's data come from
_OVERPASS_HOUR_ANGLE = -22.5  # degrees; Sentinel-2 crosses the equator at 10:30 local time
_CLOUD_HEIGHT_M = 800.0
_S1_INCIDENCE = 39.0  # degrees, mid-swath
_S1_LOOK_AZIMUTH = 78.0  # degrees from north; ascending pass, right-looking, so it looks east

# Lattice cell sizes (metres) of the fBm octaves, coarse to fine.
_DEM_CELLS = (5120.0, 2560.0, 1280.0, 640.0, 320.0, 160.0, 80.0, 40.0)
_RIVER_CELLS = (6400.0, 3200.0, 1600.0, 800.0)
_CLASS_NOISE_CELLS = (1280.0, 640.0, 320.0, 160.0, 80.0, 40.0)
_URBAN_CELLS = (2560.0, 1280.0, 640.0, 320.0)
_BRIGHT_CELLS = (1280.0, 640.0, 320.0, 160.0, 80.0, 40.0, 20.0)
_CLOUD_CELLS = (2560.0, 1280.0, 640.0, 320.0, 160.0, 80.0, 40.0, 20.0)
_CLOUD_GAIN = 0.62  # rougher than terrain: ragged cloud edges
_MOISTURE_CELLS = (5120.0, 2560.0, 1280.0, 640.0)
_PARCEL_M = (120.0, 200.0)  # crop field size (rows, cols)
_BLOCK_M = 60.0  # urban block size

# Field ids: one independent random field per id.
(
    _F_DEM,
    _F_RIVER,
    _F_CLASS,
    _F_URBAN,
    _F_SOIL,
    _F_CANOPY,
    _F_SNOW,
    _F_PARCEL,
    _F_BLOCK,
    _F_CLOUD,
    _F_MOISTURE,
    _F_SPECKLE,
    _F_DATE,
) = range(1, 14)

# Static layers computed once per block and shared by every date. Per-class coefficients are
# spread into layers here because gathering from class tables costs more than the arithmetic.
_L_DEM, _L_LULC, _L_NX, _L_NY, _L_NZ, _L_SNOWH, _L_SOW, _L_SEASON = range(8)
_L_SOIL = 8  # 4 bands: background reflectance times the soil brightness field
_L_GREEN = 12  # 4 bands: canopy minus background, canopy brightness field included
_L_COVER = 16  # 3 phenology coefficients, see _COVER
_L_VV, _L_VH, _L_SM, _L_VEG, _L_WIND = range(19, 24)
_N_STATIC = 24
_N_OPTICAL = 10  # truth (4), s2 (4), unusable mask, scl

# --- integer hashing ---------------------------------------------------------------------------
_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_COL_MULT = np.uint64(0xD1B54A32D192ED03)


def _mix64(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (wrapping arithmetic)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _mix_int(z: int) -> int:
    z &= _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _key(*parts: int) -> int:
    """A 64-bit key from small integers (seed, field, octave, day ...), order-sensitive."""
    z = 0x243F6A8885A308D3
    for part in parts:
        z = _mix_int(z + _GOLDEN + (part & _M64))
    return z


def _unit(*parts: int) -> float:
    """A deterministic uniform number in [0, 1) from integer parts."""
    return (_key(*parts) >> 11) * 2.0**-53


def _hash2d(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """uint64 hash of every (row, col) pair of the outer grid, shape (len(rows), len(cols))."""
    hr = rows.astype(np.int64).view(np.uint64) * np.uint64(_GOLDEN) + np.uint64(key)
    _mix64(hr)
    hc = cols.astype(np.int64).view(np.uint64) * _COL_MULT
    return _mix64(hr[:, None] ^ hc[None, :])


def _to_unit(h: np.ndarray) -> np.ndarray:
    """Top 24 bits of a hash as float32 in [0, 1) (exactly representable)."""
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


# --- lattice noise ---------------------------------------------------------------------------
def _lattice_axis(idx: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice nodes needed by ``idx``, each index's lower node position and quintic weight."""
    f = idx / cell
    lower = np.floor(f)
    t = (f - lower).astype(np.float32)
    fade = t * t * t * (t * (t * np.float32(6) - np.float32(15)) + np.float32(10))
    lower = lower.astype(np.int64)
    # Unique nodes (not a min..max range) keep sparse sample grids over huge scenes cheap.
    nodes = np.unique(np.concatenate([lower, lower + 1]))
    return nodes, np.searchsorted(nodes, lower), fade


def _value_noise(
    ys: np.ndarray, xs: np.ndarray, cell: float, key: int, amplitude: float = 1.0
) -> np.ndarray:
    """Value noise in [-amplitude, amplitude) on the outer grid ys x xs, smooth (C2) between
    lattice nodes."""
    ry, iy, uy = _lattice_axis(ys, cell)
    rx, ix, ux = _lattice_axis(xs, cell)
    g = _to_unit(_hash2d(ry, rx, key)) * np.float32(2 * amplitude) - np.float32(amplitude)
    g0 = g[:, ix]
    rows = g0 + (g[:, ix + 1] - g0) * ux
    out = rows[iy + 1]
    lo = rows[iy]
    out -= lo
    out *= uy[:, None]
    out += lo
    return out


def _fbm(
    ys: np.ndarray, xs: np.ndarray, cells_px: Sequence[float], key: int, gain: float = 0.5
) -> np.ndarray:
    """Fractional Brownian motion: octaves of value noise, normalised to about [-1, 1]."""
    norm = sum(gain**octave for octave in range(len(cells_px)))
    total = None
    for octave, cell in enumerate(cells_px):
        noise = _value_noise(ys, xs, cell, _key(key, octave), gain**octave / norm)
        if total is None:
            total = noise
        else:
            total += noise
    if total is None:  # every octave finer than the pixels
        return np.zeros((len(ys), len(xs)), dtype=np.float32)
    return total


def _cell_values(ys: np.ndarray, xs: np.ndarray, cell: tuple[float, float], key: int) -> np.ndarray:
    """A uniform [0, 1) value per rectangular cell (fields, blocks), piecewise constant."""
    cy = np.floor(ys / cell[0]).astype(np.int64)
    cx = np.floor(xs / cell[1]).astype(np.int64)
    ry, iy = np.unique(cy, return_inverse=True)
    rx, ix = np.unique(cx, return_inverse=True)
    g = _to_unit(_hash2d(ry, rx, key))
    return g[iy][:, ix]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, np.float32(0), np.float32(1))
    return x * x * (np.float32(3) - np.float32(2) * x)


@functools.lru_cache(maxsize=4)
def _speckle_table(looks: float) -> np.ndarray:
    """Quantiles of Gamma(L, 1/L) at 65536 mid-points: a 16-bit hash indexes the speckle."""
    from scipy.stats import gamma

    u = (np.arange(65536, dtype=np.float64) + 0.5) / 65536
    return gamma.ppf(u, a=looks, scale=1.0 / looks).astype(np.float32)


# --- scene parameters ---------------------------------------------------------------------------
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


# --- static fields -----------------------------------------------------------------------------
def _elevation(sc: _Scene, ys: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised elevation 0..1 with flattened valley floors and carved river valleys, and
    the river field (rivers run where it crosses zero)."""
    n = _fbm(ys, xs, sc.cells(_DEM_CELLS), _key(sc.seed, _F_DEM), gain=0.42)
    n *= np.float32(2.0)
    h = np.float32(0.5) + np.float32(0.5) * n / np.sqrt(np.float32(1) + n * n)
    # Valley floors flatter, peaks sharper, as erosion leaves them.
    h = h * h * (np.float32(1.6) - np.float32(0.6) * h)
    r = _fbm(ys, xs, sc.cells(_RIVER_CELLS), _key(sc.seed, _F_RIVER))
    v = r * np.float32(1 / 0.03)
    valley = np.float32(1) / (np.float32(1) + v * v)
    lowland = np.clip((np.float32(0.5) - h) * np.float32(4), np.float32(0), np.float32(1))
    h -= np.float32(0.05) * valley * lowland
    return h, r


def _static_block(sc: _Scene, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """All date-independent layers of one block, shape (_N_STATIC, len(ys), len(xs))."""
    ny, nx = len(ys), len(xs)
    out = np.empty((_N_STATIC, ny, nx), dtype=np.float32)
    # Slopes from the elevation function one pixel beyond the block, so that a pixel's slope
    # never depends on which block it falls in.
    ye = np.arange(ys[0] - 1, ys[-1] + 2)
    xe = np.arange(xs[0] - 1, xs[-1] + 2)
    he, re = _elevation(sc, ye, xe)
    h = he[1:-1, 1:-1]
    relief = np.float32(2000.0)
    out[_L_DEM] = np.float32(180.0) + relief * h
    scale = relief / np.float32(2 * sc.resolution)
    dzdx = (he[1:-1, 2:] - he[1:-1, :-2]) * scale  # towards east
    dzdn = (he[:-2, 1:-1] - he[2:, 1:-1]) * scale  # towards north (rows run south)
    tan2 = dzdx * dzdx + dzdn * dzdn
    inv = np.float32(1) / np.sqrt(np.float32(1) + tan2)
    out[_L_NX] = -dzdx * inv
    out[_L_NY] = -dzdn * inv
    out[_L_NZ] = inv

    # Land cover from terrain: a perturbed elevation and the slope decide, noise breaks up the
    # boundaries the way real land use does.
    hp = h + np.float32(0.06) * _fbm(ys, xs, sc.cells(_CLASS_NOISE_CELLS), _key(sc.seed, _F_CLASS))
    r = re[1:-1, 1:-1]
    urban = _fbm(ys, xs, sc.cells(_URBAN_CELLS), _key(sc.seed, _F_URBAN))
    clearing = _fbm(ys, xs, sc.cells(_CLASS_NOISE_CELLS), _key(sc.seed, _F_CLASS, 1))
    tan_deg = {d: np.float32(math.tan(math.radians(d)) ** 2) for d in (4, 8, 15, 40)}
    lulc = np.full((ny, nx), FOREST, dtype=np.float32)
    lulc[(hp > 0.55) | (clearing > 0.3)] = GRASS  # alpine meadows, forest clearings
    lulc[(hp < 0.35) & (tan2 < tan_deg[15])] = CROP
    lulc[(hp < 0.3) & (tan2 < tan_deg[8]) & (urban > 0.18)] = URBAN
    # Bare rock above the tree line and on cliffs, gravel bars along the lowland rivers.
    channel = np.abs(r)
    bar = (channel < np.float32(0.022)) & (h < 0.3)
    lulc[(hp > 0.8) | (tan2 > tan_deg[40]) | bar] = BARE
    river = (channel < np.float32(0.012)) & (h < 0.45)
    lake = (hp < 0.03) & (tan2 < tan_deg[4])
    lulc[river | lake] = WATER
    out[_L_LULC] = lulc

    classes = lulc.astype(np.intp)
    # Persistent brightness of soil and canopy: optical-only information (SAR ignores it).
    soil = _fbm(ys, xs, sc.cells(_BRIGHT_CELLS), _key(sc.seed, _F_SOIL), gain=0.6)
    soil *= np.float32(0.45)
    soil += np.float32(1)
    canopy = _fbm(ys, xs, sc.cells(_BRIGHT_CELLS), _key(sc.seed, _F_CANOPY), gain=0.6)
    canopy *= np.float32(0.3)
    canopy += np.float32(1)
    for b in range(4):
        out[_L_SOIL + b] = _SOIL[:, b][classes] * soil
        out[_L_GREEN + b] = _CANOPY[:, b][classes] * canopy - out[_L_SOIL + b]
    for k in range(3):
        out[_L_COVER + k] = _COVER[:, k][classes]

    # Snow lies longer on north-facing slopes.
    snow = _fbm(ys, xs, sc.cells(_CLASS_NOISE_CELLS), _key(sc.seed, _F_SNOW))
    out[_L_SNOWH] = h + np.float32(0.05) * snow + np.float32(0.06) * out[_L_NY]

    # Crop parcels: 60 % summer rice (sown around day 150-180), the rest winter wheat (300-330).
    parcel = _cell_values(ys, xs, _pixel_cell(sc, _PARCEL_M), _key(sc.seed, _F_PARCEL))
    rice = parcel < np.float32(0.6)
    jitter = np.float32(30) * ((parcel * np.float32(17)) % np.float32(1))
    out[_L_SOW] = np.where(rice, np.float32(150), np.float32(300)) + jitter
    out[_L_SEASON] = np.where(rice, np.float32(125), np.float32(150))

    # Local incidence angle of the radar: slopes facing the sensor are bright, slopes facing
    # away dark, and those steeper than the look angle fall into radar shadow.
    inc = math.radians(_S1_INCIDENCE)
    look = math.radians(_S1_LOOK_AZIMUTH)
    to_sensor = (-math.sin(inc) * math.sin(look), -math.sin(inc) * math.cos(look), math.cos(inc))
    cos_loc = (
        out[_L_NX] * np.float32(to_sensor[0])
        + out[_L_NY] * np.float32(to_sensor[1])
        + out[_L_NZ] * np.float32(to_sensor[2])
    )
    ratio = np.clip(cos_loc * np.float32(1 / math.cos(inc)), np.float32(0.05), np.float32(2.5))
    terrain = np.log(ratio) * np.float32(12.0 / math.log(10))
    # Urban blocks differ by building orientation and density (strong double bounce or not).
    block = _cell_values(ys, xs, _pixel_cell(sc, (_BLOCK_M, _BLOCK_M)), _key(sc.seed, _F_BLOCK))
    terrain += np.where(lulc == URBAN, np.float32(8) * (block - np.float32(0.5)), np.float32(0))
    out[_L_VV] = _VV_BASE[classes] + terrain
    out[_L_VH] = _VH_BASE[classes] + terrain
    out[_L_SM] = _SM_DB[classes]
    out[_L_VEG] = _VEG_DB[classes]
    out[_L_WIND] = _WIND_DB[classes]
    return out


def _pixel_cell(sc: _Scene, metres: tuple[float, float]) -> tuple[float, float]:
    return (max(1.0, metres[0] / sc.resolution), max(1.0, metres[1] / sc.resolution))


def _cover(doy: float, st: np.ndarray) -> np.ndarray:
    """Fractional green cover 0..1 on day ``doy``: the phenology of each class."""
    season = _season(doy)
    fc = st[_L_COVER] + st[_L_COVER + 1] * np.float32(season)
    fc += st[_L_COVER + 2] * np.float32(season**1.5)
    # Crops: fast green-up after sowing, a plateau, then an abrupt harvest.
    since = np.float32(doy) - st[_L_SOW]
    since[since < 0] += np.float32(365)  # sowing dates lie within a year before ``doy``
    crop = _smoothstep(since * np.float32(1 / 55))
    crop *= _smoothstep((st[_L_SEASON] - since) * np.float32(1 / 6))
    crop *= np.float32(0.82)
    crop += np.float32(0.06)
    return np.where(st[_L_LULC] == CROP, crop, fc)


# --- per-date blocks ---------------------------------------------------------------------------
def _optical_block(
    sc: _Scene, t: int, st: np.ndarray, ys: np.ndarray, xs: np.ndarray
) -> np.ndarray:
    """Truth, cloudy S2, unusable mask and SCL of S2 date ``t``: (_N_OPTICAL, ny, nx)."""
    ny, nx = len(ys), len(xs)
    out = np.empty((_N_OPTICAL, ny, nx), dtype=np.float32)
    water = st[_L_LULC] == WATER
    doy = sc.s2_doy[t]
    fc = _cover(doy, st)

    sx, sy, sz = (np.float32(v) for v in sc.sun[t])
    cos_i = st[_L_NX] * sx
    cos_i += st[_L_NY] * sy
    cos_i += st[_L_NZ] * sz
    np.maximum(cos_i, np.float32(0), out=cos_i)
    # Direct sun on the slope plus sky light seen by it, relative to flat ground.
    illum = cos_i * np.float32(0.78 / sz)
    illum += (st[_L_NZ] + np.float32(1)) * np.float32(0.11)
    snow = _smoothstep((st[_L_SNOWH] - np.float32(_snowline(doy))) * np.float32(1 / 0.05))
    snow[water] = 0
    for b in range(4):
        refl = st[_L_GREEN + b] * fc
        refl += st[_L_SOIL + b]
        refl += snow * (_SNOW[b] - refl)
        refl *= illum
        np.clip(refl, np.float32(0), np.float32(1), out=refl)
        out[b] = refl

    ndvi = (out[3] - out[2]) / (out[3] + out[2] + np.float32(1e-6))
    scl = np.where(water, np.float32(6), np.float32(5))
    scl[(ndvi > 0.35) & ~water] = 4
    scl[snow > 0.5] = 11

    out[4:8] = out[0:4]
    unusable = np.zeros((ny, nx), dtype=bool)
    frac = sc.fraction[t]
    if frac > 0:
        # Dense arithmetic with masks as 0/1 factors: cheaper than boolean indexing.
        tau = np.float32(sc.threshold[t])
        key = _key(sc.seed, _F_CLOUD, sc.s2_days[t])
        cells = sc.cells(_CLOUD_CELLS)
        field = _fbm(ys, xs, cells, key, gain=_CLOUD_GAIN)
        cloud = field > tau
        if frac < 1:
            dy, dx = sc.shadow_shift[t]
            cast = _fbm(ys - dy, xs - dx, cells, key, gain=_CLOUD_GAIN)
            shadow = cast > tau
            shadow &= ~cloud
            # Darker (x0.3) under the thick part of the casting cloud, x0.5 at its edge.
            cast -= tau
            cast *= np.float32(8)
            np.clip(cast, np.float32(0), np.float32(1), out=cast)
            cast *= np.float32(-0.2)
            cast += np.float32(-0.5)
            cast *= shadow
            cast += np.float32(1)
            out[4:8] *= cast
            scl[shadow] = 3
            unusable |= shadow
        # Opacity ramps up from the edge (haze), brightness follows cloud thickness.
        alpha = field - tau
        alpha *= np.float32(6)
        alpha += np.float32(0.45)
        np.clip(alpha, np.float32(0), np.float32(1), out=alpha)
        alpha *= cloud
        bright = field * np.float32(1.1)
        bright += np.float32(0.47)
        np.clip(bright, np.float32(0.3), np.float32(0.8), out=bright)
        for b in range(4):
            band = out[4 + b]
            band += alpha * (bright * _CLOUD[b] - band)
        scl[cloud] = 8
        scl[alpha > np.float32(0.8)] = 9
        unusable |= cloud
    out[8] = unusable
    out[9] = scl
    return out


def _sar_block(sc: _Scene, t: int, st: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """VV and VH backscatter (dB) of S1 date ``t``: (2, ny, nx)."""
    fc = _cover(sc.s1_doy[t], st)
    # One low-frequency field per date drives soil moisture on land and wind on water.
    weather = _fbm(ys, xs, sc.cells(_MOISTURE_CELLS), _key(sc.seed, _F_MOISTURE, sc.s1_days[t]))
    moisture = np.clip(np.float32(sc.moisture[t]) + np.float32(0.3) * weather, 0.0, 1.0)
    wind = np.clip(np.float32(sc.wind[t]) + np.float32(0.5) * weather, 0.0, 1.0)
    sm_db = st[_L_SM] * moisture
    veg_db = st[_L_VEG] * fc
    wind_db = st[_L_WIND] * wind

    h = _hash2d(ys, xs, _key(sc.seed, _F_SPECKLE, sc.s1_days[t]))
    table = _speckle_table(S1_LOOKS)
    out = np.empty((2, len(ys), len(xs)), dtype=np.float32)
    for p, (layer, gains, shift) in enumerate(
        (
            (_L_VV, (1.0, 1.0, 1.0), 48),
            (_L_VH, (_VH_GAIN["moisture"], _VH_GAIN["veg"], _VH_GAIN["wind"]), 32),
        )
    ):
        db = sm_db * np.float32(gains[0])
        db += veg_db * np.float32(gains[1])
        db += wind_db * np.float32(gains[2])
        db += st[layer]
        # Speckle multiplies power, and the thermal noise floor adds to it.
        power = np.exp(db * np.float32(math.log(10) / 10))
        power += np.float32(10 ** (_NESZ_DB / 10))
        power *= table[((h >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.intp)]
        db = np.log(power)
        db *= np.float32(10 / math.log(10))
        out[p] = np.clip(db, np.float32(-35), np.float32(5))
    return out


# --- dask task wrappers ------------------------------------------------------------------------
def _static_task(ys: np.ndarray, xs: np.ndarray, sc: _Scene) -> np.ndarray:
    return _static_block(sc, ys, xs)


# The static layers arrive as a list holding their single chunk along "l" (blockwise with
# concatenate=False), which spares a copy of the block per date.
def _optical_task(
    t: np.ndarray, st: list[np.ndarray], ys: np.ndarray, xs: np.ndarray, sc: _Scene
) -> np.ndarray:
    return _optical_block(sc, int(t[0]), st[0], ys, xs)[None]


def _sar_task(
    t: np.ndarray, st: list[np.ndarray], ys: np.ndarray, xs: np.ndarray, sc: _Scene
) -> np.ndarray:
    return _sar_block(sc, int(t[0]), st[0], ys, xs)[None]


# --- argument handling -------------------------------------------------------------------------
def _as_dates(value: Any, name: str) -> pd.DatetimeIndex:
    try:
        index = pd.DatetimeIndex(pd.to_datetime(list(value)))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name}: cannot read {value!r} as dates ({exc})") from exc
    if len(index) == 0:
        raise ParameterError(f"{name}: at least one date is needed")
    if index.tz is not None:
        index = index.tz_convert(None)
    if index.hasnans:
        raise ParameterError(f"{name}: holds NaT")
    if index.has_duplicates:
        raise ParameterError(f"{name}: date {index[index.duplicated()][0]:%Y-%m-%d} appears twice")
    if not index.is_monotonic_increasing:
        raise ParameterError(f"{name}: dates must be sorted in increasing order")
    return index.as_unit("ns")


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
    return _as_dates(dates, "dates")


def _s1_dates(s1_dates: Any, s2: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if s1_dates is not None:
        return _as_dates(s1_dates, "s1_dates")
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


def _layers(block: np.ndarray, lo: int, hi: int | None, axis: int) -> np.ndarray:
    """Channels ``lo:hi`` (or the single channel ``lo`` when ``hi`` is None) of a block."""
    index = (slice(None),) * axis + ((lo if hi is None else slice(lo, hi)),)
    return block[index]


def _lazy_arrays(sc: _Scene, cy: int, cx: int) -> dict[str, da.Array]:
    """The cube's variables as dask arrays: one task per block for the static layers, one per
    block and date for each sensor, and cheap per-block views for the variables."""
    ny, nx = sc.shape
    token = tokenize(sc, cy, cx)
    ys = da.arange(ny, chunks=cy, dtype=np.int64)
    xs = da.arange(nx, chunks=cx, dtype=np.int64)
    n_s2, n_s1 = len(sc.s2_days), len(sc.s1_days)
    meta3 = np.empty((0, 0, 0), dtype=np.float32)
    meta4 = np.empty((0, 0, 0, 0), dtype=np.float32)
    with warnings.catch_warnings():
        # New date axes multiply the chunk count by design; dask warns about that.
        warnings.simplefilter("ignore", PerformanceWarning)
        static = da.blockwise(
            _static_task, "lyx", ys, "y", xs, "x",
            new_axes={"l": _N_STATIC}, dtype=np.float32, meta=meta3,
            name=f"simulate-static-{token}", sc=sc,
        )  # fmt: skip
        optical = da.blockwise(
            _optical_task, "tcyx", da.arange(n_s2, chunks=1), "t", static, "lyx", ys, "y",
            xs, "x", new_axes={"c": _N_OPTICAL}, concatenate=False, dtype=np.float32,
            meta=meta4, name=f"simulate-s2-{token}", sc=sc,
        )  # fmt: skip
        sar = da.blockwise(
            _sar_task, "tpyx", da.arange(n_s1, chunks=1), "t", static, "lyx", ys, "y", xs, "x",
            new_axes={"p": len(POLS)}, concatenate=False, dtype=np.float32, meta=meta4,
            name=f"simulate-s1-{token}", sc=sc,
        )  # fmt: skip

    # map_blocks keeps these views lazy layers; slicing a dask array would build one task per
    # chunk up front, which is slow for scenes of many thousand chunks.
    def bands(lo: int) -> da.Array:
        chunks = (optical.chunks[0], (4,), *optical.chunks[2:])
        return optical.map_blocks(_layers, lo, lo + 4, 1, chunks=chunks, dtype=np.float32)

    def plane(array: da.Array, lo: int, axis: int) -> da.Array:
        return array.map_blocks(_layers, lo, None, axis, drop_axis=axis, dtype=np.float32)

    return {
        "s2": bands(4),
        "truth": bands(0),
        "s1": sar,
        "dem": plane(static, _L_DEM, 0),
        "cloud": plane(optical, 8, 1) > 0.5,
        "scl": plane(optical, 9, 1).astype(np.uint8),
        "lulc": plane(static, _L_LULC, 0).astype(np.uint8),
    }


# --- public ----------------------------------------------------------------------------------
def simulate_scene(
    shape: tuple[int, int] = (256, 256),
    dates: int | Sequence[Any] | None = None,
    seed: int = 0,
    *,
    s1_dates: Sequence[Any] | None = None,
    cloud_fraction: float | Sequence[float] | None = None,
    chunks: int | dict[str, int] | None = None,
    crs: str = "EPSG:32645",
    resolution: float = 10.0,
    origin: tuple[float, float] = (300000.0, 3100000.0),
) -> xr.Dataset:
    """Simulate a Sentinel-1 / Sentinel-2 / DEM cube with clouds and its cloud-free truth.

    The scene is a fractal landscape in central Nepal (latitude 28 N): a DEM with river
    valleys, land cover shaped by the terrain, S2 reflectance with seasonal phenology, terrain
    illumination and winter snow, S1 backscatter with local-incidence, soil-moisture and
    speckle effects, and bright fractal clouds with offset shadows. The cube follows the
    contract (``cloudfill.validate`` passes). Values depend only on the seed, the dates and the
    pixel position, so they are bit-identical whatever ``chunks`` is.

    Parameters
    ----------
    shape
        ``(ny, nx)`` pixels.
    dates
        Sentinel-2 dates: None for 6, an int ``n`` for ``n`` dates spread over about a year
        from 2023-01-10 (every ``max(5, round(360 / n))`` days), or a sorted sequence of
        date-likes.
    seed
        Seed of every random field; the same seed gives the same scene.
    s1_dates
        Sentinel-1 dates; None for a 12-day repeat from a few days before the first S2 date to
        after the last, phased so S1 acquisitions fall 1-6 days from the S2 dates.
    cloud_fraction
        Fraction of unusable (cloud or shadow) pixels per S2 date: a float for all dates, one
        value per date, or None for a seeded mix whose first date is clear and which, from four
        dates on, includes one fully cloudy date and one at 0.6-0.9.
    chunks
        Spatial chunk size (an int, or a dict with ``"y"``/``"x"``; ``time``/``s1_time`` are
        always one chunk per date, ``band``/``pol`` one chunk). When given, or when the scene
        has more than 2048 x 2048 pixels, variables are dask arrays computed block by block on
        demand (default chunks 1024); otherwise they are numpy arrays.
    crs, resolution, origin
        The grid: CRS, pixel size in CRS units (metres) and the top-left corner ``(x, y)``.

    Returns
    -------
    xarray.Dataset
        ``s2`` and ``truth`` (time, band, y, x) float32 reflectance; ``s1`` (s1_time, pol, y,
        x) float32 dB; ``dem`` (y, x) float32 metres; ``cloud`` (time, y, x) bool, True on
        cloud or shadow; ``scl`` (time, y, x) uint8 Sen2Cor classes; ``lulc`` (y, x) uint8
        classes (see ``attrs["classes"]``); CRS in the ``spatial_ref`` coordinate. Attrs:
        ``seed``, ``cloud_fraction`` (asked, per date), ``description``.

    Raises
    ------
    ParameterError
        On a bad shape, dates, cloud fraction, chunks or resolution.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), dates=4, seed=1)
    >>> dict(ds.sizes)["time"], str(ds.s2.dtype), ds.s1.attrs["units"]
    (4, 'float32', 'dB')
    >>> bool(ds.cloud.isel(time=0).any())  # the first date is clear by default
    False
    """
    try:
        ny, nx = (int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"shape: expected (ny, nx), got {shape!r}") from exc
    if ny < 2 or nx < 2:
        raise ParameterError(f"shape: need at least 2 x 2 pixels, got {(ny, nx)}")
    if not resolution > 0:
        raise ParameterError(f"resolution: must be positive, got {resolution}")
    seed = int(seed)
    s2 = _s2_dates(dates)
    s1 = _s1_dates(s1_dates, s2)
    fractions = _cloud_fractions(cloud_fraction, len(s2), seed)
    lazy = chunks is not None or ny * nx > LAZY_PIXELS
    cy, cx = _chunk_sizes(chunks, (ny, nx))
    sc = _scene((ny, nx), s2, s1, fractions, seed, float(resolution))

    arrays = _lazy_arrays(sc, cy, cx)

    classes = ",".join(f"{code}={name}" for code, name in enumerate(LULC_CLASSES))
    ds = xr.Dataset(
        {
            "s2": (
                ("time", "band", "y", "x"),
                arrays["s2"],
                {"long_name": "S2 surface reflectance with clouds", "units": "1"},
            ),
            "truth": (
                ("time", "band", "y", "x"),
                arrays["truth"],
                {"long_name": "cloud-free S2 surface reflectance", "units": "1"},
            ),
            "s1": (
                ("s1_time", "pol", "y", "x"),
                arrays["s1"],
                {"long_name": "S1 backscatter sigma0", "units": "dB", "looks": S1_LOOKS},
            ),
            "dem": (("y", "x"), arrays["dem"], {"long_name": "elevation", "units": "m"}),
            "cloud": (
                ("time", "y", "x"),
                arrays["cloud"],
                {"long_name": "unusable S2 pixel (cloud or shadow)"},
            ),
            "scl": (
                ("time", "y", "x"),
                arrays["scl"],
                {
                    "long_name": "Sen2Cor scene classification",
                    "flag_values": [3, 4, 5, 6, 8, 9, 11],
                },
            ),
            "lulc": (
                ("y", "x"),
                arrays["lulc"],
                {"long_name": "land use / land cover", "classes": classes},
            ),
        },
        coords={
            "time": s2.values,
            "s1_time": s1.values,
            "band": list(BANDS),
            "pol": list(POLS),
            "y": origin[1] - (np.arange(ny) + 0.5) * resolution,
            "x": origin[0] + (np.arange(nx) + 0.5) * resolution,
        },
        attrs={
            "description": (
                "cloudfill synthetic scene: fractal terrain, terrain-driven land cover, "
                "phenology, illumination, snow, SAR with speckle, clouds and shadows"
            ),
            "seed": seed,
            "cloud_fraction": fractions,
            "simulator": "cloudfill.simulate_scene",
        },
    )
    # Georeference while still lazy: rioxarray deep-copies the Dataset it writes to.
    ds = ds.rio.write_crs(crs)
    ds = ds.rio.write_transform(Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1]))
    if not lazy:
        # Store block by block into preallocated arrays: one graph (static layers shared by
        # every variable and date), no concatenation copies.
        names = list(ds.data_vars)
        targets = {name: np.empty(ds[name].shape, dtype=ds[name].dtype) for name in names}
        da.store([ds[name].data for name in names], [targets[name] for name in names], lock=False)
        ds = ds.copy(data=targets)
    return ds
