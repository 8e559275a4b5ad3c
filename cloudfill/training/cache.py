"""The patch cache: every sample's tensors made once, then read back by index.

Making a training sample (reading windows, despeckling S1 with its halo, masking, building a
composite or blended reference, normalising) costs milliseconds per patch on the CPU; on a
GPU that bounds the step rate (an H200 waited on the sampler at 2.5 steps/s). The cache
makes each sample of the three splits once, before augmentation, and writes it to a folder
of fixed-shape arrays; every epoch, every resumed run and every other run with the same cube
and the same sample settings then reads batches straight from them.

**Layout**: ``FOLDER/<key>/`` holds ``manifest.json`` and, per split, ``<split>-condition.npy``
(float32, (n, C, s, s)), ``<split>-target.npy`` (float32, (n, 4, s, s)) and
``<split>-valid.npy`` (bool, (n, 1, s, s)): plain ``.npy`` files (no pickle), opened as
memory maps, or read whole into memory when small
(:data:`~cloudfill.training.cached_patches.IN_MEMORY_BYTES`). float32 keeps
the values bit for bit, so a run from the cache trains exactly the weights a run from the
cube trains (float16 would change them by up to 2.4e-4 in normalised units: see
``benchmarks/bench_patch_cache.py``).

**The key** (:mod:`cloudfill.training.cache_key`) is a digest of what the samples are made
from: a changed cube or setting finds no folder of its key and builds one, so a cache is
never reused for other samples.

**Atomic**: a cache is written into a sibling ``.<key>.tmp-<host>-<pid>-<tag>/``, synced,
its manifest written last, and the folder renamed to ``<key>`` in one step: a folder named
by a key is complete. A killed build leaves only a temporary folder, which is never read
and is removed by a later build once its process is gone.

**Reading** is :class:`~cloudfill.training.cached_patches.CachedPatches`
(:mod:`cloudfill.training.cached_patches`): batches gathered by index, on the training
device, augmented there with the codes :class:`~cloudfill.training.dataset.PatchDataset`
uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import uuid
import warnings
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from cloudfill._outputs import check_writable, nested
from cloudfill.errors import OutputError
from cloudfill.training.cache_key import FORMAT, cache_key
from cloudfill.training.cached_patches import (
    DEVICE_BYTES,
    IN_MEMORY_BYTES,
    CachedPatches,
)
from cloudfill.training.dataset import PatchDataset

__all__ = [
    "CACHE_NAME",
    "DEVICE_BYTES",
    "IN_MEMORY_BYTES",
    "CachedPatches",
    "cache_folder",
    "is_patch_cache",
    "open_patch_cache",
    "write_cache",
]

CACHE_NAME = "patch-cache"
"""The cache's folder inside a run's output folder (``patch_cache="on"`` / ``"auto"``)."""

MANIFEST = "manifest.json"
KEY_SHAPE = re.compile(r"[0-9a-f]{16}")
"""A cache's folder name: a key (16 hex digits of a SHA-256,
:func:`~cloudfill.training.cache_key.cache_key`)."""


# --- writing ------------------------------------------------------------------------------
def _shapes(data: PatchDataset) -> dict[str, tuple[tuple[int, ...], str]]:
    n, s = len(data), data.size
    return {
        "condition": ((n, data.n_channels, s, s), "float32"),
        "target": ((n, 4, s, s), "float32"),
        "valid": ((n, 1, s, s), "bool"),
    }


class _Raw(torch.utils.data.Dataset):
    """A split's samples before augmentation, with their numbers (for worker processes)."""

    def __init__(self, data: PatchDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
        return (index, *self.data.arrays(index))


def _as_made(item: Any) -> Any:
    """The DataLoader's collate function: the sample as made (NumPy arrays)."""
    return item


def _samples(data: PatchDataset, workers: int) -> Iterator[tuple[int, np.ndarray, ...]]:
    """Every sample of a split, made in chunk-group order (the reader's cache hits)."""
    order = np.argsort(data.groups, kind="stable").tolist()
    if workers <= 0:
        for i in order:
            yield (i, *data.arrays(i))
        return
    loader = torch.utils.data.DataLoader(
        _Raw(data),
        batch_size=None,
        sampler=order,
        num_workers=workers,
        multiprocessing_context="forkserver",
        collate_fn=_as_made,
    )
    yield from loader


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_name(key: str) -> str:
    return f".{key}.tmp-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _remove_stale(folder: Path, key: str) -> None:
    """Remove temporary folders of ``key`` left by builds on this host that are gone."""
    host = socket.gethostname()
    for tmp in folder.glob(f".{key}.tmp-*"):
        rest = tmp.name[len(f".{key}.tmp-") :]
        head, _, _tag = rest.rpartition("-")
        owner, _, pid = head.rpartition("-")
        if owner != host or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except PermissionError:
            pass  # alive, someone else's


def write_cache(
    splits: Sequence[PatchDataset],
    folder: str | os.PathLike[str],
    *,
    key: str | None = None,
    workers: int = 0,
    progress: bool = False,
) -> Path:
    """Make every sample of ``splits`` and write them as the cache ``folder/<key>``, atomically.

    Returns the cache's folder. When another process finished the same key first, its
    folder is kept and this one discarded.

    Examples
    --------
    >>> import tempfile, cloudfill
    >>> from cloudfill.training.index import PatchSettings, build_index
    >>> index = build_index(cloudfill.simulate_scene((96, 96), seed=0), "S",
    ...                     PatchSettings(32, overlap=0, block_size=48), despeckle=3)
    >>> splits = [PatchDataset.from_index(index, s) for s in ("train", "val", "test")]
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     where = write_cache(splits, tmp)
    ...     sorted(p.name for p in where.iterdir())[:3]
    ['manifest.json', 'test-condition.npy', 'test-target.npy']
    """
    key_, description = cache_key(splits)
    key = key or key_
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root, key)
    target = root / key
    tmp = root / _tmp_name(key)
    tmp.mkdir()
    total = sum(len(d) for d in splits)
    bar = _progress(progress, total)
    try:
        arrays: dict[str, dict[str, list[int]]] = {}
        for data in splits:
            shapes = _shapes(data)
            arrays[data.split] = {name: list(shape) for name, (shape, _) in shapes.items()}
            out = {}
            for name, (shape, dtype) in shapes.items():
                path = tmp / f"{data.split}-{name}.npy"
                if shape[0] == 0:
                    np.save(path, np.zeros(shape, dtype), allow_pickle=False)
                else:
                    out[name] = np.lib.format.open_memmap(path, "w+", np.dtype(dtype), shape)
            if out:
                for i, condition, target_, valid in _samples(data, workers):
                    out["condition"][i] = condition
                    out["target"][i] = target_
                    out["valid"][i] = valid
                    if bar is not None:
                        bar.advance(0)
                for array in out.values():
                    array.flush()
                del out
        for path in tmp.iterdir():
            _fsync(path)
        manifest = {
            **description,
            "key": key,
            "arrays": arrays,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        text = json.dumps(manifest, indent=1, default=str)
        (tmp / MANIFEST).write_text(text)
        _fsync(tmp / MANIFEST)
        try:
            os.rename(tmp, target)
        except OSError:
            if not _complete(target, key):
                raise
            # Another build of the same key won the race: its cache serves.
        else:
            _fsync(root)
    finally:
        if bar is not None:
            bar.stop()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _progress(enabled: bool, total: int) -> Any:
    if not enabled:
        return None
    bar = Progress(TextColumn("patch cache"), BarColumn(), MofNCompleteColumn())
    bar.add_task("patch cache", total=total)
    bar.start()
    return bar


# --- reading ------------------------------------------------------------------------------
def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _keyed(path: Path) -> bool:
    """Whether ``path`` is a folder (not a link) named by a key."""
    return not path.is_symlink() and path.is_dir() and KEY_SHAPE.fullmatch(path.name) is not None


def _entry(path: Path) -> bool:
    """Whether ``path`` is certainly a cache of this format (complete or damaged): a folder
    named by a key whose manifest names this format and that key."""
    manifest = _manifest(path) if _keyed(path) else None
    return manifest is not None and (manifest.get("format"), manifest.get("key")) == (
        FORMAT,
        path.name,
    )


def _empty_entry(path: Path) -> bool:
    """Whether ``path`` is an empty folder named by a key (nothing in it to lose)."""
    return _keyed(path) and not any(path.iterdir())


def is_patch_cache(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a patch cache: a folder named by a key whose manifest is
    this cache's (a training run's ``OUT/patch-cache`` once its cache is built).

    A folder that merely has that name, or sub-folders with other manifests, is not one.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     (Path(tmp) / "0123456789abcdef").mkdir()
    ...     is_patch_cache(tmp)
    False
    """
    root = Path(folder)
    return root.is_dir() and not root.is_symlink() and any(_entry(p) for p in root.iterdir())


def _complete(path: Path, key: str) -> bool:
    """Whether ``path`` holds the complete cache of ``key`` (manifest and every array)."""
    manifest = _manifest(path)
    if not manifest or manifest.get("format") != FORMAT or manifest.get("key") != key:
        return False
    for split, shapes in manifest.get("arrays", {}).items():
        for name, shape in shapes.items():
            try:
                array = np.load(path / f"{split}-{name}.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError):
                return False
            if list(array.shape) != list(shape):
                return False
    return True


# --- opening ------------------------------------------------------------------------------
def cache_folder(
    setting: str | None, out: Path | None, device: torch.device
) -> tuple[Path | None, bool]:
    """Where a run's cache lives (None: no cache) and whether it is the run's own folder.

    ``setting`` is :attr:`RuntimeSettings.patch_cache
    <cloudfill.training.config.RuntimeSettings.patch_cache>`.

    Examples
    --------
    >>> cache_folder("auto", Path("run"), torch.device("cpu"))
    (None, False)
    >>> cache_folder("on", Path("run"), torch.device("cpu"))
    (PosixPath('run/patch-cache'), True)
    >>> cache_folder("/tmp/shared-cache", Path("run"), torch.device("cpu"))
    (PosixPath('/tmp/shared-cache'), False)
    """
    value = "off" if setting is None else str(setting)
    if value == "off" or (value == "auto" and (device.type != "cuda" or out is None)):
        return None, False
    if value in ("auto", "on"):
        if out is None:
            raise OutputError(
                "patch_cache='on' needs an output folder (out=...); or give the cache a "
                "folder of its own (patch_cache='DIR')"
            )
        return out / CACHE_NAME, True
    return Path(value).expanduser(), False


def _prune(folder: Path, keep: str) -> None:
    """Remove the other caches of a run's own cache folder (superseded settings or cube).

    Only what is certainly a cache is removed (:func:`_entry`), and empty folders named by
    a key; anything else there (a user's folder, a file, a link) stays.
    """
    for path in folder.iterdir():
        if path.name == keep:
            continue
        if _entry(path):
            shutil.rmtree(path, ignore_errors=True)
        elif _empty_entry(path):
            with contextlib.suppress(OSError):  # filled meanwhile: not ours to delete
                path.rmdir()


def open_patch_cache(
    splits: Sequence[PatchDataset],
    folder: str | os.PathLike[str],
    *,
    workers: int = 0,
    progress: bool = False,
    prune: bool = False,
    in_memory: int = IN_MEMORY_BYTES,
) -> list[CachedPatches]:
    """The cached datasets of ``splits``: the cache of their key in ``folder``, built first
    when there is none (:func:`write_cache`).

    Parameters
    ----------
    splits
        Datasets of one index (e.g. its train, val and test splits).
    folder
        The cache folder (one sub-folder per key; shareable between runs).
    workers
        Processes making the samples of a build.
    progress
        Show a progress bar while building.
    prune
        Remove the folder's caches of other keys (a run's own folder).
    in_memory
        Read arrays up to this size into memory instead of memory-mapping them.

    Raises
    ------
    OutputError
        ``folder`` is, or lies inside or around, the cube's zarr store (inputs are never
        written), or cannot be written.

    See :class:`CachedPatches` for an example.
    """
    reader = splits[0].reader
    if reader.path is not None and nested(folder, reader.path):
        raise OutputError(
            f"the patch cache {folder} would be written into the cube {reader.path}: choose a "
            "folder outside it; inputs are never written"
        )
    check_writable(folder, into=True)
    key, _ = cache_key(splits)
    root = Path(folder)
    path = root / key
    if (path.exists() or path.is_symlink()) and not _complete(path, key):
        if not (_entry(path) or _empty_entry(path)):
            raise OutputError(
                f"{path} is named like the patch cache but is not one: remove it yourself or "
                "choose another cache folder"
            )
        warnings.warn(f"the patch cache {path} is incomplete: rebuilding it", stacklevel=2)
        shutil.rmtree(path, ignore_errors=True)
    if not path.exists():
        path = write_cache(splits, root, key=key, workers=workers, progress=progress)
    if prune:
        _prune(root, key)
    return [CachedPatches(d, path, key, in_memory=in_memory) for d in splits]
