"""Where the fill-series job's memory goes, window by window.

Runs ``cloudfill fill-series``'s job (:func:`cloudfill.fill.job.fill_to_zarr`) on one
synthesized date of a zarr cube and samples the process's RSS every 50 ms, printing the peak
of each computed window (``--window``, 0: whole dates) and the process's ``ru_maxrss``.
The cube (simulated, 6 dates, 512 px chunks) is written once, by a child process, and reused.

    python benchmarks/profile_fill_windows.py 4096            # windows of 2048 px
    python benchmarks/profile_fill_windows.py 8192 --window 0 # whole dates

Baseline: ``--window 0`` on the same cube.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", type=int)
    parser.add_argument("--window", type=int, default=2048)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cube", type=Path, help="cube store (default /tmp/cube<size>.zarr)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import dask
    import pandas as pd

    import cloudfill
    import cloudfill.fill.job
    from cloudfill.fill.job import FillSettings, fill_to_zarr
    from cloudfill.infer.settings import InferenceSettings

    cube = args.cube or Path(tempfile.gettempdir()) / f"cube{args.size}.zarr"
    if not cube.exists():  # in a child process, so its memory is not measured here
        script = (
            "import cloudfill, sys; cloudfill.write_cube(cloudfill.simulate_scene("
            f"({args.size}, {args.size}), dates=6, seed=11, chunks=512), sys.argv[1])"
        )
        subprocess.run([sys.executable, "-c", script, str(cube)], check=True)
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.05)

    threading.Thread(target=sample, daemon=True).start()
    compute = cloudfill.fill.job.compute
    t0 = time.perf_counter()
    rows = []

    def timed(obj, **kwargs):  # the writer computes each window through this
        peak[0] = _rss_mib()
        start = time.perf_counter()
        out = compute(obj, **kwargs)
        rows.append((len(rows) + 1, time.perf_counter() - start, peak[0], _rss_mib()))
        return out

    cloudfill.fill.job.compute = timed  # the job binds its compute calls at run time
    ds = cloudfill.open_cube(cube, chunks={})
    model = cloudfill.default_model()
    table = ds.cloudfill.pairs(direction=model.card.reference_direction)
    synthesized = table.index[table["method"] == "synthesize"]
    date = pd.Timestamp(synthesized[len(synthesized) // 2])
    with tempfile.TemporaryDirectory() as tmp, dask.config.set(num_workers=args.threads):
        settings = FillSettings(
            inference=InferenceSettings(tile=args.tile), window=args.window or None
        )
        fill_to_zarr(cube, Path(tmp) / "out.zarr", settings=settings, dates=[date])
    total = time.perf_counter() - t0
    print(f"{args.size} px, date {date:%Y-%m-%d}, window {args.window or 'whole date'}")
    print("| window | s | peak RSS MiB | RSS after MiB |")
    print("|---|---|---|---|")
    for i, seconds, top, after in rows:
        print(f"| {i} | {seconds:.1f} | {top:.0f} | {after:.0f} |")
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"job {total:.0f} s, process peak (ru_maxrss) {maxrss:.0f} MiB")


if __name__ == "__main__":
    main()
