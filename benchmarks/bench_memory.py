"""Memory on a cube larger than RAM: synthesize one date and stream it to zarr.

The cube is simulated lazily (``simulate_scene(..., chunks=...)``, nothing allocated up
front), so its nominal size can exceed the machine's RAM; ``synthesize`` with the shipped
default model reads only what one date needs, block by block, and the result is written to
a zarr store chunk by chunk. Each case runs in its own subprocess and reports its peak RSS
(``ru_maxrss``) and the RSS right after loading the model (the fixed cost), so the growth of
the peak with the area shows whether memory stays bounded.

    python benchmarks/bench_memory.py                      # 4096 and 8192 px, 12 dates
    python benchmarks/bench_memory.py --sizes 2048 4096    # quicker

Baseline: the smallest case of the same run (peak ratio against it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model, load

from cloudfill.fill.job import FillSettings, fill_to_zarr
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import synthesize_with_scale


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _write(size: int, dates: int, chunk: int, path: str) -> None:
    """Write the simulated cube to a zarr store (in the parent process: not measured)."""
    import warnings

    warnings.simplefilter("ignore")
    import cloudfill

    ds = cloudfill.simulate_scene((size, size), dates=dates, seed=11, chunks=chunk)
    cloudfill.write_cube(ds, path)


def _case(
    size: int,
    dates: int,
    chunk: int,
    threads: int,
    tile: int | None,
    source: str | None,
    fill: bool = False,
    window: int | None = 2048,
) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import dask
    import pandas as pd
    import torch

    import cloudfill

    torch.set_num_threads(threads)
    if source:  # the stored chunks, as `cloudfill fill-series` reads a cube
        ds = cloudfill.open_cube(source, chunks={})
    else:
        ds = cloudfill.simulate_scene((size, size), dates=dates, seed=11, chunks=chunk)
    nominal = sum(v.nbytes for v in ds.data_vars.values())
    model = cloudfill.default_model()
    table = ds.cloudfill.pairs(direction=model.card.reference_direction)
    usable = table[table["method"] == "synthesize"]
    date = pd.Timestamp(usable.index[len(usable) // 2])
    fixed = _rss_mib()
    t0 = time.perf_counter()
    # The plan's cloud fractions: without them synthesize reads the whole mask once more
    # (only synthesize_with_scale takes them; the accessor's synthesize does not).
    out = synthesize_with_scale(
        ds, date, model, fractions=table["cloud_fraction"], inference=InferenceSettings(tile=tile)
    ).mean
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(num_workers=threads):
        if fill:  # the CLI's job: written in windows by the resumable date writer
            settings = FillSettings(inference=InferenceSettings(tile=tile), window=window)
            fill_to_zarr(Path(source), Path(tmp) / "out.zarr", settings=settings, dates=[date])
        else:
            out.to_dataset(name="s2").to_zarr(Path(tmp) / "out.zarr", mode="w", zarr_format=3)
    seconds = time.perf_counter() - t0
    return {
        "size": size,
        "dates": dates,
        "cube_gib": nominal / 2**30,
        "date": f"{date:%Y-%m-%d}",
        "reference_dates": out.attrs.get("reference_dates") or out.attrs["reference_date"],
        "fixed_mib": fixed,
        "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--dates", type=int, default=12)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, help="inference tile px (default: the model's)")
    parser.add_argument(
        "--zarr",
        action="store_true",
        help="write each simulated cube to a temporary zarr store first and read it from there",
    )
    parser.add_argument(
        "--fill",
        action="store_true",
        help="run the fill-series job on that date instead of synthesize + to_zarr (with --zarr)",
    )
    parser.add_argument(
        "--window",
        type=int,
        default=2048,
        help="with --fill: pixels per side of a computed window (0: whole dates)",
    )
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case is not None:
        print(
            json.dumps(
                _case(
                    args.case,
                    args.dates,
                    args.chunk,
                    args.threads,
                    args.tile,
                    args.source,
                    fill=args.fill,
                    window=args.window or None,
                )
            )
        )
        return
    if args.fill and not args.zarr:
        parser.error("--fill reads the cube from a store: add --zarr")
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, {ram:.1f} GiB RAM, load {load()}")
    windows = f"windows of {args.window} px" if args.window else "whole dates"
    job = f"fill-series job ({windows})" if args.fill else "synthesize + to_zarr"
    print(f"cube {'read from zarr' if args.zarr else 'simulated lazily'}, tile {args.tile}, {job}")
    rows = []
    for size in args.sizes:
        cmd = [sys.executable, __file__, "--case", str(size), "--dates", str(args.dates)]
        cmd += ["--chunk", str(args.chunk), "--threads", str(args.threads)]
        cmd += ["--tile", str(args.tile)] if args.tile else []
        cmd += ["--fill", "--window", str(args.window)] if args.fill else []
        with tempfile.TemporaryDirectory() as tmp:
            if args.zarr:
                store = str(Path(tmp) / "cube.zarr")
                _write(size, args.dates, args.chunk, store)
                cmd += ["--source", store]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    base = rows[0]["peak_mib"]
    print(
        "| scene px | dates | cube GiB | cube / RAM | date | fixed MiB | peak MiB | "
        "peak / smallest | s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']}x{r['size']} | {r['dates']} | {r['cube_gib']:.1f} | "
            f"{r['cube_gib'] / ram:.2f} | {r['date']} | {r['fixed_mib']:.0f} | "
            f"{r['peak_mib']:.0f} | {r['peak_mib'] / base:.2f} | {r['seconds']:.0f} |"
        )
    print(f"reference dates used (largest case): {rows[-1]['reference_dates']}")


if __name__ == "__main__":
    main()
