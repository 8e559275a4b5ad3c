"""The simulator's physical tables: land-cover codes, spectra, backscatter, geometry, noise
scales, random-field ids and the layout of the per-block static layers.

Kept apart from the code that uses them so the numbers that shape the scene can be read (and
tuned) in one place.
"""

from __future__ import annotations

import numpy as np

LULC_CLASSES: tuple[str, ...] = ("water", "forest", "crop", "grass", "urban", "bare")
"""Land-cover classes of the ``lulc`` variable, by code 0..5."""

WATER, FOREST, CROP, GRASS, URBAN, BARE = range(6)

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

# --- surface change (``simulate_scene(surface_change=...)``) -----------------------------
# Events by land cover: forest is cleared (for good); crops and grass are tilled (harvest and
# ploughing; bare for 40-100 days, then their phenology resumes) or, on low flat ground,
# flooded (6-30 days). Magnitudes and their sources: docs/method.md, "Simulated surface change".
NO_EVENT, FLOOD, CLEARING, TILLAGE = range(4)
EVENT_NAMES: tuple[str, ...] = ("none", "flood", "clearing", "tillage")
_EVENT_SPECTRA = np.array(
    [
        [0.0, 0.0, 0.0, 0.0],  # (no event)
        [0.085, 0.095, 0.080, 0.045],  # turbid flood water: brighter than a lake, dark in NIR
        [0.075, 0.095, 0.115, 0.200],  # slash and bare soil after clear-cutting
        [0.070, 0.090, 0.110, 0.170],  # fresh, moist tilled soil (darker than dry bare soil)
    ],
    dtype=np.float32,
)
# Backscatter of the changed surface (dB): specular open water for floods (no terrain term,
# flood plains are flat); bare soil with slash after clearing (VH 4-5 dB under forest); rough
# ploughed soil (VV 3-4 dB over smooth bare soil); soil-moisture sensitivity as _SM_DB.
_EVENT_VV = np.array([0.0, -20.0, -11.0, -9.5], dtype=np.float32)
_EVENT_VH = np.array([0.0, -27.0, -18.0, -17.0], dtype=np.float32)
_EVENT_SM = np.array([0.0, 0.0, 5.0, 6.0], dtype=np.float32)
_EVENT_TERRAIN = np.array([0.0, 0.0, 1.0, 1.0], dtype=np.float32)
_EVENT_CELL_M = 300.0  # size of the (warped) patches that change together
_EVENT_WARP_CELLS = (640.0, 320.0, 160.0)
_EVENT_WARP_M = 90.0  # how far patch boundaries wander from the square lattice
_FLOOD_DAYS = (6.0, 30.0)
_TILLAGE_DAYS = (40.0, 100.0)
_EVENT_RAMP_DAYS = (2.0, 5.0)  # onset and recovery ramps (floods recede over days)
_FLOOD_SHARE = 0.4  # of crop and grass events on low, flat ground
# Wet snow absorbs C band: backscatter drops by 3 dB or more in the melt season (Nagler and
# Rott 2000); dry winter snow is nearly transparent.
_WET_SNOW_DB = -4.0
_MELT_DOY, _MELT_WIDTH = 110.0, 30.0

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
    _F_EVENT,
) = range(1, 15)

# Static layers computed once per block and shared by every date. Per-class coefficients are
# spread into layers here because gathering from class tables costs more than the arithmetic.
_L_DEM, _L_LULC, _L_NX, _L_NY, _L_NZ, _L_SNOWH, _L_SOW, _L_SEASON = range(8)
_L_SOIL = 8  # 4 bands: background reflectance times the soil brightness field
_L_GREEN = 12  # 4 bands: canopy minus background, canopy brightness field included
_L_COVER = 16  # 3 phenology coefficients, see _COVER
_L_VV, _L_VH, _L_SM, _L_VEG, _L_WIND = range(19, 24)
_N_STATIC = 24
# With surface change: the event type, its onset (days since 1970-01-01) and duration, and the
# changed surface's VV and VH base (terrain included) and soil-moisture sensitivity.
_L_ETYPE, _L_ONSET, _L_EDUR, _L_EVV, _L_EVH, _L_ESM = range(24, 30)
_N_STATIC_CHANGE = 30
_N_OPTICAL = 10  # truth (4), s2 (4), unusable mask, scl
