"""``synthesize``: the generator's S2 image for one date, lazily, over a cube of any size.

The condition stack (despeckled S1 at the paired date, the clear reference S2, the DEM,
normalised with the model's stored statistics) is cut into blocks with
``dask.array.map_overlap``; each block predicts the tiles of one *global* tile grid that touch
it (:mod:`cloudfill.infer.tiling`), blended with Gaussian weights. The halo is one tile, which
is at least the generator's receptive field, and the result does not depend on the chunking.

Blocks follow the input's chunks but are at least :data:`MIN_BLOCK_TILES` tiles on a side:
the tiles that straddle a block border are computed by both blocks (the price of results that
do not depend on the chunking), so 1024 px chunks with 512 px tiles would compute about twice
the pixels; rechunking the (cheap) condition stack to larger blocks costs far less.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy as np
import pandas as pd
import torch
import xarray as xr

from cloudfill._backend import namespace
from cloudfill._dates import as_date
from cloudfill._device import place
from cloudfill.core.condition import denormalise_bands
from cloudfill.core.grid import ALIGN
from cloudfill.core.pairs import PairingRule
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import BANDS, validate
from cloudfill.errors import ParameterError
from cloudfill.infer.inputs import synthesis_inputs
from cloudfill.infer.runner import ModelRef
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.tiling import TileGrid, blend_tiles
from cloudfill.model.default import default_model
from cloudfill.model.runtime import load_model

if TYPE_CHECKING:
    from cloudfill.preprocess.normalise import NormStats

__all__ = [
    "Synthesis",
    "default_batch_size",
    "plan_tiles",
    "resolve_model",
    "synthesize",
    "synthesize_with_scale",
]

#: Longest axis covered by a single window when the tile size is the default.
MAX_SINGLE = 1536


def resolve_model(model: Any, device: str = "cpu", fast: bool = False) -> Any:
    """A :class:`CloudfillModel` from a model, a checkpoint path, or None (the default model)."""
    if model is None:
        return default_model(device=device)
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        return load_model(model, device=device, fast=fast)
    if not hasattr(model, "predict") or not hasattr(model, "card"):
        raise ParameterError(
            f"model must be a CloudfillModel, a checkpoint path or None, got {type(model)}"
        )
    return model


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def plan_tiles(
    ny: int, nx: int, halo: int, tile: int | None = None, overlap: int | None = None
) -> TileGrid:
    """The tile grid for an image.

    Tiles of 512 px, or 1024 when the halo exceeds a quarter of 512; a blending margin of the
    halo (capped at a quarter tile) and an overlap of two margins, so every pixel is blended
    from tiles that contain its receptive field. An axis up to :data:`MAX_SINGLE` px (default
    tiles) or 1.5 tiles (a ``tile`` given) is one window: overlapping tiles there would cost
    up to 3x the pixels (the paper's 1200 px study area with 512 px tiles: 16 tiles).

    >>> plan_tiles(1200, 1200, halo=95).n_tiles
    1
    >>> g = plan_tiles(5000, 5000, halo=60)
    >>> g.tile, g.overlap, g.margin
    (512, 120, 60)
    """
    max_single = MAX_SINGLE if tile is None else None
    if tile is None:
        tile = 512 if 4 * halo <= 512 else 1024
    if tile % ALIGN or tile < 4 * ALIGN:
        raise ParameterError(f"tile must be a multiple of {ALIGN} and >= 16, got {tile}")
    margin = min(_round_up(halo, ALIGN), tile // 4)
    if overlap is None:
        overlap = 2 * margin
    margin = min(margin, overlap // 2)
    max_single = max(max_single or 0, tile + tile // 2)
    return TileGrid(ny, nx, tile=tile, overlap=overlap, max_single=max_single, margin=margin)


@dataclass(frozen=True)
class Synthesis:
    """What :func:`synthesize_with_scale` used and made."""

    mean: xr.DataArray
    scale: xr.DataArray | None
    s1_date: pd.Timestamp
    reference_date: pd.Timestamp | None


def _block_chunks(n: int, size: int, minimum: int) -> tuple[int, ...]:
    """Chunks of ``size`` along ``n`` with the last one merged if shorter than ``minimum``,
    so the halo of every block comes from its direct neighbours only."""
    chunks = [size] * (n // size) + ([n % size] if n % size else [])
    if len(chunks) > 1 and chunks[-1] < minimum:
        chunks[-2] += chunks.pop()
    return tuple(chunks)


#: Smallest inference block side, in tiles (see the module docstring).
MIN_BLOCK_TILES = 4


def _spatial_chunks(
    condition: xr.DataArray, grid: TileGrid, min_block: int | None
) -> dict[str, tuple[int, ...]]:
    out = {}
    for dim, n in (("y", grid.ny), ("x", grid.nx)):
        current = condition.chunksizes.get(dim) if condition.chunks else None
        size = max(current) if current else 2048
        tile = grid.tile_y if dim == "y" else grid.tile_x
        floor = MIN_BLOCK_TILES * tile if min_block is None else min_block
        out[dim] = _block_chunks(n, max(size, tile, floor), tile)
    return out


def synthesize_with_scale(
    ds: xr.Dataset,
    date: Any,
    model: Any = None,
    *,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    s1_date: Any = None,
    reference_date: Any = None,
    fractions: pd.Series | None = None,
) -> Synthesis:
    """Like :func:`synthesize`, also returning the Laplace scale (confidence) if the model has
    one, and the dates used. See :func:`synthesize` for the parameters; ``fractions`` are
    precomputed :func:`~cloudfill.core.pairs.cloud_fractions` (one read of the mask serves
    every date of a series)."""
    date = as_date(date)  # a typed error for None, NaT or text that is no date
    cf = resolve_model(model, device=inference.device, fast=inference.fast)
    cf.check_cube(ds)
    card = cf.card
    inputs = synthesis_inputs(ds, date, cf, rule, s1_date, reference_date, fractions)
    condition, stats, s1_date = inputs.condition, inputs.stats, inputs.s1_date
    reference_date = inputs.reference_date
    grid = plan_tiles(ds.sizes["y"], ds.sizes["x"], cf.halo, inference.tile, inference.overlap)
    chunks = _spatial_chunks(condition, grid, inference.min_block)
    condition = condition.chunk({"channel": -1, **chunks})
    batch_size = inference.batch_size or default_batch_size(cf.device)
    ref = ModelRef.from_model(cf, device=str(cf.device), fast=inference.fast)
    has_scale = bool(card.confidence)
    n_out = 2 * len(BANDS) if has_scale else len(BANDS)
    data = condition.data
    y_starts = np.cumsum((0, *data.chunks[1]))
    x_starts = np.cumsum((0, *data.chunks[2]))
    # One tile of halo per axis (none along an axis held in a single block).
    depth_y = grid.tile_y if len(data.chunks[1]) > 1 else 0
    depth_x = grid.tile_x if len(data.chunks[2]) > 1 else 0

    out = da.map_overlap(
        _synthesize_block,
        data,
        depth={0: 0, 1: depth_y, 2: depth_x},
        boundary="none",
        trim=False,
        chunks=((n_out,), data.chunks[1], data.chunks[2]),
        dtype="float32",
        meta=data._meta,
        starts=(y_starts, x_starts),
        sizes=(data.chunks[1], data.chunks[2]),
        depth_yx=(depth_y, depth_x),
        grid=grid,
        ref=ref,
        stats=stats,
        has_scale=has_scale,
        batch_size=batch_size,
    )

    coords = {k: v for k, v in ds["s2"].coords.items() if set(v.dims) <= {"y", "x"}}
    attrs = {
        "long_name": "synthesized Sentinel-2 reflectance",
        "date": f"{date:%Y-%m-%d}",
        "s1_date": f"{s1_date:%Y-%m-%d}",
        "reference_date": "" if reference_date is None else f"{reference_date:%Y-%m-%d}",
        "reference_dates": condition.attrs["reference_dates"],
        "model_variant": card.variant,
        "model_attention": str(card.attention),
        "tile": grid.tile,
        "overlap": grid.overlap,
    }
    mean = xr.DataArray(
        out[: len(BANDS)],
        dims=("band", "y", "x"),
        coords={**coords, "band": list(BANDS), "time": date},
        name="s2_synthesized",
        attrs=attrs,
    )
    scale = None
    if has_scale:
        scale = mean.copy(data=out[len(BANDS) :]).rename("s2_scale")
        scale.attrs = {**attrs, "long_name": "Laplace scale of the synthesized reflectance"}
    return Synthesis(mean, scale, s1_date, reference_date)


def _synthesize_block(
    x: Any,
    *,
    starts: tuple[np.ndarray, np.ndarray],
    sizes: tuple[tuple[int, ...], tuple[int, ...]],
    depth_yx: tuple[int, int],
    grid: TileGrid,
    ref: ModelRef,
    stats: NormStats,
    has_scale: bool,
    batch_size: int,
    block_info: dict | None = None,
) -> Any:
    """One ``map_overlap`` block of :func:`synthesize_with_scale`.

    Module-level and fed only small values (chunk starts and sizes, not the dask array they
    came from), so each task pickles in a few kB for distributed workers: a closure over the
    input array would carry that array's whole graph into every task.
    """
    i, j = block_info[0]["chunk-location"][1:]
    y0, x0 = int(starts[0][i]), int(starts[1][j])
    top, left = min(depth_yx[0], y0), min(depth_yx[1], x0)
    region = (slice(top, top + sizes[0][i]), slice(left, left + sizes[1][j]))
    mean, scale = blend_tiles(
        x[:-1], (y0 - top, x0 - left), region, grid, ref.predict, batch_size=batch_size
    )
    xp = namespace(x)
    invalid = x[-1][region] < 0.5  # the VALID_CHANNEL
    mean = xp.where(invalid, np.float32(np.nan), denormalise_bands(mean, stats, "s2"))
    if not has_scale:
        return mean
    # The Laplace scale lives in normalised units: x_norm = (x - offset) / scale.
    factors = np.asarray(stats.scale("s2"), dtype="float32")[:, None, None]
    scale = xp.where(invalid, np.float32(np.nan), scale * xp.asarray(factors))
    return xp.concatenate([mean, scale])


def default_batch_size(device: Any) -> int:
    """Tiles per forward pass: 1 on CPU, 4 on a GPU.

    On CPU one 512 px tile at a time ran 15-20 % faster than batches of 2 or 4
    (24-filter generator, 2 cores: 8 tiles in 5.0-5.8 s at batch 1, 6.3-6.5 s at 2,
    7.3 s at 4), as the activations of a batch outgrow the caches; a GPU wants batches to
    fill its cores (4 is a guess that fits 512 px tiles of the paper-size generator in a
    few GB; not yet measured on a device).

    >>> default_batch_size("cpu"), default_batch_size("cuda:0")
    (1, 4)
    """
    return 1 if torch.device(device).type == "cpu" else 4


def synthesize(
    ds: xr.Dataset,
    date: Any,
    model: Any = None,
    *,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    s1_date: Any = None,
    reference_date: Any = None,
) -> xr.DataArray:
    """The synthesized S2 image (band, y, x) at ``date``, lazy and dask-backed.

    Parameters
    ----------
    ds
        A contract cube (S1, S2, DEM as the model's variant needs).
    date
        An S2 date, or any date with an S1 acquisition within ``max_s1_gap`` days.
    model
        A :class:`~cloudfill.model.runtime.CloudfillModel`, a checkpoint path, or None for
        the default model shipped with the package.
    rule
        The pairing rule (:class:`~cloudfill.core.pairs.PairingRule`; default the paper's).
    inference
        Tiling, batching and device (:class:`~cloudfill.infer.settings.InferenceSettings`).
    s1_date, reference_date
        Force the inputs instead of pairing them.

    Returns
    -------
    xarray.DataArray
        Float32 reflectance with the cube's x/y coords and CRS; the inputs used are in
        ``attrs`` (``s1_date``, ``reference_date``, ``reference_dates`` for composite
        models, ``model_variant``). Pixels without S1 data, and for SO/SOD models pixels with
        no usable reference value, are NaN.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> out = ds.cloudfill.synthesize(ds.time.values[2])
    >>> out.dims
    ('band', 'y', 'x')
    """
    ds = place(ds, inference.device)  # before any work: CuPy chunks for a CUDA device
    # Before the model loads; not the CRS, which an in-memory cube may go without.
    check_values(validate(ds, require=("s1",), require_crs=False))
    model = resolve_model(model, device=inference.device, fast=inference.fast)
    model.check_inputs(ds)
    return synthesize_with_scale(
        ds,
        date,
        model,
        rule=rule,
        inference=inference,
        s1_date=s1_date,
        reference_date=reference_date,
    ).mean
