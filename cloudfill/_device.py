"""Where a cube's chunks live: one decision, taken from the inference device.

With ``device="cuda"`` (``--device cuda``) every numeric data variable's dask chunks are
moved to the GPU (CuPy) once, where the cube enters cloudfill (:func:`place` in
``fill_series``, ``synthesize``, the zarr fill job, and where the job reads its own scratch
synthesis and chained dates back). Everything downstream (despeckling, outlier clipping,
references, the condition stack, inference, blending, the same-date adjustment, the fill)
dispatches on the chunk type (:mod:`cloudfill._backend`), so it stays on the device; the
data returns to the host only to be written (``cloudfill.cube.zarr_io.prepare_for_zarr``).
With ``"cpu"`` the cube is returned as it is, the very object.

Which converter a device kind uses is looked up in :data:`PLACEMENTS` (device kind ->
factory of a chunk converter), so a test can put a CPU stand-in for CuPy chunks under
``"cpu"`` while torch keeps running on the CPU. CuPy is imported only when chunks are
placed on a CUDA device.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import dask.array as da
import numpy as np
import xarray as xr

from cloudfill._backend import is_cupy, to_numpy
from cloudfill.errors import ParameterError

__all__ = ["PLACEMENTS", "on_host", "place", "placement_kind"]

Converter = Callable[[Any], Any]
"""A host (NumPy) chunk -> the same values where the device keeps them."""

Cube = TypeVar("Cube", xr.Dataset, xr.DataArray)


def _cupy_converter(device: str) -> Converter | None:
    """``cupy.asarray``, once CuPy is known to be installed and to see a GPU; None (chunks
    stay on the host, with a warning) where torch has a GPU but CuPy is not installed.

    With ``"cuda:N"`` chunks go to GPU ``N``, where torch runs the model.
    """
    if importlib.util.find_spec("cupy") is None:
        import torch  # already loaded wherever a model runs

        if torch.cuda.is_available():
            # Inference still runs on the GPU, as before placement existed; only the rest
            # of the pipeline stays on the host.
            warnings.warn(
                f"device {device!r}: CuPy is not installed, so the cube's chunks stay on the "
                "host and only inference runs on the GPU; pip install 'cloudfill[gpu]' keeps "
                "the whole fill on the device",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
        raise ParameterError(
            f"device {device!r} requested, but torch sees no CUDA GPU and CuPy is not "
            "installed (pip install 'cloudfill[gpu]' on a GPU machine); use device='cpu'"
        )
    import cupy  # optional (the gpu extra): only where chunks go to a CUDA device

    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0:
        raise ParameterError(
            f"device {device!r} requested but CuPy sees no CUDA device (use device='cpu' or 'auto')"
        )
    _, _, index = str(device).partition(":")
    if not index:
        return cupy.asarray
    gpu = cupy.cuda.Device(int(index))  # where torch runs "cuda:N": inputs and outputs meet

    def on_gpu(block: Any) -> Any:
        with gpu:
            return cupy.asarray(block)

    return on_gpu


PLACEMENTS: dict[str, Callable[[str], Converter | None]] = {"cuda": _cupy_converter}
"""Device kind (``"cuda"`` for ``"cuda"``/``"cuda:N"``) -> a factory, called with the
device string, of the converter of each chunk; a kind not listed (``"cpu"``), or a factory
returning None, leaves the cube where it is."""


def placement_kind(device: Any) -> str:
    """The kind of ``device`` that decides where chunks live: ``"cuda"`` for ``"cuda"`` and
    ``"cuda:N"``, ``"cpu"`` for ``"cpu"``; ``"auto"`` is ``"cuda"`` where CuPy is installed
    and torch sees a GPU, else ``"cpu"`` (chunks then stay on the host, as for ``"cpu"``).

    >>> placement_kind("cuda:1"), placement_kind("cpu")
    ('cuda', 'cpu')
    """
    name = str(device).strip().lower()
    if name == "auto":
        if importlib.util.find_spec("cupy") is None:
            return "cpu"
        import torch  # only for "auto": the answer torch's own resolution gives

        return "cuda" if torch.cuda.is_available() else "cpu"
    return name.split(":", 1)[0]


def place(obj: Cube, device: Any = "cpu") -> Cube:
    """``obj`` with every numeric data variable's chunks where ``device`` computes.

    Parameters
    ----------
    obj
        A cube (``xarray.Dataset``) or one variable; in-memory variables become one dask
        chunk each. Coordinates stay NumPy, as xarray keeps them.
    device
        The inference device (:attr:`InferenceSettings.device
        <cloudfill.infer.settings.InferenceSettings.device>`).

    Returns
    -------
    xarray.Dataset or xarray.DataArray
        ``obj`` itself for a device whose kind :data:`PLACEMENTS` does not list (``"cpu"``);
        else a lazy copy whose chunks are converted as they are read. Variables already
        there are kept as they are, so placing twice costs nothing.

    Raises
    ------
    ParameterError
        ``"cuda"`` without a GPU, before any work. (With a GPU but without CuPy, the ``gpu``
        extra, chunks stay on the host with a warning and only inference uses the GPU.)

    Examples
    --------
    >>> ds = xr.Dataset({"dem": (("y", "x"), np.zeros((2, 2), "float32"))})
    >>> place(ds, "cpu") is ds
    True
    """
    factory = PLACEMENTS.get(placement_kind(device))
    if factory is None:
        return obj
    convert = factory(str(device))
    if convert is None:
        return obj
    if isinstance(obj, xr.DataArray):
        return _placed(obj, convert)
    return obj.assign({name: _placed(var, convert) for name, var in obj.data_vars.items()})


def _placed(var: xr.DataArray, convert: Converter) -> xr.DataArray:
    if var.dtype.kind not in "biufc":  # text or dates: nothing a device computes with
        return var
    data = var.data if isinstance(var.data, da.Array) else var.chunk().data
    meta = convert(np.empty((0,) * data.ndim, dtype=data.dtype))
    if type(data._meta) is type(meta):
        return var
    return var.copy(data=data.map_blocks(convert, dtype=data.dtype, meta=meta))


def on_host(array: xr.DataArray) -> xr.DataArray:
    """``array`` with CuPy chunks copied back to the host as each is computed (for writers
    that take NumPy only, such as GDAL); NumPy-backed arrays are returned as they are.

    >>> a = xr.DataArray(np.zeros(2))
    >>> on_host(a) is a
    True
    """
    data = array.data
    if not is_cupy(data):
        return array
    if isinstance(data, da.Array):
        meta = np.empty((0,) * data.ndim, dtype=data.dtype)
        return array.copy(data=data.map_blocks(to_numpy, dtype=data.dtype, meta=meta))
    return array.copy(data=to_numpy(data))
