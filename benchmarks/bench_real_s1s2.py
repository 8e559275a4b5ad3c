"""Real S1 -> S2 benchmark (issue 18, item 1): train an S model on real BigEarthNet pairs of
some places and score it on pairs of others, against a per-pixel ridge regression and the
train-set mean.

Data (``../shared/data``, see ``_real_pairs.py`` for the split):

- ``npz-test``: 12 of the 30 ``bigearthnet_v1_pairs`` (6 datatakes); the other 18 (15
  datatakes) are the training pairs, mosaicked into one cube (128 px cells, one pair per
  ``cloudfill train`` split block);
- ``tif-test``: the 6 ``bigearthnet_pairs`` GeoTIFF pairs (another release; their
  datatakes hold no training pair).

Metrics: :func:`cloudfill.metrics.all_metrics` per 120 px pair (SSIM windows never mix
pairs), averaged over the pairs of a test set. Models predict through
``cloudfill.synthesize`` on a one-pair cube (the model's own despeckling and normalisation).

Usage (from the repository root; training is single-threaded, run it under ``nice``)::

    python benchmarks/bench_real_s1s2.py cube OUT/train.zarr        # the 18-pair training mosaic
    python benchmarks/bench_real_s1s2.py baselines --jsonl OUT/scores.jsonl
    cloudfill train OUT/train.zarr --variant S --patch-size 64 ... --out OUT/run   # any recipe
    python benchmarks/bench_real_s1s2.py run OUT/train.zarr OUT/run2 --ema 0.99 ...  # settings
    python benchmarks/bench_real_s1s2.py score OUT/run/best.safetensors --name NAME --jsonl ...
    python benchmarks/bench_real_s1s2.py table OUT/scores.jsonl     # the markdown table

``run`` trains through the Python API (``cloudfill.train``) with settings the CLI does not
expose yet (``--lambda-l1``, ``--d-filters``, block fractions) and, with ``--cosine``, a
learning-rate decay patched in here. ``--tune`` (``cube``, ``baselines``, ``score``) swaps in
the tuning split: 14 training pairs to train on, 4 other training datatakes
(:data:`TUNE_VAL_DATATAKES`) to score; settings are chosen there, never on the test pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _real_pairs as R

TUNE_VAL_DATATAKES = (
    "S2A_20170818T103021",  # arable, forest, water
    "S2A_20180413T95032",  # coniferous / mixed forest
    "S2B_20170930T095019",  # sea
    "S2B_20180502T093039",  # complex cultivation, forest
)
"""Training datatakes held out when tuning (``tune``): 4 pairs, 14 left to train on."""


def tune_split(train: list[R.Pair]) -> tuple[list[R.Pair], list[R.Pair]]:
    held = [p for p in train if p.datatake in TUNE_VAL_DATATAKES]
    rest = [p for p in train if p.datatake not in TUNE_VAL_DATATAKES]
    return rest, held


def datasets() -> dict[str, list[R.Pair]]:
    train, test = R.split_npz(R.load_npz_pairs())
    fit, val = tune_split(train)
    tif = R.load_geotiff_pairs()
    return {
        "train": train,
        "npz-test": test,
        "tif-test": tif,
        "tif-test-5": [p for p in tif if p.name != R.SNOW_PAIR],
        "tune-train": fit,
        "tune-val": val,
    }


def baseline_rows(fit: list[R.Pair], sets: dict[str, list[R.Pair]]) -> list[dict]:
    ridge = R.RidgeBaseline().fit(fit)
    mean = R.train_mean(fit)
    rows = []
    for name, pairs in sets.items():
        rows.append(
            {
                "method": "ridge (S1 features)",
                "set": name,
                **R.score([ridge.predict(p) for p in pairs], pairs),
            }
        )
        flat = [np.broadcast_to(mean[:, None, None], p.s2.shape).copy() for p in pairs]
        clean = R.RidgeBaseline(exclude=R.BRIGHT_DATATAKES).fit(fit)
        rows.append(
            {
                "method": "ridge, bright pairs dropped",
                "set": name,
                **R.score([clean.predict(p) for p in pairs], pairs),
            }
        )
        rows.append({"method": "train-set mean", "set": name, **R.score(flat, pairs)})
    return rows


def model_rows(path: Path, name: str, sets: dict[str, list[R.Pair]]) -> list[dict]:
    import cloudfill

    model = cloudfill.load_model(path)
    return [
        {"method": name, "set": s, **R.score(R.synthesize_pairs(model, pairs), pairs)}
        for s, pairs in sets.items()
    ]


def print_table(rows: list[dict]) -> None:
    sets = list(dict.fromkeys(r["set"] for r in rows))
    print("| method | " + " | ".join(f"{s} MAE / PSNR / SSIM" for s in sets) + " |")
    print("|---|" + "---|" * len(sets))
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for s in sets:
            r = next((r for r in rows if r["method"] == method and r["set"] == s), None)
            cells.append("" if r is None else f"{r['mae']:.4f} / {r['psnr']:.2f} / {r['ssim']:.3f}")
        print(f"| {method} | " + " | ".join(cells) + " |")


def run(args: argparse.Namespace) -> int:
    """Train with settings of :class:`cloudfill.TrainConfig` (and, with ``--cosine``, a
    learning-rate schedule the package does not have yet, patched in here)."""
    import torch

    import cloudfill
    from cloudfill.training.config import NetworkSettings, OptimSettings, Schedule
    from cloudfill.training.step import Networks

    torch.set_num_threads(1)
    attention = {"none": False, "cbam": True}.get(args.attention, args.attention)
    config = cloudfill.TrainConfig(
        "S",
        network=NetworkSettings(
            base_filters=args.filters,
            n_blocks=args.blocks,
            attention=attention,
            pixel_features=args.pixel,
            d_filters=args.d_filters,
            d_layers=args.d_layers,
            norm=args.norm,
        ),
        optim=OptimSettings(
            batch_size=args.batch, lr=args.lr, ema=args.ema, lambda_l1=args.lambda_l1
        ),
        schedule=Schedule(epochs=10_000, max_steps=args.steps, patience=args.patience),
        patches=cloudfill.PatchSettings(
            64, block_size=128, fractions=(1.0 - args.val - args.test, args.val, args.test)
        ),
        seed=args.seed,
    )
    if args.cosine:
        original = Networks.step
        calls = {"n": 0}

        def step(self, batch, cfg):  # type: ignore[no-untyped-def]
            factor = 0.5 * (1 + np.cos(np.pi * min(calls["n"], args.steps) / args.steps))
            for opt in (self.opt_g, self.opt_d):
                for group in opt.param_groups:
                    group["lr"] = cfg.optim.lr * factor
            calls["n"] += 1
            return original(self, batch, cfg)

        Networks.step = step  # type: ignore[method-assign]
    started = time.perf_counter()
    model = cloudfill.train(str(args.cube), config, args.out, progress=False)
    print(
        json.dumps(
            {
                "seconds": round(time.perf_counter() - started, 1),
                **{k: model.card.training.get(k) for k in ("steps", "best_step")},
            }
        )
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cube", help="write the training mosaic (or --tune: the tuning one)")
    c.add_argument("out", type=Path)
    c.add_argument("--tune", action="store_true")
    s = sub.add_parser("score", help="score a checkpoint on the test sets (or --tune)")
    s.add_argument("model", type=Path)
    s.add_argument("--name", required=True)
    s.add_argument("--tune", action="store_true")
    s.add_argument("--jsonl", type=Path, default=None, help="append the rows here")
    b = sub.add_parser("baselines", help="ridge and mean on the test sets (or --tune)")
    b.add_argument("--tune", action="store_true")
    b.add_argument("--jsonl", type=Path, default=None)
    r = sub.add_parser("run", help="train through cloudfill.train (settings the CLI lacks)")
    r.add_argument("cube", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--filters", type=int, default=16)
    r.add_argument("--blocks", type=int, default=3)
    r.add_argument("--attention", default="none")
    r.add_argument("--pixel", type=int, default=32)
    r.add_argument("--d-filters", type=int, default=64)
    r.add_argument("--d-layers", type=int, default=3)
    r.add_argument("--lr", type=float, default=1e-3)
    r.add_argument("--norm", default="batch")
    r.add_argument("--ema", type=float, default=None)
    r.add_argument("--lambda-l1", type=float, default=100.0)
    r.add_argument("--batch", type=int, default=8)
    r.add_argument("--steps", type=int, default=800)
    r.add_argument("--val", type=float, default=0.0, help="validation fraction of blocks")
    r.add_argument("--test", type=float, default=0.0, help="test fraction of blocks")
    r.add_argument("--patience", type=int, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--cosine", action="store_true", help="cosine lr decay to 0 over --steps")
    t = sub.add_parser("table", help="the markdown table of a jsonl of rows")
    t.add_argument("jsonl", type=Path)
    args = parser.parse_args(argv)

    data = datasets()
    if args.cmd == "cube":
        import cloudfill

        pairs = data["tune-train"] if args.tune else data["train"]
        cols = 7 if args.tune else 6
        cloudfill.write_cube(R.mosaic_cube(pairs, cols=cols), args.out, overwrite=True)
        print(f"{len(pairs)} pairs -> {args.out}")
        return 0
    if args.cmd == "run":
        return run(args)
    if args.cmd == "table":
        rows = [json.loads(line) for line in args.jsonl.read_text().splitlines() if line]
        print_table(rows)
        return 0
    fit = data["tune-train"] if args.tune else data["train"]
    sets = (
        {"tune-val": data["tune-val"]}
        if args.tune
        else {k: data[k] for k in ("npz-test", "tif-test", "tif-test-5")}
    )
    started = time.perf_counter()
    if args.cmd == "baselines":
        rows = baseline_rows(fit, sets)
    else:
        rows = model_rows(args.model, args.name, sets)
    print_table(rows)
    print(f"({time.perf_counter() - started:.1f} s)")
    if args.jsonl is not None:
        with args.jsonl.open("a") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
