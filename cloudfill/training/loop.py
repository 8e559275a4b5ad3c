"""The training loop of one run: epochs of steps, validation, checkpoints, the final model.

After each epoch (and when a step budget ends one early) the scored generator is validated
(:func:`~cloudfill.training.scoring.evaluate_patches`); the best one is kept as
``out/best.safetensors`` (a model checkpoint with its card: normalisation statistics, split,
training configuration, metrics) and training stops after ``patience`` epochs without
improvement. The complete state goes to ``out/last/`` after every validation
(:mod:`cloudfill.training.state`), so :meth:`Run.restore` continues exactly where an
interrupted run stopped, mid-epoch included. At the end the best generator is scored on the
test split and those metrics are added to its card.

Batches come from a DataLoader over the training split's
:class:`~cloudfill.training.dataset.PatchDataset`, or, when the split is a patch cache's
(:class:`~cloudfill.training.cached_patches.CachedPatches`), gathered from the cache onto the device
and augmented there: the same batches in the same order either way.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cloudfill.core.variants import get_variant
from cloudfill.errors import ParameterError
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import save_model
from cloudfill.model.runtime import CloudfillModel, load_model
from cloudfill.training.cached_patches import CachedPatches
from cloudfill.training.config import TrainConfig
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.index import PatchIndex
from cloudfill.training.sampler import ChunkSampler
from cloudfill.training.scoring import Selection, band_affine, evaluate_patches, none_if_nan
from cloudfill.training.state import (
    load_networks,
    network_tensors,
    write_history,
    write_state,
)
from cloudfill.training.step import LOSSES, Networks

__all__ = ["BEST_NAME", "LAST_NAME", "METRICS_NAME", "Counters", "Run", "Splits"]

BEST_NAME = "best.safetensors"
LAST_NAME = "last"
METRICS_NAME = "metrics.csv"


class Splits(NamedTuple):
    """The datasets of the three splits of an index (read from the cube or from a patch
    cache: :class:`~cloudfill.training.cached_patches.CachedPatches`)."""

    train: PatchDataset | CachedPatches
    val: PatchDataset | CachedPatches
    test: PatchDataset | CachedPatches


@dataclass
class Counters:
    """Where a run stands: what a checkpoint's JSON document holds besides the settings.

    ``running`` sums the losses of the current epoch's steps (``running_count`` of them), for
    the epoch's mean in the history.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    running: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LOSSES, 0.0))
    running_count: int = 0
    seconds: float = 0.0
    stop_reason: str | None = None


def _progress_bar(enabled: bool) -> Progress | None:
    if not enabled:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[losses]}"),
    )


def _tensorboard(out: Path | None) -> Any:
    """A SummaryWriter when TensorBoard is installed and there is an output folder."""
    if out is None or importlib.util.find_spec("tensorboard") is None:
        return None
    # Optional dependency: importing the writer needs tensorboard, found installed above.
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out / "tensorboard"))


@dataclass(eq=False)
class Run:
    """The mutable state of one training run and the loop that advances it.

    Attributes
    ----------
    nets
        Networks, optimisers, weight average.
    index
        The samples trained on; ``data`` are its three splits.
    data
        Training, validation and test datasets.
    config
        The run's configuration.
    record
        Its training record (:func:`~cloudfill.training.record.training_record`), saved in
        checkpoints and model cards.
    out
        Output folder, or None to keep everything in memory.
    device
        Where the networks run.
    counters, selection
        Progress and the best model so far; both are saved in and restored from checkpoints.
    """

    nets: Networks
    index: PatchIndex
    data: Splits
    config: TrainConfig
    record: dict[str, Any]
    out: Path | None
    device: torch.device
    counters: Counters = field(default_factory=Counters)
    selection: Selection = field(default_factory=Selection)

    @property
    def steps_per_epoch(self) -> int:
        """Optimiser steps in a complete epoch."""
        return math.ceil(len(self.data.train) / self.config.optim.batch_size)

    @functools.cached_property
    def change_threshold(self) -> torch.Tensor | None:
        """The change-pixel threshold per S2 band in normalised units (None for a variant
        without a reference: it has nothing to tell change by)."""
        if not get_variant(self.config.variant).uses_reference:
            return None
        # In the targets' band order (BANDS), which the statistics' order need not be.
        scales = band_affine(self.index.stats)[1].flatten()
        return (self.config.optim.change_threshold / scales).to(self.device)

    # --- persistence -----------------------------------------------------------------
    def restore(self, tensors: dict[str, torch.Tensor], document: dict[str, Any]) -> None:
        """Continue from a state read by :func:`~cloudfill.training.state.read_state`."""
        if document["split"] != self.index.split_record():
            raise ParameterError(
                "cannot resume: the cube's samples or split differ from the saved run's "
                "(was the cube changed?)"
            )
        load_networks(self.nets, tensors, document["optim"])
        self.counters = Counters(
            epoch=document["epoch"],
            step_in_epoch=document["step_in_epoch"],
            global_step=document["global_step"],
            history=document["history"],
            running=document["running"],
            running_count=document["running_count"],
            seconds=document["seconds"],
        )
        self.selection = Selection(best=document["best"], bad_epochs=document["bad_epochs"])
        if self.out is not None and (self.out / BEST_NAME).exists():
            best = load_model(self.out / BEST_NAME)
            self.selection.state = {k: v.clone() for k, v in best.generator.state_dict().items()}

    def checkpoint(self) -> None:
        """Write the complete state to ``out/last/`` and the history to ``metrics.csv``."""
        if self.out is None:
            return
        tensors, optim = network_tensors(self.nets)
        c = self.counters
        document = {
            "config": self.record,
            "epoch": c.epoch,
            "step_in_epoch": c.step_in_epoch,
            "global_step": c.global_step,
            "history": c.history,
            "best": self.selection.best,
            "bad_epochs": self.selection.bad_epochs,
            "running": c.running,
            "running_count": c.running_count,
            "seconds": c.seconds,
            "stop_reason": c.stop_reason,
            "stats": self.index.stats.to_dict(),
            "split": self.index.split_record(),
            "optim": optim,
        }
        write_state(self.out / LAST_NAME, tensors, document)
        write_history(self.out / METRICS_NAME, c.history)

    def card(self, metrics: dict[str, Any]) -> ModelCard:
        """The model card of the scored generator as it stands, with ``metrics``."""
        c = self.counters
        training = {
            **self.record,
            "steps": c.global_step,
            "epochs_run": c.epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "stop_reason": c.stop_reason,
            "seconds": round(c.seconds, 1),
            "reader": self.index.config.get("reader"),
            "patch_cache": getattr(self.data.train, "key", None),
            "precision": self.config.runtime.precision,
        }
        best = self.selection.best
        if best is not None:
            training.update(best_epoch=best["epoch"], best_step=best["step"])
        return ModelCard.from_generator(
            self.nets.generator,
            reference_mode=self.record["reference_mode"],
            normalisation=self.index.stats.to_dict(),
            patch_size=self.index.size,
            training=training,
            split=self.index.split_record(),
            metrics=metrics,
        )

    # --- steps -----------------------------------------------------------------------
    def _batches(self) -> Iterable[Sequence[torch.Tensor]]:
        """The rest of the current epoch's batches: from the patch cache (on the device,
        augmented there) or through a DataLoader; the same batches either way."""
        seed, batch_size = self.config.seed, self.config.optim.batch_size
        sampler = ChunkSampler(self.data.train.groups, seed=seed)
        sampler.set_epoch(self.counters.epoch, self.counters.step_in_epoch * batch_size)
        self.data.train.set_epoch(self.counters.epoch)
        if isinstance(self.data.train, CachedPatches):
            return self.data.train.batches(sampler, batch_size, self.device)
        workers = int(self.config.runtime.num_workers)
        return torch.utils.data.DataLoader(
            self.data.train,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            multiprocessing_context="forkserver" if workers > 0 else None,
            pin_memory=self.device.type == "cuda",
            # Its own generator: creating an iterator must not draw from the global RNG.
            generator=torch.Generator().manual_seed(seed + self.counters.epoch),
        )

    def _step(self, batch: Sequence[torch.Tensor]) -> dict[str, float]:
        batch = [x.to(self.device, non_blocking=True) for x in batch]
        losses = self.nets.step(batch, self.config, self.change_threshold)
        c = self.counters
        for key, value in losses.items():
            c.running[key] += value
        c.running_count += 1
        c.global_step += 1
        c.step_in_epoch += 1
        return losses

    def _score(
        self, model: torch.nn.Module, data: PatchDataset | CachedPatches, full: bool = False
    ) -> dict[str, float]:
        """:func:`evaluate_patches` with the run's batch size, device and change pixels."""
        return evaluate_patches(
            model,
            data,
            batch_size=self.config.runtime.eval_batch_size,
            device=self.device,
            full=full,
            change_threshold=self.change_threshold,
            change_weight=float(self.config.optim.change_weight),
        )

    def _validate(self, partial: bool) -> dict[str, Any]:
        scores = self._score(self.nets.scored, self.data.val)
        c = self.counters
        count = max(1, c.running_count)
        return {
            "epoch": c.epoch,
            "step": c.global_step,
            "partial": partial,
            **{k: (v / count if c.running_count else None) for k, v in c.running.items()},
            "val_mae": none_if_nan(scores["mae"]),
            "val_rmse": none_if_nan(scores["rmse"]),
            "val_l1": none_if_nan(scores["l1"]),
            "val_change_mae": none_if_nan(scores.get("change_mae")),
            "val_weighted_mae": none_if_nan(scores.get("weighted_mae")),
            "seconds": round(c.seconds, 2),
            "best": False,
        }

    def _consider(self, row: dict[str, Any]) -> bool:
        """Keep the scored generator if ``row`` is its best validation (and save it)."""
        # A change-weighted run is selected by what it trains for: the plain MAE would
        # keep its starting point, since weighting trades unchanged pixels for changed ones.
        key = "val_weighted_mae" if self.config.optim.change_weight != 1 else "val_mae"
        improved = self.selection.consider(row, self.nets.scored, key)
        if improved and self.out is not None:
            metrics = self.selection.metrics()
            save_model(self.nets.scored, self.card(metrics), self.out / BEST_NAME)
        return improved

    def fit(self, progress: bool) -> None:
        """Train until the schedule's epochs, step budget or patience run out."""
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        if not self.counters.history:
            # Step-0 scores: the yardstick, and a candidate: with the reference skip an
            # untrained SO/SOD generator is persistence, which training must beat to be kept.
            row = self._validate(partial=True)
            self._consider(row)
            self.counters.history.append(row)
        schedule = self.config.schedule
        total = self.steps_per_epoch * schedule.epochs
        if schedule.max_steps is not None:
            total = min(total, schedule.max_steps)
        bar = _progress_bar(progress)
        writer = _tensorboard(self.out)
        task = None
        if bar is not None:
            bar.start()
            task = bar.add_task(
                "training", total=total, completed=self.counters.global_step, losses=""
            )
        try:
            self._epochs(bar, task, writer)
        finally:
            if bar is not None:
                bar.stop()
            if writer is not None:
                writer.close()

    def _log(
        self, losses: dict[str, float], bar: Progress | None, task: TaskID | None, writer: Any
    ) -> None:
        c = self.counters
        if c.global_step % self.config.runtime.log_every == 0 or c.step_in_epoch == 1:
            text = "  ".join(f"{k[5:]}={v:.3f}" for k, v in losses.items())
            if bar is not None:
                desc = f"epoch {c.epoch + 1}/{self.config.schedule.epochs}"
                bar.update(task, completed=c.global_step, description=desc, losses=text)
            if writer is not None:
                for key, value in losses.items():
                    writer.add_scalar(f"train/{key}", value, c.global_step)
        elif bar is not None:
            bar.update(task, completed=c.global_step)

    def _epochs(self, bar: Progress | None, task: TaskID | None, writer: Any) -> None:
        c, schedule = self.counters, self.config.schedule
        c.stop_reason = None
        while c.epoch < schedule.epochs:
            if schedule.max_steps is not None and c.global_step >= schedule.max_steps:
                c.stop_reason = "max_steps"
                break
            self.nets.train()
            started = time.perf_counter()
            hit_limit = False
            for batch in self._batches():
                self._log(self._step(batch), bar, task, writer)
                if schedule.max_steps is not None and c.global_step >= schedule.max_steps:
                    hit_limit = True
                    break
            c.seconds += time.perf_counter() - started
            complete = c.step_in_epoch >= self.steps_per_epoch
            row = self._validate(partial=not complete)
            improved = self._consider(row)
            c.history.append(row)
            if writer is not None and row["val_mae"] is not None:
                writer.add_scalar("val/mae", row["val_mae"], c.global_step)
            if complete:
                self.selection.end_epoch(improved)
                c.epoch += 1
                c.step_in_epoch = 0
                c.running = dict.fromkeys(c.running, 0.0)
                c.running_count = 0
            if hit_limit:
                c.stop_reason = "max_steps"
            elif self.selection.exhausted(schedule.patience) and len(self.data.val):
                c.stop_reason = "early_stopping"
            self.checkpoint()
            if c.stop_reason is not None:
                break
        if c.stop_reason is None:
            c.stop_reason = "epochs"

    def finish(self) -> CloudfillModel:
        """The best generator, scored on the test split, with its card (saved in ``out``)."""
        # The best weights go into the returned model only; out/last keeps the latest state.
        model = self.nets.scored
        if self.selection.state is not None:
            model.load_state_dict(self.selection.state)
        model.eval()
        metrics = self.selection.metrics()
        if len(self.data.test):
            scores = self._score(model, self.data.test, full=True)
            metrics.update({f"test_{k}": none_if_nan(v) for k, v in scores.items()})
        card = self.card(metrics)
        if self.out is not None:
            save_model(model, card, self.out / BEST_NAME)
        return CloudfillModel(model, card, device=self.device)
