"""What ``adjust="auto"`` costs per date: the sigma's choice against the date's fill.

    python benchmarks/bench_adjust_cost.py [--sizes 1024 2048] [--chunks 512 600] [--repeats 2]

A simulated scene (``simulate_scene``, seed 61, 6 dates) per size and chunk size; one date
interpolated (the scene without S1) and one synthesized (with S1, the shipped default model
via ``model=None``). Per date, medians of ``--repeats`` runs, taking turns in one process:

- **choice, before**: :func:`~cloudfill.fill.adjust.choose_sigma` with the window picked as
  before the chunk-aligned windows (``_sample_window_before``, a copy of the earlier
  ``sample_window``: 256 px tiles on one grid from the corner, whatever the chunks);
- **choice, after**: ``choose_sigma`` as it is (tiles inside one chunk of the fill);
- **window pick**: ``sample_window`` alone (one reduction of the date's mask), after;
- **fill**: ``fill_date`` with the chosen sigma (no choice), computed: the date's own cost.

``simulate_scene`` makes each date's cloud mask together with its reflectance, so reading a
date's mask (the window pick) costs as much as simulating the date; ``--zarr DIR`` writes
each scene to a zarr store once and reads it back, where the mask is a read of its own.

``fill``, ``real`` and ``clear`` are the arrays ``fill_date`` hands to ``resolve_sigma``.
The chosen sigma must be the same before and after where the window did not move.
``--synth-sizes`` limits the synthesized dates (the model dominates: 2048 px is slow on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from _machine import cpu_model, load


def _sample_window_before(
    unusable: xr.DataArray, size: int = 256, chunks: Any = None
) -> dict[str, slice]:
    """``sample_window`` as it was (commit 048c19a): tiles from the corner, chunks ignored."""
    from cloudfill._backend import to_numpy

    ny, nx = unusable.sizes["y"], unusable.sizes["x"]
    if ny <= size and nx <= size:
        return {}
    sy, sx = min(size, ny), min(size, nx)
    counts = unusable.astype("int32").coarsen(y=sy, x=sx, boundary="trim").sum()
    bad = to_numpy(counts.transpose("y", "x").compute().data)
    mixed = np.minimum(bad, sy * sx - bad)
    iy, ix = (int(i) for i in np.unravel_index(int(np.argmax(mixed)), mixed.shape))
    return {"y": slice(iy * sy, (iy + 1) * sy), "x": slice(ix * sx, (ix + 1) * sx)}


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = call()
    return time.perf_counter() - t0, out


def measure(ds: xr.Dataset, date_index: int, repeats: int, probe: bool) -> dict[str, Any]:
    """Choice before / after, window pick and fill, in seconds (medians), for one date; with
    ``probe``, on a synthesized date, also the choice on a synthesis in the smallest blocks
    (``InferenceSettings(min_block=0)``: the same values, ``synthesize``'s docstring)."""
    import cloudfill.fill.adjust as adjust
    import cloudfill.fill.series as series
    from cloudfill.cube.mask import cloud_mask
    from cloudfill.fill.plan import prepare_fill
    from cloudfill.infer.settings import InferenceSettings

    model, plan = prepare_fill(ds, None)
    mask = cloud_mask(ds)
    date = plan.index[date_index]
    inputs: dict[str, xr.DataArray] = {}

    def capture(setting: Any, fill: Any, real: Any, clear: Any) -> float:
        inputs.update(fill=fill, real=real, clear=clear)
        return float(setting)  # a fixed sigma: the date adjusted with it

    def fill_date(sigma: float, inference: Any = InferenceSettings()) -> xr.Dataset:
        kept, series.resolve_sigma = series.resolve_sigma, capture
        try:
            return series.fill_date(
                ds, date, plan.loc[date], model, mask=mask, adjust=sigma,
                fractions=plan["cloud_fraction"], inference=inference,
            )  # fmt: skip
        finally:
            series.resolve_sigma = kept

    fill_date(0.0)  # the inputs the choice gets
    fill, real, clear = inputs["fill"], inputs["real"], inputs["clear"]
    probe = probe and plan.loc[date, "method"] == "synthesize"
    if probe:
        fill_date(0.0, InferenceSettings(min_block=0))
        small = dict(inputs)
    after_pick = adjust.sample_window
    grid = adjust._chunk_grid(fill, real, clear)
    times: dict[str, list[float]] = {"before": [], "after": [], "pick": [], "fill": []}
    sigmas: dict[str, float] = {}
    windows: dict[str, dict] = {}
    for _ in range(repeats):
        for name, pick in (("before", _sample_window_before), ("after", after_pick)):
            adjust.sample_window = pick
            try:
                seconds, choice = _timed(lambda: adjust.choose_sigma(fill, real, clear))
            finally:
                adjust.sample_window = after_pick
            times[name].append(seconds)
            sigmas[name] = choice.sigma
        if probe:
            seconds, choice = _timed(lambda: adjust.choose_sigma(**small))
            times.setdefault("small blocks", []).append(seconds)
            sigmas["small blocks"] = choice.sigma
        seconds, windows["after"] = _timed(lambda: after_pick(~clear, adjust.AUTO_WINDOW, grid))
        times["pick"].append(seconds)
        times["fill"].append(_timed(lambda: fill_date(sigmas["after"]).compute())[0])
    windows["before"] = _sample_window_before(~clear, adjust.AUTO_WINDOW)
    return {
        "date": f"{date:%Y-%m-%d}",
        "method": plan.loc[date, "method"],
        "cloud": float(plan.loc[date, "cloud_fraction"]),
        "fill chunks": [len(c) for c in fill.chunks[1:]] if fill.chunks else None,
        "sigmas": sigmas,
        "windows": {k: (v["y"].start, v["x"].start) if v else "whole" for k, v in windows.items()},
        **{k: statistics.median(v) for k, v in times.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--synth-sizes", type=int, nargs="*", default=[1024])
    parser.add_argument("--chunks", type=int, nargs="+", default=[512])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--date", type=int, default=4, help="index of the date filled")
    parser.add_argument("--probe", action="store_true", help="also a synthesis in small blocks")
    parser.add_argument("--zarr", type=Path, default=None, help="write the scenes here, read back")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import cloudfill

    print(f"{datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, load {load()}", flush=True)
    columns = [
        "px", "chunks", "date", "method", "cloud", "sigma before / after",
        "window before / after (y, x)", "choice before (s)", "choice after (s)",
        "of which pick (s)", "fill (s)", "before / fill", "after / fill",
    ]  # fmt: skip
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns), flush=True)
    for size in args.sizes:
        for chunks in args.chunks:
            ds = cloudfill.simulate_scene((size, size), dates=6, seed=61, chunks=chunks)
            if args.zarr is not None:  # a stored cube: the mask is a cheap read of its own
                from cloudfill.cube.zarr_io import open_cube, write_cube

                store = args.zarr / f"scene_{size}_{chunks}.zarr"
                if not store.exists():
                    write_cube(ds, store, chunks={"y": chunks, "x": chunks})
                ds = open_cube(store, chunks={"time": 1, "s1_time": 1, "y": chunks, "x": chunks})
            cases = [ds.drop_vars("s1")]
            if size in args.synth_sizes:
                cases.append(ds)
            for cube in cases:
                r = measure(cube, args.date, args.repeats, args.probe)
                s, w = r["sigmas"], r["windows"]
                cells = [
                    size, chunks, r["date"], r["method"], f"{r['cloud']:.2f}",
                    f"{s['before']:g} / {s['after']:g}", f"{w['before']} / {w['after']}",
                    f"{r['before']:.2f}", f"{r['after']:.2f}", f"{r['pick']:.2f}",
                    f"{r['fill']:.2f}", f"{r['before'] / r['fill']:.2f}",
                    f"{r['after'] / r['fill']:.2f}",
                ]  # fmt: skip
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
                if "small blocks" in r:
                    print(
                        f"  (min_block=0 synthesis: choice {r['small blocks']:.2f} s, "
                        f"{r['small blocks'] / r['fill']:.2f} of the fill, "
                        f"sigma {s['small blocks']:g})",
                        flush=True,
                    )
    print(f"\nload at the end: {load()}")


if __name__ == "__main__":
    main()
