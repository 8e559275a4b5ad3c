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
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cloudfill._backend import is_cupy

__all__ = ["ModelRef", "array_module_name", "from_torch", "remember_checkpoint", "to_torch"]

_CACHE: dict[tuple[str, str, bool, str], Any] = {}
_CACHE_SIZE = 4
_LOCK = threading.Lock()
_TMP: list[Path] = []
#: Per in-memory model: (state key, checkpoint path holding exactly those weights).
_SAVED: weakref.WeakKeyDictionary[Any, tuple[tuple, str]] = weakref.WeakKeyDictionary()
#: Times each process loaded a checkpoint from disk (checked by the cluster tests).
LOADS: dict[str, int] = {}


def array_module_name(array: Any) -> str:
    """``"cupy"`` for cupy arrays (or dask arrays of them), else ``"numpy"``."""
    return "cupy" if is_cupy(array) else "numpy"


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


def _state_key(model: Any) -> tuple:
    """Changes whenever the weights may have: storage address and in-place version of each
    tensor (an optimiser step, ``load_state_dict`` or ``.to()`` bumps one or the other)."""
    tensors = model.generator.state_dict(keep_vars=True).values()
    try:
        return (id(model.card), *((t.data_ptr(), t._version) for t in tensors))
    except RuntimeError:  # inference tensors keep no version: never assume unchanged
        return (object(),)


def _file_stamp(path: str | os.PathLike[str]) -> str:
    root = Path(path)
    files = sorted(root.rglob("*")) if root.is_dir() else [root]
    stats = [f.stat() for f in files if f.is_file()]
    return f"{sum(s.st_size for s in stats)}-{max((s.st_mtime_ns for s in stats), default=0)}"


def remember_checkpoint(model: Any, path: str | os.PathLike[str]) -> None:
    """Record that ``model``'s current weights are those of the checkpoint at ``path``.

    :meth:`ModelRef.from_model` then references that file instead of writing a temporary
    copy, so workers (on a shared filesystem too) load the user's checkpoint, and every
    date of a series shares one cache entry per worker.

    Examples
    --------
    >>> from cloudfill.model import CloudfillModel
    >>> from cloudfill.model.generator import Generator
    >>> import tempfile
    >>> model = CloudfillModel(Generator("S", base_filters=4, n_blocks=1))
    >>> path = model.save(Path(tempfile.mkdtemp()) / "s.safetensors")
    >>> remember_checkpoint(model, path)
    >>> ModelRef.from_model(model).path == str(path)
    True
    """
    _SAVED[model] = (_state_key(model), os.fspath(path))


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

        The checkpoint it was loaded from (see :func:`remember_checkpoint`) or the temporary
        copy written by an earlier call is reused while the weights are unchanged; otherwise
        the weights are written once to a new temporary file.
        """
        key = _state_key(model)
        with _LOCK:
            saved = _SAVED.get(model)
            if saved is not None and saved[0] == key and Path(saved[1]).exists():
                return cls(saved[1], device, fast, _file_stamp(saved[1]), _local=model)
            tmp = Path(tempfile.mkdtemp(prefix="cloudfill-model-"))
            if not _TMP:
                atexit.register(_cleanup)
            _TMP.append(tmp)
            path = str(model.save(tmp / "model.safetensors"))
            _SAVED[model] = (key, path)
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
                    from cloudfill.model.checkpoint import load_model

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
    from cloudfill.model.runtime import resolve_device

    return model.device == resolve_device(device)
