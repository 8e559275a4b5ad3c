"""The same-date adjustment: a fill corrected by the smoothed residual of the clear pixels."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from scipy import ndimage

from cloudfill.errors import ParameterError
from cloudfill.fill.adjust import (
    ADJUST_FLOOR,
    AUTO_MIN_HOLDOUT,
    AUTO_SIGMAS,
    adjust_to_date,
    check_adjust,
    choose_sigma,
    gaussian_smooth,
    holdout_mask,
    sample_window,
)
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


# adjust="auto": the sigma chosen per date from held-out clear pixels (issue 18, item 3).


def _speckled_case() -> tuple[xr.DataArray, xr.DataArray, xr.DataArray, np.ndarray]:
    """A fill that is right everywhere, and clear pixels of which 3 % carry a bright speck
    the mask missed (+0.4): smoothing their residual into the gaps only adds error."""
    fill, _, clear, truth = _case()
    fill = xr.DataArray(truth.copy(), dims=fill.dims)
    specks = np.random.default_rng(1).random(truth.shape[1:]) < 0.03
    real = np.where(specks[None] & clear.values[None], truth + np.float32(0.4), truth)
    return fill, xr.DataArray(real.astype("float32"), dims=fill.dims), clear, truth


def _gap_mae(pred: np.ndarray, truth: np.ndarray, clear: xr.DataArray) -> float:
    return float(np.nanmean(np.abs(pred - truth)[:, ~clear.values]))


def test_auto_leaves_the_fill_alone_where_the_adjustment_hurts() -> None:
    fill, real, clear, truth = _speckled_case()
    choice = choose_sigma(fill, real, clear)
    assert choice.sigma == 0.0
    assert all(choice.scores[s][0] > choice.scores[0.0][0] for s in AUTO_SIGMAS)
    # The held-out pixels told the truth: every sigma would have hurt the gap.
    for sigma in AUTO_SIGMAS:
        adjusted = adjust_to_date(fill, real, clear, sigma).values
        assert _gap_mae(adjusted, truth, clear) > _gap_mae(fill.values, truth, clear)


def test_auto_picks_a_sigma_where_the_adjustment_helps() -> None:
    fill, real, clear, truth = _case()
    choice = choose_sigma(fill, real, clear)
    assert choice.sigma in AUTO_SIGMAS
    assert choice.scores[choice.sigma][0] < 0.5 * choice.scores[0.0][0]
    assert choice.n_holdout >= 100
    adjusted = adjust_to_date(fill, real, clear, choice.sigma).values
    assert _gap_mae(adjusted, truth, clear) < 0.5 * _gap_mae(fill.values, truth, clear)


def test_a_near_tie_or_too_few_held_out_pixels_means_off() -> None:
    fill, real, clear, _ = _case()
    # A perfect fill: every candidate ties with off.
    assert choose_sigma(real.fillna(0.2), real.fillna(0.2), clear).sigma == 0.0
    # No gap to copy (only the two no-data pixels): too little is held out to judge.
    choice = choose_sigma(fill, real, xr.ones_like(clear))
    assert (choice.sigma, choice.scores) == (0.0, {})
    assert 0 < choice.n_holdout < AUTO_MIN_HOLDOUT
    # Unreachable margin: off.
    assert choose_sigma(fill, real, clear, margin=1.0).sigma == 0.0


def test_auto_judges_each_held_out_set_by_mae(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pooled, a sigma must beat off on MAE and RMSE; set by set only on MAE: a set of a few
    hundred pixels (small gaps) has an RMSE that turns on a handful of values."""
    from cloudfill.fill import adjust

    fill, real, clear, _ = _case()
    n = 1000  # values per set: (sum |e|, sum e^2, n) per set and sigma
    per_set = {0.0: [(10.0, 0.20, n)] * 4, 6.0: [(6.0, 0.10, n)] * 4}
    per_set[6.0][2] = (6.0, 0.21, n)  # one set: lower MAE, higher RMSE than off
    calls = {s: iter(v) for s, v in per_set.items()}

    def held_out(fill, real, usable, hold, sigma, floor):
        return next(calls[sigma]) if sigma in calls else (20.0, 1.0, n)

    monkeypatch.setattr(adjust, "_held_out_errors", held_out)
    assert choose_sigma(fill, real, clear, shifts=4).sigma == 6.0
    # A set where the sigma's MAE is higher than off's: off.
    per_set[6.0][2] = (10.5, 0.05, n)
    calls = {s: iter(v) for s, v in per_set.items()}
    assert choose_sigma(fill, real, clear, shifts=4).sigma == 0.0
    # Lower MAE on every set but a higher RMSE pooled: still off (pooled, both must gain).
    per_set[6.0] = [(6.0, 0.30, n)] * 4
    calls = {s: iter(v) for s, v in per_set.items()}
    assert choose_sigma(fill, real, clear, shifts=4).sigma == 0.0


@pytest.mark.parametrize("chunks", [{"y": 23, "x": 40}, {"y": 64, "x": 16}])
def test_auto_chooses_the_same_on_numpy_and_dask(chunks: dict[str, int]) -> None:
    for case in (_case(), _speckled_case()):
        fill, real, clear, _ = case
        whole = choose_sigma(fill, real, clear)
        lazy = choose_sigma(*(a.chunk({k: chunks[k] for k in ("y", "x")}) for a in case[:3]))
        assert lazy.sigma == whole.sigma and lazy.n_holdout == whole.n_holdout
        for sigma, (mae, rmse) in whole.scores.items():
            np.testing.assert_allclose(lazy.scores[sigma], (mae, rmse), rtol=1e-5)


def test_auto_is_seeded() -> None:
    fill, real, clear, _ = _case()
    gaps = ~clear.values
    assert choose_sigma(fill, real, clear, seed=3) == choose_sigma(fill, real, clear, seed=3)
    # The held-out pixels: the date's own gaps moved onto clear pixels, by the seed.
    one, again, other = holdout_mask(gaps, 3), holdout_mask(gaps, 3), holdout_mask(gaps, 4)
    np.testing.assert_array_equal(one, again)
    assert (one != other).any()
    assert not (one & gaps).any() and one.sum() > 0.5 * gaps.sum()


def test_auto_reads_one_mixed_window_of_a_large_date() -> None:
    fill, real, clear, _ = _case()  # the cloud: rows 15..55, columns 25..65
    cut = sample_window(~clear, 32)
    tiles = [(~clear).values[y : y + 32, x : x + 32] for y in (0, 32) for x in (0, 32)]
    most_mixed = max(min(t.sum(), (~t).sum()) for t in tiles)
    inside = (~clear).isel(cut).values
    assert inside.shape == (32, 32) and min(inside.sum(), (~inside).sum()) == most_mixed
    assert sample_window(~clear, 100) == {}  # the whole date when it fits
    assert choose_sigma(fill, real, clear, window=32).sigma in (0.0, *AUTO_SIGMAS)


def _large_case(chunk: int) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray, list]:
    """A 160 px date in chunks of ``chunk`` px (4 x 4 of 40 px), a fill 0.05 too dark, a round
    cloud across chunk borders; the fill's chunks are computed by a block function that
    records which chunk it computed."""
    n = 160
    yy, xx = np.mgrid[0:n, 0:n]
    truth = np.broadcast_to(0.3 + 0.001 * xx, (2, n, n)).astype("float32")
    cloud = (yy - 70) ** 2 + (xx - 70) ** 2 < 22**2
    computed: list[tuple[int, ...]] = []

    def darker(block: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        computed.append(tuple(block_info[0]["chunk-location"]))
        return block - np.float32(0.05)

    base = da.from_array(truth, chunks=(2, chunk, chunk))
    fill = da.map_blocks(darker, base, dtype="float32", meta=np.empty((0, 0, 0), "float32"))
    dims = ("band", "y", "x")
    real = np.where(cloud[None], np.float32(0.9), truth)
    return (
        xr.DataArray(fill, dims=dims),
        xr.DataArray(real, dims=dims).chunk({"y": chunk, "x": chunk}),
        xr.DataArray(~cloud, dims=("y", "x")).chunk(chunk),
        computed,
    )


def test_auto_computes_one_chunk_of_the_fill() -> None:
    # 32 px windows on 40 px chunks: a window of the grid from the corner (32..64) would
    # straddle the chunk border at 40 and compute up to four chunks of the fill.
    fill, real, clear, computed = _large_case(40)
    with dask.config.set(scheduler="sync"):
        choice = choose_sigma(fill, real, clear, window=32)
    assert choice.sigma in AUTO_SIGMAS  # the window saw the cloud and the bias
    assert len(computed) == 1, computed  # of the fill's 16 chunks
    cut = sample_window(~clear, 32, {"y": (40,) * 4, "x": (40,) * 4})
    assert all(s.start // 40 == (s.stop - 1) // 40 for s in cut.values())
    # Chunks smaller than the window: the fewest neighbouring ones (2 x 2 of 20 px).
    fill, real, clear, computed = _large_case(20)
    with dask.config.set(scheduler="sync"):
        choose_sigma(fill, real, clear, window=32)
    assert len(set(computed)) <= 4 and len(computed) == len(set(computed))


def test_the_window_is_the_same_on_chunks_that_are_multiples_of_it() -> None:
    clear = _large_case(40)[2]
    unusable = (~clear).compute()
    free = sample_window(unusable, 20)
    assert sample_window(unusable.chunk(40), 20, {"y": (40,) * 4, "x": (40,) * 4}) == free
    assert sample_window(unusable, 20, {"y": (80, 80), "x": (60, 60, 40)}) == free
    with pytest.raises(ParameterError, match="add up"):
        sample_window(unusable, 20, {"y": (80, 70)})


def test_the_adjust_setting_is_checked() -> None:
    check_adjust("auto")
    check_adjust(12)
    for bad in ("on", "Auto", -1.0, float("nan")):
        with pytest.raises(ParameterError, match="adjust"):
            check_adjust(bad)


@pytest.mark.parametrize("adjust", [pytest.param("auto", marks=pytest.mark.slow), 8.0, 0.0])
def test_fill_series_records_the_sigma_of_each_date(scene: xr.Dataset, adjust) -> None:
    cube = scene.drop_vars("s1")  # no S1: every date interpolated, no model needed
    out = fill_series(cube, None, feather=4, adjust=adjust)
    sigma = out["adjust_sigma"]
    assert sigma.dims == ("time",) and sigma.dtype == np.float32
    assert isinstance(sigma.data, np.ndarray)  # known once the fill is built
    assert sigma.attrs["units"] == "pixel"
    assert out.attrs["cloudfill_adjust"] == adjust
    frac = cube.cloudfill.cloud_mask().mean(("y", "x")).values
    if adjust == "auto":
        assert set(sigma.values) <= {0.0, *AUTO_SIGMAS}
        assert (sigma.values[frac == 1] == 0).all()  # nothing to adjust to
        lazy = fill_series(cube.chunk({"time": 1, "y": 40, "x": 56}), None, feather=4)
        np.testing.assert_array_equal(lazy["adjust_sigma"].values, sigma.values)
        np.testing.assert_allclose(lazy["s2"].values, out["s2"].values, atol=1e-6)
        # Each date as its own sigma would fill it.
        for i, value in enumerate(sigma.values):
            fixed = fill_series(cube, None, dates=[cube.time.values[i]], feather=4, adjust=value)
            np.testing.assert_array_equal(fixed["s2"].values[0], out["s2"].values[i])
    else:
        # A date with no unusable pixel has nothing to adjust (fill_date records 0).
        assert (sigma.values[frac > 0] == adjust).all() and (sigma.values[frac == 0] == 0).all()
