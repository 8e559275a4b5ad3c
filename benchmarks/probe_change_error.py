"""Probe: where does the model's error on change pixels lie, and is it shrinkage? (issue 21)

Issue 21 asks the shipped model for at most 0.5x its untrained self's MAE on "change pixels"
(as in ``bench_learned_gain.py``: filled pixels whose truth differs from linear
interpolation by more than 0.05 in some band). This script fills each scene with the model
and with its untrained self (``fill_series``, ``adjust="auto"``) and reports, per scene, on
the change pixels:

- both MAEs and their ratio;
- the least-squares slope of the model's correction (model - untrained) against the needed
  one (truth - untrained), and the single factor on the correction that would minimise the
  MAE (a model that hedges has a slope and a best factor above 1);

then the dates that hold most of the model's summed change-pixel error, and the pooled ratio
without the worst one.

    python benchmarks/probe_change_error.py                 # validation scenes, ~4 min
    python benchmarks/probe_change_error.py --model M --scenes sim:131-133
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from _machine import cpu_model, load
from bench_learned_gain import ADJUST, _untrained, add_scene_options, make_scene, parse_scenes
from probe_learning import markdown

import cloudfill
from cloudfill.core.temporal import linear_interpolation
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.fill.plan import resolve_model

FACTORS = np.round(np.arange(0.5, 2.01, 0.1), 1)


def scene_rows(design: str, seed: int, model, untrained, args) -> tuple[dict, list[dict]]:
    ds = make_scene(design, seed, args)
    truth = ds["truth"].sel(band=list(BANDS)).values
    mask = cloud_mask(ds).values.astype(bool)
    dates = ds.indexes["time"]
    interp = np.stack([linear_interpolation(ds, d).sel(band=list(BANDS)).values for d in dates])
    fills = [cloudfill.fill_series(ds, m, adjust=ADJUST["auto"]) for m in (model, untrained)]
    pm, pu = (f["s2"].sel(band=list(BANDS)).values for f in fills)
    synth = fills[0]["method"].values == "synthesize"
    ok = mask & synth[:, None, None]
    ok &= np.isfinite(pm).all(1) & np.isfinite(pu).all(1) & np.isfinite(interp).all(1)
    change = ok & (np.abs(truth - interp).max(1) > 0.05)
    t_, m_, u_ = (np.moveaxis(a, 1, -1)[change].astype("float64") for a in (truth, pm, pu))
    need, made = (t_ - u_).ravel(), (m_ - u_).ravel()
    maes = {f: np.abs(u_ + f * (m_ - u_) - t_).mean() for f in FACTORS}
    best = min(maes, key=maes.get)
    row = {
        "scene": f"{design} {seed}", "change px": int(change.sum()),
        "model": f"{np.abs(m_ - t_).mean():.5f}", "untrained": f"{np.abs(u_ - t_).mean():.5f}",
        "ratio": f"{np.abs(m_ - t_).mean() / np.abs(u_ - t_).mean():.3f}",
        "slope": f"{(need @ made) / (made @ made):.2f}", "best factor": f"{best:.1f}",
        "MAE at best factor": f"{maes[best]:.5f}",
    }  # fmt: skip
    per_date = []
    for t, date in enumerate(dates):
        w = change[t]
        if not w.any():
            continue
        em, eu = (np.abs(p[t] - truth[t])[:, w].sum() / len(BANDS) for p in (pm, pu))
        per_date.append({"scene": row["scene"], "date": f"{date:%Y-%m-%d}",
                         "cloud": float(mask[t].mean()), "n": int(w.sum()),
                         "model sum": float(em), "untrained sum": float(eu)})  # fmt: skip
    return row, per_date


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped)")
    parser.add_argument("--scenes", default="sim:131-133,demo:134-136")
    add_scene_options(parser)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    t0 = time.time()
    model = resolve_model(args.model)
    untrained = _untrained(model)
    rows, dates = [], []
    for design, seed in parse_scenes(args.scenes):
        row, per_date = scene_rows(design, seed, model, untrained, args)
        rows.append(row)
        dates += per_date
    print(
        f"{cpu_model()}, load {load()}; {args.model or 'default model'}; {time.time() - t0:.0f} s"
    )
    print(markdown(rows))
    total_m = sum(d["model sum"] for d in dates)
    total_u = sum(d["untrained sum"] for d in dates)
    n = sum(d["n"] for d in dates)
    dates.sort(key=lambda d: -d["model sum"])
    print("\nDates holding most of the model's summed change-pixel error:")
    print(markdown([{"scene": d["scene"], "date": d["date"], "cloud": f"{d['cloud']:.0%}",
                     "change px": d["n"], "model MAE": f"{d['model sum'] / d['n']:.4f}",
                     "untrained MAE": f"{d['untrained sum'] / d['n']:.4f}",
                     "share of model's error": f"{d['model sum'] / total_m:.0%}"}
                    for d in dates[:5]]))  # fmt: skip
    top = dates[0]
    print(
        f"\npooled change-pixel ratio {total_m / total_u:.3f} over {n} px; without "
        f"{top['scene']} {top['date']} ({top['n']} px): "
        f"{(total_m - top['model sum']) / (total_u - top['untrained sum']):.3f}"
    )


if __name__ == "__main__":
    main()
