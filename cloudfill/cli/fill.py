"""The main job: ``fill-series`` (the CLI face of :func:`cloudfill.fill.job.fill_to_zarr`)."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudfill._dates import as_dates
from cloudfill._outputs import check_output
from cloudfill.cli._common import (
    CLUSTER_HELP,
    THREADS_HELP,
    WORKERS_HELP,
    LazyModule,
    RichFillProgress,
    console,
    fill_summary,
    parse_dates,
)
from cloudfill.cli.cogs import check_cog_dir, write_cogs
from cloudfill.core.pairs import PairingRule
from cloudfill.cube.zarr_io import open_cube
from cloudfill.fill.adjust import AUTO, DEFAULT_ADJUST, check_sigma
from cloudfill.fill.blend import DEFAULT_FEATHER
from cloudfill.infer.settings import InferenceSettings

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
job = LazyModule("cloudfill.fill.job")


def _adjust(text: str) -> float | str:
    """``--adjust``: 'auto' or a sigma in pixels, checked here (typer then names the option,
    '--adjust', not the library's keyword)."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        sigma = float(text)
        check_sigma(sigma)
    except ValueError:  # ParameterError is one
        raise typer.BadParameter(
            f"expected 'auto' or a finite sigma >= 0 pixels, got {text!r}"
        ) from None
    return sigma


def fill_series_command(
    cube: Path = typer.Argument(..., help="Input cube (zarr store); never written to."),
    out: Path = typer.Option(..., "--out", "-o", help="Output zarr store."),
    model: Path | None = typer.Option(None, help="Model checkpoint (default: shipped model)."),
    dates: list[str] | None = typer.Option(
        None, metavar="DATES", help="S2 dates to fill (repeat or comma-separate; default: all)."
    ),
    cloud_threshold: float = typer.Option(
        0.0, help="Dates with at most this cloud fraction are interpolated, not synthesized."
    ),
    feather: int = typer.Option(
        DEFAULT_FEATHER, help="Width in pixels of the blend band at mask edges."
    ),
    adjust: str = typer.Option(
        str(DEFAULT_ADJUST),
        metavar="auto|SIGMA",
        callback=lambda text: _adjust(text),
        help="The same-date adjustment: each date's fill is corrected by the smoothed "
        "residual of that date's clear pixels (sun angle, snow line). 'auto': per date, a "
        "sigma or none, whichever predicts held-out clear pixels best (recorded in "
        "adjust_sigma); a number: that sigma in pixels for every date; 0: off. A model that "
        "reads the date's clear pixels itself (SODCTX and later; SODCTXH is the default) is not "
        "adjusted on the dates it synthesizes.",
    ),
    max_s1_gap: float = typer.Option(6, help="Largest S1-target gap in days."),
    max_ref_age: float = typer.Option(120, help="Oldest usable reference, days."),
    max_ref_cloud: float = typer.Option(0.05, help="Largest cloud fraction of a reference."),
    chain: bool = typer.Option(
        False,
        "--chain/--no-chain",
        help="Let synthesized dates serve as references for later dates (flagged in "
        "reference_chained), so a cloudy spell longer than --max-ref-age is synthesized "
        "rather than interpolated.",
    ),
    tile: int | None = typer.Option(None, help="Tile size in pixels (default from the model)."),
    device: str = typer.Option("cpu", help="Torch device: cpu, cuda, auto."),
    fast: bool = typer.Option(False, help="bf16 autocast + channels_last (GPU)."),
    cluster: str = typer.Option("none", help=CLUSTER_HELP),
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP),
    threads: int | None = typer.Option(None, min=1, help=THREADS_HELP),
    window: int = typer.Option(
        2048,
        min=0,
        help="Compute each date in windows of at least this many pixels a side (whole "
        "blocks), so memory does not grow with the scene; the output is the same. 0: whole "
        "dates.",
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Keep dates already written by the same job."
    ),
    overwrite: bool = typer.Option(
        False,
        help="Replace an output made by a different job (and, with --cog-dir, files of the "
        "COGs' names that cloudfill did not write).",
    ),
    cog_dir: Path | None = typer.Option(
        None,
        help="Also write each filled date as a Cloud-Optimised GeoTIFF here "
        "(s2_filled_YYYY-MM-DD.tif, or by full time where two dates share a day; bands B02 "
        "... B08). A rerun on the same cube replaces its own COGs; a file of the same name "
        "that cloudfill did not write from this cube is refused unless --overwrite. Ownership "
        "is by cube: two runs of one cube with other models replace each other's COGs.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Fill the cloudy pixels of every S2 date of a cube and write the result date by date.

    Each date is written with a zarr region write and recorded atomically, so a killed run
    resumes where it stopped (--resume, the default) and ends identical to an uninterrupted
    run. The output holds s2 (filled), filled (pixel replaced), confidence, error_scale
    (the Laplace scale of each filled value's error) and per date: method, reason,
    s1_date, reference_date, reference_chained, cloud_fraction, adjust_sigma and unfilled
    (pixels left NaN). Dates without S1 within --max-s1-gap fall back to temporal
    interpolation; pixels with nothing usable stay NaN and are counted.
    """
    settings = job.FillSettings(
        cloud_threshold=cloud_threshold,
        feather=feather,
        adjust=adjust,
        chain=chain,
        rule=PairingRule(max_s1_gap, max_ref_age, max_ref_cloud),
        inference=InferenceSettings(tile=tile, device=device, fast=fast),
        window=window or None,
    )
    if cog_dir is not None:  # checked before the fill, not after it
        check_output(cog_dir, [cube, *([model] if model else [])], exists_ok=True)
        wanted = parse_dates(dates)
        axis = open_cube(cube).indexes["time"]
        # The dates the job fills, as it reads --dates (each once).
        times = axis if wanted is None else as_dates(wanted).unique()
        check_cog_dir(cog_dir, out, cube, times, axis, overwrite=overwrite)
    result = job.fill_to_zarr(
        cube,
        out,
        model,
        settings,
        dates=parse_dates(dates),
        cluster=cluster,
        workers=workers,
        threads=threads,
        resume=resume,
        overwrite=overwrite,
        progress=RichFillProgress(progress),
    )
    if cog_dir is not None:
        written = write_cogs(result, cog_dir, cube, axis)
        console.print(f"wrote {written} COGs to {cog_dir}")
    console.print(fill_summary(result))
