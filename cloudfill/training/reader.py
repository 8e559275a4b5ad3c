"""Windows of a cube as NumPy arrays, read chunk by chunk with a small cache.

The training sampler reads thousands of small windows from one scene. Through dask, every
window would rebuild a graph and decode every chunk it touches again; here a window is
assembled from whole chunks that are decoded once and kept in a bytes-bounded LRU cache, and
the sampler visits patches chunk by chunk (:class:`~cloudfill.training.sampler.ChunkSampler`),
so each chunk is decoded about once per epoch.

Three sources, one interface (:class:`CubeReader`):

``zarr``
    A store written by :func:`cloudfill.write_cube` (or any store already in contract layout:
    canonical dims, float32 ``s1``/``s2``/``dem``, bool ``cloud``, no CF scaling). Chunks are
    sliced straight out of the zarr arrays. Only the path travels to DataLoader workers; each
    process opens the store itself on first use, so ``spawn``/``forkserver`` workers work.
``dask``
    A dask-backed cube without such a store (or a store that needs xarray's decoding): chunks
    are computed one by one through dask, then cached the same way.
``numpy``
    An in-memory cube: windows are plain slices, nothing is cached.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
import zarr
from dask.base import tokenize

from cloudfill.cube.schema import BANDS, DEFAULT_UNUSABLE_SCL, POLS, VARIABLE_DIMS, conform
from cloudfill.cube.zarr_io import open_cube
from cloudfill.errors import MissingVariableError

__all__ = ["DEFAULT_CACHE_BYTES", "CubeReader"]

DEFAULT_CACHE_BYTES = 768 * 2**20
"""Decoded chunks kept per process. One chunk group of a 1024 x 1024 zarr cube (target and
reference S2, masks, S1, DEM) is about 46 MiB, so this keeps a dozen groups."""

_LABELS = {"s2": ("band", BANDS), "s1": ("pol", POLS)}
_FLOAT_VARS = ("s2", "s1", "dem")


@dataclass
class _Var:
    """How to read one variable: its canonical shape, chunk grid and label order."""

    name: str
    shape: tuple[int, ...]
    bounds_y: np.ndarray
    bounds_x: np.ndarray
    order: list[int] | None = None  # positions of BANDS/POLS along the label axis
    data: Any = field(default=None, repr=False)  # numpy or dask array (not for zarr)


class _ChunkCache:
    """Bytes-bounded LRU of decoded chunks."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self.items: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self.nbytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple) -> np.ndarray | None:
        value = self.items.get(key)
        if value is not None:
            self.items.move_to_end(key)
            self.hits += 1
        return value

    def put(self, key: tuple, value: np.ndarray) -> None:
        self.misses += 1
        if value.nbytes > self.max_bytes:
            return
        self.items[key] = value
        self.nbytes += value.nbytes
        while self.nbytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.nbytes -= old.nbytes


def _bounds(chunks: tuple[int, ...]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _regular_bounds(n: int, chunk: int) -> np.ndarray:
    return np.append(np.arange(0, n, chunk, dtype=np.int64), n)


def _mask_name(ds: xr.Dataset) -> str:
    for name in ("cloud", "scl"):
        if name in ds.data_vars:
            return name
    raise MissingVariableError(
        "no cloud mask: the cube has neither a 'cloud' nor an 'scl' variable"
    )


def _label_order(ds: xr.Dataset, name: str) -> list[int] | None:
    if name not in _LABELS:
        return None
    dim, wanted = _LABELS[name]
    have = [str(v) for v in ds[dim].values]
    return [have.index(label) for label in wanted]


def _plain_zarr(raw: xr.Dataset, names: list[str]) -> bool:
    """True when the store's arrays are already what :func:`conform` would make of them."""
    for name in names:
        var = raw[name]
        if var.dims != VARIABLE_DIMS[name]:
            return False
        if any(k in var.encoding for k in ("scale_factor", "add_offset")):
            return False
        fill = var.encoding.get("_FillValue")
        if name in _FLOAT_VARS:
            if var.dtype != np.float32 or not (fill is None or np.isnan(fill)):
                return False
        elif name == "cloud" and var.dtype != bool:
            return False
        elif name == "scl" and (not np.issubdtype(var.dtype, np.integer) or fill is not None):
            return False
    return True


def _is_pristine(ds: xr.Dataset, names: list[str], source: str) -> bool:
    """True when ``ds``'s variables are unmodified lazy reads of the store ``source``."""
    for name in names:
        data = ds[name].data
        if ds[name].encoding.get("source") != source or not hasattr(data, "dask"):
            return False
        # xarray names the dask arrays it opens "open_dataset-<var>-<token>"; any operation
        # on them (despeckling, subsetting) gives a new name.
        if not str(getattr(data, "name", "")).startswith("open_dataset-"):
            return False
    return True


class CubeReader:
    """Read windows of ``s1``, ``s2``, ``dem`` and the cloud mask as NumPy arrays.

    Parameters
    ----------
    ds
        A contract cube (numpy- or dask-backed; one opened with :func:`cloudfill.open_cube`
        is read straight from its zarr store), or the path of a zarr store.
    variables
        Variables to read (default: those of ``s1``, ``s2``, ``dem`` present, and the mask).
    cache_bytes
        Size of the chunk cache (per process).

    Attributes
    ----------
    mode
        ``"zarr"``, ``"dask"`` or ``"numpy"`` (see the module docstring).
    shape
        Scene ``(ny, nx)``.
    s1_units
        ``attrs["units"]`` of ``s1``.
    scene_width
        ``attrs["mosaic_scene_width"]`` of the cube, or None: a training mosaic of independent
        scenes laid side by side along x, each this many pixels wide (what a whole "date" is
        for :mod:`cloudfill.core.height`'s tables).

    Examples
    --------
    >>> import cloudfill
    >>> reader = CubeReader(cloudfill.simulate_scene((64, 64), seed=0))
    >>> reader.mode, reader.read("s2", 0, 0, 8, 0, 8).shape
    ('numpy', (4, 8, 8))
    """

    def __init__(
        self,
        ds: xr.Dataset | str | os.PathLike[str],
        variables: list[str] | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        self.path: str | None = None
        if isinstance(ds, (str, os.PathLike)):
            ds = open_cube(ds)
        ds = conform(ds)  # refuses anything but a Dataset
        self.mask_var = _mask_name(ds)
        names = [n for n in ("s1", "s2", "dem") if n in ds.data_vars] + [self.mask_var]
        self.names = names if variables is None else [n for n in variables if n in names]
        self.shape = (int(ds.sizes["y"]), int(ds.sizes["x"]))
        self.s1_units = ds["s1"].attrs.get("units") if "s1" in ds.data_vars else None
        width = ds.attrs.get("mosaic_scene_width")
        self.scene_width = None if width is None else int(width)
        self.cache_bytes = int(cache_bytes)
        # The dates (a sample's ages, season and sun follow them): an in-memory cube's digest
        # hashes them, as a zarr store's metadata covers them.
        self.times_token = tokenize(*(ds[k].values for k in ("time", "s1_time") if k in ds.coords))
        self._cache: _ChunkCache | None = None
        self._arrays: dict[str, Any] | None = None
        self.vars: dict[str, _Var] = {}

        source = ds.encoding.get("source") or ds[self.names[0]].encoding.get("source")
        if source is not None and "://" not in str(source) and _is_pristine(ds, self.names, source):
            raw = xr.open_zarr(source, chunks=None, decode_coords="all")
            if _plain_zarr(raw, self.names):
                self.mode, self.path = "zarr", str(source)
                for name in self.names:
                    chunks = raw[name].encoding["chunks"]
                    shape = tuple(int(s) for s in raw[name].shape)
                    self.vars[name] = _Var(
                        name,
                        shape,
                        _regular_bounds(shape[-2], chunks[-2]),
                        _regular_bounds(shape[-1], chunks[-1]),
                        _label_order(conform(raw), name),
                    )
                return
        lazy = any(hasattr(ds[n].data, "dask") for n in self.names)
        self.mode = "dask" if lazy else "numpy"
        for name in self.names:
            var = ds[name].transpose(*VARIABLE_DIMS[name])
            data = var.data if lazy and hasattr(var.data, "dask") else np.asarray(var.data)
            if hasattr(data, "dask"):
                by, bx = _bounds(data.chunks[-2]), _bounds(data.chunks[-1])
            else:
                by = np.array([0, self.shape[0]])
                bx = np.array([0, self.shape[1]])
            self.vars[name] = _Var(
                name, tuple(data.shape), by, bx, _label_order(ds, name), data=data
            )

    # --- pickling: only the description travels to worker processes -------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None
        state["_arrays"] = None
        return state

    @property
    def cache(self) -> _ChunkCache:
        """This process's chunk cache (created on first use)."""
        if self._cache is None:
            self._cache = _ChunkCache(self.cache_bytes)
        return self._cache

    def chunk_bounds(self, name: str = "s2") -> tuple[np.ndarray, np.ndarray]:
        """Chunk boundaries of ``name`` along y and x (including 0 and the size)."""
        var = self.vars[name]
        return var.bounds_y, var.bounds_x

    def _zarr_array(self, name: str) -> Any:
        if self._arrays is None:
            group = zarr.open_group(self.path, mode="r")
            self._arrays = {n: group[n] for n in self.names}
        return self._arrays[name]

    def _chunk(self, var: _Var, lead: int | None, cy: int, cx: int) -> np.ndarray:
        key = (var.name, lead, cy, cx)
        block = self.cache.get(key)
        if block is not None:
            return block
        ys = slice(int(var.bounds_y[cy]), int(var.bounds_y[cy + 1]))
        xs = slice(int(var.bounds_x[cx]), int(var.bounds_x[cx + 1]))
        index = (ys, xs) if lead is None else (lead, Ellipsis, ys, xs)
        if self.mode == "zarr":
            block = np.asarray(self._zarr_array(var.name)[index])
        else:
            block = var.data[index]
            block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        self.cache.put(key, block)
        return block

    def _window(self, var: _Var, lead: int | None, y0: int, y1: int, x0: int, x1: int) -> Any:
        if self.mode == "numpy":
            index = (slice(y0, y1), slice(x0, x1))
            return var.data[index if lead is None else (lead, Ellipsis, *index)]
        cys = range(
            int(np.searchsorted(var.bounds_y, y0, "right")) - 1,
            int(np.searchsorted(var.bounds_y, y1, "left")),
        )
        cxs = range(
            int(np.searchsorted(var.bounds_x, x0, "right")) - 1,
            int(np.searchsorted(var.bounds_x, x1, "left")),
        )
        if len(cys) == 1 and len(cxs) == 1:
            block = self._chunk(var, lead, cys[0], cxs[0])
            oy, ox = int(var.bounds_y[cys[0]]), int(var.bounds_x[cxs[0]])
            return block[..., y0 - oy : y1 - oy, x0 - ox : x1 - ox]
        out = None
        for cy in cys:
            for cx in cxs:
                block = self._chunk(var, lead, cy, cx)
                if out is None:
                    out = np.empty((*block.shape[:-2], y1 - y0, x1 - x0), block.dtype)
                by0, by1 = int(var.bounds_y[cy]), int(var.bounds_y[cy + 1])
                bx0, bx1 = int(var.bounds_x[cx]), int(var.bounds_x[cx + 1])
                sy0, sy1, sx0, sx1 = max(y0, by0), min(y1, by1), max(x0, bx0), min(x1, bx1)
                out[..., sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = block[
                    ..., sy0 - by0 : sy1 - by0, sx0 - bx0 : sx1 - bx0
                ]
        return out

    def read(self, name: str, lead: int | None, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The window ``[y0:y1, x0:x1]`` of variable ``name`` at date index ``lead``.

        ``s2`` comes back as (4, h, w) in :data:`BANDS` order, ``s1`` as (2, h, w) in
        :data:`POLS` order, ``dem`` and the mask variable as (h, w); ``lead`` is the index
        along ``time``/``s1_time`` (None for the DEM). The array may be a view of a cached
        chunk: do not modify it in place.
        """
        if name not in self.vars:
            raise MissingVariableError(f"the reader has no variable {name!r} ({self.names})")
        var = self.vars[name]
        window = self._window(var, lead, y0, y1, x0, x1)
        if var.order is not None and var.order != list(range(len(var.order))):
            window = window[var.order]
        return window

    def unusable(self, t: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Cloud mask window (True = unusable) of S2 date ``t``, from ``cloud`` or ``scl``.

        NaN bands are not included here; callers test the S2 window they read anyway.
        """
        mask = self.read(self.mask_var, t, y0, y1, x0, x1)
        if self.mask_var == "scl":
            return np.isin(mask, DEFAULT_UNUSABLE_SCL)
        return mask.astype(bool, copy=False)
