"""Blockwise synthesis: chunk independence, seams, metadata, laziness, input pairing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.core.pairs import PairingRule
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import plan_tiles, synthesize, synthesize_with_scale
from tests.conftest import (
    StrictChunk,
    copy_to,
    make_patchy_cube,
    make_tiny_model,
    on_cupy,
    on_strict_chunks,
)

CLOUDY_DATE = 2  # index of a date with a clear earlier reference in the default scene


def _date(ds: xr.Dataset) -> pd.Timestamp:
    return pd.Timestamp(ds.time.values[CLOUDY_DATE])


def test_lazy_with_coords_crs_and_provenance(scene: xr.Dataset, tiny_model) -> None:
    out = scene.cloudfill.synthesize(
        _date(scene), model=tiny_model, inference=InferenceSettings(tile=32)
    )
    assert out.chunks is not None
    assert out.dims == ("band", "y", "x")
    assert list(out.band.values) == ["B02", "B03", "B04", "B08"]
    np.testing.assert_array_equal(out.x.values, scene.x.values)
    np.testing.assert_array_equal(out.y.values, scene.y.values)
    assert out.rio.crs == scene.rio.crs
    table = scene.cloudfill.pairs()
    row = table.loc[_date(scene)]
    assert out.attrs["s1_date"] == f"{row.s1_date:%Y-%m-%d}"
    assert out.attrs["reference_date"] == f"{row.reference_date:%Y-%m-%d}"
    values = out.values
    assert values.dtype == np.float32 and np.isfinite(values).all()


@pytest.mark.parametrize("chunks", [{"y": 40, "x": 56}, {"y": 33, "x": 96}, {"y": 64, "x": 48}])
def test_chunking_does_not_change_the_result(scene: xr.Dataset, tiny_model, chunks) -> None:
    date = _date(scene)
    ref = synthesize(scene, date, tiny_model, inference=InferenceSettings(tile=32)).values
    chunked = scene.chunk({"time": 1, "s1_time": 1, **chunks})
    out = synthesize(chunked, date, tiny_model, inference=InferenceSettings(tile=32, min_block=0))
    assert len(out.chunks[1]) > 1 or len(out.chunks[2]) > 1
    np.testing.assert_allclose(out.values, ref, rtol=0, atol=1e-5)


def test_blocks_are_at_least_four_tiles_by_default(scene: xr.Dataset, tiny_model) -> None:
    # Tiles straddling a block border are computed by both blocks: small chunks are merged.
    chunked = scene.chunk({"time": 1, "s1_time": 1, "y": 24, "x": 24})
    merged = synthesize(chunked, _date(scene), tiny_model, inference=InferenceSettings(tile=32))
    assert merged.chunks[1] == (96,) and merged.chunks[2] == (96,)  # 4 x 32 px > 96 px
    small = synthesize(
        chunked, _date(scene), tiny_model, inference=InferenceSettings(tile=32, min_block=0)
    )
    assert len(small.chunks[1]) > 1
    np.testing.assert_allclose(merged.values, small.values, rtol=0, atol=1e-5)


def test_attention_model_is_chunk_independent_too(scene: xr.Dataset) -> None:
    model = make_tiny_model(scene, attention="cbam", seed=1)
    date = _date(scene)
    ref = synthesize(scene, date, model, inference=InferenceSettings(tile=32)).values
    out = synthesize(
        scene.chunk({"y": 40, "x": 40}),
        date,
        model,
        inference=InferenceSettings(tile=32, min_block=0),
    ).values
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-5)


def test_tiles_agree_with_one_window_in_the_interior(tiny_model) -> None:
    """A tile-sized image: one window vs. many tiles (margin >= halo) agree within 1e-4."""
    import cloudfill

    ds = cloudfill.simulate_scene((192, 192), seed=3)
    date = pd.Timestamp(ds.time.values[CLOUDY_DATE])
    halo = tiny_model.halo
    tile = 4 * halo + 4  # margin = tile // 4 >= halo
    assert plan_tiles(192, 192, halo, tile=tile).n_tiles > 1
    assert plan_tiles(192, 192, halo, tile=192).n_tiles == 1
    whole = synthesize(
        ds,
        date,
        tiny_model,
        rule=PairingRule(max_ref_cloud=0.5),
        inference=InferenceSettings(tile=192),
    ).values
    tiled = synthesize(
        ds,
        date,
        tiny_model,
        rule=PairingRule(max_ref_cloud=0.5),
        inference=InferenceSettings(tile=tile),
    ).values
    inner = (slice(None), slice(halo, -halo), slice(halo, -halo))
    np.testing.assert_allclose(tiled[inner], whole[inner], rtol=0, atol=1e-4)


def test_no_seam_at_block_borders(scene: xr.Dataset, tiny_model) -> None:
    out = synthesize(
        scene.chunk({"y": 48, "x": 48}),
        _date(scene),
        tiny_model,
        inference=InferenceSettings(tile=32, min_block=0),
    ).values
    grad = np.abs(np.diff(out, axis=2))  # along x
    border = grad[:, :, 47]  # between pixel 47 and 48, the block border
    interior = np.delete(grad, 47, axis=2)
    assert border.mean() < 2 * interior.mean()


def test_confidence_scale_positive(scene: xr.Dataset, tiny_model) -> None:
    res = synthesize_with_scale(
        scene, _date(scene), tiny_model, inference=InferenceSettings(tile=32)
    )
    assert res.scale is not None
    scale = res.scale.values
    assert (scale > 0).all() and np.isfinite(scale).all()


def test_nan_s1_pixels_stay_empty(scene: xr.Dataset, tiny_model) -> None:
    ds = scene.copy(deep=True)
    table = ds.cloudfill.pairs()
    s1_date = table.loc[_date(ds)].s1_date
    ds["s1"].loc[{"s1_time": s1_date}] = ds["s1"].sel(s1_time=s1_date).where(ds.x > ds.x[10])
    out = synthesize(ds, _date(ds), tiny_model, inference=InferenceSettings(tile=32)).values
    assert np.isnan(out[:, :, :9]).all()
    assert np.isfinite(out[:, :, 14:]).all()


def test_errors_before_work(scene: xr.Dataset, tiny_model) -> None:
    with pytest.raises(errors.ParameterError, match="no S1 acquisition within 0.1 days"):
        synthesize(
            scene,
            _date(scene) + pd.Timedelta(hours=12),
            tiny_model,
            rule=PairingRule(max_s1_gap=0.1),
        )
    first = pd.Timestamp(scene.time.values[0])
    with pytest.raises(errors.ParameterError, match="reference"):
        synthesize(scene, first, tiny_model)
    with pytest.raises(errors.ModelMismatchError, match="dem"):
        synthesize(scene.drop_vars("dem"), _date(scene), tiny_model)
    # Issue 17, 11: not a date -> cloudfill's typed error (was TypeError / DateParseError).
    for bad in (None, "2023-13-45", "soon", [_date(scene), _date(scene)]):
        with pytest.raises(errors.ParameterError, match="date"):
            synthesize(scene, bad, tiny_model)


@pytest.mark.parametrize("mode", ["composite", "blend"])
def test_per_pixel_model_takes_the_dates_its_plan_synthesizes(mode: str) -> None:
    from cloudfill.fill.plan import plan_fill

    ds = make_patchy_cube(32)  # no date is <= 5 % cloudy
    target = pd.Timestamp("2023-01-21")
    with pytest.raises(errors.ParameterError, match="<= 5% cloud"):
        synthesize(ds, target, make_tiny_model(ds, "SO"))
    model = make_tiny_model(ds, "SO", reference_mode=mode)
    out = synthesize(ds, target, model).compute()
    plan = plan_fill(ds, direction="nearest", per_pixel=True)
    assert out.attrs["reference_date"] == f"{plan.loc[target, 'reference_date']:%Y-%m-%d}"
    # A value wherever some date has a clear observation: all but the first three rows.
    has_value = out.notnull().all("band").values
    assert has_value[3:].all() and not has_value[:3, :-1].any()
    # No date with a usable pixel in range: the error says so.
    with pytest.raises(errors.ParameterError, match="usable pixel within 5 days"):
        synthesize(ds, target, model, rule=PairingRule(max_ref_age=5))


def test_any_date_with_s1(scene: xr.Dataset, tiny_model) -> None:
    s1_date = pd.Timestamp(scene.s1_time.values[8])
    out = synthesize(scene, s1_date, tiny_model, inference=InferenceSettings(tile=32))
    assert out.attrs["s1_date"] == f"{s1_date:%Y-%m-%d}"


def test_plan_tiles_defaults() -> None:
    g = plan_tiles(5000, 3000, halo=195)
    assert g.tile == 1024 and g.margin == 196 and g.overlap == 392
    assert plan_tiles(1200, 1200, halo=195).n_tiles == 1


def _nearest_clear(ds: xr.Dataset, date: pd.Timestamp, earlier_only: bool) -> np.ndarray:
    """Brute force: each pixel's value on the nearest other date where it is clear."""
    times = pd.DatetimeIndex(ds.time.values)
    mask = ds.cloudfill.cloud_mask().values
    s2 = ds.s2.values
    others = [k for k in range(len(times)) if times[k] != date]
    others = [k for k in others if times[k] < date or not earlier_only]
    order = sorted(others, key=lambda k: (abs(times[k] - date), times[k]))
    out = np.full(s2.shape[1:], np.nan, dtype="float32")
    for k in reversed(order):
        out = np.where(mask[k][None], out, s2[k])
    return out


def _blend(ds: xr.Dataset, date: pd.Timestamp, despeckle: int) -> np.ndarray:
    """The blend reference from first principles: every other date within 120 days with its
    nearest S1 (within 6 days, despeckled as the model does), through the float64 formula."""
    from tests.test_condition import blend_brute_force

    times = pd.DatetimeIndex(ds.time.values)
    s1_times = pd.DatetimeIndex(ds.s1_time.values)
    s1 = ds.cloudfill.despeckle(despeckle).s1.values
    mask = ds.cloudfill.cloud_mask().values

    def radar(when: pd.Timestamp) -> np.ndarray | None:
        gaps = np.abs(s1_times - when)
        j = int(np.argmin(gaps))
        return s1[j] if gaps[j] <= pd.Timedelta(days=6) else None

    others = [k for k in range(len(times)) if times[k] != date]
    others = [k for k in others if abs(times[k] - date) <= pd.Timedelta(days=120)]
    return blend_brute_force(
        [ds.s2.values[k] for k in others],
        [mask[k] for k in others],
        [(times[k] - date) / pd.Timedelta(days=1) for k in others],
        [radar(times[k]) for k in others],
        radar(date),
    )


@pytest.mark.parametrize(("mode", "index"), [("date", 1), ("composite", 3), ("blend", 3)])
def test_untrained_skip_model_returns_its_reference(
    scene: xr.Dataset, mode: str, index: int
) -> None:
    # The reference skip with a silent head outputs its reference, so synthesize shows
    # exactly which reference each mode builds: one clear date, each pixel's nearest clear
    # observation (earlier or later), or the S1-weighted blend of both sides.
    model = make_tiny_model(scene, reference_mode=mode)
    date = pd.Timestamp(scene.time.values[index])
    out = synthesize(scene, date, model, inference=InferenceSettings(tile=32))
    if mode == "composite":
        expected = _nearest_clear(scene, date, earlier_only=False)
        assert out.attrs["reference_dates"].count(",") >= 1
    elif mode == "blend":
        expected = _blend(scene, date, model.card.training["despeckle"])
        # Not the composite (by far more than the tolerance below): the blend mixes both
        # sides, though on this scene the radar mostly picks one.
        assert np.nanmax(np.abs(expected - _nearest_clear(scene, date, False))) > 1e-4
    else:
        ref = pd.Timestamp(out.attrs["reference_date"])
        unusable = scene.cloudfill.cloud_mask().sel(time=ref).values
        expected = np.where(unusable, np.nan, scene.s2.sel(time=ref).values)
        assert out.attrs["reference_dates"] == ""
    stats = model.card.normalisation["variables"]["s2"]
    low = np.array(stats["low"], "float32")[:, None, None]
    high = np.array(stats["high"], "float32")[:, None, None]
    margin = 0.002 * (high - low)  # the skip clamps the normalised reference inside (-1, 1)
    inside = ((expected > low + margin) & (expected < high - margin)).all(0)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out.values[:, inside], expected[:, inside], atol=1e-5)
    # No usable reference value: nothing to condition on, so nothing is invented.
    orphan = np.isnan(expected).any(0)
    np.testing.assert_array_equal(np.isnan(out.values).any(0), orphan)


def test_the_chunk_type_is_kept(scene: xr.Dataset, tiny_model) -> None:
    # See tests/test_series.py: a CPU stand-in for CuPy chunks.
    cube = on_strict_chunks(scene, {"time": 1, "s1_time": 1, "y": 40, "x": 56})
    out = synthesize_with_scale(
        cube, _date(scene), tiny_model, inference=InferenceSettings(tile=32, min_block=0)
    )
    assert type(out.mean.data._meta) is StrictChunk
    assert type(out.scale.data._meta) is StrictChunk


# --- GPU ---------------------------------------------------------------------------------
# cuDNN rounds differently from the CPU kernels (and convolves in TF32 by default): fp32
# agrees to 1e-3 in reflectance, the bf16 fast path to 1e-2.


@pytest.mark.gpu
def test_cupy_chunks_stay_on_the_gpu_and_match_numpy(scene: xr.Dataset, tiny_model, cuda) -> None:
    date = _date(scene)
    chunks = {"time": 1, "s1_time": 1, "y": 40, "x": 56}
    ref = synthesize(
        scene.chunk(chunks), date, tiny_model, inference=InferenceSettings(tile=32, min_block=0)
    ).values
    gpu_model = copy_to(tiny_model, "cuda")
    out = synthesize(
        on_cupy(scene, chunks), date, gpu_model, inference=InferenceSettings(tile=32, min_block=0)
    )
    assert isinstance(out.data._meta, cuda.ndarray)
    assert isinstance(out.data.blocks[0, 0, 0].compute(), cuda.ndarray)
    assert out.rio.crs == scene.rio.crs and out.attrs["s1_date"]
    got = out.data.compute().get()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize(("fast", "atol"), [(False, 1e-3), (True, 1e-2)])
def test_cuda_model_on_numpy_chunks_matches_cpu(
    scene: xr.Dataset, tiny_model, cuda, fast: bool, atol: float
) -> None:
    date = _date(scene)
    ref = synthesize(scene, date, tiny_model, inference=InferenceSettings(tile=32)).values
    out = synthesize(
        scene,
        date,
        copy_to(tiny_model, "cuda", fast=fast),
        inference=InferenceSettings(tile=32, fast=fast),
    )
    got = out.values  # NumPy chunks in, NumPy chunks out
    assert isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, ref, rtol=0, atol=atol)


def test_already_despeckled_s1_is_not_despeckled_again(scene: xr.Dataset) -> None:
    # The tiny model's card says a 3 x 3 window; a cube despeckled so already (preprocess)
    # gives the same synthesis as the raw cube, despeckled inside. An SD model: its output
    # depends on S1 (an untrained SO/SOD model returns its reference).
    model = make_tiny_model(scene, "SD")
    raw = synthesize(scene, _date(scene), model, inference=InferenceSettings(tile=32)).values
    done = synthesize(
        scene.cloudfill.despeckle(3), _date(scene), model, inference=InferenceSettings(tile=32)
    ).values
    twice = synthesize(
        scene.cloudfill.despeckle(5), _date(scene), model, inference=InferenceSettings(tile=32)
    ).values
    np.testing.assert_array_equal(done, raw)
    assert np.abs(twice - raw).max() > 1e-6  # the test can tell the S1 apart
