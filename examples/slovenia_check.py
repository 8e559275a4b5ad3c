"""Real-data check on the eo-learn Slovenia patch: baselines and the land-cover check.

The patch (``../shared/data/eolearn_slovenia``) is a real Sentinel-2 L1C series with cloud
masks, a DEM and a land-cover map, but no Sentinel-1, so no generator can run on it. What it
does test on real data is the evaluation itself and the baselines a model has to beat:

- each clear date that has an earlier usable date is **hidden**; persistence, per-pixel linear
  interpolation and the per-pixel regression (reference bands + DEM, fitted on the other
  dates) predict it, and its clear pixels are the truth (``cloudfill.evaluation.evaluate``);
- the **land-cover check** of the paper: a random forest trained on the real clear image
  (spatial blocks, ``lulc`` labels, class 0 = no data ignored) classifies the test blocks of
  the real image and of each reconstruction of that date.

Run from the repository root::

    python examples/slovenia_check.py             # prints, appends to benchmarks/RESULTS.md
    python examples/slovenia_check.py --no-append # prints only
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

import pandas as pd

from cloudfill.cube.eolearn import cube_from_eolearn
from cloudfill.evaluation.evaluate import LandcoverCheck, evaluate, landcover_frame

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "eolearn_slovenia"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"

# eo-learn's land-cover example (its LULC enum); 0 is "no data".
LULC_NAMES = (
    "1=cultivated,2=forest,3=grassland,4=shrubland,5=water,6=wetland,7=tundra,"
    "8=artificial,9=bare,10=snow"
)
METRICS = ["mae", "rmse", "psnr", "ssim", "sam"]


def run_check(data: Path, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Metrics per hidden date, overall accuracies, and per-class F1 of every hidden date."""
    ds = cube_from_eolearn(data)
    ds["lulc"].attrs["classes"] = LULC_NAMES
    check = LandcoverCheck(ignore_label=0, block=25, seed=seed, n_jobs=2)
    first = evaluate(ds, with_model=False, landcover=False)
    tables, accuracy, f1 = [], [], []
    for when in pd.DatetimeIndex(first["date"].unique()):
        table = evaluate(ds, with_model=False, dates=[when], landcover=check)
        tables.append(table)
        lc = table.attrs["landcover"]
        if lc:
            accuracy.append({"date": lc["date"], **lc["overall_accuracy"], "n_test": lc["n_test"]})
            f1.append(landcover_frame(lc).assign(date=lc["date"]).reset_index())
    notes = first.attrs["notes"]
    metrics = pd.concat(tables, ignore_index=True)
    metrics.attrs["notes"] = notes
    return metrics, pd.DataFrame(accuracy), pd.concat(f1, ignore_index=True)


_FORMATS = {"psnr": "{:.2f}", "sam": "{:.2f}", "ssim": "{:.3f}"}


def _markdown(frame: pd.DataFrame, floats: str = "{:.4f}") -> str:
    head = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = []
    for _, row in frame.iterrows():
        cells = [
            _FORMATS.get(str(c), floats).format(v) if isinstance(v, float) else str(v)
            for c, v in row.items()
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def format_results(metrics: pd.DataFrame, accuracy: pd.DataFrame, f1: pd.DataFrame) -> str:
    """The results as Markdown (tables and notes)."""
    shown = metrics.assign(date=metrics["date"].dt.strftime("%Y-%m-%d"))
    shown = shown[["date", "method", *METRICS, "n_pixels"]]
    mean = metrics.groupby("method", sort=False)[METRICS].mean().reset_index()
    methods = [c for c in f1.columns if c in ("persistence", "interpolation", "regression")]
    f1_wide = f1[["date", "class", "name", "real", *methods, "support"]]
    last = metrics["date"].max()
    same = metrics[metrics["date"] == last].set_index("method")[METRICS]
    tail = (
        f"{last:%Y-%m-%d} is the last date: interpolation has no later clear date there and "
        "falls back to the nearest earlier value, i.e. persistence"
        if {"persistence", "interpolation"} <= set(same.index)
        and same.loc["persistence"].equals(same.loc["interpolation"])
        else ""
    )
    notes = [*metrics.attrs.get("notes", []), *([tail] if tail else [])]
    return "\n\n".join(
        [
            "Each clear date with an earlier usable date is hidden; its clear pixels are the "
            "truth (`n_pixels`, of 100 x 101), no model (the patch has no S1). MAE/RMSE in "
            "TOA reflectance (0-1), PSNR dB with MAX = 1, SSIM, SAM degrees.",
            _markdown(shown),
            "Mean over the hidden dates:",
            _markdown(mean),
            "Land-cover check (random forest, 100 trees, trained on the real image's "
            "training blocks of 25 px, class 0 ignored; overall accuracy on the test blocks):",
            _markdown(accuracy),
            "Per-class F1 (`support` = test pixels of the class):",
            _markdown(f1_wide, "{:.3f}"),
            "Notes: " + "; ".join(notes) + ".",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="eolearn_slovenia folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the land-cover split")
    parser.add_argument("--no-append", action="store_true", help="do not write RESULTS.md")
    args = parser.parse_args(argv)
    if not args.data.exists():
        print(f"no data at {args.data}", file=sys.stderr)
        return 2
    metrics, accuracy, f1 = run_check(args.data, args.seed)
    text = format_results(metrics, accuracy, f1)
    print(text)
    if not args.no_append:
        heading = f"\n## Slovenia real-data check (eo-learn patch, {date.today():%Y-%m-%d})\n\n"
        command = "`python examples/slovenia_check.py`\n\n"
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write(heading + command + text + "\n")
        print(f"\nappended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
