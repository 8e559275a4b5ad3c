"""Probe: would the target date's own clear pixels help a model fill its cloudy ones? (issue 21)

No variant's condition holds the target date's clear pixels: the network sees references of
other dates, S1, the DEM and the season, and only the hand-made same-date adjustment
(:mod:`cloudfill.fill.adjust`, a Gaussian-smoothed residual of the clear pixels) looks at
the date itself. On the validation scenes one date dominates what the model still gets wrong
on change pixels: generic scene 132's 2023-02-23 (18 % cloud), where the snow line moved
since the references. There the clear 82 % of the image shows where the snow lies, and the
snow line follows elevation, which a smoothed residual blurs.

Per-band HistGradientBoosting of ``truth - blend`` on the per-pixel inputs of
``probe_season.py`` (the probe's full inputs and the season), fitted on the cloudy pixels of
its training scenes, with and without **context** columns built from the target date's clear
pixels only (their residual ``s2 - blend``):

- the normalised-convolution mean of the residual (as the adjustment computes it, with its
  floor) at sigma 8 and 32 px, per band, and the clear density at each sigma;
- the mean residual of the date's clear pixels in the pixel's elevation bin (16 quantile bins
  of the scene's DEM; NaN where a bin has fewer than 20 clear pixels), per band.

Scored on the cloudy pixels (with a blend reference) of the validation scenes (where the
question came from: say so when quoting it); "change": ``|truth - blend| > 0.05`` in some
band (the probe's own residual; ``bench_learned_gain.py``'s change pixels depart from
interpolation instead). MAE over pixels and bands.

    python benchmarks/probe_context.py                  # ~4 min on 2 cores
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from _machine import cpu_model, load
from probe_learning import markdown
from probe_season import TRAIN, fit_per_band, probe_parser, probe_scenes
from probe_season import samples as season_samples
from scipy import ndimage

from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.fill.adjust import ADJUST_FLOOR

SIGMAS = (8.0, 32.0)
BINS = 16
MIN_BIN = 20


def context(ds, t: int, blend: np.ndarray, clear: np.ndarray) -> np.ndarray:
    """(pixels, features) context of date ``t`` from its clear pixels; ``blend`` (pixels,
    bands), ``clear`` (y, x)."""
    ny, nx = clear.shape
    s2 = ds["s2"].sel(band=list(BANDS)).values[t].reshape(len(BANDS), -1).T
    ok = clear.ravel() & np.isfinite(blend).all(1) & np.isfinite(s2).all(1)
    resid = np.where(ok[:, None], s2 - blend, 0.0)
    cols = []
    for sigma in SIGMAS:
        weight = ndimage.gaussian_filter(ok.reshape(ny, nx).astype("float64"), sigma)
        for b in range(len(BANDS)):
            num = ndimage.gaussian_filter(resid[:, b].reshape(ny, nx), sigma)
            cols.append((num / (weight + ADJUST_FLOOR)).ravel())
        cols.append(weight.ravel())
    dem = ds["dem"].values.ravel()
    edges = np.quantile(dem, np.linspace(0, 1, BINS + 1)[1:-1])
    which = np.digitize(dem, edges)
    count = np.bincount(which[ok], minlength=BINS)
    for b in range(len(BANDS)):
        total = np.bincount(which[ok], weights=resid[ok, b], minlength=BINS)
        mean = np.where(count >= MIN_BIN, total / np.maximum(count, 1), np.nan)
        cols.append(mean[which])
    return np.stack(cols, 1).astype("float32")


def samples(ds, with_context: bool) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (with the season) and residuals ``truth - blend`` of a scene's cloudy pixels."""
    clear_all = ~cloud_mask(ds).values.astype(bool)

    def extra(t: int, part: dict) -> np.ndarray:
        return context(ds, t, part["blend"], clear_all[t])

    x, r, _ = season_samples(ds, True, extra if with_context else None)
    return x, r


def main() -> None:
    args = probe_parser(__doc__).parse_args()
    warnings.simplefilter("ignore")
    t0 = time.time()
    train, test = probe_scenes(args)
    sums: dict[tuple[str, str, str], float] = {}
    for with_context in (False, True):
        x, r = (np.concatenate(a) for a in zip(*(samples(ds, with_context) for ds in train),
                                                strict=True))  # fmt: skip
        models = fit_per_band(x, r, args)
        for name, ds in test.items():
            xt, rt = samples(ds, with_context)
            err = np.abs(np.stack([m.predict(xt) for m in models], 1) - rt).sum(1)
            change = (np.abs(rt) > 0.05).any(1)
            for subset, w in (("all", slice(None)), ("change", change)):
                key = "GBM + context" if with_context else "GBM"
                sums[(name, subset, key)] = err[w].sum() / len(BANDS)
                sums[(name, subset, "blend")] = np.abs(rt[w]).sum(1).sum() / len(BANDS)
                sums[(name, subset, "n")] = float(np.count_nonzero(np.ones(len(rt))[w]))
    print(f"{cpu_model()}, load {load()}; train {TRAIN}; {time.time() - t0:.0f} s")
    table = []
    for name in [*test, "pooled"]:
        row: dict[str, object] = {"scene": name}
        for subset in ("all", "change"):
            names = list(test) if name == "pooled" else [name]
            n = sum(sums[(s, subset, "n")] for s in names)
            row[f"{subset} px"] = int(n)
            for key in ("blend", "GBM", "GBM + context"):
                row[f"{subset}: {key}"] = f"{sum(sums[(s, subset, key)] for s in names) / n:.4f}"
        table.append(row)
    print(markdown(table))


if __name__ == "__main__":
    main()
