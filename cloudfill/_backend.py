"""Array-namespace dispatch: NumPy or CuPy, chosen from the array (or its dask ``_meta``).

CuPy is never imported to answer "is this CuPy?" (a module-name test), and only imported
once a CuPy array has shown up, so CPU-only installations never touch it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import dask.array as da
import numpy as np
import scipy.ndimage
import xarray as xr

__all__ = ["full_like", "is_cupy", "map_with_halo", "namespace", "ndimage", "to_numpy"]


def is_cupy(array: Any) -> bool:
    """True for CuPy arrays and for dask arrays of CuPy chunks.

    >>> import dask.array as da
    >>> is_cupy(np.zeros(2)), is_cupy(da.zeros(2))
    (False, False)
    """
    meta = getattr(array, "_meta", array)
    return type(meta).__module__.split(".")[0] == "cupy"


def namespace(array: Any) -> ModuleType:
    """``cupy`` for CuPy arrays (or dask arrays of them), else ``numpy``.

    >>> namespace(np.zeros(2)).__name__
    'numpy'
    """
    if is_cupy(array):
        import cupy  # optional (the gpu extra): only where chunks are CuPy

        return cupy
    return np


def ndimage(array: Any) -> ModuleType:
    """``cupyx.scipy.ndimage`` for CuPy arrays (or dask arrays of them), else
    ``scipy.ndimage``.

    >>> ndimage(np.zeros(2)).__name__
    'scipy.ndimage'
    """
    if is_cupy(array):
        import cupyx.scipy.ndimage  # optional (the gpu extra): only where chunks are CuPy

        return cupyx.scipy.ndimage
    return scipy.ndimage


def map_with_halo(
    array: xr.DataArray, func: Callable[..., Any], halo: int, dtype: Any, **kwargs: Any
) -> xr.DataArray:
    """``func(block, **kwargs)`` over the (..., y, x) blocks of ``array`` with ``halo`` pixels
    of the neighbouring blocks along ``y`` and ``x`` (none beyond the scene's edges), so a
    neighbourhood operation reaching no further than ``halo`` gives the same result for any
    chunking; on in-memory (NumPy or CuPy) data, ``func`` runs once on the whole array.

    >>> from scipy.ndimage import uniform_filter
    >>> a = xr.DataArray(np.arange(36.0).reshape(6, 6), dims=("y", "x"))
    >>> blur = lambda b: uniform_filter(b, 3, mode="nearest")  # reaches 1 pixel
    >>> bool((map_with_halo(a.chunk(2), blur, 1, "float64") == blur(a.values)).all())
    True
    >>> wide = lambda b: uniform_filter(b, 21, mode="nearest")  # reaches past the 6 px
    >>> bool((map_with_halo(a.chunk(2), wide, 10, "float64") == wide(a.values)).all())
    True
    """
    data = array.data
    if isinstance(data, da.Array):
        # A halo only where an axis has several blocks, and never wider than the axis: a
        # scene smaller than the halo (32 px against the adjustment's 48) is then read whole.
        depth = {
            i: min(halo, n) if d in ("y", "x") and len(c) > 1 else 0
            for i, (d, n, c) in enumerate(zip(array.dims, data.shape, data.chunks, strict=True))
        }
        out = da.map_overlap(
            func,
            data,
            depth=depth,
            boundary="none",
            dtype=dtype,
            meta=data._meta.astype(dtype),
            **kwargs,
        )
    else:
        out = func(data if is_cupy(data) else np.asarray(data), **kwargs)
    return array.copy(data=out)


def to_numpy(array: Any) -> np.ndarray:
    """A host (NumPy) copy of a NumPy or CuPy array; NumPy arrays pass through.

    >>> to_numpy(np.arange(3)).tolist()
    [0, 1, 2]
    """
    return array.get() if is_cupy(array) else np.asarray(array)


def full_like(obj: xr.DataArray, fill_value: Any, dtype: Any = None) -> xr.DataArray:
    """``xarray.full_like`` that keeps the chunk type (xarray fills dask arrays with NumPy
    chunks, which CuPy chunks then refuse to mix with).

    >>> full_like(xr.DataArray(np.zeros(2, bool)), 0.5, "float32").values.tolist()
    [0.5, 0.5]
    """
    data = obj.data
    dtype = data.dtype if dtype is None else dtype
    if isinstance(data, da.Array):
        return obj.copy(data=da.full_like(data, fill_value, dtype=dtype))
    return obj.copy(data=namespace(data).full_like(data, fill_value, dtype=dtype))
