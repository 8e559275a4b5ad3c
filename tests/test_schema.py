"""Contract validation: one test per error class, conforming, and laziness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cloudfill
from cloudfill import errors
from cloudfill.cube.schema import conform, validate


def test_valid_tiny_cube_passes(tiny_cube: xr.Dataset) -> None:
    assert validate(tiny_cube) is tiny_cube
    assert tiny_cube.cloudfill.validate().identical(tiny_cube)


def test_missing_variable_named(tiny_cube: xr.Dataset) -> None:
    with pytest.raises(errors.MissingVariableError, match="'s1'"):
        validate(tiny_cube.drop_vars("s1"))
    # A cube without DEM is fine for callers that do not need it.
    validate(tiny_cube.drop_vars("dem"), require=("s2", "s1"))


def test_wrong_band_names_named(tiny_cube: xr.Dataset) -> None:
    bad = tiny_cube.assign_coords(band=["B02", "B03", "B05", "B08"])
    with pytest.raises(errors.BandError, match="B04") as info:
        validate(bad)
    assert "B05" in str(info.value)
    dup = tiny_cube.assign_coords(pol=["VV", "VV"])
    with pytest.raises(errors.BandError, match="'VV' appears twice"):
        validate(dup)


def test_aliases_renamed_by_conform_and_accessor(tiny_cube: xr.Dataset) -> None:
    aliased = tiny_cube.assign_coords(band=["blue", "green", "Red", "NIR"], pol=["vv", "vh"])
    with pytest.raises(errors.BandError):
        validate(aliased)
    out = conform(aliased)
    assert list(out.band.values) == list(cloudfill.BANDS)
    assert list(out.pol.values) == list(cloudfill.POLS)
    assert list(aliased.cloudfill.validate().band.values) == list(cloudfill.BANDS)
    np.testing.assert_array_equal(out.s2.values, tiny_cube.s2.values)


def test_conform_scales_integer_reflectance_and_transposes(tiny_cube: xr.Dataset) -> None:
    raw = (tiny_cube.s2 * 10000).round().astype("uint16")
    ds = tiny_cube.assign(s2=raw.transpose("band", "time", "x", "y"))
    out = conform(ds)
    assert out.s2.dims == ("time", "band", "y", "x")
    assert out.s2.dtype == np.float32
    np.testing.assert_allclose(out.s2.values, tiny_cube.s2.values, atol=0.5e-4 + 1e-7)
    assert out.rio.crs == tiny_cube.rio.crs


def test_conform_is_lazy(tiny_cube: xr.Dataset) -> None:
    lazy = tiny_cube.chunk({"time": 1})
    lazy = lazy.assign(s2=(lazy.s2 * 10000).astype("uint16"))
    out = conform(lazy)
    assert out.s2.chunks is not None


def test_dimension_error_names_variable(tiny_cube: xr.Dataset) -> None:
    bad = tiny_cube.assign(dem=tiny_cube.dem.expand_dims(layer=[0]))
    with pytest.raises(errors.DimensionError, match="'dem'.*'layer'"):
        validate(bad)


def test_grid_mismatch_between_s2_and_dem(tiny_cube: xr.Dataset) -> None:
    # A DEM on a shifted grid: xarray's outer join leaves an irregular x axis.
    dem = tiny_cube.dem.assign_coords(x=tiny_cube.x + 3.0)
    bad = xr.merge([tiny_cube.drop_vars("dem"), dem.to_dataset()], join="outer")
    with pytest.raises(errors.GridMismatchError, match="'x'"):
        validate(bad)


def test_unsorted_time_names_the_date(tiny_cube: xr.Dataset) -> None:
    bad = tiny_cube.isel(time=[0, 2, 1])
    with pytest.raises(errors.TimeAxisError, match="'time' is not sorted: 2023-01-11"):
        validate(bad)
    dup = tiny_cube.assign_coords(s1_time=[tiny_cube.s1_time.values[0]] * 4)
    with pytest.raises(errors.TimeAxisError, match="'s1_time' has duplicate date 2022-12-30"):
        validate(dup)
    strings = tiny_cube.assign_coords(time=["a", "b", "c"])
    with pytest.raises(errors.TimeAxisError, match="datetime64"):
        validate(strings)


def test_dtype_and_units(tiny_cube: xr.Dataset) -> None:
    with pytest.raises(errors.DTypeError, match="'s1'.*units"):
        validate(tiny_cube.assign(s1=tiny_cube.s1.assign_attrs(units="dBZ")))
    with pytest.raises(errors.DTypeError, match="'dem'.*float64"):
        validate(tiny_cube.assign(dem=tiny_cube.dem.astype("float64")))
    with pytest.raises(errors.DTypeError, match="'cloud'"):
        validate(tiny_cube.assign(cloud=tiny_cube.cloud.astype("uint8")))


def test_missing_crs(tiny_cube: xr.Dataset) -> None:
    bare = tiny_cube.drop_vars("spatial_ref")
    with pytest.raises(errors.MissingCRSError, match="no CRS"):
        validate(bare)
    validate(bare, require_crs=False)


def test_crs_mismatch_names_variable(tiny_cube: xr.Dataset) -> None:
    bad = tiny_cube.assign(dem=tiny_cube.dem.assign_attrs(crs="EPSG:4326"))
    with pytest.raises(errors.CRSMismatchError, match="'dem'.*4326"):
        validate(bad)


def test_errors_are_value_errors_and_one_line(tiny_cube: xr.Dataset) -> None:
    with pytest.raises(ValueError) as info:
        validate(tiny_cube.drop_vars("s2"))
    assert isinstance(info.value, errors.CubeError)
    assert "\n" not in str(info.value)


def test_validate_does_not_compute(tiny_cube: xr.Dataset) -> None:
    import dask

    lazy = tiny_cube.chunk({"time": 1, "s1_time": 1})
    with dask.config.set(scheduler="sync"):
        calls = []

        def _fail(*args, **kwargs):  # pragma: no cover - only on a bug
            calls.append(1)
            raise AssertionError("validate computed a dask array")

        with dask.config.set(scheduler=_fail):
            lazy.cloudfill.validate()
    assert not calls


def test_time_coordinate_sorted_unique_in_tiny(tiny_cube: xr.Dataset) -> None:
    assert pd.DatetimeIndex(tiny_cube.time.values).is_monotonic_increasing


def test_integer_s2_zero_is_no_data_and_the_l2a_offset_applies() -> None:
    # Issue 17, 4: L2A NoData 0 was reflectance 0 (not filled, negative fills nearby).
    dn = np.array([0, 1000, 2500, 11000], "uint16").reshape(1, 4, 1, 1)
    ds = xr.Dataset(
        {"s2": (("time", "band", "y", "x"), dn, {"boa_add_offset": -1000, "long_name": "s2"})},
        coords={"band": ["B02", "B03", "B04", "B08"]},
    )
    for cube in (ds, ds.chunk()):
        out = cloudfill.conform(cube)["s2"]
        expected = np.array([np.nan, 0.0, 0.15, 1.0], "float32")
        np.testing.assert_array_equal(out.values.ravel(), expected)
        assert out.dtype == np.float32 and out.attrs == {"long_name": "s2"}  # offset applied


def test_l2a_no_data_pixels_are_filled() -> None:
    scene = cloudfill.simulate_scene((32, 32), dates=4, seed=3).drop_vars("s1")
    dn = (scene.s2 * 10000).round().astype("uint16")
    dn[1, :, 8:16, 8:16] = 0  # a hole of L2A NoData on a clear date
    filled = scene.assign(s2=dn).cloudfill.fill_series().compute()
    hole = filled.s2.isel(time=1, y=slice(8, 16), x=slice(8, 16))
    assert bool(hole.notnull().all()) and float(hole.min()) >= 0
    assert bool(filled.filled.isel(time=1, y=slice(8, 16), x=slice(8, 16)).all())
