r"""How much of a snow cover's brightness the slope's sunlight explains (issue 21, SODCTXHI).

For each winter date of a generic simulated scene, the snow-covered change pixels under
clouds (truth B02 > 0.5, cloudy, differing from interpolation by > 0.05 in some band:
``bench_learned_gain.py``'s change pixels) are predicted from the date's clear pixels of the
same 100 m elevation band (:mod:`cloudfill.core.height`) in two ways: the band's mean, and
the band's mean scaled by each pixel's slope light against the mean light of the band's
clear pixels (:func:`cloudfill.core.illumination.slope_light`). Both are oracles of what the
height path can read, not the model: they show whether the light is worth its channels.
Only bands with at least :data:`~cloudfill.core.height.HEIGHT_MIN_SHOWN` clear pixels count.

    python benchmarks/probe_slope_light.py --seeds 162,170
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from probe_snow_change import scene, seeds

from cloudfill.core.height import HEIGHT_MIN_SHOWN, height_bin
from cloudfill.core.illumination import light_geometry, slope_light


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="162,170", help="generic scene seeds, e.g. 160-171")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--min-pixels", type=int, default=200, help="dates with fewer: skipped")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print("| seed | date | snow change px | in a shown band | band mean MAE (B02 B03 B04 B08) |"
          " x light ratio MAE | corr(B02, light) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for seed in seeds(args.seeds):
        ds, truth, mask, _, change, _ = scene(seed, args.size)
        dem = ds["dem"].values
        band = height_bin(dem)
        geometry = light_geometry(ds)
        for t, date in enumerate(ds.indexes["time"]):
            target = mask[t] & change[t] & (truth[t, 0] > 0.5)
            if target.sum() < args.min_pixels:
                continue
            light = slope_light(dem, date, geometry).astype("float64")
            clear = ~mask[t] & np.isfinite(truth[t]).all(0)
            flat = np.full(truth[t].shape, np.nan)
            lit = flat.copy()
            for k in np.unique(band[target]):
                shown = clear & (band == k)
                if shown.sum() < HEIGHT_MIN_SHOWN:
                    continue
                px = target & (band == k)
                mean = truth[t][:, shown].mean(1)[:, None]
                flat[:, px] = mean
                lit[:, px] = mean * (light[px] / max(light[shown].mean(), 0.05))[None]
            ok = target & np.isfinite(flat[0])
            if not ok.any():
                continue
            err = [np.abs(p[:, ok] - truth[t][:, ok]).mean(1) for p in (flat, lit)]
            corr = np.corrcoef(truth[t, 0][target], light[target])[0, 1]
            print(
                f"| {seed} | {date:%Y-%m-%d} | {target.sum()} | {ok.sum()} | "
                + " | ".join(" ".join(f"{v:.3f}" for v in e) for e in err)
                + f" | {corr:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
