"""The networks: variants, shapes, receptive field (computed vs measured), cost, losses, fast path.

Small widths (base_filters 4-8, 1-2 residual blocks) and 64 px tiles keep the module fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cloudfill.errors import CheckpointError, ParameterError
from cloudfill.model import (
    ALL_CHANNELS,
    VARIANTS,
    CloudfillModel,
    Generator,
    ModelCard,
    PatchDiscriminator,
    change_weighted_l1,
    count_macs,
    get_variant,
    gflops,
    laplace_nll,
    masked_l1,
    receptive_field,
)
from cloudfill.model.attention import ChannelAttention

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _with_running_stats(g: Generator, seed: int = 0) -> Generator:
    """Give batch norm non-trivial running statistics, then switch to eval."""
    torch.manual_seed(seed)
    g.train()
    with torch.no_grad():
        for _ in range(2):
            g(torch.randn(4, g.variant.n_inputs, 32, 32) * 2 + 0.5)
    return g.eval()


# --- variants ---------------------------------------------------------------------------
def test_variant_channels_are_subsequences_of_one_order() -> None:
    expected = {"S": 2, "SD": 3, "SO": 6, "SOD": 7}
    for name, n in expected.items():
        channels = get_variant(name.lower()).channels
        assert len(channels) == n
        positions = [ALL_CHANNELS.index(c) for c in channels]
        assert positions == sorted(positions)
    assert get_variant("SOD").channels == ALL_CHANNELS
    assert get_variant("SD").uses_dem and not get_variant("SD").uses_reference
    assert get_variant("SO").uses_reference and not get_variant("SO").uses_dem


def test_unknown_variant_and_attention_raise() -> None:
    with pytest.raises(ParameterError, match="unknown model variant 'SAR'"):
        get_variant("SAR")
    with pytest.raises(ParameterError, match="unknown attention"):
        Generator("S", attention="transformer")
    with pytest.raises(ParameterError, match="unknown norm"):
        Generator("S", norm="group")


# --- shapes -----------------------------------------------------------------------------
def _fit_per_pixel_residual(skip: str, pixel_features: int) -> float:
    """MAE after / before 150 Adam steps on a change that depends on a pixel's own VV."""
    torch.manual_seed(0)
    g = Generator(
        "SO", base_filters=2, n_blocks=0, attention=False, norm="none", skip=skip,
        pixel_features=pixel_features,
    )  # fmt: skip
    x = torch.rand(4, 6, 16, 16) * 1.6 - 0.8
    target = (x[:, 2:6] + 0.1 * torch.tanh(3 * x[:, :1])).clamp(-0.99, 0.99)
    opt = torch.optim.Adam(g.parameters(), lr=2e-3)
    with torch.no_grad():
        first = float((g(x).mean - target).abs().mean())
    for _ in range(150):
        opt.zero_grad()
        (g(x).mean - target).abs().mean().backward()
        opt.step()
    with torch.no_grad():
        return float((g(x).mean - target).abs().mean()) / first


def test_the_pixel_path_learns_a_per_pixel_residual() -> None:
    # Issue 21: without a per-pixel path the head saw a pixel's own inputs only through the
    # trunk, and did not learn what a per-pixel model learns (0.72 of the start here).
    assert _fit_per_pixel_residual("add", 32) < 0.3
    assert _fit_per_pixel_residual("atanh", 32) < 0.4
    assert _fit_per_pixel_residual("add", 0) > 0.5


def test_old_cards_rebuild_the_old_generator() -> None:
    from cloudfill.model.card import ModelCard

    old = ModelCard.from_json('{"format_version": 1, "variant": "SO", "reference_skip": true}')
    assert (old.skip, old.pixel_features) == ("atanh", 0)
    g = Generator(**old.generator_kwargs())
    assert g.pixel is None and g.skip == "atanh"
    assert Generator("SO").config()["skip"] == "add"
    with pytest.raises(ParameterError, match="unknown skip"):
        Generator("SO", skip="mul")


@pytest.mark.parametrize("attention", ["cbam", "self", "none"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_generator_output_shapes(variant: str, attention: str) -> None:
    confidence = attention != "none"  # cover both heads without doubling the grid
    g = Generator(variant, base_filters=8, n_blocks=2, attention=attention, confidence=confidence)
    g.eval()
    x = torch.randn(2, VARIANTS[variant].n_inputs, 64, 64)
    with torch.no_grad():
        out = g(x)
    assert out.mean.shape == (2, 4, 64, 64)
    if g.reference_skip:  # additive skip, zero head: the untrained mean is the reference
        torch.testing.assert_close(out.mean, x[:, g._reference_index], rtol=0, atol=0)
    else:
        assert float(out.mean.abs().max()) <= 1.0  # tanh
    if confidence:
        assert out.scale is not None and out.scale.shape == (2, 4, 64, 64)
        assert float(out.scale.min()) > 0
    else:
        assert out.scale is None


def test_generator_rejects_wrong_input() -> None:
    g = Generator("SO", base_filters=4, n_blocks=1)
    with pytest.raises(ParameterError, match="channels"):
        g(torch.zeros(1, 7, 32, 32))
    with pytest.raises(ParameterError, match="multiples of 4"):
        g(torch.zeros(1, 6, 30, 32))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_discriminator_gives_a_grid_of_logits(variant: str) -> None:
    d = PatchDiscriminator(variant, base_filters=8)
    cond = torch.randn(2, VARIANTS[variant].n_inputs, 64, 64)
    logits = d(cond, torch.randn(2, 4, 64, 64))
    assert logits.shape == (2, 1, 6, 6)
    with pytest.raises(ParameterError):
        d(cond, torch.randn(2, 3, 64, 64))


def test_discriminator_receptive_field_is_70px() -> None:
    # pix2pix's 70x70 PatchGAN: 4 + 3*2 + 3*4 + 3*8 + 3*8.
    rf = receptive_field(PatchDiscriminator("S", norm="batch"))
    assert (rf.size, rf.jump) == (70, 8.0)


# --- receptive field --------------------------------------------------------------------
def _measured_interval(g: Generator, size: int, index: int, seeds: int = 2) -> tuple[int, ...]:
    """Input rows/cols with a nonzero gradient of output pixel (index, index), over seeds."""
    rows: set[int] = set()
    cols: set[int] = set()
    for seed in range(seeds):
        torch.manual_seed(seed)
        x = torch.randn(1, g.variant.n_inputs, size, size, dtype=torch.float64)
        x.requires_grad_(True)
        g(x).mean[0, :, index, index].sum().backward()
        nonzero = torch.nonzero(x.grad.abs().sum((0, 1)))
        rows |= set(nonzero[:, 0].tolist())
        cols |= set(nonzero[:, 1].tolist())
    return min(rows), max(rows), min(cols), max(cols)


@pytest.mark.slow  # about 7 s each; .ci/run runs the slow tests too
@pytest.mark.parametrize("attention", ["none", "cbam"])
def test_receptive_field_matches_gradient_measurement(attention: str) -> None:
    torch.manual_seed(0)
    g = Generator("SD", base_filters=4, n_blocks=2, attention=attention)
    g = _with_running_stats(g).double()
    if attention == "cbam":
        # The channel gate pools the whole tile, so every input pixel gets some gradient.
        # Zeroing its last layer makes the gate a constant: what is left is the local path the
        # walker measures (the spatial gate's 7x7 conv included).
        for module in g.modules():
            if isinstance(module, ChannelAttention):
                nn.init.zeros_(module.mlp[2].weight)
    rf = receptive_field(g)
    size = 160
    # Output positions of one full period of the stride-4 alignment.
    for index in range(64, 68):
        lo, hi = rf.input_interval(index, axis=1)
        assert (lo, hi) == rf.input_interval(index, axis=0)
        assert 0 < lo and hi < size - 1  # the window is inside the input, away from padding
        assert _measured_interval(g, size, index) == (lo, hi, lo, hi)
        assert hi - lo + 1 <= rf.size
        assert max(index - lo, hi - index) <= rf.halo


def test_cbam_channel_gate_makes_dependence_global() -> None:
    torch.manual_seed(0)
    g = _with_running_stats(Generator("S", base_filters=4, n_blocks=1, attention="cbam")).double()
    rf = receptive_field(g)
    assert not rf.tile_independent
    assert any("AdaptiveAvgPool2d" in name for name in rf.global_context)
    x = torch.randn(1, 2, 128, 128, dtype=torch.float64, requires_grad=True)
    g(x).mean[0, :, 10, 10].sum().backward()
    # A pixel far outside the convolutional window still has an influence (through the gate).
    _, hi = rf.input_interval(10)
    assert hi < 100
    assert float(x.grad[0, :, 120, 120].abs().sum()) > 0


def test_paper_generator_receptive_field() -> None:
    # Hand count, attention off: stem 7, two stride-2 3x3 (+2, +4 at jump 2), 9 blocks of two
    # 3x3 at jump 4 (+144), two resize-convs (+4 at jump 2, +2), head 7x7 (+6) = 169 px:
    # the "~175 px" of method.md, far above the paper's 25 px tile overlap.
    rf = receptive_field(Generator("SOD", attention=False))
    assert rf.size == 7 + 2 + 4 + 9 * 2 * 2 * 4 + 4 + 2 + 6 == 169
    assert rf.tile_independent and rf.alignment == 4 and rf.jump == 1.0
    # CBAM adds its 7x7 spatial gate at jump 4 in every block, and global channel pooling.
    rf_cbam = receptive_field(Generator("SOD", attention=True))
    assert rf_cbam.size == 169 + 9 * 6 * 4
    assert not rf_cbam.tile_independent
    # Instance norm uses statistics of the tile: reported as global context.
    assert not receptive_field(Generator("S", attention=False, norm="instance")).tile_independent


def test_unknown_layer_geometry_is_not_ignored() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Upsample(scale_factor=2, mode="bilinear"))
    with pytest.raises(ParameterError, match="unknown geometry"):
        receptive_field(net)


def test_tiling_with_halo_and_alignment_is_exact() -> None:
    # Attention off + batch norm in eval: no whole-tile layers, so a tile whose origin is on
    # the alignment grid and which carries `halo` extra pixels reproduces the full image.
    torch.manual_seed(1)
    g = _with_running_stats(Generator("SD", base_filters=4, n_blocks=1, attention=False))
    model = CloudfillModel(g)
    halo, align = model.halo, model.alignment
    pad = math.ceil(halo / align) * align  # >= halo and keeps the tile origin aligned
    start = pad + align  # origin of the kept block, on the alignment grid
    x = torch.randn(1, 3, 2 * start + 40, 2 * start + 40)
    full = model.predict(x).mean
    tile = x[..., start - pad : start + 20 + pad, start - pad : start + 20 + pad]
    inner = model.predict(tile).mean[..., pad : pad + 20, pad : pad + 20]
    torch.testing.assert_close(inner, full[..., start : start + 20, start : start + 20])
    # Off the alignment grid the same tile differs: the alignment requirement is real.
    shifted = x[..., start - pad + 1 : start + 21 + pad, start - pad + 1 : start + 21 + pad]
    inner = model.predict(shifted).mean[..., pad : pad + 20, pad : pad + 20]
    assert not torch.allclose(inner, full[..., start + 1 : start + 21, start + 1 : start + 21])


# --- cost -------------------------------------------------------------------------------
def test_count_macs_by_hand_and_scaling() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1, stride=2))
    assert count_macs(net, tile=16) == 16 * 16 * 8 * 3 * 9 + 8 * 8 * 4 * 8
    g = Generator("SOD", base_filters=8, n_blocks=2, attention=False)
    assert count_macs(g, tile=128) * 4 == count_macs(g, tile=256)
    assert gflops(g, tile=256) == pytest.approx(2 * count_macs(g, tile=256) / 1e9)
    # Self-attention's products grow with the square of the positions.
    sa = Generator("SOD", base_filters=8, n_blocks=2, attention="self")
    extra_small = count_macs(sa, tile=64) - count_macs(g, tile=64)
    extra_large = count_macs(sa, tile=128) - count_macs(g, tile=128)
    assert extra_large > 8 * extra_small


# --- losses -----------------------------------------------------------------------------
def test_laplace_nll_with_constant_scale_is_scaled_l1() -> None:
    torch.manual_seed(0)
    target = torch.randn(2, 4, 8, 8)
    mask = torch.rand(2, 1, 8, 8) > 0.3
    c = 0.25
    pred_a = torch.randn(2, 4, 8, 8, requires_grad=True)
    pred_b = pred_a.detach().clone().requires_grad_(True)
    nll = laplace_nll(pred_a, torch.full_like(target, c), target, mask)
    l1 = masked_l1(pred_b, target, mask)
    assert nll.item() == pytest.approx(l1.item() / c + math.log(c), rel=1e-5)
    nll.backward()
    l1.backward()
    torch.testing.assert_close(pred_a.grad, pred_b.grad / c)
    full = laplace_nll(pred_a, torch.full_like(target, c), target, mask, full=True)
    assert (full - nll).item() == pytest.approx(math.log(2.0))


def test_losses_ignore_masked_pixels() -> None:
    pred, target = torch.zeros(1, 4, 4, 4), torch.ones(1, 4, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    other = target.clone()
    other[..., 2:, :] = 100.0  # only where the mask is False
    scale = torch.ones_like(pred)
    assert float(masked_l1(pred, target, mask)) == float(masked_l1(pred, other, mask)) == 1.0
    assert float(laplace_nll(pred, scale, target, mask)) == float(
        laplace_nll(pred, scale, other, mask)
    )
    empty = torch.zeros_like(mask)
    assert float(masked_l1(pred, target, empty)) == 0.0  # not NaN
    with pytest.raises(ParameterError):
        laplace_nll(pred, scale[:, :1], target)


def test_change_weighted_l1_matches_a_float64_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    pred, target, reference = (torch.rand(2, 4, 8, 8, generator=gen) for _ in range(3))
    reference[0, :, :2] = 0.0  # no reference there (the condition's fill): never "change"
    mask = torch.rand(2, 1, 8, 8, generator=gen) > 0.2
    threshold = torch.tensor([0.3, 0.5, 0.7, 0.9])
    got = change_weighted_l1(pred, target, reference, mask, factor=5.0, threshold=threshold)
    p, t, r, m = (x.double().numpy() for x in (pred, target, reference, mask))
    changed = (np.abs(t - r) > threshold.double().numpy()[None, :, None, None]).any(1)
    changed &= (r != 0).any(1)
    assert not changed[0, :2].any()
    w = np.where(changed, 5.0, 1.0)[:, None] * m
    want = (np.abs(p - t) * w).sum() / np.broadcast_to(w, p.shape).sum()
    assert 0 < changed.mean() < 1  # both kinds of pixel are present
    assert float(got) == pytest.approx(want, rel=1e-6)
    same = change_weighted_l1(pred, target, reference, mask, factor=1.0, threshold=threshold)
    assert float(same) == pytest.approx(float(masked_l1(pred, target, mask)), rel=1e-6)
    with pytest.raises(ParameterError):
        change_weighted_l1(pred, target, reference, mask, factor=0.5, threshold=threshold)
    with pytest.raises(ParameterError):
        change_weighted_l1(pred, target, reference, mask, factor=math.inf, threshold=threshold)


# --- inference wrapper ------------------------------------------------------------------
def test_predict_pads_any_size_and_matches_forward() -> None:
    g = _with_running_stats(Generator("SO", base_filters=4, n_blocks=1, confidence=True))
    model = CloudfillModel(g)
    x = torch.randn(1, 6, 32, 36)
    with torch.no_grad():
        direct = g(x)
    out = model.predict(x)
    torch.testing.assert_close(out.mean, direct.mean)
    torch.testing.assert_close(out.scale, direct.scale)
    for shape in [(23, 37), (5, 9), (1, 1)]:
        out = model.predict(torch.randn(2, 6, *shape))
        assert out.mean.shape == (2, 4, *shape) and out.scale.shape == (2, 4, *shape)
    with pytest.raises(ParameterError, match="ref_B02"):
        model.predict(torch.randn(1, 2, 32, 32))


def test_fast_path_close_to_fp32() -> None:
    # bf16 autocast + channels_last. Works on any x86 CPU (emulated without native bf16).
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
    except RuntimeError:  # pragma: no cover - very old CPUs
        pytest.skip("no bfloat16 autocast on this CPU")
    g = _with_running_stats(
        Generator("SOD", base_filters=8, n_blocks=2, attention="cbam", confidence=True)
    )
    x = torch.randn(2, 7, 64, 64)
    ref = CloudfillModel(g).predict(x)
    fast_model = CloudfillModel(g, fast=True)
    fast = fast_model.predict(x)
    assert fast.mean.dtype == torch.float32
    assert float((fast.mean - ref.mean).abs().max()) < 1e-2
    assert float((fast.scale - ref.scale).abs().max()) < 2e-2


@pytest.mark.gpu
def test_cuda_fast_predict_matches_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    g = _with_running_stats(Generator("SOD", base_filters=8, n_blocks=2, confidence=True))
    x = torch.randn(2, 7, 64, 64)
    ref = CloudfillModel(g).predict(x)
    gpu = CloudfillModel(g, device="cuda", fast=True)
    out = gpu.predict(x)
    assert out.mean.device.type == "cuda"
    assert float((out.mean.cpu() - ref.mean).abs().max()) < 2e-2


@pytest.mark.slow
def test_compiled_predict_matches_eager() -> None:
    # torch.compile needs a C++ toolchain on CPU and takes about a minute on 2 cores.
    g = _with_running_stats(Generator("S", base_filters=4, n_blocks=1))
    x = torch.randn(1, 2, 32, 32)
    compiled = CloudfillModel(g, compile=True)
    torch.testing.assert_close(compiled.predict(x).mean, CloudfillModel(g).predict(x).mean)


def test_reference_skip_returns_the_reference_when_the_head_is_silent() -> None:
    g = Generator("SOD", base_filters=4, n_blocks=1, attention=False).eval()
    assert g.reference_skip and g.config()["reference_skip"]
    # The head starts at zero, so an untrained generator returns the reference.
    x = torch.rand(1, 7, 32, 32) * 1.6 - 0.8
    out = g(x).mean
    torch.testing.assert_close(out, x[:, 2:6], atol=1e-5, rtol=0)
    # Variants without a reference have no skip, and cannot be asked for one.
    assert not Generator("SD", base_filters=4, n_blocks=1).reference_skip
    with pytest.raises(ParameterError, match="no reference"):
        Generator("S", base_filters=4, n_blocks=1, reference_skip=True)


def test_cards_without_reference_skip_still_load() -> None:
    card = ModelCard.from_json('{"format_version": 1, "variant": "SOD"}')
    assert card.reference_skip is False
    assert Generator(**card.generator_kwargs()).reference_skip is False


def test_card_reference_mode_round_trips_and_defaults_to_date() -> None:
    card = ModelCard.from_json('{"format_version": 1, "variant": "SOD"}')
    assert card.reference_mode == "date" and card.reference_direction == "earlier"
    composite = ModelCard("SOD", reference_mode="composite")
    again = ModelCard.from_json(composite.to_json())
    assert again.reference_mode == "composite" and again.reference_direction == "nearest"
    with pytest.raises(CheckpointError, match="reference_mode"):
        ModelCard.from_json('{"format_version": 1, "variant": "SOD", "reference_mode": "x"}')
