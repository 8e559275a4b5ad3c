"""Probe: is the model's gain on the change pixels only, and is its residual noise elsewhere?
(issue 21)

Fills each scene with each model and with the untrained self of the first model
(``fill_series``; ``--adjust``, default off, so the comparison is the networks'). The untrained
self returns the blend reference, so ``model - untrained`` is the network's residual. Scores
the synthesized cloudy pixels against the truth, split as in ``bench_learned_gain.py``:
"change" pixels (truth off linear interpolation by more than 0.05 in some band) and the
other, "unchanged", pixels. Each model's residual is also soft-thresholded per band,
``sign(r) * max(|r| - tau, 0)`` (a dead zone of ``tau`` reflectance), to see how much of the
unchanged pixels' error is small residual noise. Prints MAE ratios to the untrained self per
scene and pooled.

    python benchmarks/probe_unchanged.py                      # shipped model, ~3 min
    python benchmarks/probe_unchanged.py --model A --model B --scenes sim:131-133,demo:134
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _machine import cpu_model, load
from bench_learned_gain import _untrained, add_scene_options, make_scene, parse_scenes
from probe_learning import markdown

import cloudfill
from cloudfill.core.temporal import linear_interpolation
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.fill.plan import resolve_model

SUBSETS = ("all", "change", "unchanged")


def scene_sums(ds, models: dict, untrained, taus, adjust) -> dict:
    """``{(model, tau, subset): (summed absolute error, pixels)}``, the untrained self's
    under ``("untrained", 0.0, subset)``."""
    truth = ds["truth"].sel(band=list(BANDS)).values
    mask = cloud_mask(ds).values.astype(bool)
    interp = np.stack(
        [linear_interpolation(ds, d).sel(band=list(BANDS)).values for d in ds.indexes["time"]]
    )
    out = cloudfill.fill_series(ds, untrained, adjust=adjust)
    base = out["s2"].sel(band=list(BANDS)).values
    synth = out["method"].values == "synthesize"
    ok = mask & synth[:, None, None] & np.isfinite(base).all(1) & np.isfinite(interp).all(1)
    change = ok & (np.abs(truth - interp).max(axis=1) > 0.05)
    where = {"all": ok, "change": change, "unchanged": ok & ~change}
    sums = {}
    err = np.abs(base - truth).sum(1)
    for subset, w in where.items():
        sums[("untrained", 0.0, subset)] = (float(err[w].sum()), int(w.sum()))
    for name, model in models.items():
        pred = cloudfill.fill_series(ds, model, adjust=adjust)["s2"].sel(band=list(BANDS))
        residual = pred.values - base
        for tau in taus:
            shrunk = np.sign(residual) * np.maximum(np.abs(residual) - tau, 0.0)
            err = np.abs(base + shrunk - truth).sum(1)
            for subset, w in where.items():
                sums[(name, tau, subset)] = (float(err[w].sum()), int(w.sum()))
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="checkpoint (repeat; default shipped)")
    parser.add_argument("--scenes", default="sim:131-133,demo:134")
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 0.002, 0.005, 0.01])
    parser.add_argument("--adjust", default="0", help="fill_series adjust: 0 (off) or auto")
    add_scene_options(parser)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t0 = time.time()
    paths = args.model or [None]
    models = {(p or "shipped"): resolve_model(p) for p in paths}
    untrained = _untrained(next(iter(models.values())))
    adjust = args.adjust if args.adjust == "auto" else float(args.adjust)
    per_scene = {}
    for design, seed in parse_scenes(args.scenes):
        ds = make_scene(design, seed, args)
        per_scene[f"{design} {seed}"] = scene_sums(ds, models, untrained, args.taus, adjust)
    print(f"{cpu_model()}, load {load()}; scenes {args.scenes}, adjust {args.adjust}; "
          f"{time.time() - t0:.0f} s")  # fmt: skip
    for subset in SUBSETS:
        rows = []
        for name in models:
            for tau in args.taus:
                row = {"model": name, "tau": tau}
                total, total_u = 0.0, 0.0
                for scene, sums in per_scene.items():
                    e, _ = sums[(name, tau, subset)]
                    eu, _ = sums[("untrained", 0.0, subset)]
                    row[scene] = f"{e / eu:.3f}"
                    total, total_u = total + e, total_u + eu
                row["pooled"] = f"{total / total_u:.3f}"
                rows.append(row)
        pixels = sum(s[("untrained", 0.0, subset)][1] for s in per_scene.values())
        print(f"\n{subset} pixels ({pixels}): MAE / untrained self's")
        print(markdown(rows))


if __name__ == "__main__":
    main()
