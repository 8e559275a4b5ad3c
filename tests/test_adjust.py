"""The same-date adjustment: a fill corrected by the smoothed residual of the clear pixels."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from cloudfill.errors import ParameterError
from cloudfill.fill.adjust import ADJUST_FLOOR, adjust_to_date, gaussian_smooth
from cloudfill.fill.blend import feather_weights
from cloudfill.fill.series import fill_series
from cloudfill.infer.settings import InferenceSettings


def _reference(fill: np.ndarray, real: np.ndarray, clear: np.ndarray, sigma: float) -> np.ndarray:
    """The formula in float64 on whole images."""
    usable = clear & np.isfinite(real).all(0) & np.isfinite(fill).all(0)
    weight = ndimage.gaussian_filter(usable.astype("float64"), sigma, mode="nearest")
    out = np.empty(fill.shape, dtype="float64")
    for b in range(fill.shape[0]):
        residual = np.where(usable, real[b].astype("float64") - fill[b], 0.0)
        smooth = ndimage.gaussian_filter(residual, sigma, mode="nearest")
        out[b] = fill[b] + smooth / (weight + ADJUST_FLOOR)
    return out


def _case(seed: int = 0) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ny, nx = 70, 90
    truth = 0.2 + 0.05 * rng.random((4, ny, nx)).astype("float32")
    yy, xx = np.mgrid[0:ny, 0:nx]
    # A fill that misses a smooth, date-wide brightening (what the clear pixels show).
    trend = (0.03 + 0.02 * np.sin(xx / 15.0) + 0.01 * yy / ny).astype("float32")
    fill = truth - trend[None]
    fill[1, 5, 7] = np.nan  # no fill at one pixel
    cloud = (yy - 35) ** 2 + (xx - 45) ** 2 < 20**2  # a round cloud of 20 px radius
    real = np.where(cloud[None], np.float32(0.9), truth)
    real[2, 60, 80] = np.nan  # a no-data pixel of the observation
    dims = ("band", "y", "x")
    return (
        xr.DataArray(fill, dims=dims, attrs={"long_name": "fill"}),
        xr.DataArray(real, dims=dims),
        xr.DataArray(~cloud, dims=("y", "x")),
        truth,
    )


@pytest.mark.parametrize("chunks", [None, {"y": 23, "x": 40}])
def test_matches_the_formula_for_any_chunking(chunks: dict[str, int] | None) -> None:
    fill, real, clear, _ = _case()
    expected = _reference(fill.values, real.values, clear.values, 6.0)
    inputs = [fill, real, clear]
    if chunks is not None:
        inputs = [a.chunk({k: v for k, v in chunks.items() if k in a.dims}) for a in inputs]
    got = adjust_to_date(*inputs, sigma=6.0)
    assert got.attrs == fill.attrs and got.dims == fill.dims
    if chunks is not None:
        assert got.chunks is not None  # lazy
    got = got.values
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # Chunking changes nothing: the Gaussian runs with a halo of its radius.
    whole = adjust_to_date(fill, real, clear, sigma=6.0).values
    np.testing.assert_array_equal(got, whole)


def test_a_scene_narrower_than_the_halo_is_adjusted_whole() -> None:
    # The default sigma 12 reaches 48 px: a 30 x 20 px cut of the case in 10 px chunks
    # (issue 17: scenes under 48 px crashed with "overlapping depth 48 > 32").
    fill, real, clear, _ = _case()
    cut = {"y": slice(50, 80), "x": slice(70, 90)}
    fill, real, clear = (a.isel(cut) for a in (fill, real, clear))
    expected = _reference(fill.values, real.values, clear.values, 12.0)
    got = adjust_to_date(*(a.chunk({"y": 10, "x": 10}) for a in (fill, real, clear)), sigma=12.0)
    np.testing.assert_allclose(got.values, expected, atol=2e-6)


def test_removes_a_bias_the_clear_pixels_show() -> None:
    fill, real, clear, truth = _case()
    cloud = ~clear.values
    adjusted = adjust_to_date(fill, real, clear, 6.0).values
    before = np.nanmean(np.abs(fill.values - truth)[:, cloud])
    after = np.nanmean(np.abs(adjusted - truth)[:, cloud])
    assert after < 0.5 * before  # most of the missed brightening is restored


def test_nothing_to_learn_from_leaves_the_fill_alone() -> None:
    fill, real, clear, _ = _case()
    # No clear pixel on the date: the correction is 0 / (0 + floor) = 0.
    none = adjust_to_date(fill, real, xr.zeros_like(clear), 6.0)
    np.testing.assert_array_equal(none.values, fill.values)
    # sigma 0 turns it off.
    assert adjust_to_date(fill, real, clear, 0) is fill
    with pytest.raises(ParameterError, match="sigma"):
        adjust_to_date(fill, real, clear, -1)
    with pytest.raises(ParameterError, match="dims"):
        gaussian_smooth(fill.transpose("y", "x", "band"), 2.0)
    with pytest.raises(ParameterError, match="floor"):
        adjust_to_date(fill, real, clear, 6.0, floor=0)


def test_fill_series_refuses_a_negative_sigma_up_front(scene: xr.Dataset) -> None:
    with pytest.raises(ParameterError, match="adjust"):
        fill_series(scene.drop_vars("s1"), None, adjust=-1)


def test_fill_series_adjusts_and_keeps_real_pixels(scene: xr.Dataset, tiny_model) -> None:
    raw = fill_series(
        scene, tiny_model, feather=4, adjust=0, inference=InferenceSettings(tile=32)
    ).compute()
    out = fill_series(
        scene, tiny_model, feather=4, adjust=8, inference=InferenceSettings(tile=32)
    ).compute()
    assert out.attrs["cloudfill_adjust"] == 8.0 and raw.attrs["cloudfill_adjust"] == 0.0
    mask = scene.cloudfill.cloud_mask()
    far = ~(feather_weights(mask, 4) > 0).values
    np.testing.assert_array_equal(
        np.where(far[:, None], out["s2"].values, 0), np.where(far[:, None], scene.s2.values, 0)
    )
    # Filled pixels of partly cloudy dates move; a fully cloudy date has nothing to adjust to.
    frac = mask.mean(("y", "x")).values
    partly = int(np.argmax((frac > 0.2) & (frac < 1)))
    full = int(np.argmax(frac == 1))
    m = mask.values[partly]
    assert np.abs(out["s2"].values[partly][:, m] - raw["s2"].values[partly][:, m]).max() > 1e-4
    np.testing.assert_array_equal(out["s2"].values[full], raw["s2"].values[full])
    # On the simulated scene (truth known) the adjustment brings the fill closer.
    truth = scene.truth.values[partly][:, m]
    error = {
        name: np.abs(result["s2"].values[partly][:, m] - truth).mean()
        for name, result in (("raw", raw), ("adjusted", out))
    }
    assert error["adjusted"] < error["raw"]
