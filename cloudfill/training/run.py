"""Train a generator on a cube: the pix2pix objective, early stopping, exact resume.

:func:`train` takes a cube, a :class:`~cloudfill.training.config.TrainConfig` and an output
folder. It builds (or takes) the :class:`~cloudfill.training.index.PatchIndex`, the networks
(:class:`~cloudfill.training.step.Networks`), and runs the loop
(:class:`~cloudfill.training.loop.Run`): steps of :func:`~cloudfill.training.step.train_step`,
validation after each epoch, the best model kept, early stopping, checkpoints.

Determinism: seeds, ``torch.use_deterministic_algorithms`` (restored afterwards), a sample
order and augmentation that depend only on (seed, epoch, sample), and a complete state in
``out/last/`` (weights, batch-norm statistics, optimiser moments, RNG, counters, history;
safetensors + JSON, see :mod:`cloudfill.training.state`) make ``resume=True`` continue exactly
where an interrupted run stopped, mid-epoch included: on the CPU, N steps then M resumed steps
give bit-identical weights to N + M steps in one go.

The samples are read from the cube every epoch, or once into a patch cache
(:mod:`cloudfill.training.cache`, ``RuntimeSettings.patch_cache``) and from it afterwards:
the batches, and so the weights, are the same.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import xarray as xr

from cloudfill.errors import OutputError, ParameterError
from cloudfill.model.runtime import CloudfillModel, resolve_device
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.cache import cache_folder, open_patch_cache
from cloudfill.training.config import TrainConfig
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.index import PatchIndex, build_index
from cloudfill.training.loop import LAST_NAME, Run, Splits
from cloudfill.training.record import check_resumable, training_record
from cloudfill.training.state import read_state
from cloudfill.training.step import Networks
from cloudfill.training.warm_start import (
    InitModel,
    check_index,
    check_init,
    check_start,
    init_record,
    init_stats,
    load_init,
    start_state,
)

__all__ = ["train"]

_SavedState = tuple[dict[str, torch.Tensor], dict[str, Any]]


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    # CUDA has kernels without a deterministic version: warn there instead of failing.
    torch.use_deterministic_algorithms(True, warn_only=device.type != "cpu")
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = benchmark


def _saved_state(out: Path | None, resume: bool) -> _SavedState | None:
    """The state to resume from ``out`` (None: start afresh); refuses to overwrite a run."""
    if out is None:
        return None
    last = out / LAST_NAME
    has_state = last.exists() or any(out.glob(f".{LAST_NAME}.old-*"))
    if has_state and not resume:
        raise OutputError(
            f"{str(out)!r} already holds a training run; pass resume=True to "
            "continue it, or choose another output folder"
        )
    if has_state:
        return read_state(last)
    if resume:
        warnings.warn(f"nothing to resume in {str(out)!r}: starting afresh", stacklevel=3)
    return None


def _splits(
    ds: xr.Dataset | str | os.PathLike[str],
    config: TrainConfig,
    index: PatchIndex | None,
    saved: _SavedState | None,
    init: CloudfillModel | None = None,
) -> tuple[PatchIndex, Splits]:
    """The index (built unless given, with the saved statistics when resuming, else the
    warm start's) and its three datasets for the configuration's variant."""
    if index is not None and init is not None:
        check_index(init, index, config.variant)
    if index is None:
        if saved is not None:
            stats = NormStats.from_dict(saved[1]["stats"])
        else:
            stats = None if init is None else init_stats(init)
        index = build_index(
            ds,
            config.variant,
            config.patches,
            rule=config.pairing,
            reference=config.reference,
            despeckle=config.despeckle,
            dates=config.dates,
            stats=stats,
            seed=config.seed,
        )
    elif index.size != config.patches.size:
        raise ParameterError(f"the index has patch size {index.size}, not {config.patches.size}")
    data = Splits(
        *(PatchDataset.from_index(index, s, variant=config.variant) for s in Splits._fields)
    )
    if len(data.train) == 0:
        raise ParameterError("no training samples: the training blocks hold no usable patch")
    if len(data.val) == 0:
        warnings.warn(
            "the validation split is empty: no early stopping, the last model is kept",
            stacklevel=3,
        )
    return index, data


def _cached(
    data: Splits, config: TrainConfig, out: Path | None, device: torch.device, progress: bool
) -> Splits:
    """The splits read from the patch cache the runtime settings ask for (or as they are)."""
    folder, own = cache_folder(config.runtime.patch_cache, out, device)
    if folder is None:
        return data
    cached = Splits(
        *open_patch_cache(
            data,
            folder,
            workers=int(config.runtime.num_workers),
            progress=progress,
            prune=own,
        )
    )
    cached.train.place(device)
    return cached


def train(
    ds: xr.Dataset | str | os.PathLike[str],
    config: TrainConfig | None = None,
    out: str | os.PathLike[str] | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    index: PatchIndex | None = None,
    init: InitModel | None = None,
) -> CloudfillModel:
    """Train a generator on a cube (pix2pix objective; defaults: the paper's settings).

    Parameters
    ----------
    ds
        A contract cube or the path of a zarr store (patches are read straight from it).
    config
        The run's settings (default ``TrainConfig()``: an SOD model with the paper's table 2:
        50 epochs, batch 2, Adam lr 2e-4 with betas (0.5, 0.999), lambda 100, 256 px
        patches with 25 px overlap, early stopping after 20 epochs without a better
        validation MAE).
    out
        Output folder: ``best.safetensors`` (best model + card), ``last/`` (resumable
        state), ``metrics.csv`` (and ``tensorboard/`` when installed; ``patch-cache/`` with
        the patch cache, see :mod:`cloudfill.training.cache`). None keeps everything in
        memory.
    resume
        Continue the run in ``out/last/`` exactly (same settings required; the schedule and
        the runtime settings may change). Starts afresh, with a warning, if there is none.
        A patch cache (``config.runtime.patch_cache``) of the same cube and samples is
        reused, not rebuilt.
    progress
        Show a progress bar with the losses.
    index
        A prebuilt :class:`~cloudfill.training.index.PatchIndex` (shared between runs by
        :func:`~cloudfill.training.experiment.run_experiment`, or built with statistics of
        your own); it then fixes the samples, patch grid, pairing, despeckling and reference
        mode, and ``ds`` is not read.
    init
        Start from this model's weights (a :class:`~cloudfill.model.runtime.CloudfillModel`
        or a checkpoint path) instead of random ones, e.g. to fine-tune the shipped model on
        your own cube (see :mod:`cloudfill.training.warm_start`): its architecture and
        reference mode must be the configuration's, and its normalisation statistics are
        used. A resumed run must name the same model.

    Returns
    -------
    CloudfillModel
        The best generator (by validation MAE; with ``change_weight`` by the change-weighted
        validation MAE) with its card; the card's ``metrics`` hold
        the validation and test scores, its ``training`` the settings
        (:func:`~cloudfill.training.record.training_record`) and the run's course.

    Raises
    ------
    ParameterError
        No training samples, an index of another patch size, a resume with different
        settings (bad settings are refused by the configuration itself), or an ``init``
        model of another architecture or reference mode.
    ModelMismatchError
        The cube lacks an input of the variant.
    OutputError
        ``out`` already holds a run and ``resume`` is False.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.training.config import NetworkSettings, Schedule, TrainConfig
    >>> from cloudfill.training.index import PatchSettings
    >>> config = TrainConfig(
    ...     "S",
    ...     network=NetworkSettings(base_filters=4, n_blocks=1, d_filters=4),
    ...     schedule=Schedule(max_steps=2),
    ...     patches=PatchSettings(32, overlap=0, block_size=32),
    ...     despeckle=3,
    ... )
    >>> model = train(cloudfill.simulate_scene((96, 96), seed=0), config, progress=False)
    >>> model.card.variant, model.card.training["steps"]
    ('S', 2)
    """
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise ParameterError(f"config must be a TrainConfig, got {config!r}")
    device = resolve_device(config.runtime.device)
    start = load_init(init)
    if start is not None:
        check_init(start, config)
    out_dir = None if out is None else Path(out)
    saved = _saved_state(out_dir, resume)
    started = init_record(start)
    if saved is not None:
        # The start first (before the cube is read): a resume that forgot the init model is
        # told so, not that some setting taken from the model differs.
        check_start(saved[1]["config"].get("init"), started)
    index, data = _splits(ds, config, index, saved, start)
    record = {**training_record(config, index), "init": started}
    if saved is not None:
        check_resumable(saved[1]["config"], record)
    data = _cached(data, config, out_dir, device, progress)

    with _deterministic(device):
        nets = Networks.build(config, device)
        run = Run(
            nets=nets,
            index=index,
            data=data,
            config=config,
            record=record,
            out=out_dir,
            device=device,
        )
        if saved is not None:
            run.restore(*saved)
        elif start is not None:
            nets.start_from(start_state(start, nets.generator))
        run.fit(progress)
        return run.finish()
