"""The calibration's features of a fill (cloudfill.fill.error_scale) against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill.core.temporal import linear_interpolation
from cloudfill.fill.error_scale import MIN_RESIDUAL_PIXELS, NO_CLEAR_RESIDUAL, date_residuals
from cloudfill.fill.series import fill_series
from cloudfill.model.calibration import ERROR_FEATURES


def _reference(ds: xr.Dataset, t: int) -> dict[str, np.ndarray]:
    """Features of date ``t`` computed pixel by pixel in float64, from the module's notes."""
    mask = ds.cloudfill.cloud_mask().values.astype(bool)
    s2 = ds["s2"].transpose("time", "band", "y", "x").values.astype("float64")
    days = (pd.DatetimeIndex(ds.time.values) - pd.Timestamp(ds.time.values[t])).days.values
    n_band, ny, nx = s2.shape[1:]
    before, after = np.full((2, n_band, ny, nx), np.nan)
    age_b, age_a = np.full((2, ny, nx), np.nan)
    for y in range(ny):
        for x in range(nx):
            clear = np.flatnonzero(~mask[:, y, x])
            earlier, later = clear[clear < t], clear[clear > t]
            if earlier.size:
                before[:, y, x], age_b[y, x] = s2[earlier[-1], :, y, x], -days[earlier[-1]]
            if later.size:
                after[:, y, x], age_a[y, x] = s2[later[0], :, y, x], days[later[0]]
    b, a = np.nan_to_num(age_b, nan=365.0), np.nan_to_num(age_a, nan=365.0)
    return {
        "age_near": np.broadcast_to(np.log1p(np.minimum(b, a)), before.shape),
        "age_gap": np.broadcast_to(np.log1p(b + a), before.shape),
        "one_side": np.broadcast_to(np.isnan(age_b) | np.isnan(age_a), before.shape),
        "disagreement": np.log(np.nan_to_num(np.abs(after - before), nan=0.0) + 1e-3),
        "cloud_fraction": np.full(before.shape, mask[t].mean()),
    }


def test_features_match_a_pixel_by_pixel_reference(scene: xr.Dataset, backend: str) -> None:
    ds = scene.drop_vars("s1")  # every date interpolated: no model needed
    if backend == "dask":
        ds = ds.chunk({"time": 1, "y": 40, "x": 56})
    cf = scene.cloudfill.cloud_mask().mean(("y", "x")).values
    t = int(np.argmax(np.where(cf < 0.9, cf, 0)))  # the cloudiest date with clear pixels
    assert 0.1 < cf[t] < 0.9
    out = fill_series(ds, None, error_features=True, dates=[ds.time.values[t]]).compute()
    features = out["error_features"]
    assert list(features["feature"].values) == list(ERROR_FEATURES)
    assert features.dims == ("time", "feature", "band", "y", "x")
    ref = _reference(scene, t)
    got = features.isel(time=0)
    for name, expected in ref.items():
        np.testing.assert_allclose(got.sel(feature=name).values, expected, rtol=1e-5, atol=1e-6)
    interp = linear_interpolation(scene, scene.time[t]).transpose("band", "y", "x").values
    np.testing.assert_allclose(got.sel(feature="level").values, np.nan_to_num(interp), rtol=1e-6)
    assert (got.sel(feature="synthesized").values == 0).all()
    sigma = float(out["adjust_sigma"].values[0])
    assert (got.sel(feature="adjusted").values == float(sigma > 0)).all()
    # How interpolation did on the date's clear pixels (the scene fits one window).
    clear = ~scene.cloudfill.cloud_mask().values[t]
    real = scene["s2"].transpose("time", "band", "y", "x").values[t]
    expected = [np.median(np.abs(interp[b] - real[b])[clear]) for b in range(interp.shape[0])]
    residual = got.sel(feature="date_residual").values[:, 0, 0]
    np.testing.assert_allclose(residual, np.log(np.array(expected) + 1e-3), rtol=1e-5)
    assert (got.sel(feature="no_clear").values == 0).all()


def test_date_residuals_match_interpolation_and_need_enough_clear_pixels(
    scene: xr.Dataset, backend: str
) -> None:
    mask = scene.cloudfill.cloud_mask().copy()
    cf = mask.mean(("y", "x")).values
    t = int(np.argmax(np.where(cf < 0.9, cf, 0)))
    few = int(np.argmin(cf))  # the clearest date keeps one too few clear pixels
    flat = np.ones(mask.sizes["y"] * mask.sizes["x"], bool)
    flat[: MIN_RESIDUAL_PIXELS - 1] = False
    mask[few] = flat.reshape(mask.shape[1:])
    ds = scene.assign(cloud=mask)
    if backend == "dask":
        ds = ds.chunk({"time": 1, "y": 48, "x": 48})  # the window: one 48 px chunk
        table = date_residuals(ds, ds.cloudfill.cloud_mask(), size=32)
        assert table.notna().any(axis=None)
        return
    table = date_residuals(ds, ds.cloudfill.cloud_mask())
    assert list(table.columns) == [str(b) for b in scene.band.values]
    assert table.loc[pd.Timestamp(ds.time.values[few])].isna().all()
    # Against linear_interpolation over the whole (one-window) image, in float64.
    interp = linear_interpolation(ds, ds.time[t]).transpose("band", "y", "x").values
    real = ds["s2"].transpose("time", "band", "y", "x").values[t]
    clear = ~mask.values[t] & np.isfinite(interp).all(axis=0)
    expected = [np.median(np.abs(interp[b] - real[b])[clear]) for b in range(interp.shape[0])]
    got = table.loc[pd.Timestamp(ds.time.values[t])].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_a_date_without_clear_pixels_is_flagged(scene: xr.Dataset) -> None:
    ds = scene.drop_vars("s1").copy(deep=True)
    ds["cloud"][2] = True  # fully cloudy
    out = fill_series(ds, None, error_features=True, dates=[ds.time.values[2]]).compute()
    got = out["error_features"].isel(time=0)
    assert (got.sel(feature="no_clear").values == 1).all()
    np.testing.assert_allclose(
        got.sel(feature="date_residual").values, np.log(NO_CLEAR_RESIDUAL + 1e-3), rtol=1e-6
    )


@pytest.mark.slow  # a whole fill, 4 s
def test_features_are_finite_where_filled(scene: xr.Dataset) -> None:
    out = fill_series(scene.drop_vars("s1"), None, error_features=True).compute()
    values = np.moveaxis(out["error_features"].values, (1, 2), (-2, -1))
    assert values.shape[-2:] == (len(ERROR_FEATURES), scene.sizes["band"])
    assert np.isfinite(values[out["filled"].values]).all()
