"""``cloudfill demo``: the main job on the embedded demo cube, with the default model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer
import xarray as xr

from cloudfill._outputs import check_output, is_report
from cloudfill.cli._common import LazyModule, RichFillProgress, console, fill_summary
from cloudfill.cube.demo import load_demo
from cloudfill.cube.zarr_io import write_cube
from cloudfill.metrics import mae, psnr

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
report_module = LazyModule("cloudfill.evaluation.report")
job = LazyModule("cloudfill.fill.job")
default = LazyModule("cloudfill.model.default")


def demo(
    out: Path = typer.Argument(Path("cloudfill-demo"), help="Folder for the demo outputs."),
    overwrite: bool = typer.Option(False, help="Replace outputs of an earlier demo run."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Fill the cloudy dates of the embedded demo cube with the default model.

    Writes OUT/cube.zarr (the input), OUT/filled.zarr (the filled series with `filled`,
    `confidence` and provenance) and OUT/report/index.html (before/after pictures, metrics
    against the truth and the baselines), then prints a short summary.
    """
    # OUT/report: new, empty or an earlier report; a folder of the user's only with --overwrite.
    check_output(out / "report", overwrite=overwrite, ours=is_report, kind="report")
    out.mkdir(parents=True, exist_ok=True)
    ds = load_demo()
    cube = out / "cube.zarr"
    if not cube.exists() or overwrite:
        write_cube(ds, cube, overwrite=overwrite)
    model = default.default_model()
    filled = job.fill_to_zarr(
        cube, out / "filled.zarr", overwrite=overwrite, progress=RichFillProgress(progress)
    )
    console.print(fill_summary(filled))
    report = report_module.write_report(
        ds,
        model,
        out / "report",
        baselines=("persistence", "interpolation"),
        split="all",
        settings=report_module.ReportSettings(
            title="cloudfill demo: the embedded cube filled with the default model"
        ),
    )
    table = report.metrics
    cloud = table[table["region"] == "cloud"]
    means = cloud.groupby("method")[["mae", "rmse", "psnr", "ssim"]].mean()
    console.print("mean over the cloudy dates, cloud-masked pixels, against the truth:")
    console.print(means.round(4).to_string())
    console.print(_fill_line(ds, filled))
    console.print(f"report: {report.index}")


def _fill_line(ds: xr.Dataset, filled: xr.Dataset) -> str:
    """The written fill (model, same-date adjustment and blend) on the same pixels: the
    table above scores the model's synthesis, this is what fill-series delivered."""
    mask = ds.cloudfill.cloud_mask().values
    values, truth = filled["s2"].values, ds["truth"].values
    synth = np.flatnonzero(filled["method"].values == "synthesize")
    scores = [
        (mae(values[i], truth[i], mask[i]), psnr(values[i], truth[i], mask[i]))
        for i in synth
        if mask[i].any()
    ]
    m, p = np.mean(scores, axis=0)
    return f"filled.zarr (fill-series output, {len(scores)} dates): mae {m:.4f}, psnr {p:.4f}"
