"""Array-namespace dispatch: NumPy or CuPy, chosen from the array (or its dask ``_meta``).

CuPy is never imported to answer "is this CuPy?" (a module-name test), and only imported
once a CuPy array has shown up, so CPU-only installations never touch it.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

__all__ = ["full_like", "is_cupy", "namespace", "to_numpy"]


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
        import cupy

        return cupy
    return np


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
