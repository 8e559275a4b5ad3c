"""Global tiling and blending: exact for pointwise models, chunk-independent for any model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from cloudfill import errors
from cloudfill.infer.tiling import TileGrid, blend_tiles, tile_origins, tile_weights


def _box_model(batch: np.ndarray) -> tuple[np.ndarray, None]:
    """A fake 'network' with edge effects: 7x7 box filter per tile, reflect at tile edges."""
    out = ndimage.uniform_filter(batch[:, :2], size=(1, 1, 7, 7), mode="reflect")
    return out.astype("float32"), None


def _global_pool_model(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-local like channel attention: adds the tile mean, so tiles must be global."""
    m = batch[:, :2] + batch[:, :2].mean(axis=(2, 3), keepdims=True)
    return m, np.abs(m) + 0.1


@pytest.mark.parametrize(("n", "tile", "stride"), [(10, 4, 3), (100, 32, 24), (33, 32, 24)])
def test_origins_cover_and_stay_inside(n: int, tile: int, stride: int) -> None:
    o = tile_origins(n, tile, stride)
    assert o[0] == 0 and o[-1] + tile == n
    assert np.all(np.diff(o) <= stride) and np.all(np.diff(o) > 0)


def test_weights_positive_and_peaked() -> None:
    w = tile_weights(64)
    assert w.min() >= 1e-3 and w.argmax() in (31, 32) and w.dtype == np.float32


def test_bad_grid_parameters() -> None:
    with pytest.raises(errors.ParameterError, match="multiple of 4"):
        TileGrid(10, 10, tile=30)
    with pytest.raises(errors.ParameterError, match="overlap"):
        TileGrid(10, 10, tile=32, overlap=32)


def test_pointwise_model_is_reproduced_exactly() -> None:
    rng = np.random.default_rng(0)
    img = rng.random((3, 70, 90), dtype="float32")
    grid = TileGrid(70, 90, tile=32, overlap=8)

    def pointwise(batch: np.ndarray) -> tuple[np.ndarray, None]:
        return 2 * batch[:, :2] - batch[:, 2:3], None

    mean, scale = blend_tiles(img, (0, 0), (slice(0, 70), slice(0, 90)), grid, pointwise)
    assert scale is None
    np.testing.assert_allclose(mean, 2 * img[:2] - img[2:3], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", [_box_model, _global_pool_model])
@pytest.mark.parametrize("block", [(23, 41), (40, 40), (64, 17)])
def test_blocks_equal_whole_image(model, block: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    ny, nx = 100, 90
    img = rng.random((3, ny, nx), dtype="float32")
    grid = TileGrid(ny, nx, tile=32, overlap=12)
    whole_m, whole_s = blend_tiles(img, (0, 0), (slice(0, ny), slice(0, nx)), grid, model)
    out = np.full_like(whole_m, np.nan)
    out_s = np.full_like(whole_m, np.nan)
    h = grid.halo
    for y0 in range(0, ny, block[0]):
        for x0 in range(0, nx, block[1]):
            y1, x1 = min(y0 + block[0], ny), min(x0 + block[1], nx)
            # The block as map_overlap would hand it: the region plus a halo, cut at edges.
            hy0, hx0 = max(y0 - h, 0), max(x0 - h, 0)
            sub = img[:, hy0 : min(y1 + h, ny), hx0 : min(x1 + h, nx)]
            region = (slice(y0 - hy0, y1 - hy0), slice(x0 - hx0, x1 - hx0))
            m, s = blend_tiles(sub, (hy0, hx0), region, grid, model, batch_size=3)
            out[:, y0:y1, x0:x1] = m
            if s is not None:
                out_s[:, y0:y1, x0:x1] = s
    np.testing.assert_allclose(out, whole_m, rtol=0, atol=1e-6)
    if whole_s is not None:
        np.testing.assert_allclose(out_s, whole_s, rtol=0, atol=1e-6)


def test_small_image_is_padded_not_failed() -> None:
    img = np.arange(2 * 10 * 13, dtype="float32").reshape(2, 10, 13)
    grid = TileGrid(10, 13, tile=32, overlap=8)
    mean, _ = blend_tiles(
        img, (0, 0), (slice(0, 10), slice(0, 13)), grid, lambda b: (b[:, :1] * 1.0, None)
    )
    np.testing.assert_allclose(mean[0], img[0], rtol=1e-6)


def test_margin_makes_tiling_exact_for_finite_receptive_field() -> None:
    """With margin >= the halo (3 px for a 7x7 box), tiled == one whole-image window."""
    rng = np.random.default_rng(2)
    # Multiples of 4, so the whole-image window needs no padding of its own.
    ny, nx = 88, 72
    img = rng.random((2, ny, nx), dtype="float32")
    whole = TileGrid(ny, nx, tile=96, overlap=0)
    assert whole.n_tiles == 1
    ref, _ = blend_tiles(img, (0, 0), (slice(0, ny), slice(0, nx)), whole, _box_model)
    tiled = TileGrid(ny, nx, tile=32, overlap=8, margin=3)
    assert tiled.n_tiles > 4
    out, _ = blend_tiles(img, (0, 0), (slice(0, ny), slice(0, nx)), tiled, _box_model)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-6)
    # Without the margin, tile-edge effects leak into the blend.
    plain = TileGrid(ny, nx, tile=32, overlap=8)
    leaky, _ = blend_tiles(img, (0, 0), (slice(0, ny), slice(0, nx)), plain, _box_model)
    assert np.abs(leaky - ref).max() > 1e-4


def test_margin_must_fit_overlap() -> None:
    with pytest.raises(errors.ParameterError, match="margin"):
        TileGrid(100, 100, tile=32, overlap=8, margin=5)
