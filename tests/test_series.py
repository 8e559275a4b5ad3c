"""fill_series: real pixels kept, masked pixels filled, feathering, provenance, fallbacks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.core.pairs import PairingRule
from cloudfill.fill.blend import feather_weights
from cloudfill.fill.series import INTERPOLATION_CONFIDENCE, fill_series
from cloudfill.infer.settings import InferenceSettings
from tests.conftest import (
    StrictChunk,
    copy_to,
    make_patchy_cube,
    make_tiny_model,
    on_cupy,
    on_strict_chunks,
)


@pytest.fixture(scope="module")
def filled(scene: xr.Dataset, tiny_model) -> xr.Dataset:
    # Without the same-date adjustment, so that the tests below can compare the fills with
    # the synthesis and the interpolation they come from (the adjustment: test_adjust.py).
    return fill_series(
        scene, tiny_model, feather=4, adjust=0, inference=InferenceSettings(tile=32)
    ).compute()


def test_layout_and_provenance(scene: xr.Dataset, filled: xr.Dataset) -> None:
    assert filled["s2"].dims == scene["s2"].dims
    assert filled["filled"].dtype == bool and filled["confidence"].dtype == np.float32
    table = scene.cloudfill.pairs()
    assert list(filled["method"].values) == list(table["method"])
    synth = table["method"] == "synthesize"
    np.testing.assert_array_equal(
        filled["s1_date"].values[synth.to_numpy()], table["s1_date"][synth].to_numpy()
    )
    assert filled.rio.crs == scene.rio.crs
    np.testing.assert_array_equal(filled.x.values, scene.x.values)


def test_real_pixels_kept_outside_the_feather_band(scene: xr.Dataset, filled: xr.Dataset) -> None:
    mask = scene.cloudfill.cloud_mask()
    near = feather_weights(mask, 4) > 0
    far = ~near.values
    np.testing.assert_array_equal(
        np.where(far[:, None], filled["s2"].values, 0), np.where(far[:, None], scene.s2.values, 0)
    )
    assert (filled["confidence"].values[far] == 1).all()
    # Every masked pixel got a value: the scene has usable data on other dates.
    assert not np.isnan(filled["s2"].values).any()
    np.testing.assert_array_equal(filled["filled"].values, mask.values)
    assert (filled["unfilled"].values == 0).all()


def test_fully_cloudy_date_entirely_synthesized(scene: xr.Dataset, filled: xr.Dataset) -> None:
    frac = scene.cloudfill.cloud_mask().mean(("y", "x")).values
    i = int(np.argmax(frac))
    assert frac[i] == 1.0 and filled["method"].values[i] == "synthesize"
    conf = filled["confidence"].values[i]
    assert filled["filled"].values[i].all() and (conf > 0).all() and (conf < 1).all()


def test_pixels_without_a_reference_are_interpolated(
    scene: xr.Dataset, filled: xr.Dataset, tiny_model
) -> None:
    from cloudfill.core.temporal import linear_interpolation

    table = scene.cloudfill.pairs()
    mask = scene.cloudfill.cloud_mask()
    date = table.index[-1]
    row = table.loc[date]
    assert row["method"] == "synthesize"
    # Cloudy on the target date and on its only reference date: the model has no input there.
    orphan = (mask.sel(time=date) & mask.sel(time=row["reference_date"])).values
    modelled = mask.sel(time=date).values & ~orphan
    assert orphan.sum() > 0 and modelled.sum() > 0
    i = list(table.index).index(date)
    interp = linear_interpolation(scene, date).values
    np.testing.assert_allclose(filled["s2"].values[i][:, orphan], interp[:, orphan], atol=1e-6)
    assert (filled["confidence"].values[i][orphan] == INTERPOLATION_CONFIDENCE).all()
    assert (filled["confidence"].values[i][modelled] != INTERPOLATION_CONFIDENCE).all()
    # synthesize itself leaves those pixels empty rather than guessing from S1 alone.
    syn = scene.cloudfill.synthesize(date, tiny_model, inference=InferenceSettings(tile=32)).values
    assert np.isnan(syn[:, orphan]).all() and np.isfinite(syn[:, modelled]).all()


def test_interpolation_fallback_flagged(scene: xr.Dataset, tiny_model) -> None:
    out = fill_series(
        scene, tiny_model, rule=PairingRule(max_s1_gap=0.01), inference=InferenceSettings(tile=32)
    ).compute()
    cloudy = out["cloud_fraction"].values > 0
    assert set(out["method"].values[cloudy]) == {"interpolate"}
    i = int(np.argmax(cloudy))
    masked = out["filled"].values[i]
    assert np.allclose(out["confidence"].values[i][masked], INTERPOLATION_CONFIDENCE)


def test_nothing_usable_stays_nan_and_is_reported(scene: xr.Dataset, tiny_model) -> None:
    ds = scene.copy(deep=True)
    # A strip of pixels cloudy on every date.
    ds["cloud"][:, :, :5] = True
    out = fill_series(ds.drop_vars("s1"), None, feather=0).compute()
    assert np.isnan(out["s2"].values[:, :, :, :5]).all()
    assert (out["unfilled"].values >= 5 * ds.sizes["y"]).all()
    assert not out["filled"].values[:, :, :5].any()
    assert (out["confidence"].values[:, :, :5] == 0).all()


def test_dates_subset_and_errors(scene: xr.Dataset, tiny_model) -> None:
    dates = scene.time.values[[1, 2]]
    out = fill_series(scene, tiny_model, dates=dates, inference=InferenceSettings(tile=32))
    assert out.sizes["time"] == 2
    with pytest.raises(errors.ParameterError, match="1999-01-01"):
        fill_series(scene, tiny_model, dates=["1999-01-01"])
    with pytest.raises(errors.MissingVariableError, match="cloud"):
        fill_series(scene.drop_vars(["cloud", "scl"]), tiny_model)


@pytest.mark.parametrize("chunks", [None, {"y": 7, "x": 50}])
def test_feather_weights_exact_for_any_chunking(chunks) -> None:
    rng = np.random.default_rng(0)
    mask = xr.DataArray(rng.random((2, 40, 60)) > 0.97, dims=("time", "y", "x"))
    ref = feather_weights(mask, 5).values
    m = mask if chunks is None else mask.chunk({"time": 1, **chunks})
    np.testing.assert_array_equal(feather_weights(m, 5).values, ref)
    assert (ref[mask.values] == 1).all() and ref.min() == 0
    assert ((ref > 0) & (ref < 1)).any()


def test_fill_is_lazy_on_dask(scene: xr.Dataset, tiny_model) -> None:
    out = fill_series(
        scene.chunk({"time": 1, "y": 48, "x": 48}), tiny_model, inference=InferenceSettings(tile=32)
    )
    assert out["s2"].chunks is not None and out["confidence"].chunks is not None
    assert pd.api.types.is_datetime64_any_dtype(out["s1_date"])


@pytest.fixture(scope="module")
def spell_fill(spell_scene: xr.Dataset) -> tuple[xr.Dataset, xr.Dataset, object]:
    model = make_tiny_model(spell_scene)
    plain = fill_series(
        spell_scene, model, rule=PairingRule(max_ref_age=40), inference=InferenceSettings(tile=32)
    ).compute()
    chained = fill_series(
        spell_scene,
        model,
        chain=True,
        rule=PairingRule(max_ref_age=40),
        inference=InferenceSettings(tile=32),
    ).compute()
    return plain, chained, model


def test_chain_synthesizes_a_long_cloudy_spell(spell_scene: xr.Dataset, spell_fill) -> None:
    plain, chained, model = spell_fill
    assert list(plain["method"].values[1:4]) == ["synthesize", "interpolate", "interpolate"]
    assert list(chained["method"].values[1:4]) == ["synthesize"] * 3
    assert list(chained["reference_chained"].values) == [False, False, True, True, False]
    assert not plain["reference_chained"].values.any()
    # The untrained skip model returns its reference, so each date of the spell returns the
    # filled image of the date before it: the chain really reads the filled dates.
    s2 = chained["s2"].values
    stats = model.card.normalisation["variables"]["s2"]
    low = np.array(stats["low"], "float32")[:, None, None]
    high = np.array(stats["high"], "float32")[:, None, None]
    margin = 0.002 * (high - low)  # the skip clamps the normalised reference inside (-1, 1)
    first = s2[0]
    inside = ((first > low + margin) & (first < high - margin)).all(0)
    assert inside.mean() > 0.5
    for k in (1, 2, 3):
        np.testing.assert_allclose(s2[k][:, inside], first[:, inside], atol=1e-4)
    # Unchained, the same date was interpolated between the clear ends instead.
    assert np.abs(plain["s2"].values[2] - s2[2]).max() > 1e-3
    assert chained["filled"].values[1:4].all() and not np.isnan(s2).any()


def test_chain_result_does_not_depend_on_the_dates_asked(spell_scene: xr.Dataset, spell_fill):
    _, chained, model = spell_fill
    date = spell_scene.time.values[3]
    one = fill_series(
        spell_scene,
        model,
        chain=True,
        dates=[date],
        rule=PairingRule(max_ref_age=40),
        inference=InferenceSettings(tile=32),
    )
    np.testing.assert_array_equal(one["s2"].values[0], chained["s2"].values[3])
    assert bool(one["reference_chained"].values[0])
    plan = spell_scene.cloudfill.pairs(PairingRule(max_ref_age=40), chain=True)
    with pytest.raises(errors.ParameterError, match="chain=True"):
        fill_series(
            spell_scene,
            model,
            plan=plan,
            rule=PairingRule(max_ref_age=40),
            inference=InferenceSettings(tile=32),
        )


@pytest.mark.slow  # a whole fill on StrictChunk chunks, 5 s
def test_the_chunk_type_is_kept(scene: xr.Dataset, tiny_model) -> None:
    # CuPy chunks in, CuPy chunks out: checked on the CPU with a stand-in chunk type that,
    # like CuPy, refuses NumPy operands (an xarray-made NumPy fill or a Python scalar made
    # dask fall back to NumPy chunks, found on a GPU).
    cube = on_strict_chunks(scene, {"time": 1, "s1_time": 1, "y": 48, "x": 48})
    out = fill_series(cube, tiny_model, feather=4, inference=InferenceSettings(tile=32))
    for name in ("s2", "filled", "confidence", "unfilled"):
        assert type(out[name].data._meta) is StrictChunk, name


@pytest.mark.gpu
def test_fill_series_on_cupy_chunks_matches_numpy(
    scene: xr.Dataset, tiny_model, cuda, tmp_path
) -> None:
    import cloudfill

    chunks = {"time": 1, "s1_time": 1, "y": 48, "x": 48}
    ref = fill_series(
        scene.chunk(chunks), tiny_model, feather=4, inference=InferenceSettings(tile=32)
    ).compute()
    got = fill_series(
        on_cupy(scene, chunks),
        copy_to(tiny_model, "cuda"),
        feather=4,
        inference=InferenceSettings(tile=32),
    )
    assert isinstance(got["s2"].data._meta, cuda.ndarray)
    # Written from host memory: zarr takes NumPy buffers.
    cloudfill.write_cube(got, tmp_path / "gpu.zarr")
    back = cloudfill.open_cube(tmp_path / "gpu.zarr", chunks=None)
    for name in ("filled", "method", "s1_date", "reference_date", "unfilled"):
        np.testing.assert_array_equal(back[name].values, ref[name].values, err_msg=name)
    np.testing.assert_allclose(back["s2"].values, ref["s2"].values, rtol=0, atol=1e-3)
    np.testing.assert_allclose(back["confidence"].values, ref["confidence"].values, atol=1e-3)
    assert back.rio.crs == scene.rio.crs


def test_candidates_pair_with_s1_by_the_fills_gap(scene: xr.Dataset) -> None:
    # Only the target keeps an S1 acquisition within 6 days: the other dates' nearest ones
    # are 6-12 days away, so whether a blend weighs them by radar depends on max_s1_gap,
    # which fill_series must hand on to the synthesis (as synthesize takes it).
    from cloudfill.infer.synthesize import synthesize_with_scale

    model = make_tiny_model(scene, reference_mode="blend")
    times = pd.DatetimeIndex(scene.time.values)
    s1_times = pd.DatetimeIndex(scene.s1_time.values)
    target = times[3]
    near_other = [
        t for t in s1_times if any(abs(t - d) <= pd.Timedelta(days=6) for d in times if d != target)
    ]
    keep = [t for t in s1_times if t not in near_other or abs(t - target) <= pd.Timedelta(days=6)]
    cube = scene.sel(s1_time=keep)
    unusable = cube.cloudfill.cloud_mask().sel(time=target).values
    out = {}
    for gap in (6, 14):
        filled = fill_series(
            cube,
            model,
            dates=[target],
            feather=0,
            adjust=0,
            rule=PairingRule(max_s1_gap=gap),
            inference=InferenceSettings(tile=32),
        )
        alone = synthesize_with_scale(
            cube,
            target,
            model,
            rule=PairingRule(max_s1_gap=gap),
            inference=InferenceSettings(tile=32),
        ).mean.values
        got = filled["s2"].values[0][:, unusable]
        np.testing.assert_array_equal(got, alone[:, unusable])
        out[gap] = got
    assert np.abs(out[14] - out[6]).max() > 1e-6  # the radar weights took part (else equal)


def test_blend_model_synthesizes_dates_no_single_reference_date_serves() -> None:
    from cloudfill.fill.plan import prepare_fill

    ds = make_patchy_cube(32)  # no date <= 5 % cloudy; 01-21 is 97 % cloudy
    target = pd.Timestamp("2023-01-21")
    by_date = fill_series(ds, make_tiny_model(ds, "SO"), dates=[target])
    assert by_date["method"].values.tolist() == ["interpolate"]
    blend = fill_series(ds, make_tiny_model(ds, "SO", reference_mode="blend"))
    assert blend["method"].values.tolist() == ["synthesize"] * 3 + ["interpolate"]
    assert blend["reference_date"].values[2] == np.datetime64("2023-01-11")
    # Every cloudy pixel with a clear observation elsewhere is filled (31 * 32 - 3 * 31 =
    # 899); the first three rows are cloudy on every date and stay NaN.
    assert int(blend["filled"].sel(time=target).sum()) == 899
    assert int(blend["unfilled"].sel(time=target)) == 3 * 31
    # An S1-only model synthesizes every date with S1, whatever its references.
    _, plan = prepare_fill(ds, make_tiny_model(ds, "S"))
    assert list(plan["method"]) == ["synthesize"] * 4


def test_a_context_models_fallback_pixels_are_adjusted_like_an_interpolated_date() -> None:
    """The shipped (context) model leaves its own pixels unadjusted; pixels it cannot
    synthesize (here: S1 without a value anywhere) fall back to interpolation, adjusted to
    the date exactly as a date filled by interpolation is (a cube without S1)."""
    import cloudfill

    base = cloudfill.simulate_scene((48, 48), seed=1)
    assert cloudfill.default_model().variant.uses_context
    empty = base.assign(s1=base["s1"].where(False))
    without = base.drop_vars("s1")
    a, b = fill_series(empty), fill_series(without)
    synthesized = a["method"].values == "synthesize"
    assert synthesized.any() and (b["method"].values[synthesized] == "interpolate").all()
    np.testing.assert_allclose(a["s2"].values[synthesized], b["s2"].values[synthesized], atol=1e-6)
    assert (b["adjust_sigma"].values[synthesized] > 0).any()  # the adjustment did something
