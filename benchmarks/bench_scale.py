"""Benchmark ``fill-series`` at scale on a LocalCluster: bounded memory, time, worker scaling.

Writes two simulated zarr cubes, 1x and 4x the area (``--base`` and ``2 * --base`` pixels a
side, the same dates), a small untrained model checkpoint, then runs ``cloudfill
fill-series --cluster ADDRESS`` on each, each case in its own process with its own
``LocalCluster`` (``--threads`` threads per worker). Reported per case:

- ``fill_s``: wall time of the fill-series call (cluster already up, workers warmed: the
  imports of cloudfill/torch in each worker are not counted, model loading is);
- ``peak_rss``: peak of the summed resident memory of every process of the case (client +
  scheduler, nannies, workers), sampled every ``--interval`` seconds; ``idle_rss`` the same
  sum just before the fill starts (interpreters, torch, cluster), and ``data_rss`` the
  difference, the part that grows with the work;
- ``hwm_sum``: the sum of each process's own kernel-recorded peak (``VmHWM``), an upper
  bound on ``peak_rss`` that sampling cannot miss.

Ratios (the targets of issue 9): ``peak_rss(4x) / peak_rss(1x)`` <= 1.2 (memory does not
grow with the area), ``fill_s(4x) / fill_s(1x)`` <= 4.4 (time grows no worse than the
area), ``fill_s(1 worker) / fill_s(2 workers)`` >= 1.7 (on the 1x cube).

    python benchmarks/bench_scale.py                          # defaults: 1024 / 2048 px
    python benchmarks/bench_scale.py --base 512 --dates 3     # a quick look
    python benchmarks/bench_scale.py --cases 1x,1x-1w         # worker scaling only
    python benchmarks/bench_scale.py --base 4096 --chunk 1024 --tile 256 --workdir /big/disk

Memory is bounded once a date spans many chunks: keep ``--base / --chunk`` >= 4 so the 1x
case already runs many blocks per date (with few blocks the whole date is in memory at once
and the 1x peak understates the steady state).

The issue asked for a 4x cube of 2-3x the machine's free memory; on a machine with tens of
GB that is tens of GB of float32, which 2 CPU cores do not process in a session. Sizes are
options: bounded memory is shown by the 4x/1x peak ratio and by ``data_rss`` staying flat,
not by exhausting RAM.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _machine import cpu_model

CLOUD_FRACTIONS = (0.0, 0.5, 0.8, 0.3, 0.6, 0.4, 0.7, 0.2)
SEED = 11


# --- preparation (in the parent process, threaded scheduler) ---------------------------------


def write_model(path: Path, base_filters: int, n_blocks: int) -> Path:
    """An untrained SOD generator with statistics of a small scene of the same seed.

    Normalisation statistics only need to be representative; a 256 px scene of the same
    landscape gives them without reading the big cubes.
    """
    import torch

    import cloudfill
    from cloudfill.model import CloudfillModel, ModelCard
    from cloudfill.model.generator import Generator
    from cloudfill.preprocess.normalise import scene_stats

    torch.manual_seed(0)
    sample = cloudfill.simulate_scene((256, 256), dates=4, seed=SEED)
    gen = Generator(
        "SOD", base_filters=base_filters, n_blocks=n_blocks, attention=False, confidence=True
    )
    card = ModelCard.from_generator(
        gen, normalisation=scene_stats(sample).to_dict(), training={"despeckle": 3}
    )
    return CloudfillModel(gen, card).save(path)


def write_scene(path: Path, side: int, dates: int, chunk: int) -> float:
    """Simulate lazily and stream to zarr; returns the uncompressed size in GB."""
    import cloudfill

    fractions = [CLOUD_FRACTIONS[i % len(CLOUD_FRACTIONS)] for i in range(dates)]
    ds = cloudfill.simulate_scene(
        (side, side), dates=dates, seed=SEED, cloud_fraction=fractions, chunks=chunk
    )
    if not path.exists():
        cloudfill.write_cube(ds, path, chunks={"y": chunk, "x": chunk})
    return ds.nbytes / 1e9


# --- one case (child process) -----------------------------------------------------------------


def _warm() -> None:
    # Imports only (torch included, ~0.3 GB a process): the checkpoint itself is loaded by
    # the job, once per worker, and counts.
    import cloudfill.fill.series
    import cloudfill.infer.synthesize
    import cloudfill.model.checkpoint  # noqa: F401


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """Start a LocalCluster, warm it, time one fill-series run through its address."""
    import contextlib
    import io

    from distributed import get_task_stream

    from cloudfill.cli import run
    from cloudfill.cluster import open_cluster

    with open_cluster("local", workers=spec["workers"], threads=spec["threads"]) as client:
        client.run(_warm)
        Path(spec["ready"]).touch()  # the parent reads the idle memory now
        time.sleep(spec["settle"])
        argv = [
            "fill-series",
            spec["cube"],
            "--model",
            spec["model"],
            "--out",
            spec["out"],
            "--tile",
            str(spec["tile"]),
            "--max-ref-age",
            "400",
            "--no-progress",
            "--overwrite",
            "--no-resume",
            "--cluster",
            client.scheduler.address,
        ]
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), get_task_stream(client) as stream:
            code = run(argv)
        fill_s = time.perf_counter() - start
    # Seconds workers spent running tasks: with n workers, busy / (n * fill_s) near 1 means
    # they were kept busy (a slow run is then short of CPU, not of parallel work).
    task_s = sum(
        part["stop"] - part["start"]
        for task in stream.data
        for part in task["startstops"]
        if part["action"] == "compute"
    )
    return {"code": code, "fill_s": fill_s, "task_s": task_s}


# --- monitoring (parent) ----------------------------------------------------------------------


def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _hwm(proc: Any) -> int:
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def measure(spec: dict[str, Any], interval: float) -> dict[str, Any]:
    """Run one case in a child process and follow the memory of its process tree."""
    import psutil

    ready = Path(spec["ready"])
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--case", json.dumps(spec)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
    )
    peak = idle = 0
    hwm: dict[int, int] = {}
    cpu_start: dict[int, float] = {}
    cpu_last: dict[int, float] = {}
    started = False
    while child.poll() is None:
        total = 0
        for proc in _tree(child.pid):
            try:
                total += proc.memory_info().rss
                hwm[proc.pid] = max(hwm.get(proc.pid, 0), _hwm(proc))
                times = proc.cpu_times()
                cpu_last[proc.pid] = times.user + times.system
            except psutil.NoSuchProcess:
                continue
        if not started and ready.exists():
            started, idle = True, total
            cpu_start = dict(cpu_last)
        if started:
            peak = max(peak, total)
        time.sleep(interval)
    lines = child.stdout.read().splitlines()
    result = next((json.loads(line[7:]) for line in lines if line.startswith("RESULT ")), None)
    if child.returncode != 0 or result is None or result["code"] != 0:
        raise RuntimeError(f"case {spec} failed (exit {child.returncode}): {lines[-5:]}")
    client_hwm = hwm.pop(child.pid, 0)
    # CPU seconds of the whole tree from the start of the fill (to the last sample).
    cpu_s = sum(cpu_last[pid] - cpu_start.get(pid, 0.0) for pid in cpu_last)
    return {
        **result,
        "cpu_s": cpu_s,
        "peak_rss": peak,
        "idle_rss": idle,
        "hwm_sum": client_hwm + sum(hwm.values()),
        "client_hwm": client_hwm,
        "other_hwm_max": max(hwm.values(), default=0),
    }


# --- report -------------------------------------------------------------------------------------


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f}"


def _data(row: dict[str, Any]) -> int:
    return row["peak_rss"] - row["idle_rss"]


def report(rows: list[dict[str, Any]], args: argparse.Namespace, loads: tuple) -> str:
    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} cores; {args.dates} dates, chunk {args.chunk} px, "
        f"tile {args.tile} px, model SOD base_filters={args.base_filters} "
        f"n_blocks={args.n_blocks}, {args.threads} thread(s) per worker.",
        f"Load average (1, 5, 15 min) before: {loads[0]}, after: {loads[1]}.",
        "",
        "| case | pixels | cube GB | workers | fill s | CPU s | worker busy | peak RSS GB "
        "| idle RSS GB | data RSS GB | sum VmHWM GB | client VmHWM GB "
        "| largest worker VmHWM GB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['side']}x{r['side']} | {r['cube_gb']:.2f} | {r['workers']} "
            f"| {r['fill_s']:.1f} | {r['cpu_s']:.0f} "
            f"| {r['task_s'] / (r['workers'] * r['fill_s']):.2f} | {_gb(r['peak_rss'])} "
            f"| {_gb(r['idle_rss'])} "
            f"| {_gb(_data(r))} | {_gb(r['hwm_sum'])} | {_gb(r['client_hwm'])} "
            f"| {_gb(r['other_hwm_max'])} |"
        )
    by = {r["name"]: r for r in rows}
    lines += ["", "| ratio | measured | target |", "|---|---|---|"]
    one, four = by.get("1x"), by.get("4x")
    if one and four:
        lines += [
            f"| peak RSS 4x / 1x | {four['peak_rss'] / one['peak_rss']:.2f} | <= 1.2 |",
            f"| data RSS 4x / 1x | {_data(four) / max(_data(one), 1):.2f} | (info) |",
            f"| fill time 4x / 1x | {four['fill_s'] / one['fill_s']:.2f} | <= 4.4 |",
        ]
    if one and "1x-1w" in by:
        speedup = by["1x-1w"]["fill_s"] / one["fill_s"]
        lines.append(f"| speed-up 1 -> 2 workers (1x) | {speedup:.2f} | >= 1.7 |")
    return "\n".join(lines)


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=int, default=1024, help="side of the 1x cube, px")
    parser.add_argument("--dates", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=256, help="zarr and dask chunk, px")
    parser.add_argument("--tile", type=int, default=128, help="inference tile, px")
    parser.add_argument("--base-filters", type=int, default=4)
    parser.add_argument("--n-blocks", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="threads per worker")
    parser.add_argument(
        "--cases", default="1x,4x,1x-1w", help="which of 1x, 4x, 1x-1w (1 worker) to run"
    )
    parser.add_argument("--interval", type=float, default=0.1, help="RSS sampling, s")
    parser.add_argument("--settle", type=float, default=2.0, help="idle seconds before a run")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the cubes and outputs")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print("RESULT " + json.dumps(run_case(json.loads(args.case))), flush=True)
        return

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cloudfill-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        model = write_model(workdir / "model.safetensors", args.base_filters, args.n_blocks)
        sides = {"1x": args.base, "4x": 2 * args.base}
        known = {"1x": ("1x", args.workers), "4x": ("4x", args.workers), "1x-1w": ("1x", 1)}
        wanted = [name.strip() for name in args.cases.split(",")]
        cases = [(name, *known[name]) for name in wanted]
        cubes, sizes = {}, {}
        for name, side in sides.items():
            if not any(name == cube for _, cube, _ in cases):
                continue
            cubes[name] = workdir / f"cube_{side}.zarr"
            start = time.perf_counter()
            sizes[name] = write_scene(cubes[name], side, args.dates, args.chunk)
            print(
                f"{name}: {side}x{side} cube, {sizes[name]:.2f} GB uncompressed, "
                f"ready in {time.perf_counter() - start:.0f} s",
                flush=True,
            )
        before = _loadavg()
        rows = []
        for name, cube, workers in cases:
            spec = {
                "cube": str(cubes[cube]),
                "model": str(model),
                "out": str(workdir / f"out_{name}.zarr"),
                "tile": args.tile,
                "workers": workers,
                "threads": args.threads,
                "settle": args.settle,
                "ready": str(workdir / f"ready_{name}"),
            }
            result = measure(spec, args.interval)
            rows.append(
                {
                    "name": name,
                    "side": sides[cube],
                    "cube_gb": sizes[cube],
                    "workers": workers,
                    **result,
                }
            )
            print(
                f"{name}: {result['fill_s']:.1f} s, peak {_gb(result['peak_rss'])} GB", flush=True
            )
        print()
        print(report(rows, args, (before, _loadavg())))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
