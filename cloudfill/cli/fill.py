"""The main job: ``fill-series``."""

from __future__ import annotations

import hashlib
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import typer
from rich import box
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudfill.cli._common import console, parse_dates
from cloudfill.cli.app import app
from cloudfill.cli.infer import CLUSTER_HELP, THREADS_HELP, WORKERS_HELP
from cloudfill.cube.zarr_io import MARKER_DIR
from cloudfill.errors import SourceError
from cloudfill.fill.adjust import DEFAULT_ADJUST_SIGMA


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


@app.command("fill-series")
def fill_series_command(
    cube: Path = typer.Argument(..., help="Input cube (zarr store); never written to."),
    out: Path = typer.Option(..., "--out", "-o", help="Output zarr store."),
    model: Path | None = typer.Option(None, help="Model checkpoint (default: shipped model)."),
    dates: list[str] | None = typer.Option(
        None, help="S2 dates to fill (repeat or comma-separate; default: all)."
    ),
    cloud_threshold: float = typer.Option(
        0.0, help="Dates with at most this cloud fraction are interpolated, not synthesized."
    ),
    feather: int = typer.Option(8, help="Width in pixels of the blend band at mask edges."),
    adjust: float = typer.Option(
        DEFAULT_ADJUST_SIGMA,
        min=0,
        help="Sigma in pixels of the same-date adjustment: each date's fill is corrected by "
        "the smoothed residual of that date's clear pixels (sun angle, snow line). 0: off.",
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
    overwrite: bool = typer.Option(False, help="Replace an output made by a different job."),
    cog_dir: Path | None = typer.Option(
        None, help="Also write each filled date as a Cloud-Optimised GeoTIFF here."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress."),
) -> None:
    """Fill the cloudy pixels of every S2 date of a cube and write the result date by date.

    Each date is written with a zarr region write and recorded atomically, so a killed run
    resumes where it stopped (--resume, the default) and ends identical to an uninterrupted
    run. The output holds s2 (filled), filled, confidence and per-date provenance (method,
    s1_date, reference_date, reference_chained). Dates without S1 within --max-s1-gap fall
    back to temporal interpolation; pixels with nothing usable stay NaN and are counted.
    """
    result = run_fill_series(
        cube,
        out,
        model,
        dates=parse_dates(dates),
        cloud_threshold=cloud_threshold,
        feather=feather,
        adjust=adjust,
        max_s1_gap=max_s1_gap,
        max_ref_age=max_ref_age,
        max_ref_cloud=max_ref_cloud,
        chain=chain,
        tile=tile,
        device=device,
        fast=fast,
        cluster=cluster,
        workers=workers,
        threads=threads,
        resume=resume,
        overwrite=overwrite,
        progress=progress,
        window=window or None,
    )
    if cog_dir is not None:
        _write_cogs(result, cog_dir)
    summary(result)


def run_fill_series(
    cube: Path,
    out: Path,
    model: Path | None = None,
    *,
    dates: list[pd.Timestamp] | None = None,
    cloud_threshold: float = 0.0,
    feather: int = 8,
    adjust: float = DEFAULT_ADJUST_SIGMA,
    max_s1_gap: float = 6,
    max_ref_age: float = 120,
    max_ref_cloud: float = 0.05,
    chain: bool = False,
    tile: int | None = None,
    device: str = "cpu",
    fast: bool = False,
    cluster: str = "none",
    workers: int | None = None,
    threads: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: bool = True,
    window: int | None = 2048,
):
    """Fill ``cube`` into ``out`` date by date (resumable); returns the opened output.
    ``window``: see :class:`~cloudfill.fill.writer.DateWriter`."""
    from cloudfill.cluster import compute, describe, open_cluster
    from cloudfill.core.pairs import PairingRule
    from cloudfill.cube.schema import validate
    from cloudfill.cube.zarr_io import open_cube
    from cloudfill.fill.series import count_unfilled, fill_series, plan_fill
    from cloudfill.fill.writer import DateWriter, fingerprint
    from cloudfill.infer.settings import InferenceSettings
    from cloudfill.infer.synthesize import resolve_model

    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    # The stored chunks (one date, ~1024 px), not dask's "auto" merge of them into ~128 MiB
    # blocks spanning dates: task memory then stays the same whatever the cube's area.
    ds = open_cube(cube, chunks={})
    validate(ds, require=("s2",))
    wanted = dates
    cf = resolve_model(model, device=device, fast=fast) if "s1" in ds.data_vars else None
    if cf is not None:
        cf.check_cube(ds)
    rule = PairingRule(max_s1_gap, max_ref_age, max_ref_cloud)
    plan = plan_fill(
        ds,
        needs_reference=bool(cf.variant.uses_reference) if cf is not None else True,
        cloud_threshold=cloud_threshold,
        rule=rule,
        direction=cf.card.reference_direction if cf is not None else "earlier",
        chain=chain,
    )
    settings = dict(
        cloud_threshold=cloud_threshold,
        feather=feather,
        adjust=adjust,
        rule=rule,
        inference=InferenceSettings(tile=tile, device=device, fast=fast),
        plan=plan,
        chain=chain,
    )
    filled = fill_series(ds, cf, dates=wanted, **settings)
    job = fingerprint(
        {
            "cube": str(cube.resolve()),
            "model": _file_digest(model) if model is not None else "default",
            "dates": [f"{d:%Y-%m-%d}" for d in pd.DatetimeIndex(filled["time"].values)],
            "settings": [cloud_threshold, feather, max_s1_gap, max_ref_age, max_ref_cloud, tile]
            + ([True] if chain else [])
            + [float(adjust)],
        }
    )
    writer = DateWriter(
        out,
        filled,
        job,
        inputs=[cube],
        overwrite=overwrite,
        resume=resume,
        window=window,
        sums={"unfilled": count_unfilled},
    )

    output: list[Any] = []  # the output's s2, opened once (lazily: reads happen at compute)

    def written(date: pd.Timestamp) -> Any:
        # A chained date reads the earlier dates' filled images back from the output, so
        # each date is computed once, killed runs resume mid-chain, and the values are the
        # ones written (float32 both ways: identical to an uninterrupted run).
        i = times.get_loc(date) if date in times else None
        if i is None or i not in writer.done():
            return None
        if not output:
            import xarray as xr

            from cloudfill.cube.zarr_io import quiet_markers

            with quiet_markers():
                output.append(xr.open_zarr(out, consolidated=False)["s2"])
        return output[0].isel(time=i, drop=True)

    pending = writer.pending()
    times = pd.DatetimeIndex(filled["time"].values)
    stored = _SynthesisStore(writer.path / MARKER_DIR / "work")
    stored.clear()  # left over by a run killed between recording a date and clearing it
    if len(pending) < len(times):
        console.print(f"resuming: {len(times) - len(pending)} of {len(times)} dates already done")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} dates"),
        TimeElapsedColumn(),
    )
    with (
        open_cluster(cluster, workers=workers, threads=threads) as client,
        Progress(*columns, console=console, disable=not progress) as bar,
    ):
        if client is not None:
            console.print(f"computing on {describe(client)}")
        task = bar.add_task("filling", total=len(times), completed=len(times) - len(pending))
        for i in pending:
            date = times[i]
            method = str(filled["method"].values[i])
            bar.update(task, description=f"filling {date:%Y-%m-%d} ({method})")
            part = filled.isel(time=[i])
            # The same fill, built again for this date alone where needed: with the chain's
            # sources read from the output, and with the synthesis stored before the windows
            # are written (the same-date adjustment reads a halo across window edges, which
            # would otherwise run the model on a neighbouring block again for each window).
            store = adjust > 0 and method == "synthesize" and len(writer.windows(part)) > 1
            if chain or store:
                part = fill_series(
                    ds,
                    cf,
                    dates=[date],
                    chain_from=written if chain else None,
                    synthesis_hook=(
                        partial(
                            stored.keep, compute=lambda d: compute(d, progress=False, client=client)
                        )
                        if store
                        else None
                    ),
                    **settings,
                )
            writer.write(
                part,
                i,
                record={"date": f"{date:%Y-%m-%d}", "method": method},
                compute=lambda delayed: compute(delayed, progress=False, client=client),
            )
            stored.clear()
            bar.advance(task)
    writer.finalize()
    return open_cube(out)


class _SynthesisStore:
    """A date's synthesis written to a scratch zarr store and read back, chunked as it was
    computed: each model block is then computed once, however the date is cut into windows.
    The store is bookkeeping inside the output's marker folder, removed once the date is
    written (a killed run recomputes it)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, date: pd.Timestamp, syn: Any, compute: Any) -> Any:
        import dataclasses

        import xarray as xr

        from cloudfill.cube.zarr_io import prepare_for_zarr

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{date:%Y%m%dT%H%M%S}.zarr"  # two passes a day stay apart
        parts = {"mean": syn.mean} if syn.scale is None else {"mean": syn.mean, "scale": syn.scale}
        data = xr.Dataset(parts).drop_vars(["time", "spatial_ref"], errors="ignore")
        # Zarr needs equal chunks (the last may be shorter); inference blocks need not be.
        blocks = {d: data.chunksizes[d] for d in ("y", "x")}
        layout = {"band": -1, "y": blocks["y"][0], "x": blocks["x"][0]}
        data = prepare_for_zarr(data, layout)
        compute(data.to_zarr(path, mode="w", compute=False, consolidated=False))
        back = xr.open_zarr(path, consolidated=False).chunk(blocks)

        def like(new: xr.DataArray, old: xr.DataArray) -> xr.DataArray:
            return old.copy(data=new.transpose(*old.dims).data)

        scale = None if syn.scale is None else like(back["scale"], syn.scale)
        return dataclasses.replace(syn, mean=like(back["mean"], syn.mean), scale=scale)

    def clear(self) -> None:
        import shutil

        shutil.rmtree(self.folder, ignore_errors=True)


def _write_cogs(result, cog_dir: Path) -> None:
    import os

    cog_dir.mkdir(parents=True, exist_ok=True)
    for date in pd.DatetimeIndex(result["time"].values):
        target = cog_dir / f"s2_filled_{date:%Y-%m-%d}.tif"
        tmp = target.with_suffix(".tif.tmp")
        result["s2"].sel(time=date).rio.to_raster(tmp, driver="COG")
        os.replace(tmp, target)
    console.print(f"wrote {len(result['time'])} COGs to {cog_dir}")


def summary(result) -> None:
    table = Table(title="fill-series summary", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("date", "method", "cloud%", "filled%", "unfilled", "S1", "reference"):
        numeric = column.endswith("%") or column == "unfilled"
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    filled_frac = result["filled"].mean(("y", "x")).compute().values
    unfilled = result["unfilled"].compute().values

    def day(value) -> str:
        return "-" if pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"

    for i, date in enumerate(pd.DatetimeIndex(result["time"].values)):
        table.add_row(
            f"{date:%Y-%m-%d}",
            str(result["method"].values[i]),
            f"{100 * float(result['cloud_fraction'].values[i]):.1f}",
            f"{100 * float(filled_frac[i]):.1f}",
            str(int(unfilled[i])),
            day(result["s1_date"].values[i]),
            day(result["reference_date"].values[i]),
        )
    console.print(table)
