"""Tests of the scene simulator: contract, determinism, chunking, laziness and statistics."""

from __future__ import annotations

import collections

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cloudfill
from cloudfill.cube.schema import BANDS, POLS, VARIABLE_DIMS, validate
from cloudfill.cube.simulate import LULC_CLASSES, blocks, scene, simulate_scene
from cloudfill.errors import ParameterError


@pytest.fixture(scope="module")
def big_scene() -> xr.Dataset:
    """512 x 512, 6 default dates: enough room for every land-cover class."""
    return simulate_scene((512, 512), seed=0)


@pytest.fixture(scope="module")
def mountain_scene() -> xr.Dataset:
    """A seed whose terrain reaches above the winter snow line."""
    return simulate_scene((256, 256), seed=2)


def _lag1(image: np.ndarray) -> float:
    a = np.asarray(image, dtype=np.float64)
    return float(np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])


def _ndvi(ds: xr.Dataset) -> np.ndarray:
    nir = ds.truth.sel(band="B08").values
    red = ds.truth.sel(band="B04").values
    return (nir - red) / (nir + red)


# --- contract --------------------------------------------------------------------------------
def test_follows_the_contract() -> None:
    ds = simulate_scene((40, 50), dates=3, seed=0)
    assert validate(ds, require=("s2", "s1", "dem", "cloud", "scl", "lulc", "truth")) is ds
    for name, dims in VARIABLE_DIMS.items():
        assert ds[name].dims == dims, name
        assert isinstance(ds[name].data, np.ndarray), name
    for name in ("s2", "truth", "s1", "dem"):
        assert ds[name].dtype == np.float32, name
    assert ds.cloud.dtype == bool
    assert ds.scl.dtype == np.uint8
    assert np.issubdtype(ds.lulc.dtype, np.integer)
    assert ds.s1.attrs["units"] == "dB"
    assert list(ds.band.values) == list(BANDS)
    assert list(ds.pol.values) == list(POLS)
    assert dict(ds.sizes) == {
        "time": 3,
        "band": 4,
        "y": 40,
        "x": 50,
        "s1_time": ds.sizes["s1_time"],
        "pol": 2,
    }
    for dim in ("time", "s1_time"):
        assert ds[dim].dtype == np.dtype("datetime64[ns]")
        index = pd.DatetimeIndex(ds[dim].values)
        assert index.is_monotonic_increasing and index.is_unique
    assert ds.lulc.attrs["classes"] == ",".join(f"{i}={c}" for i, c in enumerate(LULC_CLASSES))


def test_grid_and_crs() -> None:
    ds = simulate_scene((30, 20), dates=2, crs="EPSG:32644", resolution=20.0, origin=(5e5, 3e6))
    assert "spatial_ref" in ds.coords
    assert ds.rio.crs.to_epsg() == 32644
    assert tuple(ds.rio.transform())[:6] == (20.0, 0.0, 5e5, 0.0, -20.0, 3e6)
    # Pixel centres, north up.
    assert ds.x.values[0] == 5e5 + 10.0 and ds.y.values[0] == 3e6 - 10.0
    assert np.all(np.diff(ds.y.values) == -20.0) and np.all(np.diff(ds.x.values) == 20.0)


def test_round_trips_through_zarr(tmp_path) -> None:
    ds = simulate_scene((16, 16), dates=4, seed=2)
    assert ds.attrs["seed"] == 2
    assert len(ds.attrs["cloud_fraction"]) == 4
    assert isinstance(ds.attrs["description"], str)
    cloudfill.write_cube(ds, tmp_path / "scene.zarr")
    back = cloudfill.open_cube(tmp_path / "scene.zarr")
    assert back.attrs["cloud_fraction"] == ds.attrs["cloud_fraction"]
    assert back.lulc.attrs["classes"] == ds.lulc.attrs["classes"]
    assert back.rio.crs == ds.rio.crs
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values, err_msg=name)


def test_exported_from_the_package() -> None:
    assert cloudfill.simulate_scene is simulate_scene
    assert "simulate_scene" in cloudfill.__all__


# --- dates and arguments -----------------------------------------------------------------------
def test_default_dates_cover_a_year_with_s1_nearby() -> None:
    ds = simulate_scene((8, 8))
    s2 = pd.DatetimeIndex(ds.time.values)
    s1 = pd.DatetimeIndex(ds.s1_time.values)
    assert len(s2) == 6 and s2[0] == pd.Timestamp("2023-01-10")
    assert 300 <= (s2[-1] - s2[0]).days <= 366
    assert s1[0] < s2[0] and s1[-1] > s2[-1]
    assert set(np.diff(s1.values).astype("timedelta64[D]").astype(int)) == {12}
    for date in s2:
        gap = np.abs((s1 - date).days).min()
        assert 1 <= gap <= 6, date


def test_explicit_dates_and_fractions() -> None:
    dates = ["2022-06-01", "2022-06-21", "2022-08-15"]
    s1_dates = ["2022-06-03", "2022-08-14"]
    ds = simulate_scene(
        (32, 32), dates=dates, s1_dates=s1_dates, cloud_fraction=[0.0, 0.5, 1.0], seed=4
    )
    assert list(pd.DatetimeIndex(ds.time.values)) == list(pd.to_datetime(dates))
    assert list(pd.DatetimeIndex(ds.s1_time.values)) == list(pd.to_datetime(s1_dates))
    assert ds.attrs["cloud_fraction"] == [0.0, 0.5, 1.0]
    assert simulate_scene((8, 8), dates=9).sizes["time"] == 9
    assert simulate_scene((8, 8), dates=2, cloud_fraction=0.3).attrs["cloud_fraction"] == [0.3, 0.3]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shape": (0, 10)},
        {"shape": "big"},
        {"dates": 0},
        {"dates": ["2023-02-01", "2023-01-01"]},
        {"dates": ["2023-01-01", "2023-01-01"]},
        {"dates": 2, "cloud_fraction": [0.1]},
        {"cloud_fraction": 1.5},
        {"chunks": 0},
        {"chunks": {"band": 2, "z": 3}},
        {"resolution": -10.0},
        {"surface_change": 1.5},
        {"surface_change": "some"},
    ],
)
def test_bad_arguments_raise_parameter_error(kwargs: dict) -> None:
    kwargs = {"shape": (16, 16), **kwargs}
    with pytest.raises(ParameterError):
        simulate_scene(**kwargs)


def test_default_cloud_fractions() -> None:
    for seed in range(5):
        fractions = simulate_scene((8, 8), seed=seed).attrs["cloud_fraction"]
        assert fractions[0] == 0.0
        assert 1.0 in fractions
        assert any(0.6 <= f < 1.0 for f in fractions)
        assert all(0.0 <= f <= 1.0 for f in fractions)


# --- determinism, chunking, laziness ----------------------------------------------------------
def test_same_seed_same_scene_other_seed_differs() -> None:
    a = simulate_scene((48, 40), dates=3, seed=7)
    b = simulate_scene((48, 40), dates=3, seed=7)
    c = simulate_scene((48, 40), dates=3, seed=8)
    xr.testing.assert_identical(a, b)
    for name in ("s2", "truth", "s1", "dem"):
        assert not np.array_equal(a[name].values, c[name].values), name


def test_independent_of_chunking() -> None:
    shape, kwargs = (70, 90), {"dates": 4, "seed": 3, "cloud_fraction": [0.0, 0.3, 0.7, 1.0]}
    whole = simulate_scene(shape, **kwargs)
    for chunks in ({"y": 32, "x": 41}, 25):
        lazy = simulate_scene(shape, chunks=chunks, **kwargs)
        assert isinstance(lazy.s2.data, da.Array)
        assert lazy.s2.data.chunks[2][0] == (chunks["y"] if isinstance(chunks, dict) else 25)
        computed = lazy.compute()
        for name in whole.data_vars:
            np.testing.assert_array_equal(computed[name].values, whole[name].values, err_msg=name)


def test_chunk_layout() -> None:
    ds = simulate_scene((64, 64), dates=3, chunks={"y": 32, "x": 16})
    assert ds.s2.data.chunks == ((1, 1, 1), (4,), (32, 32), (16,) * 4)
    assert set(ds.s1.data.chunks[0]) == {1} and ds.s1.data.chunks[1] == (2,)
    assert ds.dem.data.chunks == ((32, 32), (16,) * 4)
    assert ds.cloud.data.chunks[0] == (1, 1, 1)


def test_large_scene_is_lazy_and_quick_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a 20000 x 20000 scene does no per-pixel or per-chunk work, and a small window
    computes only the blocks it covers.

    The work is counted rather than timed so that a busy machine cannot fail the test: block
    functions called, the size of the grid the cloud thresholds are sampled on, and the tasks
    written out in the dask graph at build time.
    """
    calls: collections.Counter[str] = collections.Counter()
    sampled: list[int] = []

    def counted(name: str) -> None:
        func = getattr(blocks, name)

        def wrapper(*args, **kwargs):
            calls[name] += 1
            return func(*args, **kwargs)

        monkeypatch.setattr(blocks, name, wrapper)

    for name in ("_static_block", "_optical_block", "_sar_block"):
        counted(name)
    fbm = scene._fbm

    def sampling_fbm(ys, xs, *args, **kwargs):
        sampled.append(len(ys) * len(xs))
        return fbm(ys, xs, *args, **kwargs)

    monkeypatch.setattr(scene, "_fbm", sampling_fbm)

    ds = simulate_scene((20000, 20000), dates=4, seed=0)
    # Nothing computed while building; the cloud thresholds come from a coarse sample grid,
    # not from the 4e8 pixels of the scene.
    assert not calls
    assert sampled and max(sampled) <= 512 * 512
    for name in ds.data_vars:
        assert isinstance(ds[name].data, da.Array), name
        # The graph stays symbolic: only the index ranges are spelled out, one task per chunk
        # along an axis, never a task per block (400 blocks per date here).
        data = ds[name].data
        spelled_out = sum(
            len(layer) for layer in data.dask.layers.values() if layer.is_materialized()
        )
        assert spelled_out <= sum(len(sizes) for sizes in data.chunks), name
    assert ds.s2.data.chunksize == (1, 4, 1024, 1024)
    validate(ds)
    assert not calls
    window = ds.isel(time=1, s1_time=0, y=slice(15000, 15040), x=slice(3000, 3030))
    values = window.s2.values
    assert values.shape == (4, 40, 30) and np.isfinite(values).all()
    # The window lies in one spatial block: one static block and one S2 date are computed.
    assert calls == {"_static_block": 1, "_optical_block": 1}
    assert window.s1.shape == (2, 40, 30)


# --- statistics ------------------------------------------------------------------------------
def test_value_ranges(big_scene: xr.Dataset) -> None:
    ds = big_scene
    for name in ("s2", "truth"):
        values = ds[name].values
        assert values.min() >= 0.0 and values.max() <= 1.0, name
    assert np.isfinite(ds.s1.values).all()
    assert -36.0 <= ds.s1.values.min() and ds.s1.values.max() <= 6.0
    assert -25.0 < float(ds.s1.sel(pol="VV").median()) < -3.0
    assert float(ds.s1.sel(pol="VH").median()) < float(ds.s1.sel(pol="VV").median())
    dem = ds.dem.values
    assert 0.0 < dem.min() and dem.max() < 3000.0
    assert dem.max() - dem.min() > 300.0
    assert set(np.unique(ds.scl.values)) <= {3, 4, 5, 6, 8, 9, 11}


def test_cloud_fraction_close_to_requested() -> None:
    asked = [0.0, 0.1, 0.35, 0.6, 0.9, 1.0]
    ds = simulate_scene((256, 256), cloud_fraction=asked, seed=5)
    got = ds.cloud.mean(("y", "x")).values
    np.testing.assert_allclose(got, asked, atol=0.05)
    assert not ds.cloud.isel(time=0).any()
    assert ds.cloud.isel(time=-1).all()


def test_first_date_clear_by_default(big_scene: xr.Dataset) -> None:
    assert not big_scene.cloud.isel(time=0).any()
    got = big_scene.cloud.mean(("y", "x")).values
    np.testing.assert_allclose(got, big_scene.attrs["cloud_fraction"], atol=0.05)


def test_cloud_mask_matches_scl_and_s2_is_truth_elsewhere(big_scene: xr.Dataset) -> None:
    ds = big_scene
    cloud = ds.cloud.values
    np.testing.assert_array_equal(cloud, np.isin(ds.scl.values, (3, 8, 9)))
    clear = np.broadcast_to(~cloud[:, None], ds.s2.shape)
    np.testing.assert_array_equal(ds.s2.values[clear], ds.truth.values[clear])
    # Clouds are bright, shadows dark.
    t = int(np.argmax([0 < f < 1 for f in ds.attrs["cloud_fraction"]]))
    scl, s2, truth = ds.scl.values[t], ds.s2.values[t], ds.truth.values[t]
    thick = scl == 9
    assert thick.any() and s2[0][thick].mean() > 0.3
    shadow = scl == 3
    if shadow.any():
        assert np.all(s2[:, shadow] <= truth[:, shadow])


def test_spatial_autocorrelation(big_scene: xr.Dataset) -> None:
    dem = _lag1(big_scene.dem.values)
    assert dem > 0.9
    assert _lag1(big_scene.truth.isel(time=0, band=3).values) > 0.9
    assert _lag1(big_scene.truth.isel(time=3, band=0).values) > 0.9
    # Speckle decorrelates neighbouring SAR pixels.
    s1 = _lag1(big_scene.s1.isel(s1_time=0, pol=0).values)
    assert s1 < dem - 0.1


def test_every_land_cover_class_shaped_by_terrain(big_scene: xr.Dataset) -> None:
    lulc, dem = big_scene.lulc.values, big_scene.dem.values
    counts = np.bincount(lulc.ravel(), minlength=len(LULC_CLASSES))
    assert len(counts) == len(LULC_CLASSES) and (counts > 0).all(), counts
    assert dem[lulc == 0].mean() < dem[lulc == 5].mean()
    assert dem[lulc == 2].mean() < dem[lulc == 1].mean()  # crops in the valleys
    # Water reads as water to both sensors.
    water = lulc == 0
    assert _ndvi(big_scene)[0][water].mean() < 0.0
    assert (
        big_scene.s1.sel(pol="VV").values[:, water].mean()
        < big_scene.s1.sel(pol="VV").values[:, lulc == 4].mean() - 8
    )


def test_phenology(big_scene: xr.Dataset) -> None:
    ndvi = _ndvi(big_scene)
    lulc = big_scene.lulc.values
    months = pd.DatetimeIndex(big_scene.time.values).month
    winter, summer = list(months).index(1), list(months).index(9)
    for cls in (2, 3):  # crop, grass
        mask = lulc == cls
        assert abs(ndvi[summer][mask].mean() - ndvi[winter][mask].mean()) > 0.1, cls
    assert ndvi[summer][lulc == 3].mean() > ndvi[winter][lulc == 3].mean()
    # Crops are harvested: some parcels bare in one season and green in another.
    crop = lulc == 2
    assert np.ptp(ndvi[:, crop], axis=0).mean() > 0.3


def test_optical_carries_what_sar_does_not(big_scene: xr.Dataset) -> None:
    """Within one class the optical brightness varies while SAR (speckle aside) does not."""
    forest = big_scene.lulc.values == 1
    red = big_scene.truth.isel(time=0).sel(band="B04").values[forest]
    assert red.std() / red.mean() > 0.1
    vv = big_scene.s1.sel(pol="VV").values[:, forest].mean(axis=0)  # date average: less speckle
    corr = np.corrcoef(red, vv)[0, 1]
    assert abs(corr) < 0.5


def test_winter_snow_on_high_terrain(mountain_scene: xr.Dataset) -> None:
    ds = mountain_scene
    months = list(pd.DatetimeIndex(ds.time.values).month)
    january, july = months.index(1), months.index(7)
    snow = ds.scl.values[january] == 11
    assert snow.mean() > 0.02
    assert not (ds.scl.values[july] == 11).any()
    dem = ds.dem.values
    assert dem[snow].mean() > dem.mean() + 200
    high = dem > np.percentile(dem, 90)
    assert ds.truth.values[january, 0][high].mean() > ds.truth.values[july, 0][high].mean() + 0.2


def test_terrain_illumination(big_scene: xr.Dataset) -> None:
    """Slopes facing the sun are brighter than slopes facing away (the DEM explains it)."""
    dem = big_scene.dem.values.astype(np.float64)
    east = np.gradient(dem, axis=1)
    south = np.gradient(dem, axis=0)  # rows run south
    forest = big_scene.lulc.values == 1
    nir = big_scene.truth.isel(time=0).sel(band="B08").values
    # The winter sun stands in the south-south-east (azimuth ~150 degrees): a slope faces it
    # when the terrain falls towards it.
    facing = -(0.5 * east + 0.87 * south)
    sunny = forest & (facing > np.percentile(facing[forest], 80))
    shaded = forest & (facing < np.percentile(facing[forest], 20))
    assert nir[sunny].mean() > 1.2 * nir[shaded].mean()


# --- surface change ----------------------------------------------------------------------------
def _event_scene(change: float, shape=(192, 192), seed=5):
    """The scene, its _Scene and its static layers (event type, onset, duration)."""
    ds = simulate_scene(shape, dates=16, seed=seed, surface_change=change, cloud_fraction=0.0)
    sc = scene._scene(
        shape,
        pd.DatetimeIndex(ds.time.values),
        pd.DatetimeIndex(ds.s1_time.values),
        [0.0] * 16,
        seed,
        10.0,
        change,
    )
    static = blocks._static_block(sc, np.arange(shape[0]), np.arange(shape[1]))
    return ds, sc, static


@pytest.fixture(scope="module")
def changing() -> tuple:
    return _event_scene(0.5)


def test_surface_change_off_is_the_old_scene() -> None:
    a = simulate_scene((40, 40), dates=4, seed=3)
    b = simulate_scene((40, 40), dates=4, seed=3, surface_change=0.0)
    xr.testing.assert_identical(a, b)
    assert "surface_change" not in a.attrs
    c = simulate_scene((40, 40), dates=4, seed=3, surface_change=0.4)
    assert c.attrs["surface_change"] == 0.4
    np.testing.assert_array_equal(a.dem.values, c.dem.values)  # the land stays the same


def test_surface_change_independent_of_chunking() -> None:
    kwargs = {"dates": 8, "seed": 4, "surface_change": 0.6}
    whole = simulate_scene((70, 90), **kwargs)
    lazy = simulate_scene((70, 90), chunks=25, **kwargs).compute()
    for name in whole.data_vars:
        np.testing.assert_array_equal(lazy[name].values, whole[name].values, err_msg=name)


def test_surface_change_share_of_eligible_land(changing) -> None:
    from cloudfill.cube.simulate.constants import _L_ETYPE, _L_LULC, CROP, FOREST, GRASS, NO_EVENT

    _, _, static = changing
    eligible = np.isin(static[_L_LULC], [CROP, GRASS, FOREST])
    changed = static[_L_ETYPE] != NO_EVENT
    assert not (changed & ~eligible).any()  # no event on water, towns or rock
    assert abs(changed[eligible].mean() - 0.5) < 0.15


def _before_during(static, days, etype):
    """Per date index: pixels of ``etype`` whose event has not begun / fully holds."""
    from cloudfill.cube.simulate.constants import _L_EDUR, _L_ETYPE, _L_ONSET

    kind = static[_L_ETYPE] == etype
    onset, dur = static[_L_ONSET], static[_L_EDUR]
    before = [kind & (d < onset - 1) for d in days]
    during = [kind & (d > onset + 3) & (d < onset + dur - 1) for d in days]
    return before, during


def _mean_change(values, before, during) -> float:
    """Mean over pixels seen both before and during their event of (during - before)."""
    n = len(values)
    first_before = np.full(before[0].shape, -1)
    for t in range(n):
        first_before = np.where(before[t], t, first_before)  # the last date before onset
    diffs = []
    for t in range(n):
        ok = during[t] & (first_before >= 0)
        if ok.any():
            diffs.append(values[t][ok] - values[first_before[ok], ok])
    return float(np.concatenate(diffs).mean())


@pytest.mark.parametrize(
    ("etype", "pol", "low", "high"),
    [("FLOOD", "VV", -12.0, -4.0), ("FLOOD", "VH", -12.0, -3.0), ("CLEARING", "VH", -7.0, -2.5)],
)
def test_backscatter_follows_the_change(changing, etype, pol, low, high) -> None:
    """Floods darken VV by several dB (specular water), clearing darkens VH (no volume)."""
    from cloudfill.cube.simulate import constants
    from cloudfill.cube.simulate.scene import _Scene

    ds, sc, static = changing
    assert isinstance(sc, _Scene)
    before, during = _before_during(static, sc.s1_days, getattr(constants, etype))
    values = ds.s1.sel(pol=pol).values.astype(np.float64)
    change = _mean_change(values, before, during)
    assert low < change < high, change


def test_optical_follows_the_change(changing) -> None:
    """Tilled fields and floods lose their green cover: NDVI low during the event."""
    from cloudfill.cube.simulate.constants import FLOOD, TILLAGE

    ds, sc, static = changing
    ndvi = _ndvi(ds)
    for etype, top in ((TILLAGE, 0.35), (FLOOD, 0.05)):
        _, during = _before_during(static, sc.s2_days, etype)
        values = np.concatenate([ndvi[t][during[t]] for t in range(len(sc.s2_days))])
        assert values.size > 50 and np.median(values) < top, (etype, np.median(values))
