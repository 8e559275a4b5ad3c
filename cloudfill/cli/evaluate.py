"""``cloudfill evaluate``: metrics against the baselines and the HTML report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from cloudfill._outputs import check_output, is_report
from cloudfill.cli._common import (
    CLUSTER_HELP,
    LazyModule,
    RichFillProgress,
    console,
    parse_dates,
)
from cloudfill.cube.zarr_io import open_cube
from cloudfill.errors import ParameterError, SourceError
from cloudfill.infer.settings import InferenceSettings

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
clusters = LazyModule("cloudfill.cluster")
report_module = LazyModule("cloudfill.evaluation.report")


def summary_table(table: pd.DataFrame) -> Table:
    """Mean metrics over dates per region and method, as a rich table."""
    metrics = ["mae", "rmse", "psnr", "ssim", "sam"]
    mean = table.groupby(["region", "method"], sort=False)[metrics].mean()
    pixels = table.groupby(["region", "method"], sort=False)["n_pixels"].sum()
    dates = table["date"].nunique()
    out = Table(title=f"mean over {dates} date{'s' if dates != 1 else ''}")
    for name in ("region", "method"):
        out.add_column(name)
    for name in (*metrics, "n_pixels"):
        out.add_column(name, justify="right")
    formats = {"mae": ".4f", "rmse": ".4f", "psnr": ".2f", "ssim": ".3f", "sam": ".2f"}
    for (region, method), row in mean.iterrows():
        out.add_row(
            str(region),
            str(method),
            *(format(row[m], formats[m]) for m in metrics),
            str(int(pixels.loc[(region, method)])),
        )
    return out


def evaluate(
    cube: Path = typer.Argument(..., help="Input cube (zarr store)."),
    model: Path | None = typer.Option(None, help="Model checkpoint (default: shipped model)."),
    out: Path = typer.Option(Path("report"), "--out", "-o", help="Report folder to write."),
    dates: list[str] | None = typer.Option(
        None,
        "--dates",
        metavar="DATES",
        help="S2 dates to evaluate (repeat or comma-separate); default: auto.",
    ),
    split: str = typer.Option(
        "test", help="test: only the model card's test blocks (if recorded); all: every pixel."
    ),
    landcover: bool = typer.Option(
        True, "--landcover/--no-landcover", help="Run the land-cover check (needs lulc)."
    ),
    baselines: str = typer.Option(
        "persistence,interpolation,regression", help="Comma-separated baselines (or 'none')."
    ),
    device: str = typer.Option("cpu", help="Torch device: cpu, cuda, auto."),
    max_side: int = typer.Option(512, help="Largest quicklook side in pixels."),
    cluster: str = typer.Option("none", help=CLUSTER_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
    overwrite: bool = typer.Option(
        False,
        help="Write into an existing folder that is not empty and not a previous report "
        "(its files named like the report's are replaced; nothing else is deleted).",
    ),
) -> None:
    """Score the model against persistence, interpolation and regression baselines on the same
    pixels, run the land-cover check, and write OUT/index.html with OUT/metrics.csv.

    The truth is the cube's `truth` variable when it has one (a simulated cube); otherwise
    clear dates are hidden and their clear pixels are the truth.
    """
    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    if split not in ("test", "all"):
        raise ParameterError(f"--split must be test or all, got {split!r}")
    chosen_dates = parse_dates(dates)
    # A new or empty folder, or a previous report (its marker): else only with --overwrite.
    check_output(
        out,
        [cube, *([model] if model else [])],
        overwrite=overwrite,
        ours=is_report,
        kind="report",
    )
    chosen = [b.strip() for b in baselines.split(",") if b.strip() and b.strip() != "none"]
    ds = open_cube(cube)
    with clusters.open_cluster(cluster):
        report = report_module.write_report(
            ds,
            model,
            out,
            dates=chosen_dates,
            split=split,
            baselines=chosen,
            landcover=landcover,
            settings=report_module.ReportSettings(max_side=max_side),
            inference=InferenceSettings(device=device),
            progress=RichFillProgress(progress, verb="scoring"),
        )
    table = report.metrics
    console.print(summary_table(table))
    lc = table.attrs.get("landcover")
    if lc:
        accuracy = ", ".join(f"{k} {100 * v:.1f}%" for k, v in lc["overall_accuracy"].items())
        console.print(f"land cover ({lc['date']}): overall accuracy {accuracy}")
    if report.spearman is not None:
        console.print(f"Spearman(predicted scale, |error|) = {report.spearman:.3f}")
    console.print(f"pixels: {table.attrs['split_note']}")
    console.print(f"wrote {report.index} and {report.metrics_csv}")
