"""Training verbs: ``train`` (one model) and ``experiment`` (the paper's 8-model ablation)."""

from __future__ import annotations

from pathlib import Path

import typer
import xarray as xr

from cloudfill._outputs import check_output, nested
from cloudfill.cli._common import LazyModule, console
from cloudfill.cube.zarr_io import open_cube
from cloudfill.errors import OutputError, ParameterError, SourceError
from cloudfill.training.config import (
    PATCH_CACHE_KEYWORDS,
    NetworkSettings,
    OptimSettings,
    RuntimeSettings,
    Schedule,
    TrainConfig,
)
from cloudfill.training.index import PatchSettings

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
torch = LazyModule("torch")
experiment = LazyModule("cloudfill.training.experiment")
run = LazyModule("cloudfill.training.run")
loop = LazyModule("cloudfill.training.loop")
cache = LazyModule("cloudfill.training.cache")


def _open(cube: Path) -> xr.Dataset:
    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    return open_cube(cube)


def _threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise ParameterError(f"--threads must be positive, got {threads}")
        torch.set_num_threads(threads)


def _training_run(folder: Path) -> bool:
    """Whether ``folder`` holds a training run's resumable state (as ``run.train`` sees it),
    or the patch cache of one stopped before its first checkpoint (a ``patch-cache/`` that
    holds this cache's manifests, not any folder of that name)."""
    last = loop.LAST_NAME
    started = cache.is_patch_cache(folder / cache.CACHE_NAME)
    return started or (folder / last).exists() or any(folder.glob(f".{last}.old-*"))


def _experiment(folder: Path) -> bool:
    """Whether ``folder`` holds an experiment: its results, or a model's training run."""
    if (folder / "results.csv").is_file() and (folder / "results.md").is_file():
        return True
    return any(_training_run(child) for child in folder.iterdir() if child.is_dir())


def _score(value: object, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


# The generator settings a warm start (--init) takes from its model unless given.
_ARCHITECTURE = (
    "variant",
    "attention",
    "base_filters",
    "n_blocks",
    "confidence",
    "reference_skip",
    "pixel_features",
    "reference",
    "despeckle",
)


def _init_model(init: str) -> object:
    """The model a warm start begins from: "default" (the shipped model) or a checkpoint."""
    from cloudfill.model.default import default_model
    from cloudfill.model.runtime import load_model

    return default_model() if init == "default" else load_model(init)


def _architecture(ctx: typer.Context, model: object, given: dict[str, object]) -> dict[str, object]:
    """The generator settings: those given on the command line, the rest the model's."""
    card = model.card  # type: ignore[attr-defined]
    theirs = {
        **card.generator_kwargs(),
        "reference": card.reference_mode,
        # The model's statistics were computed on S1 despeckled this way (0: none).
        "despeckle": card.training.get("despeckle") or 0,
    }
    # By name: typer may bring its own copy of click's ParameterSource.
    return {
        key: theirs[key] if _source(ctx, key) == "DEFAULT" else given[key] for key in _ARCHITECTURE
    }


def _source(ctx: typer.Context, name: str) -> str:
    source = ctx.get_parameter_source(name)
    return "DEFAULT" if source is None else str(source.name)


def train_command(
    ctx: typer.Context,
    cube: Path = typer.Argument(..., help="Training cube (zarr store), read patch by patch."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder for checkpoints and logs."),
    variant: str = typer.Option(
        "SOD",
        "--variant",
        help="Inputs: S, SD, SO, SOD, SODC (SOD plus each side's nearest clear value, "
        "its S1 and age, so the network sees change), SODCT (SODC plus the target's time "
        "of year), SODCTX (SODCT plus the target date's own clear pixels), SODCTXH "
        "(SODCTX plus those pixels by 100 m elevation band over the whole date: the snow "
        "line) or SODCTXHI (SODCTXH plus the sunlight on each slope at the date, from the "
        "DEM and the grid's latitude); SODC and later need --reference blend.",
    ),
    attention: bool = typer.Option(
        True, "--attention/--no-attention", help="Attention (CBAM) in the residual blocks."
    ),
    epochs: int = typer.Option(50, help="Epochs (paper: 50)."),
    batch_size: int = typer.Option(2, help="Patches per step (paper: 2)."),
    lr: float = typer.Option(2e-4, help="Adam learning rate (paper: 2e-4)."),
    patch_size: int = typer.Option(
        256, help="Patch side in pixels, a multiple of 4, at least 24 (paper: 256)."
    ),
    overlap: int = typer.Option(25, help="Minimum overlap of neighbouring patches (paper: 25)."),
    patience: int = typer.Option(20, help="Early-stopping patience in epochs (paper: 20)."),
    max_steps: int | None = typer.Option(None, help="Stop after this many steps in total."),
    confidence: bool = typer.Option(
        False, "--confidence", help="Add the per-pixel confidence head (Laplace NLL loss)."
    ),
    base_filters: int = typer.Option(64, help="Generator width (paper: 64)."),
    n_blocks: int = typer.Option(9, help="Residual blocks (paper: 9)."),
    reference_skip: bool | None = typer.Option(
        None,
        "--reference-skip/--no-reference-skip",
        help="SO/SOD: predict reference + learned change (default: on for SO/SOD).",
    ),
    reference: str = typer.Option(
        "date",
        help="SO/SOD reference image: 'date' (one clear earlier date, the paper's rule), "
        "'composite' (each pixel's nearest clear observation, earlier or later) or 'blend' "
        "(the nearest clear observations before and after, weighted by time and by how "
        "alike their S1 is to the target's).",
    ),
    ema: float | None = typer.Option(
        None,
        help="Keep an exponential moving average of the generator's weights with this decay "
        "(e.g. 0.999) and score, save and return it (default: the trained weights).",
    ),
    lambda_l1: float = typer.Option(
        100.0,
        help="Weight of the masked L1 term against the adversarial term (paper: 100). On a "
        "small real set, 1e4 (the GAN term nearly off) with --ema 0.99, --lr 1e-3 and a small "
        "network trained best (benchmarks/RESULTS.md, real S1 -> S2).",
    ),
    change_weight: float = typer.Option(
        1.0,
        help="Count 'change pixels' (target differs from the reference by more than 0.05 "
        "reflectance in some band) this many times in the L1 term (1: plain L1). They are a "
        "few per cent of the pixels but hold most of the reference's error. Needs a variant "
        "with a reference.",
    ),
    d_filters: int = typer.Option(64, help="Discriminator width (paper: 64)."),
    d_layers: int = typer.Option(3, help="Discriminator stride-2 layers (paper: 3)."),
    pixel_features: int = typer.Option(
        32, help="Width of the generator's per-pixel (1x1) path into its head (0: none)."
    ),
    block_size: int | None = typer.Option(
        None, help="Side in pixels of the blocks split into train/validation/test."
    ),
    val_fraction: float = typer.Option(
        0.1, help="Share of the blocks held out for validation (model selection)."
    ),
    test_fraction: float = typer.Option(0.1, help="Share of the blocks held out for testing."),
    despeckle: int = typer.Option(5, help="S1 median window (0 = none)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    seed: int = typer.Option(0, help="Seed of weights, split, order and augmentation."),
    workers: int = typer.Option(0, help="DataLoader worker processes."),
    threads: int | None = typer.Option(None, help="Torch CPU threads (default: torch's)."),
    patch_cache: str = typer.Option(
        "auto",
        help="Keep every sample's tensors once made and train from them: 'auto' (OUT/"
        "patch-cache on a CUDA device, none on the CPU), 'on' (OUT/patch-cache), 'off', or a "
        "folder shared between runs (reused by --resume and by runs with the same cube and "
        "sample settings, rebuilt when either changes).",
    ),
    precision: str = typer.Option(
        "fp32",
        help="Training arithmetic: fp32, or bf16 (bfloat16 autocast, for GPUs and CPUs with "
        "AMX; slower on CPUs without AMX: benchmarks/RESULTS.md).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    overwrite: bool = typer.Option(
        False,
        help="Train into an existing folder that is not empty and not a training run (its "
        "files named like the run's are replaced; nothing else is deleted).",
    ),
    init: str | None = typer.Option(
        None,
        "--init",
        help="Warm start: begin from this model's weights ('default': the shipped model; a "
        "checkpoint path, ./default for a file of that name) instead of random ones, e.g. to "
        "fine-tune it on your own cube. Its architecture, reference mode and despeckling "
        "are used unless given, and its normalisation statistics.",
    ),
) -> None:
    """Train a generator on a cube: pix2pix loss, early stopping, resumable checkpoints.

    Writes OUT/best.safetensors (the best model by validation MAE, by the weighted MAE
    with --change-weight, with its card),
    OUT/last/ (the resumable state) and OUT/metrics.csv (and OUT/patch-cache/ with the
    patch cache in the run's folder).

    Fine-tune the shipped model on your own cube (a lower learning rate keeps most of what
    it learned):

        cloudfill train cube.zarr --out run --init default --lr 1e-4 --batch-size 8
    """
    start = None if init is None else _init_model(init)
    arch = dict(
        variant=variant,
        attention=attention,
        base_filters=base_filters,
        n_blocks=n_blocks,
        confidence=confidence,
        reference_skip=reference_skip,
        pixel_features=pixel_features,
        reference=reference,
        despeckle=despeckle,
    )
    extra: dict[str, object] = {}
    if start is not None:
        arch = _architecture(ctx, start, arch)
        extra = {"norm": start.card.norm, "skip": start.card.skip}  # type: ignore[attr-defined]
    # Built first: bad settings (a typo in --variant too) fail before the cube is opened.
    config = TrainConfig(
        arch["variant"],
        network=NetworkSettings(
            attention=arch["attention"],
            base_filters=arch["base_filters"],
            n_blocks=arch["n_blocks"],
            confidence=arch["confidence"],
            reference_skip=arch["reference_skip"],
            pixel_features=arch["pixel_features"],
            d_filters=d_filters,
            d_layers=d_layers,
            **extra,
        ),
        optim=OptimSettings(
            batch_size=batch_size,
            lr=lr,
            ema=ema,
            lambda_l1=lambda_l1,
            change_weight=change_weight,
        ),
        schedule=Schedule(epochs=epochs, max_steps=max_steps, patience=patience),
        patches=PatchSettings(
            size=patch_size,
            overlap=overlap,
            block_size=block_size,
            fractions=(round(1.0 - val_fraction - test_fraction, 12), val_fraction, test_fraction),
        ),
        reference=arch["reference"],
        despeckle=arch["despeckle"] or None,
        seed=seed,
        runtime=RuntimeSettings(
            device=device, num_workers=workers, patch_cache=patch_cache, precision=precision
        ),
    )
    _threads(threads)
    patch_cache = str(config.runtime.patch_cache)  # its keywords in any case
    if patch_cache not in PATCH_CACHE_KEYWORDS and nested(patch_cache, cube):
        raise OutputError(
            f"--patch-cache {patch_cache} lies inside or around the cube {cube}: choose a folder "
            "outside it; inputs are never written"
        )
    # Never inside the cube; a run folder is resumed (run.train asks for --resume), any other
    # folder that is not empty only with --overwrite.
    check_output(out, [cube], overwrite=overwrite, ours=_training_run, kind="training run")
    ds = _open(cube)
    model = run.train(ds, config, out, resume=resume, progress=progress, init=start)
    m, t = model.card.metrics, model.card.training
    console.print(
        f"trained {model.card.variant} ({model.card.attention}): {t['steps']} steps, "
        f"stopped by {t['stop_reason']}; best at step {t.get('best_step')}"
    )
    console.print(
        f"validation MAE {_score(m.get('val_mae'))}; test MAE {_score(m.get('test_mae'))}, "
        f"RMSE {_score(m.get('test_rmse'))}, PSNR {_score(m.get('test_psnr'), 2)} dB, "
        f"SSIM {_score(m.get('test_ssim'), 3)}"
    )
    console.print(f"model: {out / 'best.safetensors'}")


def experiment_command(
    cube: Path = typer.Argument(..., help="Training cube (zarr store)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (one sub-folder a model)."),
    epochs: str = typer.Option(
        "small", help="'small' (CPU preset: short run, small networks) or a number of epochs."
    ),
    patch_size: int | None = typer.Option(None, help="Patch side (default: preset / 256)."),
    max_steps: int | None = typer.Option(None, help="Steps per model (default: preset / none)."),
    base_filters: int | None = typer.Option(None, help="Generator width (default: preset / 64)."),
    n_blocks: int | None = typer.Option(None, help="Residual blocks (default: preset / 9)."),
    device: str = typer.Option("cpu", help="cpu, cuda, cuda:N or auto."),
    seed: int = typer.Option(0, help="Seed shared by all models."),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Skip finished models, resume an interrupted one."
    ),
    threads: int | None = typer.Option(None, help="Torch CPU threads (default: torch's)."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
    overwrite: bool = typer.Option(
        False,
        help="Write into an existing folder that is not empty and not an experiment (its "
        "files named like the experiment's are replaced; nothing else is deleted).",
    ),
) -> None:
    """Train the paper's 8 models (S, SD, SO, SOD x attention off/on) with the same settings.

    Writes OUT/results.md (a markdown table of MAE, RMSE, PSNR, SSIM, SAM on the test split,
    like the paper's tables 3-5), OUT/results.csv and one model folder per model.
    """
    # Built first: a bad --epochs fails before the cube is opened.
    config = experiment.experiment_config(
        epochs,
        patch_size=patch_size,
        max_steps=max_steps,
        base_filters=base_filters,
        n_blocks=n_blocks,
        seed=seed,
        device=device,
    )
    _threads(threads)
    check_output(out, [cube], overwrite=overwrite, ours=_experiment, kind="experiment")
    ds = _open(cube)
    table = experiment.run_experiment(ds, out, config, resume=resume, progress=progress)
    console.print(experiment.results_markdown(table, {"cube": str(cube)}))
    console.print(f"results: {out / 'results.md'}")
