"""Baselines on hand-made cubes whose right answer is known pixel by pixel."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

import cloudfill
from cloudfill.core.temporal import linear_interpolation, persistence
from cloudfill.errors import MissingVariableError, ModelMismatchError, ParameterError
from cloudfill.evaluation.baselines import fit_regression_baseline, predict_regression_baseline

# Uneven revisits, so interpolation must weigh by real time, not by index.
DATES = pd.to_datetime(["2023-01-01", "2023-01-06", "2023-01-21", "2023-01-26", "2023-02-15"])


def make_cube(
    s2: np.ndarray, cloud: np.ndarray, dates: pd.DatetimeIndex = DATES, **extra: object
) -> xr.Dataset:
    _, _, ny, nx = s2.shape
    ds = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), s2.astype("float32"), {"units": "reflectance"}),
            "cloud": (("time", "y", "x"), cloud),
            **extra,
        },
        coords={
            "time": dates,
            "band": list(cloudfill.BANDS),
            "y": 4000000.0 - 10.0 * (np.arange(ny) + 0.5),
            "x": 500000.0 + 10.0 * (np.arange(nx) + 0.5),
        },
    )
    return ds.rio.write_crs("EPSG:32633")


def lazy(ds: xr.Dataset, backend: str) -> xr.Dataset:
    return ds.chunk({"time": 1, "y": 3, "x": 4}) if backend == "dask" else ds


def check_layout(out: xr.DataArray, ds: xr.Dataset, date: pd.Timestamp, lazy_input: bool) -> None:
    assert out.dims == ("band", "y", "x")
    assert out.dtype == np.float32
    assert (out.chunks is not None) == lazy_input
    np.testing.assert_array_equal(out.x, ds.x)
    np.testing.assert_array_equal(out.band, ds.band)
    assert out.time.values == np.datetime64(date)
    assert out.rio.crs == ds.rio.crs
    assert out.attrs["units"] == "reflectance"


@pytest.fixture(scope="module")
def series() -> tuple[np.ndarray, np.ndarray]:
    """Random values, 5 dates x 4 bands x 6 x 5 px, with random clouds (~50 %)."""
    rng = np.random.default_rng(3)
    s2 = rng.random((5, 4, 6, 5))
    cloud = rng.random((5, 6, 5)) > 0.5
    cloud[0, 0, 0] = cloud[1, 0, 0] = cloud[2, 0, 0] = True  # a pixel never clear before t3
    return s2, cloud


def expected_persistence(s2: np.ndarray, cloud: np.ndarray, target: int) -> np.ndarray:
    want = np.full(s2.shape[1:], np.nan)
    for iy in range(s2.shape[2]):
        for ix in range(s2.shape[3]):
            clear_before = [t for t in range(target) if not cloud[t, iy, ix]]
            if clear_before:
                want[:, iy, ix] = s2[clear_before[-1], :, iy, ix]
    return want


def test_persistence_picks_latest_earlier_clear_value(series, backend: str) -> None:
    s2, cloud = series
    ds = make_cube(s2, cloud)
    target = 3
    out = persistence(lazy(ds, backend), DATES[target])
    check_layout(out, ds, DATES[target], backend == "dask")
    want = expected_persistence(s2, cloud, target)
    assert np.isnan(want[:, 0, 0]).all()
    np.testing.assert_allclose(out.values, want.astype("float32"))
    # A NaN (no data) in one band makes the whole observation unusable: an older one is used.
    iy, ix = np.argwhere(~cloud[target - 1])[0]
    with_nan = ds.copy(deep=True)
    with_nan["s2"][target - 1, 2, iy, ix] = np.nan
    also_cloudy = cloud.copy()
    also_cloudy[target - 1, iy, ix] = True
    np.testing.assert_allclose(
        persistence(lazy(with_nan, backend), DATES[target]).values,
        expected_persistence(s2, also_cloudy, target).astype("float32"),
    )
    # The first date has nothing before it.
    assert persistence(ds, DATES[0]).isnull().all()


def test_nearest_persistence_takes_the_closer_side(series, backend: str) -> None:
    s2, cloud = series
    ds = make_cube(s2, cloud)
    target = 2  # 15 days after DATES[1], 5 days before DATES[3]
    out = persistence(lazy(ds, backend), DATES[target], direction="nearest")
    check_layout(out, ds, DATES[target], backend == "dask")
    want = np.full(s2.shape[1:], np.nan)
    gaps = np.abs((DATES - DATES[target]) / pd.Timedelta(days=1))
    for iy in range(s2.shape[2]):
        for ix in range(s2.shape[3]):
            clear = [t for t in range(len(DATES)) if t != target and not cloud[t, iy, ix]]
            if clear:
                best = min(clear, key=lambda t: (gaps[t], t))
                want[:, iy, ix] = s2[best, :, iy, ix]
    np.testing.assert_allclose(out.values, want.astype("float32"))
    assert not np.allclose(out.values, persistence(ds, DATES[target]).values, equal_nan=True)
    with pytest.raises(ParameterError, match="direction"):
        persistence(ds, DATES[target], direction="later")


def test_persistence_accepts_explicit_mask_and_checks_date(series) -> None:
    s2, cloud = series
    ds = make_cube(s2, cloud)
    nothing_unusable = xr.zeros_like(ds.cloud)
    np.testing.assert_allclose(persistence(ds, DATES[3], nothing_unusable), s2[2])
    with pytest.raises(ParameterError, match=r"2023-01-07.*nearest S2 date is 2023-01-06"):
        persistence(ds, "2023-01-07")


def test_interpolation_is_exact_on_linear_series(backend: str) -> None:
    rng = np.random.default_rng(4)
    days = ((DATES - DATES[0]) / pd.Timedelta(days=1)).to_numpy()
    offset = rng.random((4, 6, 5))
    slope = rng.normal(0, 0.01, (4, 6, 5))
    s2 = offset[None] + slope[None] * days[:, None, None, None]
    cloud = rng.random((5, 6, 5)) > 0.6
    target = 2
    cloud[target] = True  # hidden anyway: its own values are never read
    cloud[:target, 0, 0] = True  # clear only after the target: nearest = the next clear
    cloud[target + 2, 0, 0] = False
    cloud[target + 1 :, 1, 1] = True  # clear only before: nearest = the previous clear
    cloud[0, 1, 1] = False
    cloud[:, 2, 2] = True  # never clear
    cloud[1, 3, 3] = cloud[3, 3, 3] = False  # the closest clear dates on both sides
    ds = make_cube(s2, cloud)

    out = linear_interpolation(lazy(ds, backend), DATES[target])
    check_layout(out, ds, DATES[target], backend == "dask")
    got = out.values
    clear = ~cloud
    before = clear[:target].any(0)
    after = clear[target + 1 :].any(0)
    both = before & after
    np.testing.assert_allclose(got[:, both], s2[target][:, both], atol=1e-6)
    for iy, ix in ((0, 0), (1, 1)):
        t = [k for k in range(5) if clear[k, iy, ix]]
        nearest = t[0] if not before[iy, ix] else [k for k in t if k < target][-1]
        np.testing.assert_allclose(got[:, iy, ix], s2[nearest, :, iy, ix], rtol=1e-6)
    assert np.isnan(got[:, 2, 2]).all()

    strict = linear_interpolation(ds, DATES[target], extrapolate="none").values
    assert np.isnan(strict[:, ~both]).all()
    np.testing.assert_allclose(strict[:, both], got[:, both])


def make_regression_cube(seed: int = 5) -> tuple[xr.Dataset, np.ndarray, np.ndarray]:
    """S1, DEM and an S2 series where the last date is a known linear map of its inputs."""
    rng = np.random.default_rng(seed)
    ny, nx = 30, 24
    dates = DATES[:3]
    s2 = rng.random((3, 4, ny, nx)) * 0.4
    cloud = np.zeros((3, ny, nx), dtype=bool)
    cloud[1] = rng.random((ny, nx)) > 0.5  # the reference date varies per pixel
    cloud[2] = rng.random((ny, nx)) > 0.8
    s1_dates = pd.to_datetime(["2023-01-02", "2023-01-20", "2023-01-23"])
    s1 = rng.normal(-12, 3, (3, 2, ny, nx))
    dem = rng.normal(800, 200, (ny, nx))
    reference = np.where(cloud[1][None], s2[0], s2[1])
    inputs = np.concatenate([s1[1], reference, dem[None]])  # 01-20 is nearest to 01-21
    weights = rng.normal(0, 0.02, (4, 7))
    weights[:, -1] = 1e-4
    intercept = rng.random(4) * 0.2
    s2[2] = np.einsum("bf,fyx->byx", weights, inputs) + intercept[:, None, None]
    ds = make_cube(
        s2,
        cloud,
        dates,
        s1=(("s1_time", "pol", "y", "x"), s1.astype("float32"), {"units": "dB"}),
        dem=(("y", "x"), dem.astype("float32")),
    )
    ds = ds.assign_coords(s1_time=s1_dates, pol=list(cloudfill.POLS))
    return ds, s2[2], cloud


def test_regression_recovers_linear_relation(backend: str) -> None:
    ds, target, cloud = make_regression_cube()
    left = np.zeros((ds.sizes["y"], ds.sizes["x"]), dtype=bool)
    left[:, :12] = True
    cube = lazy(ds, backend)
    model = fit_regression_baseline(cube, [DATES[2]], left, alpha=1e-8)
    assert model.features == ("VV", "VH", "ref_B02", "ref_B03", "ref_B04", "ref_B08", "dem")
    assert model.n_samples == int((left & ~cloud[2]).sum())
    out = predict_regression_baseline(model, cube, DATES[2])
    check_layout(out, ds, DATES[2], backend == "dask")
    # Right half: never trained on, cloudy pixels included (the target is a prediction).
    np.testing.assert_allclose(out.values[:, :, 12:], target[:, :, 12:], atol=1e-4)

    capped = fit_regression_baseline(ds, [DATES[2]], left, max_samples=50)
    assert capped.n_samples == 50


def test_regression_inputs_and_errors() -> None:
    ds, _, _ = make_regression_cube()
    optical = fit_regression_baseline(ds.drop_vars("s1"), DATES[2])
    assert optical.inputs == ("reference", "dem")
    assert predict_regression_baseline(optical, ds.drop_vars("s1"), DATES[2]).notnull().any()
    full = fit_regression_baseline(ds, DATES[2])
    with pytest.raises(MissingVariableError, match="'s1'"):
        predict_regression_baseline(full, ds.drop_vars("s1"), DATES[2])
    renamed = ds.assign_coords(pol=["HH", "HV"])
    with pytest.raises(ModelMismatchError, match="VV"):
        predict_regression_baseline(full, renamed, DATES[2])
    with pytest.raises(ParameterError, match="no training pixels"):
        fit_regression_baseline(ds, DATES[0])  # nothing before the first date: no reference
    with pytest.raises(ParameterError, match="subset"):
        fit_regression_baseline(ds, DATES[2], inputs=["s1", "lidar"])
