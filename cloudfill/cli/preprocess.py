"""``cloudfill preprocess``: despeckle, clip outliers (scene-wide), write a cube."""

from __future__ import annotations

from pathlib import Path

import typer

from cloudfill._outputs import check_output
from cloudfill.cli._common import console, dask_progress
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import validate
from cloudfill.cube.zarr_io import open_cube, write_cube
from cloudfill.errors import SourceError
from cloudfill.preprocess.pipeline import preprocess


def preprocess_command(
    cube: Path = typer.Argument(..., help="Input cube (zarr store); never written to."),
    out: Path = typer.Argument(..., help="Output zarr store."),
    size: int = typer.Option(5, help="Median (despeckle) window, odd 3..11; 0 to skip."),
    lower: float | None = typer.Option(
        None, help="Lower percentile clipped for every variable (default per variable)."
    ),
    upper: float | None = typer.Option(
        None, help="Upper percentile clipped for every variable (default per variable)."
    ),
    normalise: bool = typer.Option(False, help="Also map values to [-1, 1] (model range)."),
    overwrite: bool = typer.Option(False, help="Replace an existing output."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """The paper's preprocessing on a whole cube: median-filter S1 speckle, clip each
    variable's histogram tails with percentiles computed once over the whole scene (no
    seams), optionally normalise; the thresholds are recorded in the variables' attrs."""
    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    check_output(out, [cube], overwrite=overwrite)  # before the scene-wide percentiles
    # The contract and the values (S2 digital numbers, S1 against its units) before the work.
    ds = check_values(validate(open_cube(cube), require=(), require_crs=False))
    with dask_progress(progress):
        result = preprocess(ds, size=size or None, lower=lower, upper=upper, normalise=normalise)
        write_cube(result, out, overwrite=overwrite)
    console.print(f"wrote {out}")
