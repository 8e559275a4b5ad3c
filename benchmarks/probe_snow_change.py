r"""How much of the change pixels' error is snow, and how a model does on each snowy date.

Issue 21's "S1 zeroed raises the change-pixel MAE by >= 25 %" is a pooled figure; in the
generic simulated design the change pixels with the largest errors are snow arriving or
leaving between two clear dates, which C-band SAR barely sees when the snow is dry
(``cloudfill.cube.simulate``: only wet snow darkens the radar). This probe says how much of a
scene's change-pixel error is snow-related, per scene (interpolation only: cheap, any seeds),
and with ``--model`` per date for one scene: the model, the model with S1 replaced by its
scene mean (as ``bench_learned_gain.py`` does), interpolation, and per DEM quintile how much
of the cloudy change pixels is truly snow against how much the model predicts (B02 > 0.5)
and how much of the date's clear pixels at those heights is snow.

    python benchmarks/probe_snow_change.py --seeds 160-171
    python benchmarks/probe_snow_change.py --seeds 162 \
        --model cloudfill/data/default_model.safetensors

A change pixel: cloudy, with an interpolated value, differing from it by more than 0.05 in
some band (``bench_learned_gain.py``'s rule). Snow-related: the truth is snow (B02 > 0.5) or
the interpolation is snow-bright (B02 > 0.4: half a snow cover from one side).
"""

from __future__ import annotations

import argparse
import time
import warnings
from itertools import pairwise

import numpy as np
from bench_learned_gain import _without_s1

import cloudfill
from cloudfill.core.temporal import linear_interpolation
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b or a) + 1))
    return out


def scene(seed: int, size: int):
    ds = cloudfill.simulate_scene((size, size), dates=16, seed=seed)
    truth = ds["truth"].sel(band=list(BANDS)).values
    mask = cloud_mask(ds).values.astype(bool)
    interp = np.stack(
        [linear_interpolation(ds, d).sel(band=list(BANDS)).values for d in ds.indexes["time"]]
    )
    change = (np.abs(truth - interp).max(axis=1) > 0.05) & mask & np.isfinite(interp).all(1)
    snowy = (truth[:, 0] > 0.5) | (interp[:, 0] > 0.4)
    return ds, truth, mask, interp, change, snowy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="160-171", help="generic scene seeds, e.g. 160-171")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--model", default=None, help="per date, for each seed: this model")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("| seed | cloudy | change px | interpolation change error (sum) | snow-related share |")
    print("|---|---|---|---|---|")
    for seed in seeds(args.seeds):
        t0 = time.time()
        ds, truth, mask, interp, change, snowy = scene(seed, args.size)
        err = np.abs(truth - interp).mean(1)
        total = err[change].sum()
        print(
            f"| {seed} | {mask.mean():.2f} | {change.sum()} | {total:.1f} | "
            f"{err[change & snowy].sum() / max(total, 1e-9):.2f} |",
            flush=True,
        )
        if args.model is None:
            continue
        model = cloudfill.load_model(args.model)
        preds = {
            "model": cloudfill.fill_series(ds, model, adjust=0)["s2"],
            "no S1": cloudfill.fill_series(_without_s1(ds), model, adjust=0)["s2"],
        }
        preds = {k: v.sel(band=list(BANDS)).values for k, v in preds.items()}
        dem = ds["dem"].values
        print(f"\nseed {seed}, {args.model} ({time.time() - t0:.0f} s): change-pixel error sums")
        print("| date | cloudy | change px | snow-related | model | no S1 | interpolation |"
              " DEM quintiles: true snow / predicted / clear pixels' snow |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for t, date in enumerate(ds.indexes["time"]):
            ok = mask[t] & np.isfinite(np.stack(list(preds.values()))[:, t]).all((0, 1))
            c = ok & change[t]
            if c.sum() < 50:
                continue
            e = {k: np.abs(p[t] - truth[t])[:, c].mean(0).sum() for k, p in preds.items()}
            e["interpolation"] = np.abs(interp[t] - truth[t])[:, c].mean(0).sum()
            edges = np.quantile(dem[c], np.linspace(0, 1, 6))
            clear = ~mask[t] & np.isfinite(truth[t]).all(0)
            cells = []
            for k, (a, b) in enumerate(pairwise(edges)):
                band = (dem >= a) & ((dem < b) if k < len(edges) - 2 else (dem <= b))
                shown = band & clear
                cells.append(
                    f"{(truth[t, 0][band & c] > 0.5).mean():.2f}/"
                    f"{(preds['model'][t, 0][band & c] > 0.5).mean():.2f}/"
                    + (f"{(truth[t, 0][shown] > 0.5).mean():.2f}" if shown.any() else "-")
                )
            print(
                f"| {date:%Y-%m-%d} | {mask[t].mean():.2f} | {c.sum()} | {(c & snowy[t]).sum()} | "
                + " | ".join(f"{e[k]:.1f}" for k in ("model", "no S1", "interpolation"))
                + " | " + " ".join(cells) + " |",
                flush=True,
            )  # fmt: skip
        print()


if __name__ == "__main__":
    main()
