"""How much sunlight each pixel's slope receives at the target date's overpass.

Snow is bright, and how bright depends on the slope: at 28 degrees north in early December
the sun stands 35 degrees high at Sentinel-2's overpass, so a 45 degree slope facing it gets
1.5 times the light of flat ground and one facing away 0.17 of it. The height context
(:mod:`cloudfill.core.height`) knows what a snow-covered band of height looks like on average;
without the slope, every pixel of the band gets that average. On the snow-covered change pixels
of validation scene 162's December date, the band's mean of the clear pixels missed the truth
by 0.087 in the visible bands, that mean scaled by each pixel's light against its band's by
0.03-0.04 (RESULTS, "Slope light"). A reference date in another season was lit by another sun,
too.

So the SODCTXHI variant reads :data:`~cloudfill.core.variants.LIGHT_CHANNELS`: the light on
each pixel's slope at the target date (:func:`slope_light`), relative to flat ground, and the
mean light of the clear pixels of its elevation band (a column of the height table). The light
is the textbook one: direct sun by the cosine of the angle between the sun and the slope's
normal (zero on slopes facing away), plus a sky light of :data:`SKY_LIGHT` of the direct light
on flat ground, scaled by the share of the sky the slope sees. The sun stands where it does at
Sentinel-2's overpass (10:30 local solar time) on the date, at the latitude of the centre of
the cube's grid (:func:`~cloudfill.core.season.centre_latitude`), unless the cube states the
date's sun itself (``sun_elevation`` and ``sun_azimuth`` along ``time``, which
:func:`~cloudfill.cube.stac.cube_from_stac` keeps from the items' metadata; :func:`sun_at`);
the slope comes from the DEM by central differences on the grid's spacing in metres.

Examples
--------
>>> import cloudfill
>>> ds = cloudfill.simulate_scene((32, 32), seed=0)
>>> geometry = light_geometry(ds)
>>> round(geometry.latitude, 1), [round(v, 2) for v in geometry.spacing]
(28.0, [10.0, -10.0])
>>> light = slope_light(ds["dem"].values, "2023-12-06", geometry)
>>> light.shape, bool(0.0 <= light.min() and light.max() < 3.0)
((32, 32), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS, Proj, Transformer
from pyproj.exceptions import CRSError, ProjError

from cloudfill._backend import namespace
from cloudfill.core.season import centre_latitude
from cloudfill.cube.schema import cube_crs
from cloudfill.errors import ParameterError

__all__ = [
    "DEFAULT_LATITUDE",
    "LIGHT_VERSION",
    "MAX_LIGHT",
    "MAX_RATIO",
    "MIN_BAND_LIGHT",
    "OVERPASS_HOUR_ANGLE",
    "SKY_LIGHT",
    "LightGeometry",
    "light_geometry",
    "slope_light",
    "sun_at",
    "sun_position",
]

LIGHT_VERSION: int = 2
"""Changes whenever the light's formula changes (part of the patch cache's key)."""

SKY_LIGHT: float = 0.25
"""Sky light on flat ground as a share of the direct sunlight there: a clear sky's diffuse
light is about a fifth of the global irradiance in the visible."""

OVERPASS_HOUR_ANGLE: float = -22.5
"""Hour angle of the sun at Sentinel-2's overpass, degrees: 10:30 mean local solar time, the
time of its descending node at the equator. Away from the equator the satellite passes later
in the north and earlier in the south (about 10:48 at 28 degrees north, 11:05 at 45), which
moves the sun's azimuth by up to about 15 degrees at mid-latitudes: the simulator's sun (and
the shipped models' training) uses the same 10:30 everywhere, so it is kept here; a real
cube's own sun angles (the products' metadata) would be the better source."""

MAX_LIGHT: float = 4.0
"""Light is clipped here: a steep slope facing a sun 15 degrees high gets about 3.5 times the
light of flat ground; beyond that the ratio to flat ground says nothing useful."""

MIN_BAND_LIGHT: float = 0.05
"""A band whose clear pixels get less light than this on average (all facing away from a low
sun) gives no ratio to scale by: its lit means read as the band's means scaled by 1/0.05."""

MAX_RATIO: float = 4.0
"""The ratio of a pixel's light to its band's is clipped here (a steep sunny slope in a band of
shaded ones)."""

DEFAULT_LATITUDE: float = 28.0
"""Latitude assumed for a cube whose grid has no CRS: the simulated scenes' (the shipped
models' training scenes), as the season channels count such a cube as northern."""

_MIN_SINE = 0.05  # the sun 3 degrees high: lower suns give flat ground no direct light to scale


@dataclass(frozen=True)
class LightGeometry:
    """Where the cube lies and how far apart its pixels are: all :func:`slope_light` needs
    besides the DEM and the date.

    Attributes
    ----------
    latitude
        Of the centre of the grid, degrees north.
    spacing
        ``(dx, dy)``: metres from one column to the next and one row to the next along the
        ``x`` and ``y`` axes, signed as the coordinates run (north-up rasters have ``dy < 0``).
    north
        True north's bearing in the grid, degrees clockwise from the ``y`` axis's positive
        direction (0 on a geographic grid or one without a CRS): a sun at true azimuth ``A``
        lies at grid azimuth ``A + north``.
    suns
        ``(time, elevation, azimuth)`` per date whose sun the cube states (its
        ``sun_elevation`` and ``sun_azimuth`` coordinates, degrees; ``time`` in ISO format):
        :func:`sun_at` takes them over :func:`sun_position`.
    """

    latitude: float
    spacing: tuple[float, float]
    north: float = 0.0
    suns: tuple[tuple[str, float, float], ...] = ()


def light_geometry(ds: xr.Dataset | xr.DataArray) -> LightGeometry:
    """The :class:`LightGeometry` of a cube's grid, from its ``x``/``y`` coordinates and CRS.

    The spacing is the mean step between the first and last coordinates. A geographic CRS's
    degrees become metres at the centre's latitude; a projected CRS's units become metres,
    divided by the projection's scale at the centre (1.0 near UTM's central meridian, 2 for
    Web Mercator at 60 degrees), and true north's bearing in the grid at the centre is kept
    (:attr:`LightGeometry.north`: 2.6 degrees at a UTM zone's edge at 60 degrees north, tens
    of degrees on a polar grid); a grid without a CRS counts as metres, north-up, at
    :data:`DEFAULT_LATITUDE`. A grid with fewer than two pixels along an axis, or a geographic
    one whose latitude cannot be known, is refused. Where the cube has ``sun_elevation`` and
    ``sun_azimuth`` coordinates along ``time`` (degrees;
    :func:`cloudfill.cube.stac.cube_from_stac` keeps the items' own), their finite values
    become :attr:`LightGeometry.suns`.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((8, 8), seed=0)
    >>> light_geometry(ds.drop_vars("spatial_ref"))
    LightGeometry(latitude=28.0, spacing=(10.0, -10.0), north=0.0, suns=())
    """
    nx, ny = ds.sizes.get("x", 0), ds.sizes.get("y", 0)
    if nx < 2 or ny < 2:
        raise ParameterError("a slope's light needs a grid of at least 2 x 2 pixels")
    x, y = (np.asarray(ds[c].values, dtype="float64") for c in ("x", "y"))
    dx, dy = (x[-1] - x[0]) / (nx - 1), (y[-1] - y[0]) / (ny - 1)
    latitude = centre_latitude(ds)
    if latitude is not None and not -90.0 <= latitude <= 90.0:
        raise ParameterError(f"the grid's centre lies off the globe (latitude {latitude:.1f})")
    crs = None if cube_crs(ds) is None else CRS.from_user_input(cube_crs(ds))
    north = 0.0
    if crs is not None and crs.is_geographic:
        if latitude is None:
            raise ParameterError("a geographic grid without a known latitude has no metres")
        metres = 111_320.0  # per degree of latitude, and of longitude at the equator
        dx *= metres * math.cos(math.radians(latitude))
        dy *= metres
    elif crs is not None:
        factor = crs.axis_info[0].unit_conversion_factor if crs.axis_info else 1.0
        dx, dy = dx * factor, dy * factor
        centre = ((x[0] + x[-1]) / 2, (y[0] + y[-1]) / 2)
        scale = _projection_scale(crs, *centre)
        if scale is not None:
            dx, dy = dx / scale[0], dy / scale[1]
        north = _north_bearing(crs, *centre)
    latitude = DEFAULT_LATITUDE if latitude is None else latitude
    if dx == 0 or dy == 0 or not (math.isfinite(dx) and math.isfinite(dy)):
        raise ParameterError(f"the grid's spacing ({dx}, {dy}) has no slope to give")
    return LightGeometry(float(latitude), (float(dx), float(dy)), north, _stated_suns(ds))


def _stated_suns(ds: xr.Dataset | xr.DataArray) -> tuple[tuple[str, float, float], ...]:
    """The cube's own sun per date (``sun_elevation``/``sun_azimuth`` along ``time``)."""
    if not {"sun_elevation", "sun_azimuth"} <= set(ds.coords) or "time" not in ds.coords:
        return ()
    el, az = ds["sun_elevation"], ds["sun_azimuth"]
    if el.dims != ("time",) or az.dims != ("time",):
        raise ParameterError("sun_elevation and sun_azimuth must lie along time alone")
    suns = []
    for t, e, a in zip(ds["time"].values, el.values, az.values, strict=True):
        e, a = float(e), float(a)
        if not (math.isfinite(e) and math.isfinite(a)):
            continue
        if not -90.0 <= e <= 90.0:
            raise ParameterError(f"sun_elevation {e} at {pd.Timestamp(t)} is not an elevation")
        suns.append((pd.Timestamp(t).isoformat(), e, a % 360.0))
    return tuple(suns)


def _projection_scale(crs: CRS, x: float, y: float) -> tuple[float, float] | None:
    """The projection's (east, north) scale factors at a point of the grid; None where pyproj
    cannot say (a local CRS, a point outside the projection's domain)."""
    try:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        factors = Proj(crs).get_factors(lon, lat)
        scale = (float(factors.parallel_scale), float(factors.meridional_scale))
    except (ProjError, CRSError, RuntimeError):
        return None
    return scale if all(math.isfinite(v) and v > 0 for v in scale) else None


def _north_bearing(crs: CRS, x: float, y: float) -> float:
    """True north's bearing in the grid at a point, degrees clockwise from the grid's ``+y``
    (0 where pyproj cannot say): a true azimuth ``A`` points along grid azimuth ``A +`` it."""
    try:
        lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
        step = -1e-4 if lat > 89.0 else 1e-4  # northwards, or southwards at the pole itself
        back = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
        x2, y2 = back.transform(lon, lat + step)
    except (ProjError, CRSError, RuntimeError):
        return 0.0
    bearing = math.degrees(math.atan2(x2 - x, y2 - y)) + (180.0 if step < 0 else 0.0)
    bearing = (bearing + 180.0) % 360.0 - 180.0
    return bearing if math.isfinite(bearing) else 0.0


def sun_position(date: Any, latitude: float) -> tuple[float, float]:
    """Elevation and azimuth (degrees, azimuth clockwise from north) of the sun at
    Sentinel-2's overpass on ``date`` at ``latitude``: the declination's cosine formula and
    :data:`OVERPASS_HOUR_ANGLE`; morning, so the sun stands east of the meridian.

    Examples
    --------
    >>> [round(v, 1) for v in sun_position("2023-06-21", 28.0)]
    [69.3, 97.6]
    >>> [round(v, 1) for v in sun_position("2023-12-21", 28.0)]
    [34.2, 154.9]
    """
    doy = pd.Timestamp(date).dayofyear
    decl = math.radians(23.44) * math.sin(2 * math.pi * (doy - 81) / 365.0)
    lat = math.radians(latitude)
    hour = math.radians(OVERPASS_HOUR_ANGLE)
    sin_el = math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * math.cos(hour)
    el = math.asin(max(-1.0, min(1.0, sin_el)))
    denominator = math.cos(el) * math.cos(lat)
    cos_az = (math.sin(decl) - sin_el * math.sin(lat)) / denominator if denominator else 1.0
    az = math.acos(max(-1.0, min(1.0, cos_az)))
    return math.degrees(el), math.degrees(az)


def sun_at(date: Any, geometry: LightGeometry) -> tuple[float, float]:
    """The sun's elevation and true azimuth (degrees) at ``date``: the cube's own where it
    states them (:attr:`LightGeometry.suns`: the same time, else the same day), else
    :func:`sun_position` at its latitude.

    Examples
    --------
    >>> g = LightGeometry(28.0, (10.0, -10.0), suns=(("2023-12-06T04:50:00", 30.0, 160.0),))
    >>> sun_at("2023-12-06", g), [round(v, 1) for v in sun_at("2023-12-07", g)]
    ((30.0, 160.0), [34.8, 154.6])
    """
    when = pd.Timestamp(date)
    same_day = [s for s in geometry.suns if pd.Timestamp(s[0]).normalize() == when.normalize()]
    for stated, el, az in same_day:
        if pd.Timestamp(stated) == when:
            return el, az
    if same_day:
        return same_day[0][1], same_day[0][2]
    return sun_position(date, geometry.latitude)


def _light_padded(dem: Any, sun: tuple[float, float], spacing: tuple[float, float]) -> Any:
    """The light of the interior of ``dem``, a block with one pixel of neighbours on every
    side (so that the result never depends on where a block starts)."""
    xp = namespace(dem)
    z = xp.asarray(dem, dtype="float32")
    dx, dy = spacing
    dz_east = (z[1:-1, 2:] - z[1:-1, :-2]) / np.float32(2 * dx)
    dz_north = (z[2:, 1:-1] - z[:-2, 1:-1]) / np.float32(2 * dy)
    inv = 1 / xp.sqrt(1 + dz_east * dz_east + dz_north * dz_north)
    # A sun at or below the horizon (polar winter) is taken as one just above it: the light is
    # then the sky's and that of slopes facing the sun, never direct light from below.
    el, az = max(math.radians(sun[0]), math.asin(_MIN_SINE)), math.radians(sun[1])
    sine = math.sin(el)
    east, north = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el)
    cos_i = (np.float32(-east) * dz_east - np.float32(north) * dz_north + np.float32(sine)) * inv
    sky = np.float32(SKY_LIGHT * sine / 2) * (1 + inv)  # the share of sky a slope sees
    light = (xp.maximum(cos_i, 0) + sky) / np.float32((1 + SKY_LIGHT) * sine)
    light = xp.minimum(light, np.float32(MAX_LIGHT))
    # A pixel without a DEM value, or next to one, has no slope: flat ground's light.
    void = xp.isnan(light) | xp.isnan(z[1:-1, 1:-1])
    return xp.where(void, np.float32(1), light).astype("float32")


def slope_light(dem: Any, date: Any, geometry: LightGeometry) -> Any:
    """Light on each pixel's slope at ``date``'s overpass relative to flat ground (y, x),
    float32 (NumPy, CuPy or lazy dask, as ``dem``); the sun is :func:`sun_at`'s.

    ``(max(cos i, 0) + SKY_LIGHT * sin(e) * (1 + cos s) / 2) / ((1 + SKY_LIGHT) sin(e))``,
    with ``i`` the angle between the sun and the slope's normal, ``e`` the sun's elevation and
    ``s`` the slope: 1 on flat ground, above 1 on slopes facing the sun (clipped at
    :data:`MAX_LIGHT`), down to the sky light alone on slopes facing away; a sun lower than
    2.9 degrees (``asin(0.05)``) counts as that high. The sun's azimuth is turned into the
    grid by :attr:`LightGeometry.north`. The slope is the DEM's central difference, the edge
    pixels repeated beyond the grid; 1 (flat ground) where a DEM value it needs is NaN.

    Examples
    --------
    >>> g = LightGeometry(28.0, (10.0, -10.0))
    >>> round(float(slope_light(np.zeros((3, 3)), "2023-12-06", g)[1, 1]), 4)
    1.0
    >>> south = np.array([[20.0] * 3, [10.0] * 3, [0.0] * 3])  # rows run south: faces south
    >>> [round(float(slope_light(z, "2023-12-06", g)[1, 1]), 2) for z in (south, -south)]
    [1.47, 0.17]
    """
    el, az = sun_at(date, geometry)
    sun = (el, az + geometry.north)  # the sun's azimuth in the grid
    if isinstance(dem, da.Array):
        return dem.map_overlap(
            _light_padded,
            depth=1,
            boundary="nearest",
            trim=False,
            chunks=dem.chunks,
            dtype="float32",
            sun=sun,
            spacing=geometry.spacing,
        )
    xp = namespace(dem)
    return _light_padded(xp.pad(xp.asarray(dem), 1, mode="edge"), sun, geometry.spacing)
