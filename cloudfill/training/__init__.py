"""Training: patch sampler, patch cache, GAN loop, checkpoints of the training state,
ablation runner.

The package is ``cloudfill.training`` (not ``cloudfill.train``, the design sketch's name) so
that ``cloudfill.train`` stays the training *function*: importing a subpackage binds its name
on the parent package, which would shadow the function.

Names resolve lazily (the dataset, step and loop import torch):
:func:`~cloudfill.training.run.train` with its
:class:`~cloudfill.training.config.TrainConfig`,
:func:`~cloudfill.training.dataset.sample_patches`,
:class:`~cloudfill.training.dataset.PatchDataset`,
:func:`~cloudfill.training.index.build_index`,
:func:`~cloudfill.training.cache.open_patch_cache` (the patch cache),
:func:`~cloudfill.training.experiment.run_experiment`.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CachedPatches": "cached_patches",
    "open_patch_cache": "cache",
    "CubeReader": "reader",
    "ChunkSampler": "sampler",
    "PatchDataset": "dataset",
    "sample_patches": "dataset",
    "PatchIndex": "index",
    "PatchSettings": "index",
    "build_index": "index",
    "training_stats": "targets",
    "NetworkSettings": "config",
    "OptimSettings": "config",
    "RuntimeSettings": "config",
    "Schedule": "config",
    "TrainConfig": "config",
    "evaluate_patches": "scoring",
    "train_step": "step",
    "train": "run",
    "SMALL": "experiment",
    "run_experiment": "experiment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudfill.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cloudfill.training.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
