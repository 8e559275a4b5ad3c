"""Fill quality: the model's filled pixels vs persistence and interpolation, against truth.

    python benchmarks/bench_fill.py [--model PATH] [--seeds 1 2 3 --shape 384]

For every date the model synthesizes, on the cloud-masked pixels, against the cube's
``truth``: MAE and PSNR (MAX = 1) of the filled series (``fill_series``, as shipped: with the
same-date adjustment), of the same without the adjustment (``adjust=0``: the model alone), of
per-pixel persistence (nearest earlier clear value), of the nearest clear value on either
side (what a composite reference holds), of per-pixel linear temporal interpolation, and of
interpolation given the same same-date adjustment (so the adjustment's share of the gain is
visible). Baselines are computed in the same run on the same pixels.

The cubes: the shipped demo, then, with ``--seeds``, cubes of the demo's design (dates, S1
offsets, cloud cover; :func:`cloudfill.cube.demo.simulate_demo`) with other seeds, so the
comparison does not rest on one small scene. None of them was seen in training.
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


def compare(ds, model, cube: str) -> tuple[pd.DataFrame, float]:
    """Per synthesized date and method: MAE and PSNR on the masked pixels; and the seconds
    ``fill_series`` took."""
    from cloudfill.core.temporal import linear_interpolation, persistence
    from cloudfill.fill.adjust import adjust_to_date
    from cloudfill.metrics import mae, psnr

    t0 = time.perf_counter()
    out = ds.cloudfill.fill_series(model).compute()
    seconds = time.perf_counter() - t0
    raw = ds.cloudfill.fill_series(model, adjust=0).compute()
    unusable = ds.cloudfill.cloud_mask()
    mask = unusable.values
    rows = []
    for i, date in enumerate(pd.DatetimeIndex(ds.time.values)):
        if out["method"].values[i] != "synthesize" or not mask[i].any():
            continue
        m, truth = mask[i], ds.truth.values[i]
        interp = linear_interpolation(ds, date)
        real, clear = ds.s2.sel(time=date), ~unusable.sel(time=date)
        preds = {
            "model (fill_series)": out.s2.values[i],
            "model, no adjustment": raw.s2.values[i],
            "persistence": persistence(ds, date).values,
            "nearest clear (either side)": persistence(ds, date, direction="nearest").values,
            "interpolation": interp.values,
            "interpolation + adjustment": adjust_to_date(interp, real, clear).values,
        }
        for name, pred in preds.items():
            rows.append(
                {
                    "cube": cube,
                    "date": f"{date:%Y-%m-%d}",
                    "cloud %": round(100 * float(m.mean()), 1),
                    "method": name,
                    "MAE": mae(pred, truth, m),
                    "PSNR": psnr(pred, truth, m),
                }
            )
    return pd.DataFrame(rows), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped model)")
    parser.add_argument("--seeds", type=int, nargs="*", default=[], help="more demo-like cubes")
    parser.add_argument("--shape", type=int, default=384, help="side of the --seeds cubes")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import cloudfill
    from cloudfill.cube.demo import simulate_demo

    model = cloudfill.default_model() if args.model is None else cloudfill.load_model(args.model)
    print(f"model: {args.model or 'shipped default'} (reference {model.card.reference_mode})")
    demo, seconds = compare(cloudfill.load_demo(), model, "demo")
    print(f"fill_series on the demo cube: {seconds:.1f} s")
    print(_markdown(demo.drop(columns="cube")))
    print()
    tables = [demo]
    for seed in args.seeds:
        table, _ = compare(simulate_demo(seed, (args.shape, args.shape)), model, f"seed {seed}")
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    per_cube = table.groupby(["cube", "method"], sort=False)[["MAE", "PSNR"]].mean()
    print(_markdown(per_cube.reset_index()))
    if args.seeds:
        print()
        overall = per_cube.groupby("method", sort=False).mean().reset_index()
        print(f"mean over the {len(tables)} cubes (each cube's mean over its dates):")
        print(_markdown(overall))
    assert np.isfinite(table["MAE"]).all()


if __name__ == "__main__":
    main()
