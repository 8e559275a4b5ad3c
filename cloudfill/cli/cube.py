"""Cube verbs: ``info`` (a cube or a model checkpoint) and ``make-cube``."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from cloudfill.cli._common import console, dask_progress, parse_dated_paths
from cloudfill.cli.model_info import describe_model
from cloudfill.cube import zarr_io
from cloudfill.cube.geotiff import cube_from_geotiffs
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.sanity import check_values, guess_s1_units
from cloudfill.cube.schema import cube_crs, validate
from cloudfill.cube.simulate import simulate_scene
from cloudfill.cube.stac import cube_from_stac
from cloudfill.errors import ParameterError, SourceError


def _is_checkpoint(path: Path) -> bool:
    return path.suffix == ".safetensors" or (path / "model.safetensors").exists()


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def info(
    path: Path = typer.Argument(..., help="A cube (zarr store) or a model checkpoint."),
    stats: bool = typer.Option(
        True, "--stats/--no-stats", help="Compute the cloud fraction per date (reads the mask)."
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Validate the full contract (s2, s1 and dem required) and the values (S2 "
        "reflectance, S1 units), as every verb does; exit 2 if it fails.",
    ),
) -> None:
    """Describe a cube or a model checkpoint.

    For a cube: dims, dates, cloud fraction per date, CRS, chunking and size. For a model:
    its card, parameter count, receptive field and GFLOP per 256x256 tile.
    """
    if not path.exists():
        raise SourceError(f"no such file or directory: {path}")
    if _is_checkpoint(path):
        console.print(describe_model(path))
        return

    with warnings.catch_warnings():  # an unfinished fill store: said below, in its place
        warnings.filterwarnings("ignore", message=".*unfinished fill-series job")
        ds = zarr_io.open_cube(path)  # looked up at call time: tests replace it
    validate(ds, require=("s2", "s1", "dem") if check else ("s2",), require_crs=check)
    if check:  # the values too, as every verb checks them before its work
        check_values(ds)
    console.print(f"[bold]{path}[/bold]")
    console.print("dims: " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()))
    console.print(f"variables: {', '.join(str(v) for v in ds.data_vars)}")
    crs = cube_crs(ds)
    res = ds.rio.resolution() if crs is not None else None
    console.print(
        f"CRS: {crs.to_string() if crs is not None else 'none'}"
        + (f"  resolution: {abs(res[0]):g} x {abs(res[1]):g}" if res else "")
    )
    console.print(f"size: {_human_bytes(ds.nbytes)} (uncompressed)")
    progress = zarr_io.fill_progress(path, ds)
    if progress is not None:
        written, total = progress
        state = (
            "complete"
            if written >= total
            else "UNFINISHED: unless a fill-series is writing it now, rerun the same command"
        )
        console.print(f"fill-series output: {written} of {total} dates written ({state})")
    chunks = ds["s2"].chunks
    if chunks is not None:
        console.print(
            "s2 chunks: "
            + ", ".join(f"{d}={c[0]}" for d, c in zip(ds["s2"].dims, chunks, strict=True))
        )
    table = Table(title="S2 dates")
    table.add_column("date")
    table.add_column("cloud %", justify="right")
    fractions = None
    if stats and ("cloud" in ds or "scl" in ds):
        with dask_progress(ds["s2"].chunks is not None):
            fractions = cloud_mask(ds).mean(("y", "x")).compute().values
    for i, t in enumerate(pd.DatetimeIndex(ds["time"].values)):
        frac = "-" if fractions is None else f"{100 * float(fractions[i]):.1f}"
        table.add_row(f"{t:%Y-%m-%d}", frac)
    console.print(table)
    if "s1_time" in ds.dims:
        s1 = pd.DatetimeIndex(ds["s1_time"].values)
        console.print(
            f"S1 dates: {len(s1)} from {s1[0]:%Y-%m-%d} to {s1[-1]:%Y-%m-%d}"
            f" (units {ds['s1'].attrs.get('units', '?')})"
        )
    if check:  # validate() above raised otherwise
        console.print(
            "check passed: s2, s1, dem and a CRS as the cube contract requires; S2 in "
            "reflectance and S1 values matching their units"
        )


def _parse_shape(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        ny, nx = (int(p) for p in parts)
    except ValueError as exc:
        raise ParameterError(f"--shape expects NYxNX (e.g. 512x512), got {text!r}") from exc
    if ny < 8 or nx < 8:
        raise ParameterError(f"--shape {text!r}: both sides must be at least 8 pixels")
    return ny, nx


def make_cube(
    out: Path = typer.Argument(..., help="Output zarr store (must not exist unless --overwrite)."),
    simulate: bool = typer.Option(False, "--simulate", help="Simulate a synthetic scene."),
    shape: str = typer.Option("512x512", metavar="NYxNX", help="Simulated scene size NYxNX."),
    dates: int = typer.Option(6, help="Number of simulated S2 dates."),
    seed: int = typer.Option(0, help="Seed of the simulated scene."),
    chunk: int = typer.Option(1024, help="Spatial chunk size of the written cube."),
    stac: Path | None = typer.Option(
        None, help="A STAC ItemCollection / FeatureCollection JSON file with S1/S2 items."
    ),
    s2: list[str] | None = typer.Option(
        None,
        metavar="DATE=PATH",
        help="S2 date and GeoTIFF(s): DATE=PATH or DATE=B02.tif,B03.tif,B04.tif,B08.tif.",
    ),
    s1: list[str] | None = typer.Option(
        None,
        metavar="DATE=PATH",
        help="S1 date and GeoTIFF(s): DATE=PATH or DATE=VV.tif,VH.tif (dB).",
    ),
    dem: Path | None = typer.Option(None, help="DEM GeoTIFF (any CRS; resampled bilinearly)."),
    cloud: list[str] | None = typer.Option(
        None,
        metavar="DATE=PATH",
        help="Cloud mask GeoTIFF per S2 date: DATE=PATH (nonzero = unusable).",
    ),
    s1_units: str = typer.Option(
        "auto",
        "--s1-units",
        help="Units of the S1 GeoTIFF or STAC assets: dB, linear, or auto (from the values: "
        "dB backscatter is mostly negative, linear power never).",
    ),
    s2_offset: float = typer.Option(
        0.0,
        "--s2-offset",
        help="Added to S2 reflectance after the 1/10000 scale of GeoTIFF or STAC inputs: -0.1 "
        "for L2A of processing baseline 04.00 and later (dates from 2022-01-25; integer "
        "GeoTIFFs of such dates read without it warn).",
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing output store."),
) -> None:
    """Build a contract cube and write it to zarr.

    Sources: a simulated scene (--simulate), GeoTIFFs (--s2/--s1/--dem/--cloud, aligned onto
    the S2 grid) or a STAC item collection (--stac).
    """
    sources = [simulate, stac is not None, bool(s2 or s1)]
    if sum(sources) != 1:
        raise ParameterError("give exactly one source: --simulate, --stac FILE, or --s2/--s1 files")
    if s1_units not in ("dB", "linear", "auto"):
        raise ParameterError(f"--s1-units must be dB, linear or auto, got {s1_units!r}")
    # "auto" loads with either label, then labels from the values below.
    units = "dB" if s1_units == "auto" else s1_units
    if simulate:
        ds = simulate_scene(_parse_shape(shape), dates=dates, seed=seed, chunks=chunk)
    elif stac is not None:
        try:
            items = json.loads(stac.read_text())
        except (OSError, ValueError) as exc:
            raise SourceError(f"cannot read STAC items from {stac}: {exc}") from exc
        ds = cube_from_stac(items, s1_units=units, s2_offset=s2_offset)
    else:
        if not s2:
            raise ParameterError("--s2 is required when building from GeoTIFFs")
        clouds = {d: p[0] for d, p in parse_dated_paths(cloud, "--cloud").items()}
        ds = cube_from_geotiffs(
            s1=parse_dated_paths(s1, "--s1") or None,
            s2=parse_dated_paths(s2, "--s2"),
            dem=dem,
            cloud=clouds or None,
            s1_units=units,
            s2_offset=s2_offset,
        )
    if s1_units == "auto" and "s1" in ds.data_vars and not simulate:
        ds["s1"].attrs["units"] = guess_s1_units(ds)
    check_values(ds)  # S2 digital numbers or S1 against its units: before anything is written
    chunks = {d: min(chunk, n) for d, n in ds.sizes.items() if d in ("y", "x")}
    ds = ds.chunk({**chunks, **{d: 1 for d in ("time", "s1_time") if d in ds.dims}})
    with dask_progress():
        zarr_io.write_cube(ds, out, overwrite=overwrite)
    n_px = int(np.prod([ds.sizes["y"], ds.sizes["x"]]))
    console.print(
        f"wrote {out}: {ds.sizes.get('time', 0)} S2 dates, {ds.sizes.get('s1_time', 0)} S1 dates, "
        f"{ds.sizes['y']}x{ds.sizes['x']} px ({n_px / 1e6:.2f} Mpx)"
    )
