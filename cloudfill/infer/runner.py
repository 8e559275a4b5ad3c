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
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloudfill._backend import is_cupy
from cloudfill.model.checkpoint import remember_checkpoint, remembered_checkpoint
from cloudfill.model.runtime import load_model, resolve_device

__all__ = ["ModelRef", "from_torch", "to_torch"]

_CACHE: dict[tuple[str, str, bool, str], Any] = {}
_CACHE_SIZE = 4
_LOCK = threading.Lock()
_TMP: list[Path] = []
#: Times each process loaded a checkpoint from disk (checked by the cluster tests).
LOADS: dict[str, int] = {}


def to_torch(array: Any, device: Any) -> Any:
    """A torch tensor on ``device`` viewing ``array`` (numpy or cupy) without a host copy."""
    if is_cupy(array):
        return torch.from_dlpack(array).to(device)
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def from_torch(tensor: Any, like: Any) -> Any:
    """``tensor`` as the array type of ``like`` (cupy stays on the GPU)."""
    if is_cupy(like):
        import cupy  # optional (the gpu extra): only where chunks are CuPy

        return cupy.from_dlpack(tensor.detach().contiguous())
    return tensor.detach().cpu().numpy()


def _cleanup() -> None:
    for path in _TMP:
        shutil.rmtree(path, ignore_errors=True)


def _file_stamp(path: str | os.PathLike[str]) -> str:
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    stats = [f.stat() for f in files if f.is_file()]
    return f"{sum(s.st_size for s in stats)}-{max((s.st_mtime_ns for s in stats), default=0)}"


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
    stamp
        Size and modification time of the checkpoint when referenced: part of the per-process
        cache key, so a long-lived worker never serves a stale model for a rewritten file.
    """

    path: str
    device: str = "cpu"
    fast: bool = False
    stamp: str = ""
    _local: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def from_model(cls, model: Any, device: str = "cpu", fast: bool = False) -> ModelRef:
        """Reference an in-memory :class:`~cloudfill.model.runtime.CloudfillModel`.

        The checkpoint it was loaded from (see
        :func:`cloudfill.model.checkpoint.remember_checkpoint`) or the temporary copy written
        by an earlier call is reused while the weights are unchanged; otherwise the weights
        are written once to a new temporary file.
        """
        with _LOCK:
            path = remembered_checkpoint(model)
            if path is None:
                tmp = Path(tempfile.mkdtemp(prefix="cloudfill-model-"))
                if not _TMP:
                    atexit.register(_cleanup)
                _TMP.append(tmp)
                path = str(model.save(tmp / "model.safetensors"))
                remember_checkpoint(model, path)
        return cls(path, device, fast, _file_stamp(path), _local=model)

    def __getstate__(self) -> dict[str, Any]:
        # Never ship weights in the graph: workers load from the path.
        state = {name: getattr(self, name) for name in ("path", "device", "fast", "stamp")}
        return {**state, "_local": None}

    def load(self) -> Any:
        """The model, loaded at most once per process for this path/device/options."""
        key = (self.path, self.device, self.fast, self.stamp)
        with _LOCK:
            model = _CACHE.get(key)
            if model is None:
                if self._local is not None and _same_device(self._local, self.device):
                    model = self._local
                else:
                    model = load_model(self.path, device=self.device)
                    LOADS[self.path] = LOADS.get(self.path, 0) + 1
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
    return model.device == resolve_device(device)
