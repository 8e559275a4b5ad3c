"""Inference verbs: ``synthesize``."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import typer

from cloudfill._device import on_host
from cloudfill._outputs import check_output
from cloudfill.cli._common import (
    CLUSTER_HELP,
    THREADS_HELP,
    WORKERS_HELP,
    LazyModule,
    console,
    dask_progress,
)
from cloudfill.core.pairs import PairingRule, required_s1
from cloudfill.cube.zarr_io import open_cube, write_cube
from cloudfill.errors import ParameterError, SourceError
from cloudfill.infer.settings import InferenceSettings

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
clusters = LazyModule("cloudfill.cluster")
inference = LazyModule("cloudfill.infer.synthesize")


def synthesize(
    cube: Path = typer.Argument(..., help="Input cube (zarr store)."),
    date: str = typer.Argument(..., help="Date to synthesize: an S2 date or any date with S1."),
    out: Path = typer.Option(..., "--out", "-o", help="Output: *.zarr, or *.tif for a COG."),
    model: Path | None = typer.Option(None, help="Model checkpoint (default: shipped model)."),
    tile: int | None = typer.Option(None, help="Tile size in pixels (default from the model)."),
    device: str = typer.Option("cpu", help="Torch device: cpu, cuda, auto."),
    fast: bool = typer.Option(False, help="bf16 autocast + channels_last (GPU)."),
    max_s1_gap: float = typer.Option(6, help="Largest S1-target gap in days."),
    cluster: str = typer.Option("none", help=CLUSTER_HELP),
    workers: int | None = typer.Option(None, min=1, help=WORKERS_HELP),
    threads: int | None = typer.Option(None, min=1, help=THREADS_HELP),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Synthesize the S2 image of one date and write it (zarr or Cloud-Optimised GeoTIFF).

    The S1 date and the clear reference date are chosen as `ds.cloudfill.pairs()` does and
    recorded in the output's attributes.
    """
    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    try:
        when = pd.Timestamp(date)
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"{date!r} is not a date") from exc
    suffix = out.suffix.lower()
    if suffix not in (".zarr", ".tif", ".tiff"):
        raise ParameterError(f"--out must end in .zarr or .tif, got {out}")
    check_output(out, [cube, *([model] if model else [])], overwrite=overwrite)
    ds = open_cube(cube)
    rule = PairingRule(max_s1_gap=max_s1_gap)
    # What coordinates tell is refused before a cluster starts (no S1 near the date).
    if "s1" in ds.data_vars:
        required_s1(ds.indexes["s1_time"], when, rule)
    # A fresh name: the write goes there first, then replaces ``out`` in one rename.
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    with clusters.open_cluster(cluster, workers=workers, threads=threads) as client:
        # Built inside the cluster: choosing the dates and the height table are small
        # computes over the whole date, and they should run where the write runs.
        result = inference.synthesize(
            ds,
            when,
            model,
            rule=rule,
            inference=InferenceSettings(tile=tile, device=device, fast=fast),
        )
        if suffix == ".zarr":
            # Streamed block by block; on a cluster the active client runs the graph.
            with dask_progress(progress and client is None):
                write_cube(result.to_dataset(), tmp)
        else:
            # GDAL's COG driver writes from a whole in-memory (host) raster.
            data = clusters.compute(on_host(result), progress=progress, client=client)
            tmp.parent.mkdir(parents=True, exist_ok=True)  # as write_cube does for zarr
            data.rio.to_raster(tmp, driver="COG")
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)
    console.print(
        f"wrote {out}: {result.attrs['date']} from S1 {result.attrs['s1_date']}"
        + (
            f" and reference {result.attrs['reference_date']}"
            if result.attrs["reference_date"]
            else ""
        )
        + f" ({result.attrs['model_variant']} model)"
    )
