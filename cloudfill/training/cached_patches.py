"""Reading a patch cache back: :class:`CachedPatches`, one split's samples by index.

A cache (:mod:`cloudfill.training.cache`, which builds and opens it) is a folder of
fixed-shape ``.npy`` arrays per split: ``<split>-condition.npy`` (float32, (n, C, s, s)),
``<split>-target.npy`` (float32, (n, 4, s, s)) and ``<split>-valid.npy`` (bool,
(n, 1, s, s)). They are opened as memory maps, or read whole into memory when small
(:data:`IN_MEMORY_BYTES`).

**Batches** (:meth:`CachedPatches.batches`) are gathered by index from the arrays, moved to
the training device (pinned and ``non_blocking`` on CUDA, the next batch gathered in a
background thread meanwhile; a split small enough is moved to the GPU whole), and augmented
there (:func:`~cloudfill.training.sampler.augment_batch`) with the codes
:class:`~cloudfill.training.dataset.PatchDataset` uses: the same batches as the cube's.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cloudfill.training.dataset import PatchDataset
from cloudfill.training.sampler import augment, augment_batch, augmentation_code

__all__ = ["ARRAYS", "DEVICE_BYTES", "IN_MEMORY_BYTES", "CachedPatches"]

ARRAYS = ("condition", "target", "valid")
"""The arrays of each split, ``<split>-<name>.npy``."""

IN_MEMORY_BYTES = 2 * 2**30
"""A split's arrays up to this size are read into memory; larger ones are memory-mapped."""

DEVICE_BYTES = 4 * 2**30
"""On CUDA, a training split up to this size (and a quarter of the free GPU memory) is moved
to the GPU whole: a batch is then an on-device gather."""


def _load(path: Path, in_memory: int) -> np.ndarray:
    """An array of the cache: memory-mapped, or read whole when small (or empty)."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    if array.nbytes <= in_memory or array.size == 0:
        return np.load(path, allow_pickle=False)
    return array


class CachedPatches(torch.utils.data.Dataset):
    """One split of a patch cache: a :class:`PatchDataset`'s samples, read back by index.

    Items are what the dataset gives (augmentation included, with the same codes);
    :meth:`batches` yields whole batches on a device, augmented there.

    Attributes
    ----------
    condition, target, valid
        The split's arrays (memory maps or in memory), sample first.
    key, folder
        The cache's key and folder.
    variant, size, split, augment, seed, epoch, samples, groups, stats
        As the :class:`PatchDataset` it caches.

    Examples
    --------
    >>> import tempfile, cloudfill
    >>> from cloudfill.training.cache import open_patch_cache
    >>> from cloudfill.training.index import PatchSettings, build_index
    >>> index = build_index(cloudfill.simulate_scene((96, 96), seed=0), "S",
    ...                     PatchSettings(32, overlap=0, block_size=48), despeckle=3)
    >>> data = PatchDataset.from_index(index, "train")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cached = open_patch_cache([data], tmp)[0]
    ...     same = all(torch.equal(a, b) for a, b in zip(cached[1], data[1]))
    >>> same
    True
    """

    def __init__(
        self, source: PatchDataset, folder: Path, key: str, *, in_memory: int = IN_MEMORY_BYTES
    ) -> None:
        self.folder, self.key = folder, key
        self.stats = source.stats
        self.variant, self.size, self.split = source.variant, source.size, source.split
        self.augment, self.seed, self.epoch = source.augment, source.seed, source.epoch
        self.samples, self.groups = source.samples, source.groups
        self.condition, self.target, self.valid = (
            _load(folder / f"{self.split}-{name}.npy", in_memory) for name in ARRAYS
        )
        self._resident: tuple[torch.Tensor, ...] | None = None

    @property
    def n_channels(self) -> int:
        """Condition channels of the variant."""
        return int(self.condition.shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the split's arrays."""
        return sum(int(a.nbytes) for a in (self.condition, self.target, self.valid))

    def __len__(self) -> int:
        return len(self.condition)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` as NumPy arrays, before augmentation."""
        return self.condition[index], self.target[index], self.valid[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        arrays = self.arrays(index)
        if self.augment:
            code = augmentation_code(self.seed, self.epoch, index)
            arrays = tuple(augment(a, code) for a in arrays)
        return tuple(torch.from_numpy(np.array(a)) for a in arrays)  # type: ignore[return-value]

    def codes(self, indices: Sequence[int]) -> list[int]:
        """The augmentation codes of samples ``indices`` in the current epoch (0: none)."""
        if not self.augment:
            return [0] * len(indices)
        return [augmentation_code(self.seed, self.epoch, int(i)) for i in indices]

    def place(self, device: torch.device, max_bytes: int = DEVICE_BYTES) -> bool:
        """Move the split to ``device`` whole when it is a GPU with room for it.

        Returns whether it did. Batches are then gathered on the device.
        """
        if device.type != "cuda":
            return False
        free = torch.cuda.mem_get_info(device)[0]
        if self.nbytes > min(max_bytes, free // 4):
            return False
        self._resident = tuple(
            torch.from_numpy(np.ascontiguousarray(a)).to(device)
            for a in (self.condition, self.target, self.valid)
        )
        return True

    def batch(self, indices: Sequence[int], device: torch.device) -> list[torch.Tensor]:
        """Samples ``indices`` stacked, on ``device``, augmented there."""
        index = np.asarray(indices, dtype=np.int64)
        if self._resident is not None:
            picked = torch.from_numpy(index).to(self._resident[0].device)
            tensors = [t.index_select(0, picked) for t in self._resident]
        else:
            arrays = (self.condition, self.target, self.valid)
            tensors = [torch.from_numpy(np.asarray(a[index])) for a in arrays]
            if device.type == "cuda":
                tensors = [t.pin_memory() for t in tensors]
            tensors = [t.to(device, non_blocking=True) for t in tensors]
        codes = self.codes(index.tolist())
        return [augment_batch(t, codes) for t in tensors]

    def batches(
        self, order: Iterable[int], batch_size: int, device: torch.device
    ) -> Iterator[list[torch.Tensor]]:
        """Batches of ``batch_size`` samples in ``order`` (the last may be short), on
        ``device`` and augmented; on CUDA the next batch is gathered while one trains."""
        chosen = list(order)
        groups = [chosen[i : i + batch_size] for i in range(0, len(chosen), batch_size)]
        if self._resident is not None or device.type != "cuda":
            return (self.batch(g, device) for g in groups)
        return _prefetched(self.batch(g, device) for g in groups)

    def __repr__(self) -> str:
        return (
            f"CachedPatches(variant={self.variant!r}, split={self.split!r}, samples={len(self)}, "
            f"size={self.size}, key={self.key!r}, augment={self.augment})"
        )


_DONE = object()


def _prefetched(items: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """``items``, made up to ``depth`` ahead in a background thread (its errors re-raised
    here); the thread stops when the consumer does."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not offer(item):
                    return
            offer(_DONE)
        except BaseException as exc:  # handed to the consumer
            offer(exc)

    thread = threading.Thread(target=work, daemon=True, name="patch-cache-prefetch")
    thread.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
