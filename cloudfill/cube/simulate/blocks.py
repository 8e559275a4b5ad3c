"""The simulator's block functions: numpy arrays for one spatial block (and one date).

``_static_block`` computes every date-independent layer (terrain, land cover, per-class
coefficients) once per block; ``_optical_block`` and ``_sar_block`` turn those layers into one
Sentinel-2 or Sentinel-1 date. The ``*_task`` wrappers adapt them to ``dask.array.blockwise``.
"""

from __future__ import annotations

import math

import numpy as np

from cloudfill.cube.simulate.constants import (
    _BLOCK_M,
    _BRIGHT_CELLS,
    _CANOPY,
    _CLASS_NOISE_CELLS,
    _CLOUD,
    _CLOUD_CELLS,
    _CLOUD_GAIN,
    _COVER,
    _DEM_CELLS,
    _EVENT_CELL_M,
    _EVENT_RAMP_DAYS,
    _EVENT_SM,
    _EVENT_SPECTRA,
    _EVENT_TERRAIN,
    _EVENT_VH,
    _EVENT_VV,
    _EVENT_WARP_CELLS,
    _EVENT_WARP_M,
    _F_BLOCK,
    _F_CANOPY,
    _F_CLASS,
    _F_CLOUD,
    _F_DEM,
    _F_EVENT,
    _F_MOISTURE,
    _F_PARCEL,
    _F_RIVER,
    _F_SNOW,
    _F_SOIL,
    _F_SPECKLE,
    _F_URBAN,
    _FLOOD_DAYS,
    _FLOOD_SHARE,
    _L_COVER,
    _L_DEM,
    _L_EDUR,
    _L_ESM,
    _L_ETYPE,
    _L_EVH,
    _L_EVV,
    _L_GREEN,
    _L_LULC,
    _L_NX,
    _L_NY,
    _L_NZ,
    _L_ONSET,
    _L_SEASON,
    _L_SM,
    _L_SNOWH,
    _L_SOIL,
    _L_SOW,
    _L_VEG,
    _L_VH,
    _L_VV,
    _L_WIND,
    _MOISTURE_CELLS,
    _N_OPTICAL,
    _N_STATIC,
    _N_STATIC_CHANGE,
    _NESZ_DB,
    _PARCEL_M,
    _RIVER_CELLS,
    _S1_INCIDENCE,
    _S1_LOOK_AZIMUTH,
    _SM_DB,
    _SNOW,
    _SOIL,
    _TILLAGE_DAYS,
    _URBAN_CELLS,
    _VEG_DB,
    _VH_BASE,
    _VH_GAIN,
    _VV_BASE,
    _WET_SNOW_DB,
    _WIND_DB,
    BARE,
    CLEARING,
    CROP,
    FLOOD,
    FOREST,
    GRASS,
    NO_EVENT,
    S1_LOOKS,
    TILLAGE,
    URBAN,
    WATER,
)
from cloudfill.cube.simulate.noise import (
    _cell_values,
    _fbm,
    _hash2d,
    _key,
    _smoothstep,
    _speckle_table,
    _to_unit,
)
from cloudfill.cube.simulate.scene import (
    _melt,
    _Scene,
    _season,
    _snowline,
)


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
    """All date-independent layers of one block, shape (n_static(sc), len(ys), len(xs))."""
    ny, nx = len(ys), len(xs)
    out = np.empty((n_static(sc), ny, nx), dtype=np.float32)
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
    if sc.surface_change > 0:
        _event_layers(sc, ys, xs, out, lowland=(h < 0.4) & (tan2 < tan_deg[8]), terrain=terrain)
    return out


def n_static(sc: _Scene) -> int:
    """How many static layers a block of ``sc`` has (the event layers only with change)."""
    return _N_STATIC_CHANGE if sc.surface_change > 0 else _N_STATIC


def _patch_values(sc: _Scene, ys: np.ndarray, xs: np.ndarray, field: int) -> np.ndarray:
    """A uniform [0, 1) value per irregular patch: square cells of _EVENT_CELL_M whose
    boundaries are warped by a smooth field, so patches look like parcels and stands, not tiles.
    """
    cells = sc.cells(_EVENT_WARP_CELLS)
    warp = np.float32(_EVENT_WARP_M / sc.resolution)
    wy = ys[:, None] + warp * _fbm(ys, xs, cells, _key(sc.seed, _F_EVENT, 1))
    wx = xs[None, :] + warp * _fbm(ys, xs, cells, _key(sc.seed, _F_EVENT, 2))
    size = max(1.0, _EVENT_CELL_M / sc.resolution)
    cy = np.floor(wy / size).astype(np.int64)
    cx = np.floor(wx / size).astype(np.int64)
    y0, x0 = int(cy.min()), int(cx.min())
    grid = _to_unit(
        _hash2d(
            np.arange(y0, int(cy.max()) + 1),
            np.arange(x0, int(cx.max()) + 1),
            _key(sc.seed, _F_EVENT, 10 + field),
        )
    )
    return grid[cy - y0, cx - x0]


def _event_layers(
    sc: _Scene,
    ys: np.ndarray,
    xs: np.ndarray,
    out: np.ndarray,
    lowland: np.ndarray,
    terrain: np.ndarray,
) -> None:
    """Fill the event layers of ``out``: which patches change, how, when and for how long."""
    lulc = out[_L_LULC]
    chosen = _patch_values(sc, ys, xs, 0) < np.float32(sc.surface_change)
    kind = _patch_values(sc, ys, xs, 1)
    when = _patch_values(sc, ys, xs, 2)
    span = _patch_values(sc, ys, xs, 3)
    field = (lulc == CROP) | (lulc == GRASS)
    flood = field & lowland & (kind < np.float32(_FLOOD_SHARE))
    etype = np.full(lulc.shape, NO_EVENT, dtype=np.intp)
    etype[chosen & field] = TILLAGE
    etype[chosen & flood] = FLOOD
    etype[chosen & (lulc == FOREST)] = CLEARING
    out[_L_ETYPE] = etype
    first, last = min(sc.s2_days), max(sc.s2_days)
    out[_L_ONSET] = np.float32(first) + when * np.float32(max(1, last - first))
    lo = np.where(etype == FLOOD, np.float32(_FLOOD_DAYS[0]), np.float32(_TILLAGE_DAYS[0]))
    hi = np.where(etype == FLOOD, np.float32(_FLOOD_DAYS[1]), np.float32(_TILLAGE_DAYS[1]))
    out[_L_EDUR] = np.where(etype == CLEARING, np.float32(1e6), lo + span * (hi - lo))
    out[_L_EVV] = _EVENT_VV[etype] + _EVENT_TERRAIN[etype] * terrain
    out[_L_EVH] = _EVENT_VH[etype] + _EVENT_TERRAIN[etype] * terrain
    out[_L_ESM] = _EVENT_SM[etype]


def _event_weight(st: np.ndarray, day: int) -> np.ndarray:
    """0..1: how far each pixel's event has taken hold on ``day`` (0 where none)."""
    since = np.float32(day) - st[_L_ONSET]
    w = _smoothstep(since * np.float32(1 / _EVENT_RAMP_DAYS[0]))
    w *= np.float32(1) - _smoothstep((since - st[_L_EDUR]) * np.float32(1 / _EVENT_RAMP_DAYS[1]))
    w[st[_L_ETYPE] == NO_EVENT] = 0
    return w


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
    event = _event_weight(st, sc.s2_days[t]) if sc.surface_change > 0 else None
    if event is not None:
        spectra = _EVENT_SPECTRA[st[_L_ETYPE].astype(np.intp)]
    for b in range(4):
        refl = st[_L_GREEN + b] * fc
        refl += st[_L_SOIL + b]
        if event is not None:
            refl += event * (spectra[..., b] - refl)
        refl += snow * (_SNOW[b] - refl)
        refl *= illum
        np.clip(refl, np.float32(0), np.float32(1), out=refl)
        out[b] = refl

    ndvi = (out[3] - out[2]) / (out[3] + out[2] + np.float32(1e-6))
    scl = np.where(water, np.float32(6), np.float32(5))
    scl[(ndvi > 0.35) & ~water] = 4
    if event is not None:
        scl[(event > 0.5) & (st[_L_ETYPE] == FLOOD)] = 6
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
    event = wet = None
    if sc.surface_change > 0:
        event = _event_weight(st, sc.s1_days[t])
        # Wet snow in the melt season darkens both polarisations.
        wet = _smoothstep((st[_L_SNOWH] - np.float32(_snowline(sc.s1_doy[t]))) * np.float32(20))
        wet[st[_L_LULC] == WATER] = 0
        wet *= np.float32(_WET_SNOW_DB * _melt(sc.s1_doy[t]))

    h = _hash2d(ys, xs, _key(sc.seed, _F_SPECKLE, sc.s1_days[t]))
    table = _speckle_table(S1_LOOKS)
    out = np.empty((2, len(ys), len(xs)), dtype=np.float32)
    for p, (layer, event_layer, gains, shift) in enumerate(
        (
            (_L_VV, _L_EVV, (1.0, 1.0, 1.0), 48),
            (_L_VH, _L_EVH, (_VH_GAIN["moisture"], _VH_GAIN["veg"], _VH_GAIN["wind"]), 32),
        )
    ):
        db = sm_db * np.float32(gains[0])
        db += veg_db * np.float32(gains[1])
        db += wind_db * np.float32(gains[2])
        db += st[layer]
        if event is not None and wet is not None:
            changed = st[_L_ESM] * moisture
            changed *= np.float32(gains[0])
            changed += st[event_layer]
            db += event * (changed - db)
            db += wet
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
