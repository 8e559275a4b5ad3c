"""How the blend reference's tau and the same-date adjustment's sigma and floor were chosen.

    python benchmarks/select_fill_parameters.py [--shape 1024]

On the default model's training cube (``scripts/train_default_model.py``'s recipe: seed 101,
16 dates, 0-60 % cloud), never on the evaluation cubes of ``bench_fill.py``:

A. Every date in turn is the target and its clear pixels the truth; its reference is built
   from the other dates (within 120 days) as each rule would: the nearest clear value (the
   composite), linear interpolation in time, and :func:`blend_reference` for several tau.
B. The clear dates (< 6 % cloud) get the cloud masks of the partly cloudy dates (25-65 %):
   the masked pixels are filled from the reference, then adjusted to the date's remaining
   clear pixels (:func:`adjust_to_date`) for several sigma and floor values; scored on the
   masked pixels.

MAE and PSNR (MAX = 1) pooled over all scored pixels, in reflectance. The untrained default
generator returns its reference, so these are the fills' starting points.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def _table(rows: list[dict]) -> pd.DataFrame:
    t = pd.DataFrame(rows).groupby("method", sort=False)[["ae", "se", "n"]].sum()
    t["MAE"] = t["ae"] / t["n"]
    t["PSNR"] = -10 * np.log10(t["se"] / t["n"])
    return t[["MAE", "PSNR"]].reset_index()


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| method | MAE | PSNR |", "|---|---|---|"]
    lines += [f"| {r.method} | {r.MAE:.5f} | {r.PSNR:.2f} |" for r in table.itertuples()]
    return "\n".join(lines)


def _score(rows: list[dict], method: str, pred: np.ndarray, truth: np.ndarray, where) -> None:
    ok = where & np.isfinite(pred).all(0)
    err = (pred - truth)[:, ok].astype("float64")
    rows.append({"method": method, "ae": np.abs(err).sum(), "se": (err**2).sum(), "n": err.size})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=1024, help="side of the training cube")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import cloudfill
    from cloudfill.core.condition import blend_reference, composite_reference
    from cloudfill.fill.adjust import adjust_to_date

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import train_default_model as recipe

    t0 = time.perf_counter()
    ds = cloudfill.simulate_scene(
        (args.shape, args.shape),
        dates=recipe._dates(),
        seed=recipe.SEED,
        cloud_fraction=list(recipe.CLOUD),
    )
    mask = ds.cloudfill.cloud_mask().values
    s2 = np.where(mask[:, None], np.float32(np.nan), ds.s2.values)
    truth = ds.truth.values
    s1 = ds.cloudfill.despeckle(5).s1.values  # the default model's despeckling
    times = pd.DatetimeIndex(ds.time.values)
    s1_times = pd.DatetimeIndex(ds.s1_time.values)
    clear_frac = mask.mean((1, 2))

    def radar(when: pd.Timestamp) -> np.ndarray | None:
        gaps = np.abs(s1_times - when)
        j = int(np.argmin(gaps))
        return s1[j] if gaps[j] <= pd.Timedelta(days=6) else None

    def references(i: int, images: np.ndarray, unusable: np.ndarray, taus) -> dict:
        date = times[i]
        others = [k for k in range(len(times)) if k != i]
        others = [k for k in others if abs(times[k] - date) <= pd.Timedelta(days=120)]
        others.sort(key=lambda k: (abs(times[k] - date), times[k]))
        imgs = [images[k] for k in others]
        bad = [unusable[k] for k in others]
        offsets = [(times[k] - date) / pd.Timedelta(days=1) for k in others]
        out = {"nearest (composite)": composite_reference(imgs, bad)}
        # Interpolation is the blend with no radar: the time weights alone.
        out["interpolation"] = blend_reference(imgs, bad, offsets, [None] * len(imgs), radar(date))
        for tau in taus:
            radars = [radar(times[k]) for k in others]
            out[f"blend, tau {tau:g} dB"] = blend_reference(
                imgs, bad, offsets, radars, radar(date), tau=tau
            )
        return out

    rows_a: list[dict] = []
    for i in range(len(times)):
        if clear_frac[i] > 0.95 or radar(times[i]) is None:
            continue
        for name, ref in references(i, s2, mask, (2.0, 3.0, 4.0)).items():
            _score(rows_a, name, ref, truth[i], ~mask[i])
    print(f"A. leave one date out, {args.shape} px, {len(times)} dates")
    print(_markdown(_table(rows_a)))

    rows_b: list[dict] = []
    targets = [i for i in range(len(times)) if clear_frac[i] < 0.06 and 0 < i < len(times) - 1]
    donors = [k for k in range(len(times)) if 0.25 <= clear_frac[k] <= 0.65]
    dims = ("band", "y", "x")
    for i in targets:
        refs = references(i, s2, mask, (3.0,))
        for k in donors:
            hidden = mask[k] | mask[i]
            scored = mask[k] & ~mask[i]
            real = xr.DataArray(np.where(hidden[None], np.float32(np.nan), truth[i]), dims=dims)
            clear = xr.DataArray(~hidden, dims=("y", "x"))
            for name, ref in refs.items():
                _score(rows_b, name, ref, truth[i], scored)
                fill = xr.DataArray(ref, dims=dims)
                for sigma in (8.0, 12.0, 16.0):
                    for floor in (0.0025, 0.01):
                        adjusted = adjust_to_date(fill, real, clear, sigma, floor=floor).values
                        method = f"{name} + adjust sigma {sigma:g}, floor {floor:g}"
                        _score(rows_b, method, adjusted, truth[i], scored)
    print()
    print(
        f"B. imposed masks: targets {[f'{times[i]:%m-%d}' for i in targets]}, "
        f"masks of {[f'{times[k]:%m-%d}' for k in donors]}"
    )
    print(_markdown(_table(rows_b).sort_values("MAE")))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
