"""filter_outliers / outlier_thresholds: scene-wide, chunk-independent, within one bin."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cloudfill
from cloudfill.errors import BandError, MissingVariableError, ParameterError
from cloudfill.preprocess import (
    DEFAULT_PERCENTILES,
    N_BINS,
    filter_outliers,
    outlier_thresholds,
)


def make_cube(n_time: int = 4, ny: int = 48, nx: int = 40, seed: int = 0) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    s2 = rng.gamma(2.0, 0.08, (n_time, 4, ny, nx)).astype("float32")
    s2[rng.random(s2.shape) < 0.001] = 3.0  # sensor spikes
    s2[0, :, :5, :5] = np.nan
    s1 = rng.standard_t(3, (n_time + 1, 2, ny, nx)).astype("float32") * 3 - 12
    dem = rng.normal(1500, 400, (ny, nx)).astype("float32")
    dem[0, 0] = -32000.0  # a void flag
    return xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), s2),
            "s1": (("s1_time", "pol", "y", "x"), s1, {"units": "dB"}),
            "dem": (("y", "x"), dem),
        },
        coords={
            "time": pd.date_range("2023-01-01", periods=n_time, freq="5D"),
            "s1_time": pd.date_range("2023-01-02", periods=n_time + 1, freq="6D"),
            "band": list(cloudfill.BANDS),
            "pol": list(cloudfill.POLS),
            "y": np.arange(ny) * -10.0,
            "x": np.arange(nx) * 10.0,
        },
    )


def bin_width(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(finite.max() - finite.min()) / N_BINS


@pytest.mark.parametrize("percentiles", [(0.1, 99.9), (0.5, 99.5), (2.0, 98.0), (25.0, 75.0)])
def test_thresholds_within_one_bin_of_nanpercentile(percentiles: tuple[float, float]) -> None:
    ds = make_cube()
    lower, upper = percentiles
    ranges = outlier_thresholds(ds, lower=lower, upper=upper)
    for name, dim in (("s2", "band"), ("s1", "pol"), ("dem", None)):
        labels = [name] if dim is None else [str(b) for b in ds[dim].values]
        for label in labels:
            values = ds[name].values if dim is None else ds[name].sel({dim: label}).values
            exact = np.nanpercentile(values, [lower, upper])
            got = np.array(ranges[name][label])
            tolerance = bin_width(values) * 1.0001
            assert np.all(np.abs(got - exact) <= tolerance), (name, label, got, exact)


def test_thresholds_identical_for_one_and_many_chunks() -> None:
    ds = make_cube()
    one = outlier_thresholds(ds.chunk())
    many = outlier_thresholds(ds.chunk({"time": 1, "s1_time": 2, "y": 13, "x": 15}))
    assert one == many
    assert outlier_thresholds(ds) == one


def test_percentiles_0_and_100_are_min_and_max() -> None:
    ds = make_cube()
    ranges = outlier_thresholds(ds, lower=0, upper=100, variables=["dem"])
    assert ranges["dem"]["dem"] == (float(ds.dem.min()), float(ds.dem.max()))


def test_defaults_are_recorded_and_applied() -> None:
    ds = make_cube().chunk({"y": 16})
    out = filter_outliers(ds)
    for name in ("s1", "s2", "dem"):
        assert out[name].attrs["clip_percentiles"] == list(DEFAULT_PERCENTILES[name])
        assert isinstance(out[name].data, da.Array)  # the clipping is lazy
        assert out[name].dtype == np.float32
    json.dumps({name: dict(out[name].attrs) for name in out.data_vars})  # serialisable
    assert out.s1.attrs["units"] == "dB"
    low, high = out.dem.attrs["clip_range"][0]
    assert float(out.dem.min()) == low and float(out.dem.max()) == high
    assert low > -32000.0  # the void flag is clipped
    for i, (lo, hi) in enumerate(out.s2.attrs["clip_range"]):
        band = out.s2.isel(band=i)
        assert float(band.min()) >= lo and float(band.max()) <= hi
    np.testing.assert_array_equal(np.isnan(out.s2.values), np.isnan(ds.s2.values))


def test_clouds_left_out_of_s2_statistics() -> None:
    ds = make_cube()
    cloud = np.zeros((ds.sizes["time"], ds.sizes["y"], ds.sizes["x"]), bool)
    cloud[:, :20] = True
    bright = ds.s2.values.copy()
    bright[:, :, :20] = 0.9  # clouds
    cloudy = ds.assign(s2=ds.s2.copy(data=bright), cloud=(("time", "y", "x"), cloud))
    clear = ds.assign(s2=ds.s2.where(~cloudy.cloud))
    with_mask = outlier_thresholds(cloudy, variables=["s2"])
    assert with_mask == outlier_thresholds(clear, variables=["s2"])
    without_mask = outlier_thresholds(cloudy.drop_vars("cloud"), variables=["s2"])
    assert with_mask != without_mask


def test_linear_s1_thresholds_in_db() -> None:
    ds = make_cube()
    linear = ds.assign(s1=(10 ** (ds.s1 / 10)).assign_attrs(units="linear"))
    ranges = outlier_thresholds(linear, variables=["s1"])
    db_ranges = outlier_thresholds(ds, variables=["s1"])
    for pol in ("VV", "VH"):
        got_db = 10 * np.log10(np.array(ranges["s1"][pol]))
        tolerance = bin_width(ds.s1.sel(pol=pol).values) * 1.01
        assert np.allclose(got_db, db_ranges["s1"][pol], atol=tolerance)


def test_all_nan_band_left_unclipped_with_warning() -> None:
    ds = make_cube()
    s2 = ds.s2.values.copy()
    s2[:, 2] = np.nan
    ds = ds.assign(s2=ds.s2.copy(data=s2))
    with pytest.warns(UserWarning, match="'B04' has no finite value"):
        out = filter_outliers(ds, variables=["s2"])
    assert out.s2.attrs["clip_range"][2] is None
    assert np.isnan(out.s2.sel(band="B04")).all()


def test_constant_band() -> None:
    ds = make_cube()
    ds = ds.assign(dem=ds.dem * 0 + 7.0)
    assert outlier_thresholds(ds, variables=["dem"]) == {"dem": {"dem": (7.0, 7.0)}}


def test_given_stats_are_applied_without_computing() -> None:
    ds = make_cube().chunk({"y": 16})
    stats = {"dem": {"dem": (1000.0, 2000.0)}}
    out = filter_outliers(ds, stats=stats)
    assert out.dem.attrs["clip_range"] == [[1000.0, 2000.0]]
    assert "clip_range" not in out.s2.attrs
    assert float(out.dem.min()) == 1000.0 and float(out.dem.max()) == 2000.0
    with pytest.raises(BandError, match="'VH'"):
        filter_outliers(ds, stats={"s1": {"VV": (-20.0, 0.0)}})


def test_thresholds_one_number_or_mapping() -> None:
    ds = make_cube()
    both = outlier_thresholds(ds, lower=1, upper=99, variables=["s1", "dem"])
    mapped = outlier_thresholds(ds, lower={"s1": 1, "dem": 1}, upper=99, variables=["s1", "dem"])
    assert both == mapped


@pytest.mark.parametrize(("lower", "upper"), [(-1, 99), (5, 101), (60, 40), (50, 50)])
def test_bad_percentiles(lower: float, upper: float) -> None:
    with pytest.raises(ParameterError, match="percentiles"):
        filter_outliers(make_cube(), lower=lower, upper=upper)


def test_missing_variable() -> None:
    with pytest.raises(MissingVariableError, match="'dem'"):
        filter_outliers(make_cube().drop_vars("dem"), variables=["dem"])
    with pytest.raises(MissingVariableError, match="nothing to filter"):
        filter_outliers(xr.Dataset({"other": (("y",), np.zeros(3))}))


def test_accessor() -> None:
    ds = make_cube()
    out = ds.cloudfill.filter_outliers(lower=1, upper=99, variables=["dem"])
    assert out.dem.attrs["clip_percentiles"] == [1.0, 99.0]
