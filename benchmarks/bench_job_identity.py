"""What the fill job's input check costs against the fill itself (issue 17: under 2 %).

The resumable job (``cloudfill.fill.job.fill_to_zarr``) names its input by path and by
``cloudfill.cube.zarr_io.store_digest`` (metadata documents and chunk file sizes) so that a
cube rewritten at the same path is not resumed. This times the digest (median of 7) against
one synthesized date's fill into a zarr store with the default model, on the same cube in
the same run, and prints the ratio; likewise the input checks every verb runs first (open,
``validate``, ``check_values`` on a sample).

    python benchmarks/bench_job_identity.py --size 1024
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _machine import cpu_model, load

import cloudfill
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import validate
from cloudfill.cube.zarr_io import store_digest
from cloudfill.fill.job import fill_to_zarr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024, help="scene side, px")
    parser.add_argument("--dates", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        scene = cloudfill.simulate_scene((args.size, args.size), dates=args.dates, seed=3)
        cube = cloudfill.write_cube(scene, Path(tmp) / "cube.zarr")
        files = sum(1 for p in cube.rglob("*") if p.is_file())
        digests = []
        for _ in range(7):
            t = time.perf_counter()
            store_digest(cube)
            digests.append(time.perf_counter() - t)
        checks = []
        for _ in range(7):
            t = time.perf_counter()
            check_values(validate(cloudfill.open_cube(cube)))
            checks.append(time.perf_counter() - t)
        plan = cloudfill.pairs(cloudfill.open_cube(cube))
        date = plan.index[plan["method"] == "synthesize"][0]
        t = time.perf_counter()
        fill_to_zarr(cube, Path(tmp) / "out.zarr", dates=[date])
        fill = time.perf_counter() - t
    digest, check = statistics.median(digests), statistics.median(checks)
    print(f"{cpu_model()}, load {load()}; {args.size} px, {args.dates} dates, {files} files")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| store_digest (median of 7) | {digest:.4f} |")
    print(f"| fill_to_zarr, one synthesized date | {fill:.1f} |")
    print(f"| open_cube + validate + check_values (median of 7) | {check:.4f} |")
    print(f"| ratio digest / fill | {digest / fill:.2e} |")
    print(f"| ratio (digest + checks) / fill | {(digest + check) / fill:.2e} |")


if __name__ == "__main__":
    main()
