"""What the blend reference and the same-date adjustment cost in ``fill_series``.

    python benchmarks/bench_fill_cost.py [--shape 512] [--repeats 3] [--composite PATH]

A cube of the demo's design (``simulate_demo``, seed 7) at ``--shape`` px in chunks of 256,
filled end to end (``fill_series(...).compute()``, threaded scheduler) with the shipped default
model (blend reference) with and without the adjustment, and, given ``--composite``, a
composite-reference checkpoint of the same architecture (the previous default, e.g. from
``git show 2da648d:cloudfill/data/default_model.safetensors``) without it: the state before
both changes. Median wall time of ``--repeats`` runs, and the ratio to that baseline.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--composite", default=None, help="composite-reference checkpoint")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import cloudfill
    from cloudfill.cube.demo import simulate_demo

    ds = simulate_demo(7, (args.shape, args.shape)).chunk(
        {"time": 1, "s1_time": 1, "y": 256, "x": 256}
    )
    blend = cloudfill.default_model()
    cases = []
    if args.composite:
        cases.append(("composite model, no adjustment (baseline)", args.composite, 0.0))
    cases += [("blend model, no adjustment", blend, 0.0), ("blend model, adjust 12", blend, 12.0)]
    rows = []
    for name, model, adjust in cases:
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            ds.cloudfill.fill_series(model, adjust=adjust).compute()
            times.append(time.perf_counter() - t0)
        rows.append((name, statistics.median(times), times))
    base = rows[0][1]
    print(f"fill_series, {args.shape} px, 6 dates (5 synthesized), median of {args.repeats}")
    print(f"| case | median s | runs | ratio to {rows[0][0].split(' (')[0]} |")
    print("|---|---|---|---|")
    for name, median, times in rows:
        runs = ", ".join(f"{t:.1f}" for t in times)
        print(f"| {name} | {median:.1f} | {runs} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
