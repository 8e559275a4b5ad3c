"""Running the generator inside dask tasks: one model per worker process, array bridges.

A :class:`ModelRef` is what travels in the task graph: a checkpoint path plus options, a few
hundred bytes. Each process loads the model once (a per-process cache keyed by path, device
and options) instead of unpickling weights with every task. An in-memory model is written once
to a temporary safetensors file so that worker processes can load it too; in the submitting
process the object itself is used directly.

Arrays cross into torch without a host copy where possible: numpy via ``torch.from_numpy``,
cupy via DLPack (``torch.from_dlpack``), and results come back as the input's array type.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ModelRef", "array_module_name", "from_torch", "to_torch"]

_CACHE: dict[tuple[str, str, bool], Any] = {}
_CACHE_SIZE = 4
_LOCK = threading.Lock()
_TMP: list[Path] = []


def array_module_name(array: Any) -> str:
    """``"cupy"`` for cupy arrays (or dask arrays of them), else ``"numpy"``."""
    meta = getattr(array, "_meta", array)
    return "cupy" if type(meta).__module__.split(".")[0] == "cupy" else "numpy"


def to_torch(array: Any, device: Any) -> Any:
    """A torch tensor on ``device`` viewing ``array`` (numpy or cupy) without a host copy."""
    import torch

    if array_module_name(array) == "cupy":
        return torch.from_dlpack(array).to(device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def from_torch(tensor: Any, like: Any) -> Any:
    """``tensor`` as the array type of ``like`` (cupy stays on the GPU)."""
    if array_module_name(like) == "cupy":
        import cupy

        return cupy.from_dlpack(tensor.detach().contiguous())
    return tensor.detach().cpu().numpy()


def _cleanup() -> None:
    for path in _TMP:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class ModelRef:
    """A picklable handle on a model: the checkpoint path and how to run it.

    Parameters
    ----------
    path
        Checkpoint file (``*.safetensors``) or directory.
    device
        ``"cpu"``, ``"cuda"``, ``"auto"``...; resolved in the process that runs the task.
    fast
        bf16 autocast + channels_last.
    """

    path: str
    device: str = "cpu"
    fast: bool = False
    _local: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, model: Any, device: str = "cpu", fast: bool = False) -> ModelRef:
        """Reference an in-memory :class:`~cloudfill.model.runtime.CloudfillModel`."""
        # A fresh file per call: the object's weights may have changed since the last one.
        tmp = Path(tempfile.mkdtemp(prefix="cloudfill-model-"))
        if not _TMP:
            atexit.register(_cleanup)
        _TMP.append(tmp)
        path = model.save(tmp / "model.safetensors")
        return cls(str(path), device, fast, _local=model)

    def __getstate__(self) -> dict[str, Any]:
        # Never ship weights in the graph: workers load from the path.
        return {"path": self.path, "device": self.device, "fast": self.fast, "_local": None}

    def load(self) -> Any:
        """The model, loaded at most once per process for this path/device/options."""
        key = (self.path, self.device, self.fast)
        with _LOCK:
            model = _CACHE.get(key)
            if model is None:
                if self._local is not None and _same_device(self._local, self.device):
                    model = self._local
                else:
                    from cloudfill.model.checkpoint import load_model

                    model = load_model(self.path, device=self.device)
                if len(_CACHE) >= _CACHE_SIZE:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = model
        return model

    def predict(self, batch: Any) -> tuple[Any, Any | None]:
        """Run the generator on a (n, c, t, t) numpy/cupy batch; same array type back."""
        model = self.load()
        out = model.predict(to_torch(batch, model.device), fast=self.fast)
        mean = from_torch(out.mean, batch)
        scale = None if out.scale is None else from_torch(out.scale, batch)
        return mean, scale


def _same_device(model: Any, device: str) -> bool:
    from cloudfill.model.runtime import resolve_device

    return model.device == resolve_device(device)
