"""What SAR adds, before and after the simulator's surface change (issue 21, item 2).

    python benchmarks/bench_sar_change.py            # about 10-15 min on 2 cores
    python benchmarks/bench_sar_change.py --quick    # 128 px scenes, one cadence (~3 min)

The per-pixel probe of ``probe_learning.py`` (the issue's measurement): a per-band
HistGradientBoosting model of the residual ``truth - blend reference`` from both sides'
nearest clear values and ages, S1 at the target and at both reference dates and the DEM,
trained on the cloudy pixels of simulated scenes (seeds 101-103, or 101-106 at 6 dates a year)
and scored on the cloudy pixels of others (seeds 61-63, or 61-66), pixels with a clear value on
both sides. Refit without S1 at the reference dates and without any S1: the MAE they add is
what SAR carries. Each cadence is run on the simulator as it was (``surface_change=0``) and
with surface change (``surface_change=0.3``: clearing, tillage, floods, wet snow).

Pixel subsets: all cloudy pixels; "change" pixels, where the truth differs from the blend by
more than 0.05 in some band (what interpolation cannot know); "long gap", where a reference is
more than 60 days away. One run, one seed per model; ratios against the full model of the same
row.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from probe_learning import features, gather, gbm, markdown, thin

SETS = {
    "full": "full inputs",
    "full-diffS1": "S1 as change since each side",
    "full-noRefS1": "no S1 at reference dates",
    "full-noS1": "no S1",
}


def subsets(test: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    truth, blend = test["cloudy/truth"], test["cloudy/blend"]
    return {
        "all": np.ones(len(truth), bool),
        "change": (np.abs(truth - blend) > 0.05).any(1),
        "long gap": (test["cloudy/ages"] > 60).any(1),
    }


def run(cadence: int, train_seeds, test_seeds, change: float, args) -> list[dict[str, object]]:
    t0 = time.time()
    train = gather(train_seeds, args.shape, cadence, 0, surface_change=change)
    test = gather(test_seeds, args.shape, cadence, 0, surface_change=change)
    train = thin(train, args.max_train)
    truth, blend = test["cloudy/truth"], test["cloudy/blend"]
    ages = test["cloudy/ages"]
    w = ages[:, 1:2] / ages.sum(1, keepdims=True)
    preds = {
        "blend reference": blend,
        "linear interpolation": test["cloudy/before"] * w + test["cloudy/after"] * (1 - w),
    }
    residual = train["cloudy/truth"] - train["cloudy/blend"]
    for which, name in SETS.items():
        x_train, x_test = features(train, "cloudy", which), features(test, "cloudy", which)
        preds[f"GBM, {name}"] = blend + gbm(x_train, residual, x_test, args.gbm_iters)
    rows = []
    masks = subsets(test)
    for subset, mask in masks.items():
        row: dict[str, object] = {
            "dates/yr": cadence,
            "surface_change": change,
            "pixels": f"{subset} ({mask.mean():.1%})",
        }
        full = float(np.abs(truth - preds["GBM, full inputs"])[mask].mean())
        for name, pred in preds.items():
            row[name] = float(np.abs(truth - pred)[mask].mean())
        row["no S1 / full"] = row["GBM, no S1"] / full
        row["no S1 / S1 change"] = row["GBM, no S1"] / row["GBM, S1 as change since each side"]
        row["no ref S1 / full"] = row["GBM, no S1 at reference dates"] / full
        rows.append(row)
    print(
        f"  {cadence} dates/yr, surface_change {change}: {len(truth)} test pixels, "
        f"{len(residual)} train, {time.time() - t0:.0f} s",
        flush=True,
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="128 px scenes, 16 dates only")
    parser.add_argument("--gbm-iters", type=int, default=200)
    parser.add_argument("--max-train", type=int, default=100_000)
    parser.add_argument("--cadences", default="16,6", help="dates per year, comma-separated")
    parser.add_argument("--changes", default="0,0.3", help="surface_change values")
    args = parser.parse_args()
    args.shape = 128 if args.quick else 256
    warnings.filterwarnings("ignore", category=RuntimeWarning)
    seeds = {16: ([101, 102, 103], [61, 62, 63]), 6: (list(range(101, 107)), list(range(61, 67)))}
    cadences = [16] if args.quick else [int(c) for c in args.cadences.split(",")]
    rows = []
    for cadence in cadences:
        for change in (float(c) for c in args.changes.split(",")):
            part = run(cadence, *seeds[cadence], change, args)
            print(markdown(part), flush=True)  # each as it comes: the whole run is long
            rows += part
    print()
    print("MAE (reflectance) on the cloudy pixels of held-out scenes, per-pixel GBM probe")
    print(markdown(rows))


if __name__ == "__main__":
    main()
