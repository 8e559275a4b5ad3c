"""Sliding-window tiling on one global grid, with smooth blending weights.

Why a *global* tile grid: a block of a dask array must give the same pixels whatever the
chunking. If each block tiled itself, a pixel's prediction would depend on where the block
started (edge effects, and any non-local layer such as attention with global pooling). Here
tile origins are fixed for the whole image: ``0, stride, 2*stride, ...`` with the last window
shifted back inside the image (MONAI's rule), so no padding artefacts appear. A block computes
the global tiles that touch it, from an input halo of one tile, and blends them with the same
weights in the same order: its pixels are bit-for-bit those of a single-block run (up to the
floating-point behaviour of batched convolutions).

Weights are a separable Gaussian importance map (sigma = ``sigma_scale * tile``, as MONAI's
``sliding_window_inference``), floored so that image borders, covered by one tile only, still
get a finite value, and set to exactly zero within ``margin`` pixels of a tile edge that lies
inside the image. With ``margin`` >= the generator's halo (its receptive-field radius) every
pixel is blended only from tiles that hold its whole receptive field, so a convolutional
model gives the same pixels tiled as on the whole image (up to float rounding); layers with
global context (channel attention) still see their tile, and the Gaussian keeps them seamless.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cloudfill._backend import namespace
from cloudfill.core.grid import ALIGN
from cloudfill.errors import ParameterError

__all__ = ["TileGrid", "blend_tiles", "tile_origins", "tile_weights"]


def tile_origins(n: int, tile: int, stride: int) -> np.ndarray:
    """Start indices of windows of length ``tile`` covering ``0..n`` with ``stride``.

    The last window is shifted back so it ends at ``n``; an image shorter than a tile gets one
    window at 0 (the caller pads it).

    >>> tile_origins(10, 4, 3).tolist()
    [0, 3, 6]
    >>> tile_origins(11, 4, 3).tolist()
    [0, 3, 6, 7]
    """
    if tile <= 0 or stride <= 0:
        raise ParameterError(f"need positive tile and stride, got tile={tile}, stride={stride}")
    if n <= tile:
        return np.array([0])
    starts = list(range(0, n - tile + 1, stride))
    if starts[-1] + tile < n:
        starts.append(n - tile)
    return np.asarray(starts)


def tile_weights(tile: int, sigma_scale: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """1-D Gaussian importance weights of a window (peak 1, minimum ``floor``).

    >>> w = tile_weights(8)
    >>> bool(w[3] == w.max()) and bool(w[0] >= 1e-3)
    True
    """
    centre = (tile - 1) / 2.0
    sigma = max(sigma_scale * tile, 1e-6)
    w = np.exp(-0.5 * ((np.arange(tile) - centre) / sigma) ** 2)
    w /= w.max()
    return np.maximum(w, floor).astype("float32")


@dataclass(frozen=True)
class TileGrid:
    """The global tiling of an ``ny`` x ``nx`` image.

    Parameters
    ----------
    ny, nx
        Image size in pixels.
    tile
        Window size (a multiple of 4).
    overlap
        Pixels shared by neighbouring windows (``stride = tile - overlap``).
    max_single
        An axis no longer than this is covered by one window of its own length (rounded up
        to a multiple of 4, reflect-padded): cheaper than several overlapping tiles and
        free of seams. Default ``tile``; images shorter than a tile always get one window.

    Examples
    --------
    >>> g = TileGrid(1200, 1200, tile=512, overlap=128)
    >>> g.origins_y.tolist(), g.n_tiles
    ([0, 384, 688], 9)
    >>> TileGrid(1200, 1200, tile=1024, overlap=196, max_single=1536).n_tiles
    1
    """

    ny: int
    nx: int
    tile: int = 512
    overlap: int = 128
    max_single: int | None = None
    margin: int = 0

    def __post_init__(self) -> None:
        if self.tile % ALIGN or self.tile < ALIGN:
            raise ParameterError(f"tile must be a positive multiple of {ALIGN}, got {self.tile}")
        if not 0 <= self.overlap < self.tile:
            raise ParameterError(f"overlap must be in [0, tile), got {self.overlap}")
        if not 0 <= 2 * self.margin <= self.overlap:
            raise ParameterError(
                f"margin must be in [0, overlap / 2] so every pixel keeps a weighted tile, "
                f"got margin={self.margin}, overlap={self.overlap}"
            )

    def weights(self, origin: int, size: int, n: int, sigma_scale: float = 0.125) -> np.ndarray:
        """Weights of a window at ``origin`` of length ``size`` along an axis of length ``n``."""
        w = tile_weights(size, sigma_scale)
        if self.margin:
            w = w.copy()
            if origin > 0:
                w[: self.margin] = 0
            if origin + size < n:
                w[size - self.margin :] = 0
        return w

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    def size(self, n: int) -> int:
        """Window length along an axis of length ``n``."""
        single = max(self.tile, self.max_single or 0)
        return self.tile if n > single else -(-n // ALIGN) * ALIGN

    @property
    def tile_y(self) -> int:
        return self.size(self.ny)

    @property
    def tile_x(self) -> int:
        return self.size(self.nx)

    @property
    def origins_y(self) -> np.ndarray:
        return tile_origins(self.ny, self.tile_y, self.stride)

    @property
    def origins_x(self) -> np.ndarray:
        return tile_origins(self.nx, self.tile_x, self.stride)

    @property
    def n_tiles(self) -> int:
        return len(self.origins_y) * len(self.origins_x)

    @property
    def halo(self) -> int:
        """Input pixels a block needs beyond its own region to hold every tile touching it."""
        return max(self.tile_y, self.tile_x)


def _touching(origins: np.ndarray, size: int, lo: int, hi: int) -> np.ndarray:
    return origins[(origins < hi) & (origins + size > lo)]


def blend_tiles(
    image: np.ndarray,
    offset: tuple[int, int],
    region: tuple[slice, slice],
    grid: TileGrid,
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]],
    *,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Predict ``region`` of a block by blending the global tiles that touch it.

    Parameters
    ----------
    image
        Input block (channels, y, x), holding the region plus a halo of at least one tile
        (less where the image ends).
    offset
        Global (y, x) index of ``image[:, 0, 0]``.
    region
        Slices, in ``image``'s own indices, of the pixels to predict.
    grid
        The global :class:`TileGrid`.
    predict
        Maps a batch (n, channels, t, t) to ``(mean, scale)``, each (n, bands, t, t) or
        ``scale`` None.
    batch_size
        Tiles per call of ``predict``.

    Returns
    -------
    mean, scale
        Arrays (bands, ry, rx) for the region (``scale`` None if the model has none).
    """
    oy, ox = offset
    ry, rx = region
    gy0, gy1 = oy + ry.start, oy + ry.stop
    gx0, gx1 = ox + rx.start, ox + rx.stop
    ty, tx = grid.tile_y, grid.tile_x
    starts_y = _touching(grid.origins_y, ty, gy0, gy1)
    starts_x = _touching(grid.origins_x, tx, gx0, gx1)

    # CuPy blocks accumulate on the GPU: CuPy refuses NumPy operands.
    xp = namespace(image)
    acc_mean: np.ndarray | None = None
    acc_scale: np.ndarray | None = None
    acc_w = xp.zeros((gy1 - gy0, gx1 - gx0), dtype="float32")
    jobs = [(sy, sx) for sy in starts_y for sx in starts_x]
    for b in range(0, len(jobs), batch_size):
        chunk = jobs[b : b + batch_size]
        batch = xp.stack([_cut(image, sy - oy, sx - ox, ty, tx) for sy, sx in chunk])
        mean, scale = predict(batch)
        for (sy, sx), m, s in zip(
            chunk, mean, scale if scale is not None else [None] * len(chunk), strict=True
        ):
            # Clip the tile to the region, in tile and in region coordinates.
            y0, y1 = max(sy, gy0), min(sy + ty, gy1)
            x0, x1 = max(sx, gx0), min(sx + tx, gx1)
            wy = grid.weights(sy, ty, grid.ny, sigma_scale)
            wx = grid.weights(sx, tx, grid.nx, sigma_scale)
            w = xp.asarray(np.outer(wy[y0 - sy : y1 - sy], wx[x0 - sx : x1 - sx]))
            dst = (slice(y0 - gy0, y1 - gy0), slice(x0 - gx0, x1 - gx0))
            src = (slice(y0 - sy, y1 - sy), slice(x0 - sx, x1 - sx))
            if acc_mean is None:
                acc_mean = xp.zeros((m.shape[0], *acc_w.shape), dtype="float32")
                if s is not None:
                    acc_scale = xp.zeros_like(acc_mean)
            acc_mean[(slice(None), *dst)] += w * m[(slice(None), *src)]
            if s is not None and acc_scale is not None:
                acc_scale[(slice(None), *dst)] += w * s[(slice(None), *src)]
            acc_w[dst] += w
    assert acc_mean is not None  # at least one tile always touches a non-empty region
    out_mean = acc_mean / acc_w
    out_scale = None if acc_scale is None else acc_scale / acc_w
    return out_mean, out_scale


def _cut(image: np.ndarray, y: int, x: int, ty: int, tx: int) -> np.ndarray:
    """A (channels, ty, tx) window at local (y, x), reflect-padded where the image is short."""
    xp = namespace(image)
    win = image[:, y : y + ty, x : x + tx]
    pad_y, pad_x = ty - win.shape[1], tx - win.shape[2]
    if pad_y or pad_x:
        # Only images smaller than one tile get here (tiles never leave a larger image).
        win = xp.pad(win, ((0, 0), (0, pad_y), (0, pad_x)), mode="symmetric")
    return xp.ascontiguousarray(win)
