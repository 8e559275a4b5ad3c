"""Median despeckling of Sentinel-1 backscatter, exact at any chunking.

:func:`median_filter` equals ``scipy.ndimage.median_filter(a, size, mode="reflect")`` applied to
every 2-D (y, x) slice, value for value, edges included, for NumPy, dask and CuPy (or
dask+CuPy) arrays. For a dask array each block gets a halo of ``size // 2`` pixels from its
neighbours (``map_overlap``); sides on the image edge are extended with scipy's ``"reflect"``
rule (``d c b a | a b c d``) inside the block, so the result does not depend on the chunking.

The backend is chosen from the chunk type (``type(arr._meta)`` for dask): NumPy chunks run the
CPU kernels of :mod:`cloudfill.preprocess._median_cpu`, CuPy chunks the CUDA kernel of
:mod:`cloudfill.preprocess._median_gpu`, imported only then.

NaN rule: a NaN pixel stays NaN; any other pixel whose window holds NaN gets the *lower median*
of the window's non-NaN values (element ``(m - 1) // 2`` of the ``m`` sorted valid values), so
no-data never spreads and the result is always one of the input values. Windows without NaN
give exactly scipy's result.
"""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
from dask.array.overlap import ensure_minimum_chunksize

from cloudfill._backend import is_cupy
from cloudfill.errors import DimensionError, DTypeError, MissingVariableError, ParameterError

__all__ = ["SIZES", "despeckle", "median_filter"]

SIZES: tuple[int, ...] = (3, 5, 7, 9, 11)
"""Window sides :func:`despeckle` accepts."""


def _check_size(size: Any) -> int:
    if isinstance(size, bool) or not isinstance(size, int | np.integer):
        raise ParameterError(f"despeckle size must be an odd integer in 3..11, got {size!r}")
    if int(size) not in SIZES:
        raise ParameterError(
            f"despeckle size must be an odd integer in 3..11, got {size} "
            "(even windows have no centre pixel; larger ones blur SAR features away)"
        )
    return int(size)


def _check_dtype(dtype: Any, what: str) -> None:
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise DTypeError(
            f"{what} has dtype {np.dtype(dtype)}; the median filter needs float32 or float64 "
            "(cloudfill.conform casts s1 to float32)"
        )


def _median_reflect_2d(block: np.ndarray, k: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """Median of a 2-D block, reflecting on the sides whose pad is ``k // 2``.

    The interior is filtered in place from the unpadded block (OpenCV's output is cropped, the
    network kernel writes into the output); only thin strips along the padded sides are
    computed from small padded copies, so no full-size padded copy is ever made.
    """
    # numba and OpenCV load on first use, not on ``import cloudfill``.
    from cloudfill.preprocess import _median_cpu as cpu

    top, bottom, left, right = pads
    h = k // 2
    n_rows, n_cols = block.shape
    if n_rows < 2 * h + 1 or n_cols < 2 * h + 1:
        # np.pad's "symmetric" repeats the reflection as scipy does when the image is
        # narrower than the halo.
        padded = np.pad(block, ((top, bottom), (left, right)), mode="symmetric")
        return cpu.median_valid(padded, k)
    out_rows, out_cols = n_rows + top + bottom - 2 * h, n_cols + left + right - 2 * h
    inner = (slice(top, top + n_rows - 2 * h), slice(left, left + n_cols - 2 * h))
    if cpu.uses_cv2(block.dtype, k, block.shape):
        full = cpu.median_blur_cv2(block, k)
        out = full[h - top : h - top + out_rows, h - left : h - left + out_cols]
    else:
        out = np.empty((out_rows, out_cols), block.dtype)
        cpu.median_valid_numba(block, k, out=out[inner])
    cpu.fix_nan_windows(block, k, out[inner])
    if top:
        strip = np.pad(block[: 2 * h], ((top, 0), (left, right)), mode="symmetric")
        cpu.median_valid(strip, k, out=out[:top])
    if bottom:
        strip = np.pad(block[n_rows - 2 * h :], ((0, bottom), (left, right)), mode="symmetric")
        cpu.median_valid(strip, k, out=out[out_rows - bottom :])
    if left:
        strip = np.pad(block[:, : 2 * h], ((0, 0), (left, 0)), mode="symmetric")
        cpu.median_valid(strip, k, out=out[inner[0], :left])
    if right:
        strip = np.pad(block[:, n_cols - 2 * h :], ((0, 0), (0, right)), mode="symmetric")
        cpu.median_valid(strip, k, out=out[inner[0], out_cols - right :])
    return out


def _median_reflect(block: Any, k: int, pads: tuple[int, int, int, int]) -> Any:
    """Dispatch on the block type: CuPy -> CUDA kernel, anything else -> CPU kernels."""
    if is_cupy(block):
        # CuPy is optional (the gpu extra): the CUDA kernel's module loads it.
        from cloudfill.preprocess._median_gpu import median_reflect_gpu

        return median_reflect_gpu(block, k, pads)
    block = np.asarray(block)
    if block.ndim == 2:
        return _median_reflect_2d(block, k, pads)
    h = k // 2
    top, bottom, left, right = pads
    *lead, n_rows, n_cols = block.shape
    out = np.empty(
        (*lead, n_rows + top + bottom - 2 * h, n_cols + left + right - 2 * h), block.dtype
    )
    for index in np.ndindex(*lead):
        out[index] = _median_reflect_2d(block[index], k, pads)
    return out


def _median_block(block: Any, k: int, block_info: dict | None = None) -> Any:
    info = block_info[0]
    (row, col), (n_row_chunks, n_col_chunks) = info["chunk-location"][-2:], info["num-chunks"][-2:]
    h = k // 2
    pads = (
        h if row == 0 else 0,
        h if row == n_row_chunks - 1 else 0,
        h if col == 0 else 0,
        h if col == n_col_chunks - 1 else 0,
    )
    return _median_reflect(block, k, pads)


def _median_dask(array: da.Array, k: int) -> da.Array:
    h = k // 2
    chunks = list(array.chunks)
    depth = dict.fromkeys(range(array.ndim), 0)
    for axis in (array.ndim - 2, array.ndim - 1):
        if array.shape[axis] <= 2 * h or len(chunks[axis]) == 1:
            # Too small to split with a full halo on each side: one chunk, no overlap.
            chunks[axis] = (array.shape[axis],)
        else:
            # A halo of h must come from the neighbouring chunk alone.
            chunks[axis] = ensure_minimum_chunksize(h, chunks[axis])
            depth[axis] = h
    array = array.rechunk(tuple(chunks))
    return array.map_overlap(
        _median_block,
        depth=depth,
        boundary="none",
        trim=False,
        chunks=array.chunks,
        dtype=array.dtype,
        meta=array._meta,
        k=k,
    )


def median_filter(image: Any, size: int = 5) -> Any:
    """Median filter over the last two axes (y, x), each leading index separately.

    Equal to ``scipy.ndimage.median_filter(image[..., :, :], size, mode="reflect")`` on each 2-D
    slice where the window holds no NaN (see the module docstring for the NaN rule), whatever
    the chunking of a dask array.

    Parameters
    ----------
    image
        NumPy, CuPy or dask array (NumPy or CuPy chunks), float32 or float64, at least 2-D.
    size
        Window side: 3, 5, 7, 9 or 11.

    Returns
    -------
    array
        Same type, shape, dtype and (for dask) chunk type as ``image``; lazy for dask. Dask
        chunks narrower than ``size // 2`` along y or x are merged with a neighbour first (a
        halo must come from one neighbouring chunk), so the chunking may differ there.

    Raises
    ------
    ParameterError
        ``size`` not an odd integer in 3..11.
    DTypeError
        ``image`` is not float32 / float64.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi
    >>> a = np.random.default_rng(0).random((40, 50), dtype=np.float32)
    >>> bool((median_filter(a, 5) == ndi.median_filter(a, 5, mode="reflect")).all())
    True
    """
    k = _check_size(size)
    _check_dtype(image.dtype, "the image")
    if image.ndim < 2:
        raise DimensionError(f"median_filter needs at least 2 dims (y, x), got {image.ndim}")
    h = k // 2
    if isinstance(image, da.Array):
        return _median_dask(image, k)
    return _median_reflect(image, k, (h, h, h, h))


def despeckle(ds: xr.Dataset, size: int = 5) -> xr.Dataset:
    """Median-filter ``s1`` over (y, x), per date and polarisation, lazily.

    The result equals ``scipy.ndimage.median_filter(..., mode="reflect")`` on each
    (s1_time, pol) image, edges included, whatever the chunking; NaN (no data) pixels stay NaN
    and never enter a neighbour's median (lower median of the valid pixels, see the module
    docstring). For odd windows the median commutes with the dB <-> linear transform, so the
    units do not matter; ``attrs["units"]`` is kept. Other variables are untouched.

    Parameters
    ----------
    ds
        A cube with an ``s1`` (s1_time, pol, y, x) variable, float32 or float64 (the accessor
        ``ds.cloudfill.despeckle`` casts integer ``s1`` to float32 first).
    size
        Window side in pixels: 3, 5, 7, 9 or 11 (default 5, 50 m at 10 m pixels).

    Returns
    -------
    xarray.Dataset
        ``ds`` with ``s1`` replaced; ``s1.attrs["despeckle"]`` records the window.

    Raises
    ------
    MissingVariableError
        No ``s1`` variable.
    ParameterError
        ``size`` not an odd integer in 3..11.
    DTypeError
        ``s1`` has an integer (or other non-float) dtype.
    DimensionError
        ``s1`` lacks a ``y`` or ``x`` dim.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> s1 = np.random.default_rng(0).normal(-12, 3, (1, 2, 32, 32)).astype("float32")
    >>> ds = xr.Dataset({"s1": (("s1_time", "pol", "y", "x"), s1, {"units": "dB"})})
    >>> out = despeckle(ds, size=3)
    >>> out.s1.attrs["units"], out.s1.shape
    ('dB', (1, 2, 32, 32))
    """
    k = _check_size(size)
    if "s1" not in ds.data_vars:
        present = sorted(str(v) for v in ds.data_vars)
        raise MissingVariableError(f"despeckle needs variable 's1' (cube has {present})")
    s1 = ds["s1"]
    missing = [d for d in ("y", "x") if d not in s1.dims]
    if missing:
        raise DimensionError(f"variable 's1' has dims {s1.dims}: missing dim {missing[0]!r}")
    _check_dtype(s1.dtype, "variable 's1'")
    moved = s1.transpose(..., "y", "x")
    filtered = moved.copy(data=median_filter(moved.data, k)).transpose(*s1.dims)
    filtered.attrs = {**s1.attrs, "despeckle": f"median {k}x{k}, scipy reflect edges"}
    return ds.assign(s1=filtered)
