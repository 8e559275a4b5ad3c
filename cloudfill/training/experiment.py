"""The paper's ablation: 8 generators (S, SD, SO, SOD x attention off/on), one table.

Every model is trained with the same settings on the same samples: one
:class:`~cloudfill.training.index.PatchIndex` is built for the strictest variant requested
(targets that have a reference date when SO/SOD are in the run), so all eight see the same
target dates, patches, split and normalisation statistics, and are scored on the same test
patches. Results (MAE, RMSE, PSNR with MAX = 1, SSIM, SAM on reflectance 0..1 over valid test
pixels) go to ``out/results.csv`` and ``out/results.md`` after each model, so an interrupted
run keeps what it finished; rerunning skips finished models and resumes the unfinished one.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.core.variants import get_variant
from cloudfill.cube.zarr_io import open_cube
from cloudfill.errors import ParameterError
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import read_card
from cloudfill.training.config import NetworkSettings, Schedule, TrainConfig
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.run import train

__all__ = [
    "PAPER_ORDER",
    "SMALL",
    "cpu_name",
    "experiment_config",
    "model_name",
    "results_markdown",
    "run_experiment",
]

SMALL = TrainConfig(
    network=NetworkSettings(base_filters=16, n_blocks=3, d_filters=16),
    schedule=Schedule(epochs=6, max_steps=360, patience=3),
    patches=PatchSettings(size=128),
)
"""The ``--epochs small`` preset: a CPU-sized run (8 models in about half an hour on two
cores for a 1024 x 1024, 6-date cube): 6 epochs of at most 360 steps, patience 3, 128 px
patches, a 16-filter generator of 3 blocks and a 16-filter discriminator.
:func:`experiment_config` overrides it."""

PAPER_ORDER: tuple[str, ...] = ("S", "SD", "SO", "SOD")
"""Variants in the order of the paper's tables."""

_COLUMNS = (
    "model",
    "variant",
    "attention",
    "MAE",
    "RMSE",
    "PSNR",
    "SSIM",
    "SAM",
    "val_MAE",
    "steps",
    "epochs",
    "best_step",
    "stop",
    "seconds",
    "test_samples",
)


def model_name(variant: str, attention: bool) -> str:
    """The paper's model name, e.g. ``A_cGAN_SOD``.

    Examples
    --------
    >>> model_name("SOD", True), model_name("S", False)
    ('A_cGAN_SOD', 'cGAN_S')
    """
    return f"{'A_' if attention else ''}cGAN_{get_variant(variant).name}"


def experiment_config(
    epochs: int | str = "small",
    *,
    patch_size: int | None = None,
    max_steps: int | None = None,
    base_filters: int | None = None,
    n_blocks: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> TrainConfig:
    """The configuration of an experiment: a preset with the given settings over it.

    Parameters
    ----------
    epochs
        ``"small"`` (the :data:`SMALL` preset for CPUs) or a number of epochs (the paper's
        settings otherwise).
    patch_size, max_steps, base_filters, n_blocks
        Override the preset where given.
    seed, device
        Seed and device of every model.

    Examples
    --------
    >>> config = experiment_config("small", max_steps=10)
    >>> config.schedule.epochs, config.schedule.max_steps, config.patches.size
    (6, 10, 128)
    >>> experiment_config("8").schedule.epochs, experiment_config(8).patches.size
    (8, 256)
    """
    if isinstance(epochs, str) and epochs.strip().lower() == "small":
        base = SMALL
    else:
        try:
            count = int(epochs)
        except ValueError:
            raise ParameterError(f"epochs must be 'small' or a number, got {epochs!r}") from None
        if count < 1:
            raise ParameterError(f"epochs must be positive, got {count}")
        base = TrainConfig(schedule=Schedule(epochs=count))
    net, schedule = base.network, base.schedule
    return dataclasses.replace(
        base,
        network=dataclasses.replace(
            net,
            base_filters=net.base_filters if base_filters is None else base_filters,
            n_blocks=net.n_blocks if n_blocks is None else n_blocks,
        ),
        schedule=dataclasses.replace(
            schedule, max_steps=schedule.max_steps if max_steps is None else max_steps
        ),
        patches=dataclasses.replace(
            base.patches, size=base.patches.size if patch_size is None else patch_size
        ),
        seed=seed,
        runtime=dataclasses.replace(base.runtime, device=device),
    )


def _row(name: str, variant: str, attention: bool, card: ModelCard) -> dict[str, Any]:
    m, t = card.metrics, card.training
    return {
        "model": name,
        "variant": variant,
        "attention": attention,
        "MAE": m.get("test_mae"),
        "RMSE": m.get("test_rmse"),
        "PSNR": m.get("test_psnr"),
        "SSIM": m.get("test_ssim"),
        "SAM": m.get("test_sam"),
        "val_MAE": m.get("val_mae"),
        "steps": t.get("steps"),
        "epochs": t.get("epochs_run"),
        "best_step": t.get("best_step"),
        "stop": t.get("stop_reason"),
        "seconds": t.get("seconds"),
        "test_samples": m.get("test_samples"),
    }


def cpu_name() -> str:
    """The CPU model name (from ``/proc/cpuinfo`` on Linux), for result headers.

    Examples
    --------
    >>> isinstance(cpu_name(), str)
    True
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fmt(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}"


def results_markdown(table: pd.DataFrame, header: dict[str, Any]) -> str:
    """The results table in markdown, with the run's settings above it.

    Examples
    --------
    >>> text = results_markdown(pd.DataFrame(columns=_COLUMNS), {"cube": "x.zarr"})
    >>> text.splitlines()[0]
    '# cloudfill experiment'
    """
    lines = ["# cloudfill experiment", ""]
    lines += [f"- {key}: {value}" for key, value in header.items()]
    lines += [
        "",
        "Test split (spatial blocks never seen in training), valid pixels only, reflectance "
        "0..1; PSNR with MAX = 1; SAM in degrees.",
        "",
        "| model | MAE | RMSE | PSNR | SSIM | SAM | val MAE | steps | best step | stop | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.itertuples(index=False):
        lines.append(
            f"| {row.model} | {_fmt(row.MAE, 4)} | {_fmt(row.RMSE, 4)} | {_fmt(row.PSNR, 2)} | "
            f"{_fmt(row.SSIM, 3)} | {_fmt(row.SAM, 2)} | {_fmt(row.val_MAE, 4)} | {row.steps} | "
            f"{row.best_step} | {row.stop} | {_fmt(row.seconds, 0)} |"
        )
    return "\n".join(lines) + "\n"


def _finished(path: Path) -> ModelCard | None:
    """The card of a finished model (its test metrics are written last), or None."""
    if not path.exists():
        return None
    card = read_card(path)
    return card if "test_mae" in card.metrics else None


def _settings_line(config: TrainConfig) -> str:
    net, optim, schedule, patches = config.network, config.optim, config.schedule, config.patches
    settings = {
        "epochs": schedule.epochs,
        "patch_size": patches.size,
        "base_filters": net.base_filters,
        "n_blocks": net.n_blocks,
        "d_filters": net.d_filters,
        "max_steps": schedule.max_steps,
        "patience": schedule.patience,
        "batch_size": optim.batch_size,
        "overlap": patches.overlap,
        "seed": config.seed,
    }
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _header(source: Any, ds: xr.Dataset, index: PatchIndex, config: TrainConfig) -> dict[str, Any]:
    """What the results file says about the run above its table."""
    return {
        "cube": str(source)
        if not isinstance(source, xr.Dataset)
        else source.encoding.get("source", "in-memory Dataset"),
        "scene": f"{index.reader.shape[0]} x {index.reader.shape[1]} px, "
        f"{int(ds.sizes['time'])} S2 dates",
        "target dates": ", ".join(index.split_record()["dates"]),
        "samples (train/val/test)": "/".join(str(v) for v in index.counts().values()),
        "settings": _settings_line(config),
        "block split": f"{index.grid.block_size} px blocks, {index.grid.n_blocks[0]} x "
        f"{index.grid.n_blocks[1]}",
        "machine": f"{cpu_name()}, {os.cpu_count()} cores visible, device {config.runtime.device}",
        "started": datetime.now(UTC).replace(microsecond=0).isoformat(),
    }


def run_experiment(
    ds: xr.Dataset | str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: TrainConfig = SMALL,
    *,
    variants: Sequence[str] = PAPER_ORDER,
    attention: Sequence[bool] = (False, True),
    resume: bool = True,
    progress: bool = True,
) -> pd.DataFrame:
    """Train the paper's 8 models with the same settings and tabulate their test scores.

    Parameters
    ----------
    ds
        A contract cube or the path of a zarr store.
    out
        Output folder: one sub-folder per model (``cGAN_S``, ..., ``A_cGAN_SOD``) holding its
        :func:`~cloudfill.training.run.train` outputs, plus ``results.csv`` and
        ``results.md``.
    config
        The settings every model is trained with (default the :data:`SMALL` preset for CPUs;
        :func:`experiment_config` builds one from a preset); its variant and attention are
        replaced by each model's.
    variants, attention
        Which models to train (default all 8).
    resume
        Skip models already finished in ``out`` and resume an interrupted one.
    progress
        Show progress bars.

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model``, ``variant``, ``attention``, ``MAE``, ``RMSE``,
        ``PSNR``, ``SSIM``, ``SAM``, ``val_MAE``, ``steps``, ``epochs``, ``best_step``,
        ``stop``, ``seconds``, ``test_samples``.

    Examples
    --------
    >>> import cloudfill, tempfile
    >>> ds = cloudfill.simulate_scene((96, 96), seed=1)
    >>> config = TrainConfig(
    ...     network=NetworkSettings(base_filters=4, n_blocks=1, d_filters=4),
    ...     schedule=Schedule(epochs=1, max_steps=1),
    ...     patches=PatchSettings(32, overlap=0, block_size=32),
    ... )
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     table = run_experiment(ds, tmp, config, variants=["S"], attention=[False],
    ...                            progress=False)
    >>> list(table["model"])
    ['cGAN_S']
    """
    specs = [get_variant(v) for v in variants]
    if not specs or not attention:
        raise ParameterError("run_experiment needs at least one variant and one attention setting")
    source = ds
    if not isinstance(ds, xr.Dataset):
        ds = open_cube(ds)
    # One index for all models: built for the strictest inputs requested, so every model
    # sees the same targets, patches, split and statistics.
    rule = "S" + ("O" if any(s.uses_reference for s in specs) else "")
    rule += "D" if any(s.uses_dem for s in specs) else ""
    index = build_index(
        ds,
        rule,
        config.patches,
        rule=config.pairing,
        reference=config.reference,
        despeckle=config.despeckle,
        dates=config.dates,
        seed=config.seed,
    )
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    header = _header(source, ds, index, config)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for with_attention in attention:
        for spec in specs:
            name = model_name(spec.name, bool(with_attention))
            folder = out_dir / name
            card = _finished(folder / "best.safetensors") if resume else None
            if card is None:
                model_config = dataclasses.replace(
                    config,
                    variant=spec.name,
                    network=dataclasses.replace(config.network, attention=bool(with_attention)),
                )
                resumable = resume and (folder / "last").exists()
                model = train(
                    ds, model_config, folder, resume=resumable, progress=progress, index=index
                )
                card = model.card
            rows.append(_row(name, spec.name, bool(with_attention), card))
            table = pd.DataFrame(rows, columns=list(_COLUMNS))
            header["elapsed"] = f"{time.perf_counter() - started:.0f} s"
            table.to_csv(out_dir / "results.csv", index=False)
            (out_dir / "results.md").write_text(results_markdown(table, header))
    return pd.DataFrame(rows, columns=list(_COLUMNS))
