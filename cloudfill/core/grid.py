"""The training patch grid and the spatial-block split of a scene.

Pure NumPy, no torch: which windows become training patches, and which split each belongs to.

The scene is cut into square **split blocks** of ``block_size`` pixels on one global grid from
pixel (0, 0); a remainder narrower than a patch at the bottom or right is merged into the last
block. Patches lie wholly inside one block, so no pixel of a training patch is a pixel of a
validation or test patch. Blocks are assigned to train / validation / test by a seeded
permutation (80/10/10 by default), which is what a checkpoint's card records.

Inside a block, patch origins are spread evenly so that neighbours overlap by at least
``overlap`` pixels (as many patches as that needs, origins rounded down to multiples of
:data:`ALIGN`). Every origin is a multiple of 4 in scene coordinates: the generator's two
stride-2 stages make it equivariant only to shifts by multiples of 4, the same alignment
inference tiles use (:mod:`cloudfill.infer.tiling`), so a training patch sees exactly the
sampling phase inference will.

**Chunk alignment.** Reading a zarr chunk decodes all of it, so the sampler reads chunk by
chunk and caches. Blocks start on multiples of ``block_size``, which divides (or is a multiple
of) the usual power-of-two chunk sizes, so patches rarely straddle chunks. Where a block side
is also an internal chunk boundary, patches keep ``margin`` pixels away from it (when the
block is wide enough): the S1 despeckling halo of ``size // 2`` pixels then stays inside the
chunk, and a patch never makes the reader decode a neighbouring chunk for two pixels of halo.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cloudfill.errors import ParameterError

__all__ = [
    "ALIGN",
    "D_LAYERS",
    "MIN_SIZE",
    "MIN_TRAIN_SIZE",
    "SPLITS",
    "PatchGrid",
    "default_block_size",
    "min_train_size",
    "patch_grid",
    "patch_step",
    "pixel_splits",
    "split_blocks",
]

ALIGN = 4
"""The generator's total stride (two stride-2 stages). It is translation-equivariant only for
shifts by multiples of this, so training patches and inference tiles start on multiples of it
and have sizes divisible by it, and the generator's input sides are multiples of it. The one
definition the grid, the tiling and the generator share."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Split names; a block's split code is the index into this tuple."""

MIN_SIZE = 16
"""Smallest patch side the generator accepts (its input sides: multiples of :data:`ALIGN`, at
least ``4 * ALIGN``); training needs more (:func:`min_train_size`)."""

D_LAYERS = 3
"""The PatchGAN discriminator's default number of stride-2 layers (``d_layers``)."""


def min_train_size(d_layers: int = D_LAYERS) -> int:
    """Smallest patch side a training run accepts: the discriminator's limit, or the generator's.

    The discriminator's first convolution and its ``d_layers - 1`` stride-2 layers (4 x 4,
    padding 1) each halve a side (rounding down); its stride-1 layer then takes a pixel off
    and is instance-normalised, which needs more than one pixel: a side of 2 at least, so 3
    before it, so ``3 * 2 ** d_layers`` pixels of patch. Rounded up to a multiple of
    :data:`ALIGN`, and never below :data:`MIN_SIZE`.

    Examples
    --------
    >>> min_train_size(), min_train_size(4), min_train_size(1)
    (24, 48, 16)
    """
    need = 3 * 2**d_layers
    return max(MIN_SIZE, -(-need // ALIGN) * ALIGN)


MIN_TRAIN_SIZE = min_train_size()
"""Smallest training patch side with the default discriminator (24: a 16 or 20 px patch leaves
the discriminator's last normalised layer a single pixel)."""


@dataclass(frozen=True)
class PatchGrid:
    """Patch origins of a scene and the split block each lies in.

    Attributes
    ----------
    size
        Patch side in pixels.
    step
        Nominal distance between neighbouring origins (``size - overlap`` rounded down to a
        multiple of :data:`ALIGN`); the actual spacing inside a block is at most this.
    block_size
        Side of the split blocks in pixels.
    n_blocks
        (rows, cols) of split blocks.
    origins
        (n, 2) int64 top-left corners ``(y0, x0)``.
    blocks
        (n, 2) int64 block (row, col) of each patch.
    """

    size: int
    step: int
    block_size: int
    n_blocks: tuple[int, int]
    origins: np.ndarray
    blocks: np.ndarray

    def __len__(self) -> int:
        return len(self.origins)


def patch_step(size: int, overlap: int) -> int:
    """Origin spacing for ``overlap`` pixels of overlap, rounded down to a multiple of 4.

    Examples
    --------
    >>> patch_step(256, 25)
    228
    """
    if overlap < 0 or overlap >= size:
        raise ParameterError(
            f"overlap must be within [0, patch size), got {overlap} for patch size {size}"
        )
    return max(ALIGN, (size - overlap) // ALIGN * ALIGN)


def default_block_size(shape: tuple[int, int], size: int, min_blocks: int = 16) -> int:
    """The largest of 4, 2, 1 x ``size`` that still gives ``min_blocks`` split blocks.

    Powers of two times the patch size keep block sides on the usual chunk boundaries; at
    least ~16 blocks are needed for an 80/10/10 split to hold a block in each part.

    Examples
    --------
    >>> default_block_size((1024, 1024), 128), default_block_size((1024, 1024), 256)
    (256, 256)
    """
    ny, nx = shape
    for factor in (4, 2):
        block = factor * size
        if (ny // block) * (nx // block) >= min_blocks:
            return block
    return size


def _check_size(size: int, shape: tuple[int, int]) -> None:
    if size < MIN_SIZE or size % ALIGN:
        raise ParameterError(
            f"patch size must be a multiple of {ALIGN} and at least {MIN_SIZE}, got {size}"
        )
    if size > min(shape):
        raise ParameterError(
            f"patch size {size} is larger than the scene ({shape[0]} x {shape[1]})"
        )


def _axis_cells(n: int, block: int, size: int) -> list[tuple[int, int]]:
    """Block spans ``[start, end)`` along one axis; a remainder narrower than a patch merges."""
    starts = list(range(0, n, block))
    cells = [(s, min(s + block, n)) for s in starts]
    if len(cells) > 1 and cells[-1][1] - cells[-1][0] < size:
        cells[-2] = (cells[-2][0], n)
        cells.pop()
    return cells


def _axis_origins(
    start: int, end: int, n: int, size: int, step: int, bounds: frozenset[int], margin: int
) -> list[int]:
    """Aligned origins of patches inside ``[start, end)`` spaced at most ``step`` apart."""
    lo, hi = start, end
    # Keep away from internal chunk boundaries only when the block is wide enough for it.
    if margin and 0 < lo < n and lo in bounds and hi - lo - margin >= size:
        lo += margin
    if margin and 0 < hi < n and hi in bounds and hi - lo - margin >= size:
        hi -= margin
    span = hi - lo
    if span < size:
        return []
    count = math.ceil((span - size) / step) + 1
    raw = lo + np.linspace(0, span - size, count)
    # lo is a multiple of ALIGN, so flooring the offsets keeps every origin inside the span.
    aligned = lo + (np.floor((raw - lo) / ALIGN) * ALIGN).astype(np.int64)
    return sorted({int(v) for v in aligned})


def patch_grid(
    shape: tuple[int, int],
    size: int = 256,
    overlap: int = 25,
    *,
    block_size: int | None = None,
    chunk_bounds: tuple[Sequence[int], Sequence[int]] = ((), ()),
    margin: int = 0,
) -> PatchGrid:
    """Patch origins on a 4-aligned grid, each patch inside one split block.

    Parameters
    ----------
    shape
        Scene ``(ny, nx)``.
    size
        Patch side (a multiple of 4, at least 16).
    overlap
        Minimum overlap between neighbouring patches of a block.
    block_size
        Split-block side (a multiple of 4, at least ``size``); default
        :func:`default_block_size`.
    chunk_bounds
        Internal chunk boundaries along y and x (pixel indices), to keep patches ``margin``
        pixels away from.
    margin
        Distance kept from internal chunk boundaries (a multiple of 4; 0 for none).

    Returns
    -------
    PatchGrid

    Examples
    --------
    >>> grid = patch_grid((96, 96), 32, 0, block_size=32)
    >>> len(grid), grid.n_blocks, grid.origins[:2].tolist()
    (9, (3, 3), [[0, 0], [0, 32]])
    """
    ny, nx = (int(v) for v in shape)
    _check_size(size, (ny, nx))
    step = patch_step(size, overlap)
    block = default_block_size((ny, nx), size) if block_size is None else int(block_size)
    if block < size or block % ALIGN:
        raise ParameterError(
            f"block_size must be a multiple of {ALIGN} and at least the patch size {size}, "
            f"got {block}"
        )
    if margin < 0 or margin % ALIGN:
        raise ParameterError(f"margin must be a non-negative multiple of {ALIGN}, got {margin}")
    bounds_y, bounds_x = (frozenset(int(b) for b in bounds) for bounds in chunk_bounds)
    rows, cols = _axis_cells(ny, block, size), _axis_cells(nx, block, size)
    ys = [_axis_origins(a, b, ny, size, step, bounds_y, margin) for a, b in rows]
    xs = [_axis_origins(a, b, nx, size, step, bounds_x, margin) for a, b in cols]
    origins, blocks = [], []
    for r, row_ys in enumerate(ys):
        for c, col_xs in enumerate(xs):
            for y0 in row_ys:
                for x0 in col_xs:
                    origins.append((y0, x0))
                    blocks.append((r, c))
    return PatchGrid(
        size=int(size),
        step=step,
        block_size=block,
        n_blocks=(len(rows), len(cols)),
        origins=np.asarray(origins, dtype=np.int64).reshape(-1, 2),
        blocks=np.asarray(blocks, dtype=np.int64).reshape(-1, 2),
    )


def split_blocks(
    n_blocks: tuple[int, int],
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> np.ndarray:
    """Assign split blocks to train (0), validation (1) and test (2) by a seeded permutation.

    Each non-zero validation / test fraction gets at least one block when there are three or
    more blocks, and training keeps at least one.

    Parameters
    ----------
    n_blocks
        (rows, cols) of blocks.
    fractions
        Train, validation and test fractions (summing to 1).
    seed
        Seed of the permutation.

    Returns
    -------
    numpy.ndarray
        (rows, cols) int8 codes indexing :data:`SPLITS`.

    Examples
    --------
    >>> codes = split_blocks((4, 5), seed=0)
    >>> [int((codes == k).sum()) for k in range(3)]
    [16, 2, 2]
    """
    if len(fractions) != 3 or min(fractions) < 0 or not math.isclose(sum(fractions), 1.0):
        raise ParameterError(
            f"fractions must be three non-negative numbers summing to 1, got {list(fractions)}"
        )
    total = int(n_blocks[0]) * int(n_blocks[1])
    counts = [round(f * total) for f in fractions[1:]]
    for i, f in enumerate(fractions[1:]):
        if f > 0 and total >= 3:
            counts[i] = max(1, counts[i])
    while counts[0] + counts[1] >= total and total > 0:
        # Training keeps at least one block: shrink the larger of validation / test.
        counts[int(counts[1] > counts[0])] -= 1
    n_val, n_test = counts
    order = np.random.default_rng([int(seed), 0x5B17]).permutation(total)
    codes = np.zeros(total, dtype=np.int8)
    codes[order[:n_test]] = 2
    codes[order[n_test : n_test + n_val]] = 1
    return codes.reshape(n_blocks)


def _axis_block_index(n: int, block_size: int, n_cells: int) -> np.ndarray | None:
    """Block index of each of ``n`` pixels on a grid of ``n_cells`` blocks, or None.

    Blocks start at multiples of ``block_size`` from pixel 0 and anything past the last block
    belongs to it: this covers both of :func:`_axis_cells`' outcomes (a remainder kept as its
    own block or merged into the last), which the recorded assignment does not tell apart,
    and, as evaluation always read it, a record with one block fewer than the axis holds.
    """
    full = -(-n // block_size)
    if n_cells not in (full, full - 1) or n_cells < 1:
        return None
    return np.minimum(np.arange(n, dtype=np.int64) // block_size, n_cells - 1)


def pixel_splits(
    shape: tuple[int, int], block_size: int, assignment: np.ndarray
) -> np.ndarray | None:
    """The split code of every pixel, from the codes of its split blocks.

    The inverse of the block grid of :func:`patch_grid`: blocks of ``block_size`` pixels from
    pixel (0, 0), a remainder at the bottom or right merged into the last block when the
    assignment has one block fewer than ``ceil(side / block_size)`` along that axis.

    Parameters
    ----------
    shape
        Scene ``(ny, nx)``.
    block_size
        Side of the split blocks in pixels (positive).
    assignment
        (rows, cols) split codes of the blocks, as :func:`split_blocks` returns them and a
        model card's ``split["assignment"]`` records them.

    Returns
    -------
    numpy.ndarray or None
        (ny, nx) codes, of ``assignment``'s dtype; None when the blocks do not tile a scene
        of ``shape`` (e.g. a split recorded on another scene).

    Raises
    ------
    ParameterError
        If ``block_size`` is not positive or ``assignment`` is not a non-empty 2-D array.

    Examples
    --------
    >>> codes = pixel_splits((70, 64), 32, np.array([[0, 1], [0, 2]]))
    >>> codes.shape, int(codes[69, 40]), int(codes[10, 40])
    ((70, 64), 2, 1)
    >>> pixel_splits((200, 64), 32, np.array([[0, 1], [0, 2]])) is None
    True
    """
    codes = np.asarray(assignment)
    if block_size < 1 or codes.ndim != 2 or codes.size == 0:
        raise ParameterError(
            f"need a positive block_size and a non-empty 2-D assignment, got {block_size} and "
            f"shape {codes.shape}"
        )
    rows = _axis_block_index(int(shape[0]), int(block_size), codes.shape[0])
    cols = _axis_block_index(int(shape[1]), int(block_size), codes.shape[1])
    if rows is None or cols is None:
        return None
    return codes[rows[:, None], cols[None, :]]
