"""Fill quality on the demo cube: the model's filled pixels vs persistence and interpolation.

    python benchmarks/bench_fill.py [--model PATH]

For every date the model synthesizes, on the cloud-masked pixels, against the cube's
``truth``: MAE and PSNR (MAX = 1) of the filled series (``fill_series``), of per-pixel
persistence (nearest earlier clear value), of the nearest clear value on either side (what a
composite reference holds: the model's starting point) and of per-pixel linear temporal
interpolation.
Baselines are computed in the same run on the same pixels.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd


def _markdown(table: pd.DataFrame) -> str:
    def cell(value: object) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped model)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import cloudfill
    from cloudfill.evaluate.baselines import linear_interpolation, persistence
    from cloudfill.metrics import mae, psnr

    ds = cloudfill.load_demo()
    model = cloudfill.default_model() if args.model is None else cloudfill.load_model(args.model)
    t0 = time.perf_counter()
    out = ds.cloudfill.fill_series(model).compute()
    seconds = time.perf_counter() - t0
    mask = ds.cloudfill.cloud_mask().values
    rows = []
    for i, date in enumerate(pd.DatetimeIndex(ds.time.values)):
        if out["method"].values[i] != "synthesize" or not mask[i].any():
            continue
        m, truth = mask[i], ds.truth.values[i]
        preds = {
            "model (fill_series)": out.s2.values[i],
            "persistence": persistence(ds, date).values,
            "nearest clear (either side)": persistence(ds, date, direction="nearest").values,
            "interpolation": linear_interpolation(ds, date).values,
        }
        for name, pred in preds.items():
            rows.append(
                {
                    "date": f"{date:%Y-%m-%d}",
                    "cloud %": round(100 * float(m.mean()), 1),
                    "method": name,
                    "MAE": mae(pred, truth, m),
                    "PSNR": psnr(pred, truth, m),
                }
            )
    table = pd.DataFrame(rows)
    print(f"fill_series on the demo cube: {seconds:.1f} s")
    print(_markdown(table))
    means = table.groupby("method", sort=False)[["MAE", "PSNR"]].mean().reset_index()
    print()
    print(_markdown(means))
    assert np.isfinite(table["MAE"]).all()


if __name__ == "__main__":
    main()
