"""The same-date adjustment on a real series: off, the old fixed sigma 12, and ``"auto"``.

    python benchmarks/bench_real_series.py              # the real Slovenia series
    python benchmarks/bench_real_series.py --simulated  # and simulated scenes, seeds 61-63

**The real series** (``../shared/data/eolearn_slovenia``, no S1, so every fill interpolates
in time): the patch's 21 latest fully clear dates (2016-08-04 .. 2017-12-07; CLM 0 on every
pixel), with the real cloud masks of the patch's 19 partly cloudy dates (0 < CLM fraction < 1,
in time order) laid on the 19 inner dates in time order; the first and last dates stay clear.
The hidden pixels' own values are the truth. Only NDVI exists for these dates (the 13 bands
cover the first 5 dates only), so each of the four band slots holds ``(NDVI + 1) / 2``: a
reflectance-like 0..1 value, and MAE here is half the NDVI MAE.

**Simulated scenes** (``--simulated``): :func:`cloudfill.simulate_scene`, seeds 61-63 (never
used for tuning), with S1: the default model synthesizes the cloudy dates; the model runs
once per date (its synthesis is kept and reused by the three fills).

Per date and pooled over all hidden pixels (``cloudfill.metrics``, MAX = 1), against the
truth, on the hidden (cloud-masked) pixels: ``fill_series`` with ``adjust=0``, ``adjust=12``
(the default until now) and ``adjust="auto"`` (the sigma each date got is shown), persistence
(each pixel's latest clear value) and per-pixel linear interpolation, all in the same run.
The acceptance check: ``auto`` never worse than ``adjust=0`` on MAE or PSNR, date by date.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from _machine import cpu_model, load

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eolearn_slovenia"
N_DATES = 21
FILLS: dict[str, Any] = {"adjust=0": 0.0, "adjust=12": 12.0, "auto": "auto"}


def slovenia_series(data: Path, n_dates: int = N_DATES) -> tuple[xr.Dataset, np.ndarray]:
    """The real series with real masks laid on clear dates, and its truth (time, band, y, x)."""
    from cloudfill.cube.eolearn import cube_from_eolearn

    root = data / "current" if (data / "current").is_dir() else data
    times = pd.DatetimeIndex(pd.to_datetime(json.loads((root / "timestamps.json").read_text())))
    clm = np.load(root / "CLM.npy")[..., 0] != 0
    is_data = np.load(root / "IS_DATA.npy")[..., 0] != 0
    ndvi = np.load(root / "NDVI.npy")[..., 0]
    fraction = clm.mean(axis=(1, 2))
    clear = np.flatnonzero((fraction == 0) & is_data.all(axis=(1, 2)))[-n_dates:]
    donors = np.flatnonzero((fraction > 0) & (fraction < 1))
    inner = np.arange(1, len(clear) - 1)
    cloud = np.zeros((len(clear), *clm.shape[1:]), dtype=bool)
    for target, donor in zip(inner, donors, strict=False):
        cloud[target] = clm[donor]
    value = ((ndvi[clear] + 1) / 2).astype("float32")
    truth = np.repeat(value[:, None], 4, axis=1)
    grid = cube_from_eolearn(data)  # the patch's grid, CRS, DEM and band names
    ds = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), truth.copy(), {"long_name": "(NDVI + 1) / 2"}),
            "cloud": (("time", "y", "x"), cloud),
            "dem": grid["dem"],
        },
        coords={"time": times[clear], "band": grid["band"].values, "y": grid.y, "x": grid.x},
        attrs={"source": "eo-learn Slovenia patch: NDVI of clear dates, real masks laid on"},
    )
    ds["s2"] = ds["s2"].where(~ds["cloud"])
    return ds.rio.write_crs(grid.rio.crs), truth


def simulated_series(seed: int, size: int, dates: int) -> tuple[xr.Dataset, np.ndarray]:
    """A simulated scene (with S1) and its truth."""
    import cloudfill

    ds = cloudfill.simulate_scene((size, size), dates=dates, seed=seed)
    return ds, ds["truth"].transpose("time", "band", "y", "x").values


def _kept_synthesis() -> Callable[[pd.Timestamp, Any], Any]:
    """A synthesis hook computing each date's synthesis once and handing it back after."""
    from dataclasses import replace

    kept: dict[pd.Timestamp, Any] = {}

    def hook(date: pd.Timestamp, syn: Any) -> Any:
        if date not in kept:
            scale = None if syn.scale is None else syn.scale.compute()
            kept[date] = replace(syn, mean=syn.mean.compute(), scale=scale)
        return kept[date]

    return hook


def compare(ds: xr.Dataset, truth: np.ndarray, model: Any, cube: str) -> tuple[pd.DataFrame, dict]:
    """Per hidden date and method: MAE, PSNR; plus the pooled rows and the timings."""
    from cloudfill.core.temporal import linear_interpolation, persistence
    from cloudfill.metrics import mae, psnr

    hook = _kept_synthesis() if model is not None else None
    outputs, seconds = {}, {}
    for name, adjust in FILLS.items():
        t0 = time.perf_counter()
        lazy = ds.cloudfill.fill_series(model, adjust=adjust, synthesis_hook=hook)
        built = time.perf_counter()
        outputs[name] = lazy.compute()
        seconds[name] = (built - t0, time.perf_counter() - built)
    mask = ds.cloudfill.cloud_mask().values
    times = pd.DatetimeIndex(ds.time.values)
    rows, pooled = [], {}
    for i, date in enumerate(times):
        if not mask[i].any() or not (~mask[i]).any():
            continue  # nothing hidden, or nothing to adjust to
        preds = {name: out["s2"].values[i] for name, out in outputs.items()}
        preds["persistence"] = persistence(ds, date).values
        preds["interpolation"] = linear_interpolation(ds, date).values
        row: dict[str, Any] = {
            "cube": cube,
            "date": f"{date:%Y-%m-%d}",
            "cloud %": round(100 * float(mask[i].mean()), 1),
            "method": str(outputs["auto"]["method"].values[i]),
            "auto sigma": float(outputs["auto"]["adjust_sigma"].values[i]),
        }
        for name, pred in preds.items():
            row[f"{name} MAE"] = mae(pred, truth[i], mask[i])
            row[f"{name} PSNR"] = psnr(pred, truth[i], mask[i])
            pooled.setdefault(name, []).append((pred, truth[i], mask[i]))
        rows.append(row)
    table = pd.DataFrame(rows)
    overall: dict[str, Any] = {"cube": cube, "date": "pooled", "cloud %": np.nan}
    for name, parts in pooled.items():
        # Dates side by side along x: the pooled metric over every hidden pixel.
        pred, tru, m = (np.concatenate(p, axis=-1) for p in zip(*parts, strict=True))
        overall[f"{name} MAE"], overall[f"{name} PSNR"] = mae(pred, tru, m), psnr(pred, tru, m)
    return table, {"pooled": overall, "seconds": seconds}


def verdict(table: pd.DataFrame) -> list[str]:
    """Dates where ``auto`` is worse than ``adjust=0`` on MAE or PSNR (beyond float noise)."""
    worse = []
    for _, row in table.iterrows():
        d_mae = row["auto MAE"] - row["adjust=0 MAE"]
        d_psnr = row["auto PSNR"] - row["adjust=0 PSNR"]
        if d_mae > 1e-7 or d_psnr < -1e-4:
            worse.append(f"{row['cube']} {row['date']}: MAE {d_mae:+.5f}, PSNR {d_psnr:+.3f} dB")
    return worse


def _markdown(table: pd.DataFrame) -> str:
    def cell(column: str, value: Any) -> str:
        if isinstance(value, float):
            if np.isnan(value):
                return ""
            if "PSNR" in column:
                return f"{value:.2f}"
            if column in ("cloud %", "auto sigma"):
                return f"{value:g}"
            return f"{value:.4f}"
        return str(value)

    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table.itertuples(False):
        lines.append("| " + " | ".join(cell(c, v) for c, v in zip(cols, row, strict=True)) + " |")
    return "\n".join(lines)


def report(table: pd.DataFrame, extra: dict) -> str:
    names = [*FILLS, "persistence", "interpolation"]
    wide = pd.concat([table, pd.DataFrame([extra["pooled"]])], ignore_index=True)
    mae = wide[["date", "cloud %", "auto sigma", *(f"{n} MAE" for n in names)]]
    psnr = wide[["date", *(f"{n} PSNR" for n in names)]]
    times = ", ".join(
        f"{name} {build:.1f} s to build + {run:.1f} s to compute"
        for name, (build, run) in extra["seconds"].items()
    )
    worse = verdict(table)
    return "\n\n".join(
        [
            f"**{table['cube'].iloc[0]}**: MAE (reflectance 0..1)",
            _markdown(mae),
            "PSNR (dB, MAX = 1)",
            _markdown(psnr),
            f"fill_series: {times}.",
            "auto worse than adjust=0: " + ("; ".join(worse) if worse else "on no date") + ".",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eolearn_slovenia folder")
    parser.add_argument("--simulated", action="store_true", help="also simulated scenes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[61, 62, 63])
    parser.add_argument("--size", type=int, default=256, help="simulated scene side, px")
    parser.add_argument("--dates", type=int, default=12, help="simulated scene dates")
    parser.add_argument("--no-real", action="store_true", help="skip the Slovenia series")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(f"{datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, load {load()}\n")
    failed = False
    if not args.no_real:
        if not args.data.exists():
            print(f"no data at {args.data}", file=sys.stderr)
            return 2
        ds, truth = slovenia_series(args.data)
        table, extra = compare(ds, truth, None, "Slovenia, real")
        print(report(table, extra), "\n", flush=True)
        failed |= bool(verdict(table))
    if args.simulated:
        import cloudfill

        model = cloudfill.default_model()
        for seed in args.seeds:
            ds, truth = simulated_series(seed, args.size, args.dates)
            table, extra = compare(ds, truth, model, f"simulated, seed {seed}")
            print(report(table, extra), "\n", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
