"""The slopes' sunlight at the overpass (SODCTXHI): the sun's position, the light on a
plane against its closed form in float64, numpy and dask alike, and the grid's geometry."""

from __future__ import annotations

import math
from dataclasses import replace

import dask.array as da
import numpy as np
import pytest

import cloudfill
from cloudfill.core.illumination import (
    MAX_LIGHT,
    SKY_LIGHT,
    LightGeometry,
    light_geometry,
    slope_light,
    sun_position,
)
from cloudfill.errors import ParameterError


def test_sun_position_at_the_equinox_and_the_solstices() -> None:
    # On the equator at the equinox the sun runs along the east-west circle: 10:30 is
    # 22.5 degrees from the zenith, due east.
    el, az = sun_position("2023-03-22", 0.0)
    assert el == pytest.approx(67.5, abs=0.5) and az == pytest.approx(90.0, abs=1.0)
    # Higher in June than in December in the north; the other way round in the south.
    assert sun_position("2023-06-21", 45.0)[0] > sun_position("2023-12-21", 45.0)[0] + 40
    assert sun_position("2023-06-21", -45.0)[0] < sun_position("2023-12-21", -45.0)[0] - 40
    # Morning: east of the meridian; south of the zenith in northern winter, north in the south.
    assert 90 < sun_position("2023-12-21", 45.0)[1] < 180
    assert 0 < sun_position("2023-06-21", -45.0)[1] < 90


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@pytest.mark.parametrize("facing", [(0.3, 0.0), (0.0, 0.4), (-0.5, -0.5), (0.0, -1.5)])
def test_the_light_on_a_plane_is_its_closed_form(backend: str, facing) -> None:
    """z = a * east + b * north (metres): the same light everywhere, the cosine of the sun
    against the plane's normal plus the sky light the plane sees, in float64."""
    a, b = facing
    g = LightGeometry(46.0, (10.0, -20.0))  # rows run south, 20 m apart
    east = np.arange(30)[None, :] * 10.0
    north = -np.arange(20)[:, None] * 20.0
    dem = a * east + b * north + 500.0
    date = "2023-01-10"
    got = slope_light(da.from_array(dem, chunks=(7, 9)) if backend == "dask" else dem, date, g)
    got = np.asarray(got)
    el, az = (math.radians(v) for v in sun_position(date, g.latitude))
    sun = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
    normal = np.array([-a, -b, 1.0]) / math.sqrt(1 + a * a + b * b)
    want = (max(sun @ normal, 0) + SKY_LIGHT * sun[2] * (1 + normal[2]) / 2) / (
        (1 + SKY_LIGHT) * sun[2]
    )
    assert got.shape == dem.shape and got.dtype == np.float32
    np.testing.assert_allclose(got[1:-1, 1:-1], want, rtol=2e-5)
    # The edge pixels repeat beyond the grid: there the plane has half its slope.
    half = slope_light(np.pad(dem, 1, mode="edge")[:3, :3], date, g)[1, 1]
    np.testing.assert_allclose(got[0, 0], half, rtol=1e-6)
    assert abs(half - want) > 1e-3


def test_numpy_and_dask_agree_on_rough_terrain_and_a_void_reads_flat_ground() -> None:
    rng = np.random.default_rng(3)
    dem = np.cumsum(np.cumsum(rng.normal(size=(45, 61)), 0), 1) * 5.0
    dem[20, 30] = np.nan
    g = LightGeometry(28.0, (10.0, -10.0))
    want = slope_light(dem, "2023-12-06", g)
    got = slope_light(da.from_array(dem, chunks=(11, 16)), "2023-12-06", g).compute()
    np.testing.assert_array_equal(got, want)
    assert (want[19:22, 29:32][[0, 1, 1, 2], [1, 0, 2, 1]] == 1).all()  # next to the void
    assert want[20, 30] == 1 and np.isfinite(want).all() and (want != 1).mean() > 0.9


def test_a_low_or_set_sun_gives_no_light_from_below_and_the_light_is_clipped() -> None:
    g = LightGeometry(70.0, (10.0, -10.0))
    assert sun_position("2023-12-21", 70.0)[0] < 0  # polar night
    flat = slope_light(np.zeros((3, 3)), "2023-12-21", g)
    np.testing.assert_allclose(flat, 1.0, rtol=1e-6)  # flat ground is still 1
    south = np.array([[10.0] * 3, [0.0] * 3, [-10.0] * 3])  # 45 degrees, facing south
    lit = slope_light(south, "2023-12-21", g)[1, 1]
    assert lit == MAX_LIGHT  # the sun 3 degrees high on a slope facing it: clipped
    assert slope_light(-south, "2023-12-21", g)[1, 1] < 0.2  # facing away: sky light only


def test_light_geometry_of_projected_geographic_and_bare_grids() -> None:
    ds = cloudfill.simulate_scene((16, 16), seed=0)
    g = light_geometry(ds)
    # UTM 200 km west of its central meridian: a scale of 1.0001
    assert g.latitude == pytest.approx(28.0, abs=0.1)
    np.testing.assert_allclose(g.spacing, (10.0, -10.0), rtol=2e-4)
    feet = light_geometry(ds.rio.write_crs("EPSG:2227"))  # California, US survey feet
    np.testing.assert_allclose(feet.spacing, (3.048, -3.048), rtol=1e-3)
    mercator = ds.assign_coords(x=1e6 + np.arange(16) * 10.0, y=8.4e6 - np.arange(16) * 10.0)
    g = light_geometry(mercator.rio.write_crs("EPSG:3857"))
    assert g.latitude == pytest.approx(60.0, abs=0.01)  # Web Mercator's scale is 2 there
    np.testing.assert_allclose(g.spacing, (5.0, -5.0), rtol=1e-3)
    geo = ds.assign_coords(x=85.0 + np.arange(16) * 1e-4, y=28.0 - np.arange(16) * 1e-4)
    g = light_geometry(geo.rio.write_crs("EPSG:4326"))
    assert g.latitude == pytest.approx(28.0, abs=0.01)
    assert g.spacing[0] == pytest.approx(11.132 * math.cos(math.radians(g.latitude)), rel=1e-3)
    assert g.spacing[1] == pytest.approx(-11.132, rel=1e-3)
    assert light_geometry(ds.drop_vars("spatial_ref")).latitude == 28.0
    with pytest.raises(ParameterError, match="2 x 2"):
        light_geometry(ds.isel(x=[0]))
    with pytest.raises(ParameterError, match="globe"):
        light_geometry(geo.rio.write_crs("EPSG:4326").assign_coords(y=95.0 + np.arange(16)))


def test_true_north_is_turned_into_a_rotated_grid() -> None:
    """On the Antarctic polar stereographic grid, at 60 degrees east true north points 60
    degrees clockwise of the grid's +y: a slope facing a sun at true azimuth A, on that grid,
    gets the light of a north-up slope facing azimuth A."""
    lon = np.radians(60.0)
    rho = 1.7e6  # metres from the pole, about 75 degrees south
    x0, y0 = rho * np.sin(lon), rho * np.cos(lon)
    ds = cloudfill.simulate_scene((9, 9), seed=0)
    polar = ds.assign_coords(x=x0 + np.arange(9) * 10.0, y=y0 - np.arange(9) * 10.0)
    g = light_geometry(polar.rio.write_crs("EPSG:3031"))
    assert g.north == pytest.approx(60.0, abs=0.1)
    date = "2023-12-21"
    el, az = sun_position(date, g.latitude)
    # a plane whose steepest ascent points away from the sun's grid azimuth (it faces the sun)
    grid_az = np.radians(az + g.north)
    cols, rows = np.meshgrid(np.arange(9) * 10.0, -np.arange(9) * 10.0)
    plane = -0.3 * (np.sin(grid_az) * cols + np.cos(grid_az) * rows)
    north_up = LightGeometry(g.latitude, g.spacing)
    turned = slope_light(plane, date, g)[1:-1, 1:-1]
    straight = slope_light(plane, date, north_up)[1:-1, 1:-1]
    assert turned.mean() > straight.mean() + 0.05  # facing the true sun only once turned
    face = np.array([0.3 * np.sin(grid_az), 0.3 * np.cos(grid_az), 1.0]) / np.sqrt(1.09)
    e = np.radians(el)
    want = (
        np.cos(e) * np.hypot(face[0], face[1])
        + np.sin(e) * face[2]
        + SKY_LIGHT * np.sin(e) * (1 + face[2]) / 2
    ) / ((1 + SKY_LIGHT) * np.sin(e))
    np.testing.assert_allclose(turned, min(want, MAX_LIGHT), rtol=2e-3)


def test_a_cubes_own_sun_angles_are_used_for_their_dates() -> None:
    """``sun_elevation``/``sun_azimuth`` along ``time`` (as a STAC cube carries them) replace
    the computed sun on their dates; NaN and dates without them fall back to the formula."""
    ds = cloudfill.simulate_scene((24, 24), dates=3, seed=1)
    ds = ds.assign_coords(
        sun_elevation=("time", [20.0, np.nan, 50.0]), sun_azimuth=("time", [170.0, 150.0, 120.0])
    )
    g = light_geometry(ds)
    days = [f"{t:%Y-%m-%d}" for t in ds.indexes["time"]]
    stamps = [t.isoformat() for t in ds.indexes["time"]]
    assert g.suns == ((stamps[0], 20.0, 170.0), (stamps[2], 50.0, 120.0))
    dem = ds["dem"].values
    own = slope_light(dem, days[0], g)
    bare = replace(g, suns=())
    assert not np.allclose(own, slope_light(dem, days[0], bare))
    np.testing.assert_array_equal(slope_light(dem, days[1], g), slope_light(dem, days[1], bare))
    # the stated sun: a plane facing it gets the closed form's light
    el, az = (math.radians(v) for v in (20.0, 170.0))
    facing = LightGeometry(g.latitude, (10.0, -10.0), suns=g.suns)
    plane = -0.2 * (
        math.sin(az) * np.arange(9)[None, :] * 10 - math.cos(az) * np.arange(9)[:, None] * 10
    )
    normal = np.array([0.2 * math.sin(az), 0.2 * math.cos(az), 1.0]) / math.sqrt(1.04)
    sun = np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])
    want = (sun @ normal + SKY_LIGHT * sun[2] * (1 + normal[2]) / 2) / ((1 + SKY_LIGHT) * sun[2])
    np.testing.assert_allclose(slope_light(plane, days[0], facing)[1:-1, 1:-1], want, rtol=1e-5)
