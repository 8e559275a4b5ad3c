"""What the date shows at each height (SODCTXH): the elevation-band table of its clear pixels,
its lookup, and the variant's generator."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import cloudfill
from cloudfill.core.condition import condition_stack, lit_channels, normalise_bands
from cloudfill.core.height import (
    HEIGHT_BASE_M,
    HEIGHT_BIN_M,
    HEIGHT_BINS,
    HEIGHT_MIN_SHOWN,
    height_channels,
    height_light,
    height_sums,
)
from cloudfill.core.pairs import reference_candidates
from cloudfill.core.variants import HEIGHT_CHANNELS, LIGHT_CHANNELS, get_variant
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.model import CloudfillModel, Generator
from cloudfill.preprocess.normalise import scene_stats
from cloudfill.training.warm_start import start_state


def _loop_sums(values: np.ndarray, dem: np.ndarray, light: np.ndarray | None = None) -> np.ndarray:
    """The table pixel by pixel, in float64."""
    out = np.zeros((HEIGHT_BINS, 11))
    for y in range(dem.shape[0]):
        for x in range(dem.shape[1]):
            if np.isnan(dem[y, x]):
                continue
            k = int((dem[y, x] - HEIGHT_BASE_M) // HEIGHT_BIN_M)
            k = min(max(k, 0), HEIGHT_BINS - 1)
            out[k, 9] += 1
            v = values[:, y, x].astype("float64")
            if np.isfinite(v).all():
                out[k, :4] += v
                out[k, 4:8] += v**2
                out[k, 8] += 1
                out[k, 10] += 0.0 if light is None else float(light[y, x])
    return out


@pytest.fixture(scope="module")
def date_arrays() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    dem = rng.uniform(-700.0, 1500.0, (37, 41))
    dem[3, :5] = np.nan
    dem[5, 5] = 12000.0  # above the last band's lower edge: the last band
    residual = rng.normal(size=(4, 37, 41)).astype("float32")
    residual[:, rng.random((37, 41)) < 0.4] = np.nan
    residual[2, 10, 10] = np.nan  # one band missing: not shown
    return residual, dem


@pytest.mark.parametrize("lit", [False, True])
@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_height_sums_match_a_float64_loop(date_arrays, backend: str, lit: bool) -> None:
    residual, dem = date_arrays
    light = np.random.default_rng(8).uniform(0, 1.5, dem.shape).astype("float32") if lit else None
    want = _loop_sums(residual, dem, light)
    if backend == "dask":
        got = height_sums(
            da.from_array(residual, chunks=(3, 10, 17)),
            da.from_array(dem, chunks=(16, 9)),
            None if light is None else da.from_array(light, chunks=(11, 30)),
        )
    else:
        got = height_sums(residual, dem, light)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert got[:, 9].sum() == np.isfinite(dem).sum()


def k_of(dem: np.ndarray) -> np.ndarray:
    k = np.floor((np.nan_to_num(dem, nan=-1e9) - HEIGHT_BASE_M) / HEIGHT_BIN_M)
    return np.where(np.isnan(dem), -1, np.clip(k, 0, HEIGHT_BINS - 1))


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_height_channels_look_up_each_pixels_band(date_arrays, backend: str) -> None:
    values, dem = date_arrays
    sums = _loop_sums(values, dem)
    got = height_channels(sums, da.from_array(dem, chunks=(20, 20)) if backend == "dask" else dem)
    got = np.asarray(got)
    assert got.shape == (len(HEIGHT_CHANNELS), *dem.shape) and got.dtype == np.float32
    for y, x in [(0, 0), (10, 10), (20, 33), (5, 5), (3, 1)]:
        if np.isnan(dem[y, x]):
            assert (got[:, y, x] == 0).all()  # no band: nothing known
            continue
        k = min(max(int((dem[y, x] - HEIGHT_BASE_M) // HEIGHT_BIN_M), 0), HEIGHT_BINS - 1)
        shown, total = sums[k, 8], sums[k, 9]
        if shown < HEIGHT_MIN_SHOWN:
            assert (got[:, y, x] == 0).all()
        else:
            v = values[:, (k_of(dem) == k) & np.isfinite(values).all(0)].astype("float64")
            np.testing.assert_allclose(got[:4, y, x], v.mean(1), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got[4, y, x], v.std(1).mean(), rtol=1e-5)
            np.testing.assert_allclose(got[5, y, x], shown / total, rtol=1e-6)


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_height_light_is_the_mean_light_of_each_bands_clear_pixels(date_arrays, backend) -> None:
    values, dem = date_arrays
    light = np.random.default_rng(9).uniform(0, 1.5, dem.shape)
    sums = _loop_sums(values, dem, light)
    got = height_light(sums, da.from_array(dem, chunks=(20, 20)) if backend == "dask" else dem)
    got = np.asarray(got)
    assert got.shape == dem.shape and got.dtype == np.float32
    clear = np.isfinite(values).all(0)
    for y, x in [(0, 0), (10, 10), (20, 33), (5, 5), (3, 1)]:
        k = k_of(dem)[y, x]
        if k < 0 or sums[int(k), 8] < HEIGHT_MIN_SHOWN:
            assert got[y, x] == 0
        else:
            want = light[(k_of(dem) == k) & clear].mean()
            np.testing.assert_allclose(got[y, x], want, rtol=1e-5)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene(
        (96, 96), dates=8, seed=4,
        cloud_fraction=[0.0, 0.3, 0.5, 0.1, 1.0, 0.2, 0.4, 0.0],
    )  # fmt: skip


def _stack(cube: xr.Dataset, t: int, stats=None) -> xr.DataArray:
    mask = cloud_mask(cube)
    times = pd.DatetimeIndex(cube.time.values)
    s1_times = pd.DatetimeIndex(cube.s1_time.values)
    date = times[t]
    wanted = reference_candidates(times, mask.mean(("y", "x")).values, date, pd.Timedelta(days=120))
    return condition_stack(
        cube, date, stats or scene_stats(cube), "SODCTXH",
        s1_date=s1_times[np.argmin(np.abs(s1_times - date))], reference_date=wanted[0],
        reference_dates=wanted, mask=mask,
        reference_s1_dates=[s1_times[np.argmin(np.abs(s1_times - d))] for d in wanted],
        target_mask=mask.sel(time=date),
    )  # fmt: skip


def test_the_stack_reads_the_whole_dates_table_numpy_and_dask_alike(cube: xr.Dataset) -> None:
    names = list(get_variant("SODCTXH").channels)
    plain = _stack(cube, 2)
    chunked = _stack(cube.chunk({"y": 40, "x": 56}), 2)
    assert isinstance(chunked.data, da.Array)
    height = plain.sel(channel=list(HEIGHT_CHANNELS)).values
    np.testing.assert_allclose(
        chunked.sel(channel=list(HEIGHT_CHANNELS)).values, height, rtol=0, atol=1e-6
    )
    # the table of the date's shown pixels, normalised as the model's s2, by band
    stats = scene_stats(cube)
    mask = cloud_mask(cube).isel(time=2).values
    context = cube["s2"].isel(time=2).sel(band=list(BANDS)).values
    values = normalise_bands(np.where(mask[None], np.nan, context), stats, "s2", BANDS,
                             fill=False)  # fmt: skip
    want = height_channels(_loop_sums(values, cube["dem"].values), cube["dem"].values)
    np.testing.assert_allclose(height, want, rtol=0, atol=1e-5)
    assert (height[-1] > 0).any() and (height[-2] > 0).any() and np.abs(height[:4]).max() > 0
    assert len(names) == 36


def test_a_fully_cloudy_date_shows_nothing_at_any_height(cube: xr.Dataset) -> None:
    stack = _stack(cube, 4)
    assert (stack.sel(channel=list(HEIGHT_CHANNELS)).values == 0).all()


def test_warm_start_from_sodctx_computes_its_output() -> None:
    torch.manual_seed(0)
    sodctx = Generator("SODCTX", base_filters=8, n_blocks=1, confidence=True)
    with torch.no_grad():  # a trained-looking SODCTX model: its zero layers moved
        sodctx.head[-1].weight.normal_(0, 0.05)
        sodctx.context.linear[-1].weight.normal_(0, 0.1)
    sodctx = CloudfillModel(sodctx.eval())
    wider = Generator(**{**sodctx.card.generator_kwargs(), "variant": "SODCTXH"}).eval()
    wider.load_state_dict(start_state(sodctx, wider), strict=True)
    x = torch.randn(1, get_variant("SODCTXH").n_inputs, 32, 32)
    x[:, -1] = x[:, -1].abs()  # a share: the height features are read
    with torch.no_grad():
        want = sodctx.generator(x[:, : -len(HEIGHT_CHANNELS)]).mean
        got = wider(x).mean
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)  # float32 summation order
    # and the new inputs are heard once the height path's last layer moves
    with torch.no_grad():
        wider.height.layers[-1].weight.normal_(0, 0.1)
        moved = wider(x).mean
    assert (moved - want).abs().max() > 1e-3


def test_warm_start_from_sodctxh_to_the_lit_variant_computes_its_output() -> None:
    """SODCTXHI's light enters the trunk, the per-pixel path and the height path with zero
    weights: the warm-started network is SODCTXH's, until those weights move."""
    torch.manual_seed(0)
    sodctxh = Generator("SODCTXH", base_filters=8, n_blocks=1, confidence=True)
    with torch.no_grad():
        sodctxh.head[-1].weight.normal_(0, 0.05)
        sodctxh.height.layers[-1].weight.normal_(0, 0.1)
    sodctxh = CloudfillModel(sodctxh.eval())
    lit = Generator(**{**sodctxh.card.generator_kwargs(), "variant": "SODCTXHI"}).eval()
    lit.load_state_dict(start_state(sodctxh, lit), strict=True)
    x = torch.randn(1, get_variant("SODCTXHI").n_inputs, 32, 32)
    x[:, -3:] = x[:, -3:].abs()  # a share and two lights
    with torch.no_grad():
        want = sodctxh.generator(x[:, : -len(LIGHT_CHANNELS)]).mean
        got = lit(x).mean
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5)
    with torch.no_grad():  # the gates move the estimate towards the lit and the plain means
        lit.height.gate.weight.normal_(0, 0.5)
        gated = lit(x).mean
    assert (gated - want).abs().max() > 1e-3
    with torch.no_grad():  # and the height path's first layer hears the lit band mean
        lit.height.gate.weight.zero_()
        lit.height.layers[0].weight[:, -6:].normal_(0, 0.5)
        moved = lit(x).mean
    assert (moved - want).abs().max() > 1e-3


def _scene_shown(cube: xr.Dataset, data, i: int, size: int, width: int):
    """Sample ``i``'s scene of a mosaic of ``cube``'s width-``width`` slices, and its date's
    S2 there as the sample's table sees it: normalised, NaN where cloudy or hidden."""
    from cloudfill.training.hide import hide_mask

    row = data.split_samples("train")[1].iloc[i]
    scene = row.x0 // width
    xs = slice(scene * width, (scene + 1) * width)
    date = pd.DatetimeIndex(cube.time.values)[row.t]
    hidden = cloud_mask(cube).sel(time=date).copy()
    hidden.values[row.y0 : row.y0 + size, row.x0 : row.x0 + size] |= hide_mask(data.seed, i, size)
    own = cube.isel(x=xs)
    values = own["s2"].sel(time=date, band=list(BANDS)).values
    values = np.where(hidden.isel(x=xs).values[None], np.nan, values)
    return own, normalise_bands(values, data.stats, "s2", BANDS, fill=False)


def test_a_training_mosaic_reads_each_scenes_own_table(cube: xr.Dataset) -> None:
    """Scenes side by side (``attrs["mosaic_scene_width"]``): a patch's height channels are
    its own scene's table, less the pixels it hides, as inference on that scene alone."""
    from cloudfill.training.dataset import PatchDataset
    from cloudfill.training.index import PatchSettings, build_index

    size, width = 16, 48
    mosaic = cube.assign_attrs(mosaic_scene_width=width)
    data = build_index(mosaic, "SODCTXH", PatchSettings(size, 0, block_size=48), seed=3,
                       reference="blend")  # fmt: skip
    dataset = PatchDataset.from_index(data, "train", augment=False)
    assert dataset.reader.scene_width == width
    height = [get_variant("SODCTXH").channels.index(c) for c in HEIGHT_CHANNELS]
    checked = set()
    for i in range(len(dataset)):
        row = dataset.samples.iloc[i]
        scene = row.x0 // width
        assert (row.x0 + size - 1) // width == scene
        if scene in checked:
            continue
        checked.add(scene)
        own, values = _scene_shown(cube, data, i, size, width)
        want = height_channels(_loop_sums(values, own["dem"].values), own["dem"].values)
        got = dataset[i][0].numpy()[height]
        cols = slice(row.x0 - scene * width, row.x0 - scene * width + size)
        np.testing.assert_allclose(got, want[:, row.y0 : row.y0 + size, cols], atol=1e-6)
        assert (got[-1] > 0).any()
    assert checked == {0, 1}


def test_a_training_mosaics_light_is_each_scenes_own(cube: xr.Dataset) -> None:
    """SODCTXHI in a mosaic: a patch's light is its own scene's, the edge pixels repeated at
    the scene's border as inference on the scene alone repeats them, and the band means of the
    light are that scene's table's (with the mosaic's one latitude, spacing and north)."""
    from cloudfill.core.illumination import light_geometry, slope_light
    from cloudfill.training.dataset import PatchDataset
    from cloudfill.training.index import PatchSettings, build_index

    size, width = 16, 48
    mosaic = cube.assign_attrs(mosaic_scene_width=width)
    data = build_index(mosaic, "SODCTXHI", PatchSettings(size, 0, block_size=48), seed=3,
                       reference="blend")  # fmt: skip
    dataset = PatchDataset.from_index(data, "train", augment=False)
    times = pd.DatetimeIndex(cube.time.values)
    light = [get_variant("SODCTXHI").channels.index(c) for c in LIGHT_CHANNELS]
    edges = 0
    for i in range(len(dataset)):
        row = dataset.samples.iloc[i]
        scene = row.x0 // width
        date = times[row.t]
        own, values = _scene_shown(cube, data, i, size, width)
        dem = own["dem"].values
        lit = slope_light(dem, date, data.light)  # the mosaic's one geometry
        table = _loop_sums(values, dem, lit)
        band_light = height_light(table, dem)
        scaled = lit_channels(height_channels(table, dem), lit, band_light, data.stats)
        want = np.concatenate([lit[None], band_light[None], scaled])
        cols = slice(row.x0 - scene * width, row.x0 - scene * width + size)
        got = dataset[i][0].numpy()[light]
        np.testing.assert_allclose(got, want[:, row.y0 : row.y0 + size, cols], atol=1e-5)
        edges += cols.start == 0 or cols.stop == width
    assert edges > 0 and data.light == light_geometry(mosaic)


def test_the_height_path_adds_nothing_where_nothing_is_known() -> None:
    """A pixel whose band shows nothing (share 0: a fully cloudy date, too few clear pixels)
    keeps the estimate, whatever the path learned; elsewhere it moves it."""
    from cloudfill.model.context import HeightPath

    torch.manual_seed(2)
    path = HeightPath()
    with torch.no_grad():
        path.layers[-1].weight.normal_(0, 0.5)
        path.layers[-1].bias.normal_(0, 0.5)
    height = torch.rand(1, 6, 8, 8) + 0.1
    height[..., :4] = 0  # columns 0-3: nothing known there
    with torch.no_grad():
        out = path(height, torch.randn(1, 4, 8, 8))
    assert (out[..., :4] == 0).all() and (out[..., 4:].abs() > 0).all()


def test_a_patch_across_two_mosaic_scenes_is_refused(cube: xr.Dataset) -> None:
    from cloudfill.errors import ParameterError
    from cloudfill.training.dataset import PatchDataset
    from cloudfill.training.index import PatchSettings, build_index

    mosaic = cube.assign_attrs(mosaic_scene_width=48)
    data = build_index(mosaic, "SODCTXH", PatchSettings(32, 8, block_size=64), seed=3,
                       reference="blend")  # fmt: skip
    with pytest.raises(ParameterError, match="span two of the mosaic's scenes"):
        PatchDataset.from_index(data, "train", augment=False)


def test_lit_channels_scale_the_band_means_in_reflectance() -> None:
    """Against float64: back to reflectance, times the clipped ratio, normalised again; the
    band's light floored; nothing where the band shows nothing."""
    from cloudfill.core.illumination import MAX_RATIO, MIN_BAND_LIGHT
    from cloudfill.preprocess.normalise import NormStats, VariableRange

    rng = np.random.default_rng(5)
    low, high = rng.uniform(-0.1, 0.1, 4), rng.uniform(0.5, 1.2, 4)
    stats = NormStats({"s2": VariableRange(tuple(BANDS), tuple(low), tuple(high))})
    height = rng.uniform(-1, 1, (6, 5, 7)).astype("float32")
    height[5] = np.where(rng.random((5, 7)) < 0.3, 0.0, 0.5)
    light = rng.uniform(0, 3, (5, 7)).astype("float32")
    band = rng.uniform(0, 1.5, (5, 7)).astype("float32")
    band[0, :3] = 0.01  # below the floor
    got = lit_channels(height, light, band, stats)
    offset, scale = np.asarray(stats.offset("s2")), np.asarray(stats.scale("s2"))
    ratio = np.clip(light / np.maximum(band, MIN_BAND_LIGHT), 0, MAX_RATIO).astype("float64")
    r = (height[:4].astype("float64") * scale[:, None, None] + offset[:, None, None]) * ratio
    want = np.clip((r - offset[:, None, None]) / scale[:, None, None], *stats.target)
    want = np.where(height[5] > 0, want, 0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert (got[:, height[5] == 0] == 0).all() and (ratio == MAX_RATIO).any()


def test_an_infinite_band_is_not_shown_in_the_height_table(cube: xr.Dataset) -> None:
    """As training counts it (not finite: not shown), so the table and its lookups do."""
    t = 2
    date = cube.indexes["time"][t]
    clear = ~cloud_mask(cube).sel(time=date).values
    y, x = np.argwhere(clear)[0]
    broken = cube.copy(deep=True)
    broken["s2"].values[t, 1, y, x] = np.inf
    hidden = cube.copy(deep=True)
    hidden["s2"].values[t, :, y, x] = np.nan
    stats = scene_stats(cube)  # the same statistics for both
    np.testing.assert_array_equal(_stack(broken, t, stats).values, _stack(hidden, t, stats).values)


def test_a_mosaic_with_its_own_sun_angles_is_refused(cube: xr.Dataset) -> None:
    from cloudfill.errors import ParameterError
    from cloudfill.training.dataset import PatchDataset
    from cloudfill.training.index import PatchSettings, build_index

    suns = {"sun_elevation": ("time", np.full(cube.sizes["time"], 40.0)),
            "sun_azimuth": ("time", np.full(cube.sizes["time"], 150.0))}  # fmt: skip
    mosaic = cube.assign_coords(suns).assign_attrs(mosaic_scene_width=48)
    data = build_index(mosaic, "SODCTXHI", PatchSettings(16, 0, block_size=48), seed=3,
                       reference="blend")  # fmt: skip
    with pytest.raises(ParameterError, match="sun"):
        PatchDataset.from_index(data, "train")
    alone = build_index(cube.assign_coords(suns), "SODCTXHI", PatchSettings(16, 0, block_size=48),
                        seed=3, reference="blend")  # fmt: skip
    assert len(PatchDataset.from_index(alone, "train")) and alone.light.suns
