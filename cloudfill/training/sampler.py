"""The order and the augmentation of training samples, apart from how a sample is made.

:class:`ChunkSampler` orders an epoch chunk group by chunk group (a group = the patches of one
target date inside one chunk), interleaving a few groups at a time, so that the reader's chunk
cache (:mod:`cloudfill.training.reader`) hits; groups and members are shuffled with a seed per
epoch.

**Augmentation** (training split only): one of the 8 flips/rotations of the square, chosen
from a hash of (seed, epoch, sample), applied alike to condition, target and mask, so it is
reproducible and independent of worker processes. :func:`augment` transforms one sample's
arrays (:class:`~cloudfill.training.dataset.PatchDataset`), :func:`augment_batch` a batch
on its device (a patch cache's batches, :mod:`cloudfill.training.cached_patches`), with the
same codes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cloudfill._hashing import splitmix64

__all__ = ["ChunkSampler", "augment", "augment_batch", "augmentation_code"]


def augmentation_code(seed: int, epoch: int, index: int) -> int:
    """Which of the 8 dihedral transforms sample ``index`` gets in ``epoch`` (0 = none).

    A hash, not a random generator: the code depends on nothing but its arguments, whichever
    worker process reads the sample and whatever was read before.

    Examples
    --------
    >>> augmentation_code(0, 0, 0) == augmentation_code(0, 0, 0)
    True
    """
    return splitmix64(splitmix64(splitmix64(int(seed)) ^ int(epoch)) ^ int(index)) % 8


def augment(array: np.ndarray, code: int) -> np.ndarray:
    """Rotate by ``code % 4`` quarter turns, then flip left-right if ``code >= 4``.

    Examples
    --------
    >>> augment(np.arange(4).reshape(1, 2, 2), 1).tolist()
    [[[1, 3], [0, 2]]]
    """
    out = np.rot90(array, code % 4, axes=(-2, -1))
    if code >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def augment_batch(batch: torch.Tensor, codes: Sequence[int]) -> torch.Tensor:
    """:func:`augment` of each item of a batch ``(n, ..., h, w)`` by its code, on its device.

    The items sharing a code are transformed together (at most 8 tensor operations a batch,
    wherever the batch lives: on a GPU the augmentation runs there). Square patches only
    (a quarter turn swaps ``h`` and ``w``).

    Examples
    --------
    >>> batch = torch.arange(8).reshape(2, 1, 2, 2)
    >>> out = augment_batch(batch, [1, 4])
    >>> [out[i].numpy().tolist() == augment(batch[i].numpy(), c).tolist()
    ...  for i, c in enumerate([1, 4])]
    [True, True]
    """
    codes_t = torch.as_tensor(list(codes), dtype=torch.int64)
    if len(codes_t) != len(batch):
        raise ValueError(f"{len(codes_t)} codes for a batch of {len(batch)}")
    if not bool(codes_t.any()):
        return batch
    parts, order = [], []
    for code in torch.unique(codes_t).tolist():
        members = torch.nonzero(codes_t == code).flatten()
        part = batch.index_select(0, members.to(batch.device))
        part = torch.rot90(part, code % 4, dims=(-2, -1)) if code % 4 else part
        parts.append(torch.flip(part, dims=(-1,)) if code >= 4 else part)
        order.append(members)
    # Gathered back into batch order (a gather, not a scatter: deterministic on any device).
    inverse = torch.argsort(torch.cat(order)).to(batch.device)
    return torch.cat(parts).index_select(0, inverse)


class ChunkSampler(torch.utils.data.Sampler[int]):
    """Sample order that visits the cube chunk group by chunk group.

    Groups (one target date inside one chunk) are shuffled; ``mix`` consecutive groups are
    interleaved and their members shuffled, so a batch mixes places and dates while the chunk
    cache only needs ``mix`` groups at a time. The order depends on ``seed`` and the epoch
    only. ``start`` skips the first samples of the epoch (to resume mid-epoch).

    Examples
    --------
    >>> sampler = ChunkSampler(np.array([0, 0, 1, 1, 2]), seed=0)
    >>> sorted(sampler) == [0, 1, 2, 3, 4]
    True
    """

    def __init__(
        self, groups: np.ndarray, *, shuffle: bool = True, seed: int = 0, mix: int = 4
    ) -> None:
        self.groups = np.asarray(groups, dtype=np.int64)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.mix = max(1, int(mix))
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Order of ``epoch``, skipping its first ``start`` samples."""
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> np.ndarray:
        """The full order of the current epoch."""
        if not self.shuffle:
            return np.argsort(self.groups, kind="stable")
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A3])
        ids = np.unique(self.groups)
        ids = ids[rng.permutation(len(ids))]
        members = {int(g): np.flatnonzero(self.groups == g) for g in ids}
        parts = []
        for i in range(0, len(ids), self.mix):
            chosen = np.concatenate([members[int(g)] for g in ids[i : i + self.mix]])
            parts.append(chosen[rng.permutation(len(chosen))])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.order()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.groups) - self.start)
