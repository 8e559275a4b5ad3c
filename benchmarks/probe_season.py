"""Probe: does the target's time of year help a per-pixel model fill one-sided gaps? (issue 21)

The shipped SODC model (and v3, trained on twenty scenes) fails on some held-out scenes of the
demo's design, on dates with clear values on one side only and 80-120 days old: on demo
scene 73's last date it brightens greening grass by +0.08. Its inputs give each side's age
but not the season: "a 120-day-old value before the target, none after" is the end of the
year in the generic design (senescence, snow) and August in the demo's (green-up). If that is
why, a per-pixel model with the same inputs fails the same way, and the target's day of year
(as ``sin``/``cos`` of its angle, the ``SODCT`` variant's season channels) fixes it.

Per-band HistGradientBoosting of ``truth - blend`` on the probe's full per-pixel inputs
(``probe_learning.date_inputs``/``features(..., "full")``: the blend, both sides' nearest
clear values, ages and S1, S1 at the target, the DEM; NaN for a missing side), fitted on
the cloudy pixels of the v2 default model's training designs (``simulate_scene`` seeds
101-103, 16 dates; the demo design's seeds 111-113), with and without two columns:
``sin``/``cos`` of ``2 pi day_of_year / 365.25`` of the target date. Scored on the cloudy
pixels (with a blend reference) of held-out scenes of both designs; "one-sided": pixels
with a clear value on one side only. MAE over pixels and bands.

    python benchmarks/probe_season.py                              # ~8 min on 2 cores
    python benchmarks/probe_season.py --scenes sim:61-63,demo:71-73
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from _gbm_baseline import _x
from _machine import cpu_model, load
from probe_learning import date_inputs, markdown

import cloudfill
from cloudfill.cube.demo import simulate_demo

TRAIN = (("sim", 101), ("sim", 102), ("sim", 103), ("demo", 111), ("demo", 112), ("demo", 113))


def scene(design: str, seed: int, size: int):
    if design == "sim":
        return cloudfill.simulate_scene((size, size), dates=16, seed=seed)
    return simulate_demo(seed, (size, size))


def samples(ds, season: bool, extra=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, residuals ``truth - blend`` and a one-sided flag of a scene's cloudy pixels.

    ``extra(t, part)``, if given, returns more columns for every pixel of date ``t``
    (``probe_context.py``'s context), appended after the season's.
    """
    xs, rs, one = [], [], []
    doy = ds.indexes["time"].dayofyear.values
    for t, part in date_inputs(ds):
        rows = np.flatnonzero(part["cloudy"] & np.isfinite(part["blend"]).all(1))
        if not len(rows):
            continue
        x = _x(part, rows)
        one.append(~np.isfinite(x).all(1))  # a side's value and age are NaN where it has none
        if season:
            angle = 2 * np.pi * doy[t] / 365.25
            x = np.concatenate([x, np.tile([np.sin(angle), np.cos(angle)], (len(x), 1))], 1)
        if extra is not None:
            x = np.concatenate([x, extra(t, part)[rows]], 1)
        xs.append(x)
        rs.append(part["truth"][rows] - part["blend"][rows])
    return np.concatenate(xs), np.concatenate(rs), np.concatenate(one)


def parse(text: str) -> list[tuple[str, int]]:
    out = []
    for item in text.split(","):
        design, seeds = item.split(":")
        lo, _, hi = seeds.partition("-")
        out += [(design, s) for s in range(int(lo), int(hi or lo) + 1)]
    if {s for _, s in out} & {s for _, s in TRAIN}:
        raise SystemExit("a held-out seed is a training seed")
    return out


def probe_parser(doc: str) -> argparse.ArgumentParser:
    """The options of the per-pixel probes (this one and ``probe_context.py``)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scenes", default="sim:131-133,demo:134-136")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-train", type=int, default=150_000)
    parser.add_argument("--iters", type=int, default=200)
    return parser


def fit_per_band(x: np.ndarray, r: np.ndarray, args: argparse.Namespace) -> list:
    """One HistGradientBoosting per band of ``r`` on at most ``args.max_train`` rows of ``x``."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    keep = np.sort(np.random.default_rng(0).choice(len(x), min(len(x), args.max_train),
                                                   replace=False))  # fmt: skip
    return [
        HistGradientBoostingRegressor(
            max_iter=args.iters, early_stopping=False, random_state=0
        ).fit(x[keep], r[keep, b])
        for b in range(r.shape[1])
    ]


def probe_scenes(args: argparse.Namespace) -> tuple[list, dict]:
    """The probes' training scenes (:data:`TRAIN`) and the scored ones by name."""
    train = [scene(d, s, args.size) for d, s in TRAIN]
    return train, {f"{d} {s}": scene(d, s, args.size) for d, s in parse(args.scenes)}


def main() -> None:
    args = probe_parser(__doc__).parse_args()
    warnings.simplefilter("ignore")
    t0 = time.time()
    train, test = probe_scenes(args)
    rows = []
    for season in (False, True):
        x, r, _ = (
            np.concatenate(a) for a in zip(*(samples(ds, season) for ds in train), strict=True)
        )
        models = fit_per_band(x, r, args)
        for name, ds in test.items():
            xt, rt, one = samples(ds, season)
            pred = np.stack([m.predict(xt) for m in models], 1)
            err, base = np.abs(pred - rt).mean(1), np.abs(rt).mean(1)
            rows.append({"scene": name, "season": season, "n": len(rt), "blend": base.mean(),
                         "GBM": err.mean(), "one-sided share": one.mean(),
                         "blend, one-sided": base[one].mean() if one.any() else np.nan,
                         "GBM, one-sided": err[one].mean() if one.any() else np.nan})  # fmt: skip
    print(f"{cpu_model()}, load {load()}; train {TRAIN}; {time.time() - t0:.0f} s")
    table = []
    for name in test:
        a, b = (next(r for r in rows if r["scene"] == name and r["season"] == s) for s in (0, 1))
        table.append({
            "scene": name, "cloudy px": a["n"], "blend": f"{a['blend']:.4f}",
            "GBM": f"{a['GBM']:.4f}", "GBM + season": f"{b['GBM']:.4f}",
            "one-sided share": f"{a['one-sided share']:.0%}",
            "one-sided: blend": f"{a['blend, one-sided']:.4f}",
            "one-sided: GBM": f"{a['GBM, one-sided']:.4f}",
            "one-sided: GBM + season": f"{b['GBM, one-sided']:.4f}",
        })  # fmt: skip
    pooled = {}
    for s in (0, 1):
        sel = [r for r in rows if r["season"] == s]
        n = np.array([r["n"] for r in sel], float)
        pooled[s] = sum(r["GBM"] * k for r, k in zip(sel, n, strict=True)) / n.sum()
    print(markdown(table))
    print(f"pooled GBM MAE: {pooled[0]:.4f} without the season, {pooled[1]:.4f} with "
          f"({pooled[1] / pooled[0]:.3f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
