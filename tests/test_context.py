"""The context variant (SODCTX): the target date's own clear pixels as channels, hidden in
training where the loss scores, read in inference, never read where a date is scored."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import cloudfill
from cloudfill.core.condition import (
    condition_stack,
    context_channels,
    normalise_bands,
)
from cloudfill.core.pairs import reference_candidates
from cloudfill.core.variants import CONTEXT_CHANNELS, get_variant
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.errors import ModelMismatchError
from cloudfill.model import CloudfillModel, Generator
from cloudfill.preprocess.normalise import scene_stats
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.hide import FULL_SHARE, hide_mask, split_context
from cloudfill.training.index import PatchSettings, build_index
from cloudfill.training.warm_start import start_state

SIZE = 32
PATCHES = PatchSettings(SIZE, 8, block_size=SIZE * 2)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene(
        (96, 96), dates=8, seed=4,
        cloud_fraction=[0.0, 0.3, 0.5, 0.1, 0.6, 0.2, 0.4, 0.0],
    )  # fmt: skip


def test_the_variant_appends_the_context_to_sodct() -> None:
    spec = get_variant("sodctx")
    assert spec.channels == (*get_variant("SODCT").channels, *CONTEXT_CHANNELS)
    assert spec.uses_context and spec.uses_season and spec.uses_sides
    assert not get_variant("SODCT").uses_context
    assert CONTEXT_CHANNELS == ("context_B02", "context_B03", "context_B04", "context_B08",
                                "context_valid")  # fmt: skip


def test_hide_mask_is_seeded_and_cloud_like() -> None:
    masks = [hide_mask(7, i, 64) for i in range(400)]
    assert all((hide_mask(7, i, 64) == masks[i]).all() for i in (0, 17, 399))
    assert not all((hide_mask(8, i, 64) == masks[i]).all() for i in range(5))
    cover = np.array([m.mean() for m in masks])
    full = cover == 1.0
    # About FULL_SHARE of the patches hide everything (binomial, 400 draws: 4 sigma).
    assert abs(full.mean() - FULL_SHARE) < 4 * np.sqrt(FULL_SHARE * (1 - FULL_SHARE) / 400)
    partial = cover[~full]
    assert partial.min() >= 0.04 and partial.max() <= 0.96
    assert partial.std() > 0.2  # spread over the range, not one cover
    # Blobs, not salt and pepper: most hidden pixels have their four neighbours hidden too.
    m = next(m for m, c in zip(masks, cover, strict=True) if 0.3 < c < 0.7)
    inner = m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]
    assert inner.sum() > 0.6 * m[1:-1, 1:-1].sum()


def test_split_context_shows_the_rest_and_scores_the_hidden() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 0.5, (4, 8, 8)).astype("float32")
    valid = rng.random((8, 8)) > 0.2
    image[:, ~valid] = np.nan
    hidden = hide_mask(1, 2, 8)
    context, scored = split_context(image, valid, hidden)
    shown = valid & ~hidden
    np.testing.assert_array_equal(context[:, shown], image[:, shown])
    assert np.isnan(context[:, ~shown]).all()
    np.testing.assert_array_equal(scored, valid & hidden)


def test_context_channels_numpy_and_dask_agree(cube: xr.Dataset) -> None:
    stats = scene_stats(cube)
    image = cube["s2"].isel(time=2).sel(band=list(BANDS)).values
    image[:, 5:9, 3:20] = np.nan
    image[2, 30, 30] = np.nan  # one band missing: the pixel is unusable
    image[1, 40, 40] = np.inf  # as training and the height table count it: not shown
    out = context_channels(image, stats)
    usable = np.isfinite(image).all(0)
    assert out.shape == (5, 96, 96) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out[4], usable.astype("float32"))
    want = normalise_bands(image, stats, "s2", BANDS)
    np.testing.assert_array_equal(out[:4][:, usable], want[:, usable])
    assert (out[:4][:, ~usable] == 0).all() and not usable[30, 30] and not usable[40, 40]
    lazy = context_channels(da.from_array(image, chunks=(4, 32, 32)), stats)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), out)


@pytest.mark.parametrize("variant", ["SODCTX", "SODCTXH", "SODCTXHI"])
def test_training_patches_equal_the_inference_condition_with_the_hidden_pixels(
    cube: xr.Dataset, variant: str
) -> None:
    """The sampler's SODCTX condition is the inference stack of a date whose hidden pixels
    are cloudy, and its loss pixels are the hidden clear ones; SODCTXH's height channels too
    (the whole date's table, less the hidden pixels)."""
    data = build_index(cube, variant, PATCHES, seed=3, reference="blend")
    dataset = PatchDataset.from_index(data, "train", augment=False)
    despeckled = cube.cloudfill.despeckle(5)
    mask = cloud_mask(cube)
    times = pd.DatetimeIndex(cube.time.values)
    s1_times = pd.DatetimeIndex(cube.s1_time.values)
    fractions = mask.mean(("y", "x")).values
    seen = set()
    for i in range(len(dataset)):
        row = dataset.samples.iloc[i]
        hidden = hide_mask(data.seed, i, SIZE)
        kind = "full" if hidden.all() else "partial"
        if kind in seen:
            continue
        seen.add(kind)
        date = times[row.t]
        target_mask = mask.sel(time=date).copy()
        window = (slice(row.y0, row.y0 + SIZE), slice(row.x0, row.x0 + SIZE))
        target_mask.values[window] |= hidden
        wanted = reference_candidates(times, fractions, date, pd.Timedelta(days=120))
        full = condition_stack(
            despeckled, date, data.stats, variant,
            s1_date=row.s1_date, reference_date=row.reference_date, reference_dates=wanted,
            mask=mask, reference_s1_dates=[s1_times[np.argmin(np.abs(s1_times - d))]
                                           for d in wanted],
            target_mask=target_mask,
        )  # fmt: skip
        condition, _, valid = dataset[i]
        # float32 sums of the table in another order: equal to rounding
        np.testing.assert_allclose(
            condition.numpy(), full.values[(slice(None), *window)], rtol=0, atol=1e-6
        )
        clear = ~mask.sel(time=date).values[window]
        np.testing.assert_array_equal(valid.numpy()[0], clear & hidden)
        flag = condition.numpy()[get_variant(variant).channels.index("context_valid")] > 0
        np.testing.assert_array_equal(flag, clear & ~hidden)
    assert seen == {"full", "partial"}
    with pytest.raises(ModelMismatchError, match="cloud mask"):
        condition_stack(despeckled, times[3], data.stats, variant, s1_date=row.s1_date,
                        reference_date=times[0], reference_dates=wanted, mask=mask,
                        reference_s1_dates=[None] * len(wanted))  # fmt: skip


def test_warm_start_from_sodct_computes_its_output() -> None:
    torch.manual_seed(0)
    sodct = Generator("SODCT", base_filters=8, n_blocks=2, confidence=True)
    with torch.no_grad():  # a trained-looking SODCT model: its zero head moved
        sodct.head[-1].weight.normal_(0, 0.05)
    sodct = CloudfillModel(sodct.eval())
    wider = Generator(**{**sodct.card.generator_kwargs(), "variant": "SODCTX"}).eval()
    wider.load_state_dict(start_state(sodct, wider), strict=True)
    x = torch.randn(1, get_variant("SODCTX").n_inputs, 32, 32)
    with torch.no_grad():
        want, got = sodct.generator(x[:, :-5]), wider(x)
    # Zero weights on the new channels: equal up to float32 summation order.
    torch.testing.assert_close(got.mean, want.mean, rtol=0, atol=1e-5)


def _context_model(cube: xr.Dataset) -> CloudfillModel:
    """A small random SODCTX network (its context weights are not zero) on ``cube``'s stats."""
    torch.manual_seed(0)
    generator = Generator("SODCTX", base_filters=4, n_blocks=1)
    with torch.no_grad():  # the skip's zero head and the path's zero end would ignore inputs
        generator.head[-1].weight.normal_(0, 0.05)
        generator.context.linear[-1].weight.normal_(0, 0.05)
    model = CloudfillModel(generator.eval())
    model.card.reference_mode = "blend"
    model.card.normalisation = scene_stats(cube).to_dict()
    return model


def test_the_fill_reads_the_dates_clear_pixels_and_does_not_adjust_them(
    cube: xr.Dataset,
) -> None:
    model = _context_model(cube)
    date = pd.Timestamp(cube.time.values[2])
    out = cube.cloudfill.fill_series(model, dates=[date], adjust=8.0)
    assert out["method"].item() == "synthesize" and out["adjust_sigma"].item() == 0.0
    # The same date with other clear values outside the gap: the fill inside it changes.
    mask = cloud_mask(cube).sel(time=date).values
    other = cube.copy(deep=True)
    other["s2"].loc[{"time": date}] = other["s2"].sel(time=date).where(mask, 0.2)
    again = other.cloudfill.fill_series(model, dates=[date], adjust=0)
    inside = np.broadcast_to(mask, out["s2"].shape[1:])
    a, b = out["s2"].values[0][inside], again["s2"].values[0][inside]
    assert np.isfinite(a).all() and np.abs(a - b).max() > 1e-4
    # An SODCT model is still adjusted.
    torch.manual_seed(0)
    sodct = CloudfillModel(Generator("SODCT", base_filters=4, n_blocks=1).eval())
    sodct.card.reference_mode = "blend"
    sodct.card.normalisation = model.card.normalisation
    plain = cube.cloudfill.fill_series(sodct, dates=[date], adjust=8.0)
    assert plain["method"].item() == "synthesize" and plain["adjust_sigma"].item() == 8.0


def test_evaluate_never_shows_the_model_the_scored_date(cube: xr.Dataset) -> None:
    model = _context_model(cube)
    date = pd.Timestamp(cube.time.values[2])
    mask = cloud_mask(cube).sel(time=date).values
    other = cube.copy(deep=True)
    other["s2"].loc[{"time": date}] = other["s2"].sel(time=date).where(mask, 0.2)
    scores = [
        cloudfill.evaluate(c, model, dates=[date], baselines=(), landcover=False, split="all")
        for c in (cube, other)
    ]
    model_rows = [s[s["method"] == "model"].reset_index(drop=True) for s in scores]
    assert len(model_rows[0]) and np.isfinite(model_rows[0]["mae"]).all()
    pd.testing.assert_series_equal(model_rows[0]["mae"], model_rows[1]["mae"])


def test_only_a_context_variant_has_the_context_path_and_the_tiling_halo_covers_it() -> None:
    from cloudfill.model.context import CONTEXT_DILATIONS
    from cloudfill.model.receptive import receptive_field

    assert Generator("SODCT", base_filters=4, n_blocks=1).context is None
    g = Generator("SODCTX", base_filters=16, n_blocks=4, confidence=True).eval()
    reach = sum(CONTEXT_DILATIONS) + 1  # the dilated partial 3x3s, then a last 3x3
    # The path reads the mean's residual: its reach adds to the SODCT network's.
    sodct = Generator("SODCT", base_filters=16, n_blocks=4, confidence=True).eval()
    assert receptive_field(g).halo == receptive_field(sodct).halo + reach
    # The trunk and the per-pixel path do not read the context: a context pixel moves
    # outputs up to the path's reach and nowhere else.
    assert g.trunk[1].weight.shape[1] == g.pixel[0].weight.shape[1] == 25
    with torch.no_grad():
        g.context.linear[-1].weight.normal_(0, 0.1)
    x = torch.zeros(1, 30, 96, 96)
    base = g(x).mean
    x[0, 25:, 48, 48] = 1.0
    moved = (g(x).mean - base).abs().amax(1)[0] > 0
    ys, xs = np.nonzero(moved.numpy())
    assert moved[48, 48] and max(np.abs(ys - 48).max(), np.abs(xs - 48).max()) <= reach


@pytest.mark.parametrize("variant", ["SODCTX", "SODCTXH", "SODCTXHI"])
def test_a_context_model_is_chunk_independent(cube: xr.Dataset, variant: str) -> None:
    """Whole scene in one window and in chunks: the same values (the halo covers the trunk
    and the context path after it; no attention, whose pooling is global; SODCTXH's table
    is the whole date's either way)."""
    from cloudfill.infer.settings import InferenceSettings
    from cloudfill.infer.synthesize import synthesize

    torch.manual_seed(1)
    generator = Generator(variant, base_filters=4, n_blocks=1, attention=False)
    with torch.no_grad():
        generator.head[-1].weight.normal_(0, 0.05)
        generator.context.linear[-1].weight.normal_(0, 0.2)
        generator.context.mixed[-1].weight.normal_(0, 0.2)
        if generator.height is not None:  # SODCTXH: the height channels reach the output
            generator.height.layers[-1].weight.normal_(0, 0.3)
    model = CloudfillModel(generator.eval())
    model.card.reference_mode = "blend"
    model.card.normalisation = scene_stats(cube).to_dict()
    date = cube.time.values[2]
    # Blocks read a halo of the receptive field's reach around them: with the path's reach
    # left out of it (23 px here instead of 55), the blocks' borders differ.
    whole = synthesize(cube, date, model, inference=InferenceSettings(tile=96)).values
    chunked = synthesize(cube.chunk({"y": 40, "x": 56}), date, model,
                         inference=InferenceSettings(tile=96, min_block=0)).values  # fmt: skip
    assert np.isfinite(whole).any()
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-5)


def test_a_date_with_s1_only_shows_nothing(cube: xr.Dataset) -> None:
    """Synthesizing a date that has S1 but no S2 (between two S2 dates): the context is
    empty (all flags 0), as on a fully cloudy date, not an error."""
    from cloudfill.core.pairs import PairingRule
    from cloudfill.infer.inputs import synthesis_inputs
    from cloudfill.infer.synthesize import synthesize

    model = _context_model(cube)
    s2_dates = pd.DatetimeIndex(cube.time.values)
    date = next(pd.Timestamp(t) for t in cube.s1_time.values if pd.Timestamp(t) not in s2_dates)
    condition = synthesis_inputs(cube, date, model, PairingRule()).condition
    assert (condition.sel(channel=list(CONTEXT_CHANNELS)).values == 0).all()
    assert np.isfinite(synthesize(cube, date, model).values).any()


def test_fill_date_takes_a_checkpoint_path_or_none(cube: xr.Dataset, tmp_path) -> None:
    from cloudfill.fill.series import fill_date
    from cloudfill.model.checkpoint import save_model

    model = _context_model(cube)
    path = tmp_path / "m.safetensors"
    save_model(model.generator, model.card, path)
    date = pd.Timestamp(cube.time.values[2])
    row = pd.Series({"method": "synthesize", "s1_date": None, "reference_date": None})
    a = fill_date(cube, date, row, model, adjust=0)["s2"].values
    b = fill_date(cube, date, row, str(path), adjust=0)["s2"].values
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dilation", [1, 2, 4])
def test_partial_conv_is_the_weighted_mean_of_the_seen_taps(dilation: int) -> None:
    """Against a float64 loop: per pixel, the taps (reflected at the border) that the mask
    saw, weighted, rescaled by 9 / their count, plus the bias; 0 where none saw anything."""
    from cloudfill.model.context import PartialConv

    rng = np.random.default_rng(dilation)
    x = rng.normal(size=(1, 2, 12, 11))
    m = (rng.random((1, 1, 12, 11)) < 0.15).astype(float)
    conv = PartialConv(2, dilation).double()
    with torch.no_grad():
        conv.conv.weight.copy_(torch.from_numpy(rng.normal(size=(2, 1, 3, 3))))
        conv.conv.bias.copy_(torch.tensor([0.3, -0.2]))
    y, seen = conv(torch.from_numpy(x), torch.from_numpy(m))
    w, b = conv.conv.weight.detach().numpy()[:, 0], conv.conv.bias.detach().numpy()
    xp = np.pad(x[0], ((0, 0), (dilation,) * 2, (dilation,) * 2), mode="reflect")
    mp = np.pad(m[0, 0], dilation, mode="reflect")
    want = np.zeros(x.shape[1:])
    grown = np.zeros(x.shape[2:])
    for i in range(12):
        for j in range(11):
            taps = [(a, c) for a in range(3) for c in range(3)
                    if mp[i + a * dilation, j + c * dilation]]  # fmt: skip
            if not taps:
                continue
            grown[i, j] = 1
            for ch in range(2):
                total = sum(w[ch, a, c] * xp[ch, i + a * dilation, j + c * dilation]
                            for a, c in taps)  # fmt: skip
                want[ch, i, j] = total * 9 / len(taps) + b[ch]
    np.testing.assert_allclose(y[0].detach().numpy(), want, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(seen[0, 0].numpy(), grown)
    assert 0 < grown.sum() < grown.size


@pytest.mark.parametrize("side", [16, 17, 20])
def test_the_context_path_takes_the_smallest_tiles(side: int) -> None:
    """Tiles down to the runtime's 16 px (smaller than the path's widest dilation, which
    reflection padding cannot take as it is): extended first, cropped back."""
    from cloudfill.model.context import ContextPath

    path = ContextPath()
    with torch.no_grad():
        path.linear[-1].weight.normal_(0, 0.1)
        flag = (torch.rand(1, 1, side, side) > 0.5).float()
        out = path(torch.randn(1, 4, side, side) * flag, flag)
    assert out.shape == (1, 4, side, side) and torch.isfinite(out).all()
