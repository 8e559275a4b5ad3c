"""Does the generator beat its untrained self, the per-pixel boosting model and interpolation?
(issue 21, item 7)

Fills held-out simulated scenes (seeds never used in training or in choosing settings) with
``fill_series`` and scores the synthesized pixels (the cloudy pixels of synthesized dates)
against the simulator's truth. Rows:

- the model: the shipped default model (``--score-only``, no ``--model``), a checkpoint
  (``--model PATH``), or one trained here (an SOD blend model of the default model's size:
  16 filters, 4 residual blocks, CBAM, the confidence head; additive reference skip,
  per-pixel path, S2 normalised over the physical range, lr 2e-4, EMA 0.99; one simulated
  scene, seed 101, 384 px, 16 dates with the default model's cloud mix);
- its untrained self (the same architecture and card at step 0: a zero head returns the
  blend reference, so this is the blend fed through the same pipeline; for a model reading
  the target date's clear pixels, SODCTX, the same network without them, SODCT, so the fill
  still adjusts it);
- the model with no S1: the cube's S1 replaced by its scene mean per polarisation (the radar
  then carries no information, in the blend reference or the network);
- the per-pixel gradient-boosting model of the issue (``_gbm_baseline.PixelGBM``: per-band
  HistGradientBoosting of ``truth - blend`` from both sides' nearest clear values and ages, S1
  at the target and at both sides' dates and the DEM; NaN for a missing side), fitted on the
  cloudy pixels of ``simulate_scene`` seeds 101-103 (256 px, 16 dates), what a practical
  user might pick; a per-pixel prediction, so "adjust" does not apply;
- linear interpolation and persistence (``cloudfill.core.temporal``).

The fill rows are run with the same-date adjustment off (``adjust=0``) and on
(``adjust="auto"``, the fill's default). Every row is scored on the same pixels: cloudy
pixels of the dates the model synthesizes where every row has a value. MAE and PSNR (MAX = 1)
over all those pixels and bands; subsets: "change" pixels (truth differs from linear
interpolation by more than 0.05 in some band); "short gap" (the pixel's nearest clear
observations before and after, over the whole cube, both within 30 days) and "long gap"
(one or both farther than 60 days, or absent).

    python benchmarks/bench_learned_gain.py --score-only    # shipped model, ~14 min, 2 cores
    python benchmarks/bench_learned_gain.py --score-only --model CKPT --out DIR
    python benchmarks/bench_learned_gain.py --steps 1500 --out /tmp/learned   # train, score
    python benchmarks/bench_learned_gain.py --variant SODC --surface-change 0.3 --out DIR

Held-out scenes (``--scenes``, default ``sim:61-66,demo:71-73``): ``sim`` is
``simulate_scene`` (``--size`` px, ``--dates`` dates, ``--surface-change``), ``demo`` is the
demo's design (``cloudfill.cube.demo.simulate_demo``: 6 dates 40 days apart, heavy cloud) at
``--size`` px. Seeds 101-120 (training) and 81-84, 91-96 (calibration) are refused. Models
and checkpoints are chosen on the **validation scenes** ``--scenes
sim:131-133,demo:134-136`` (never used for training or evaluation); the default scenes are
the held-out evaluation, scored once a choice is made. Training
resumes from ``OUT/model`` when it exists. Prints markdown tables and the issue's "Done when"
checks (those this benchmark can compute) as booleans with their numbers.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _gbm_baseline import PixelGBM
from _machine import cpu_model, load
from probe_learning import markdown

import cloudfill
from cloudfill.core.temporal import linear_interpolation, persistence
from cloudfill.core.variants import get_variant
from cloudfill.cube.demo import simulate_demo
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS
from cloudfill.fill.plan import resolve_model
from cloudfill.model import CloudfillModel, ModelCard
from cloudfill.model.generator import Generator
from cloudfill.training.config import (
    NetworkSettings,
    OptimSettings,
    RuntimeSettings,
    Schedule,
    TrainConfig,
)
from cloudfill.training.index import PatchSettings

# The default model's cloud mix (scripts/train_default_model.py).
CLOUD = (0.0, 0.1, 0.4, 0.0, 0.3, 0.05, 0.6, 0.15, 0.0, 0.5, 0.25, 0.1, 0.0, 0.35, 0.2, 0.05)
TRAIN_SEED = 101
GBM_SEEDS = (101, 102, 103)
RESERVED = set(range(101, 121)) | set(range(81, 85)) | set(range(91, 97))  # training: 101-120
NETWORK = NetworkSettings(
    base_filters=16, n_blocks=4, attention=True, confidence=True, d_filters=32
)
ADJUST = {"off": 0, "auto": "auto"}
FILLS = ("model", "untrained", "model, no S1")
OTHERS = ("GBM per pixel", "interpolation", "persistence")
SUBSETS = ("all", "change", "short gap", "long gap")


def _config(steps: int, variant: str = "SOD") -> TrainConfig:
    return TrainConfig(
        variant,
        network=NETWORK,
        optim=OptimSettings(batch_size=8, lr=2e-4, lambda_l1=1e4, ema=0.99),
        schedule=Schedule(epochs=100, max_steps=steps, patience=None),
        patches=PatchSettings(64),
        reference="blend",
        runtime=RuntimeSettings(log_every=50),
        seed=0,
    )


def _untrained(trained: CloudfillModel) -> CloudfillModel:
    """The same architecture and card at step 0 (seeded like the run).

    For a model that reads the target date's clear pixels (SODCTX), the same network
    without those channels (SODCT): at step 0 both return the blend reference, but the fill
    does not adjust a context model's dates, and the untrained self keeps the hand-made
    adjustment (``adjust="auto"``) the fill gives it without them, a stronger baseline.
    """
    torch.manual_seed(0)
    card = ModelCard.from_json(trained.card.to_json())
    if trained.variant.uses_context:
        card.variant = "SODCT"
        card.input_channels = list(get_variant("SODCT").channels)
    generator = Generator(**card.generator_kwargs())
    return CloudfillModel(generator.eval(), card)


def _psnr(mse: float) -> float:
    return float(10 * np.log10(1.0 / mse)) if mse > 0 else np.nan


def _without_s1(ds):
    """``ds`` with S1 replaced by its scene mean per polarisation: no radar information."""
    mean = ds["s1"].mean(("s1_time", "y", "x"))
    return ds.assign(s1=(ds["s1"] * 0 + mean).astype("float32").assign_attrs(ds["s1"].attrs))


def parse_scenes(spec: str) -> list[tuple[str, int]]:
    """``"sim:61-66,demo:71-73"`` -> [("sim", 61), ..., ("demo", 73)]."""
    out = []
    for item in spec.split(","):
        design, seeds = item.split(":")
        lo, _, hi = seeds.partition("-")
        for seed in range(int(lo), int(hi or lo) + 1):
            if seed in RESERVED:
                raise SystemExit(f"seed {seed} is a training or calibration seed")
            out.append((design, seed))
    return out


def add_scene_options(parser: argparse.ArgumentParser) -> None:
    """The options :func:`make_scene` reads (``--size``, ``--dates``, ``--surface-change``)."""
    parser.add_argument("--size", type=int, default=256, help="held-out scene size (px)")
    parser.add_argument("--dates", type=int, default=16, help="dates of the sim scenes")
    parser.add_argument("--surface-change", type=float, default=0.0)


def make_scene(design: str, seed: int, args: argparse.Namespace):
    if design == "sim":
        return cloudfill.simulate_scene(
            (args.size, args.size), dates=args.dates, seed=seed, surface_change=args.surface_change
        )
    if design == "demo":
        return simulate_demo(seed, (args.size, args.size))
    raise SystemExit(f"unknown scene design {design!r} (sim, demo)")


def clear_ages(clear: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per date and pixel, days to the nearest clear observation before and after (inf if
    none); ``clear`` (time, y, x)."""
    before, after = np.empty(clear.shape, "float32"), np.empty(clear.shape, "float32")
    last = np.full(clear.shape[1:], -np.inf)
    for t in range(len(days)):
        before[t] = days[t] - last
        last = np.where(clear[t], days[t], last)
    last = np.full(clear.shape[1:], np.inf)
    for t in reversed(range(len(days))):
        after[t] = last - days[t]
        last = np.where(clear[t], days[t], last)
    return before, after


def score_scene(design: str, seed: int, model, untrained, gbm: PixelGBM, args) -> list[dict]:
    t0 = time.time()
    ds = make_scene(design, seed, args)
    truth = ds["truth"].sel(band=list(BANDS)).values
    mask = cloud_mask(ds).values.astype(bool)
    dates = ds.indexes["time"]
    interp = np.stack([linear_interpolation(ds, d).sel(band=list(BANDS)).values for d in dates])
    preds: dict[tuple[str, str], np.ndarray] = {
        ("interpolation", "-"): interp,
        ("persistence", "-"): np.stack(
            [persistence(ds, d).sel(band=list(BANDS)).values for d in dates]
        ),
        ("GBM per pixel", "-"): gbm.predict(ds),
    }
    no_s1 = _without_s1(ds)
    plans = []
    for name, net, cube in (("model", model, ds), ("untrained", untrained, ds),
                            ("model, no S1", model, no_s1)):  # fmt: skip
        for adj, value in ADJUST.items():
            out = cloudfill.fill_series(cube, net, adjust=value)
            preds[(name, adj)] = out["s2"].sel(band=list(BANDS)).values
            plans.append(out["method"].values)
    synth = np.asarray(plans[0]) == "synthesize"
    differ = sum(not np.array_equal(p, plans[0]) for p in plans)
    pixels = mask & synth[:, None, None]
    finite = pixels & np.isfinite(np.stack(list(preds.values()))).all(axis=(0, 2))
    days = np.asarray((dates - dates[0]) / pd.Timedelta(days=1), "float64")
    before, after = clear_ages(~mask, days)
    where = {
        "all": finite,
        "change": finite & (np.abs(truth - interp).max(axis=1) > 0.05),
        "short gap": finite & (before <= 30) & (after <= 30),
        "long gap": finite & ((before > 60) | (after > 60)),
    }
    rows = []
    for (name, adj), pred in preds.items():
        err = np.moveaxis(pred - truth, 1, -1)
        for subset, w in where.items():
            e = err[w].astype("float64")
            rows.append({"scene": f"{design} {seed}", "method": name, "adjust": adj,
                         "pixels": subset, "n": int(w.sum()), "sum_abs": float(np.abs(e).sum()),
                         "sum_sq": float((e**2).sum()), "values": int(e.size)})  # fmt: skip
    print(
        f"  {design} {seed}: {len(dates)} dates, {int(synth.sum())} synthesized, "
        f"{int(pixels.sum())} synthesized pixels, {int(finite.sum())} scored "
        f"(plans differing: {differ}), {time.time() - t0:.0f} s",
        flush=True,
    )
    return rows


def summarise(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    g = table.groupby(by, sort=False)[["n", "sum_abs", "sum_sq", "values"]].sum()
    g["mae"] = g["sum_abs"] / g["values"]
    g["psnr"] = [
        _psnr(s / v) if v else np.nan for s, v in zip(g["sum_sq"], g["values"], strict=True)
    ]
    return g


def main_table(agg: pd.DataFrame) -> str:
    rows = []
    for subset in SUBSETS:
        for name in FILLS + OTHERS:
            fill = name in FILLS
            a = agg.loc[(subset, name, "off" if fill else "-")]
            b = agg.loc[(subset, name, "auto")] if fill else None
            rows.append({
                "pixels": subset, "method": name, "n": int(a["n"]),
                "MAE adjust off": float(a["mae"]),
                "MAE adjust auto": float(b["mae"]) if fill else "n/a",
                "PSNR off": float(a["psnr"]),
                "PSNR auto": float(b["psnr"]) if fill else "n/a",
            })  # fmt: skip
    return markdown(rows)


def scene_table(per: pd.DataFrame, scenes: list[str]) -> tuple[str, list[dict]]:
    rows = []
    for s in scenes:
        m = lambda name, adj, sub="all", s=s: per.loc[(s, sub, name, adj)]  # noqa: E731
        row: dict[str, object] = {"scene": s, "n": int(m("interpolation", "-")["n"])}
        for adj in ADJUST:
            row[f"model/untrained {adj}"] = m("model", adj)["mae"] / m("untrained", adj)["mae"]
        for adj in ADJUST:
            row[f"model/interp {adj}"] = m("model", adj)["mae"] / m("interpolation", "-")["mae"]
        for adj in ADJUST:
            gain = m("model", adj)["psnr"] - m("interpolation", "-")["psnr"]
            row[f"dPSNR vs interp {adj}"] = gain
        row["model off/GBM"] = m("model", "off")["mae"] / m("GBM per pixel", "-")["mae"]
        row["no S1/model, change, off"] = (
            m("model, no S1", "off", "change")["mae"] / m("model", "off", "change")["mae"]
        )
        rows.append(row)
    return markdown(rows), rows


def done_when(agg: pd.DataFrame, scene_rows: list[dict]) -> list[str]:
    lines = []
    mae = lambda sub, name, adj: float(agg.loc[(sub, name, adj)]["mae"])  # noqa: E731
    psnr = lambda sub, name, adj: float(agg.loc[(sub, name, adj)]["psnr"])  # noqa: E731
    for adj in ADJUST:
        r_all = mae("all", "model", adj) / mae("all", "untrained", adj)
        r_chg = mae("change", "model", adj) / mae("change", "untrained", adj)
        lines.append(f"adjust {adj}: model vs untrained <= 0.7x all, <= 0.5x change: "
                     f"{r_all <= 0.7 and r_chg <= 0.5} ({r_all:.3f}x, {r_chg:.3f}x)")  # fmt: skip
    for adj in ADJUST:
        r = mae("all", "model", adj) / mae("all", "GBM per pixel", "-")
        lines.append(f"adjust {adj}: model <= 0.9x per-pixel GBM: {r <= 0.9} ({r:.3f}x)")
    for adj in ADJUST:
        r = mae("change", "model, no S1", adj) / mae("change", "model", adj)
        lines.append(
            f"adjust {adj}: no S1 raises change-pixel MAE >= 25 %: {r >= 1.25} "
            f"({100 * (r - 1):+.1f} %)"
        )
    for adj in ADJUST:
        r = mae("all", "model", adj) / mae("all", "interpolation", "-")
        d = psnr("all", "model", adj) - psnr("all", "interpolation", "-")
        ratios = [row[f"model/interp {adj}"] for row in scene_rows]
        gains = [row[f"dPSNR vs interp {adj}"] for row in scene_rows]
        every = all(x <= 0.8 for x in ratios) and all(g >= 1.5 for g in gains)
        lines.append(
            f"adjust {adj}: model vs interpolation MAE <= 0.8x and PSNR >= +1.5 dB on every "
            f"scene: {every} (pooled {r:.3f}x, {d:+.2f} dB; per scene MAE "
            f"{min(ratios):.3f}-{max(ratios):.3f}x, PSNR {min(gains):+.2f} to "
            f"{max(gains):+.2f} dB; better MAE on every scene: {all(x < 1 for x in ratios)})"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="run folder (training) / where the CSV goes")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--score-only", action="store_true", help="score without training")
    parser.add_argument("--model", type=Path, help="checkpoint to score (default: shipped)")
    parser.add_argument(
        "--variant",
        default="SOD",
        choices=["SOD", "SODC", "SODCT", "SODCTX", "SODCTXH", "SODCTXHI"],
    )
    parser.add_argument("--train-size", type=int, default=384)
    parser.add_argument("--scenes", default="sim:61-66,demo:71-73")
    add_scene_options(parser)
    parser.add_argument("--gbm-iters", type=int, default=200)
    parser.add_argument("--gbm-max-train", type=int, default=100_000)
    parser.add_argument("--gbm-size", type=int, default=256, help="GBM training scenes (px)")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="CSV",
        help="score nothing: print the tables and bars of saved learned_gain.csv files of "
        "one model, pooled over all their scenes (e.g. the default and a fresh held-out set; "
        "the files do not record the model, so keep their folders apart)",
    )
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.report:
        table = pd.concat([pd.read_csv(p) for p in args.report], ignore_index=True)
        if table.duplicated(["scene", "method", "adjust", "pixels"]).any():
            parser.error("--report: a scene appears in more than one file")
        print(f"{len(args.report)} file(s), {table['scene'].nunique()} scenes pooled")
        report(table)
        return
    scenes = parse_scenes(args.scenes)
    t_start = time.time()
    if not args.score_only:
        if args.out is None:
            parser.error("training needs --out")
        torch.set_num_threads(2)
        run = args.out / "model"
        t0 = time.time()
        scene = cloudfill.simulate_scene(
            (args.train_size, args.train_size),
            dates=16,
            seed=TRAIN_SEED,
            cloud_fraction=list(CLOUD),
            surface_change=args.surface_change,
        )
        config = _config(args.steps, args.variant)
        cloudfill.train(scene, config, run, resume=(run / "last").exists())
        print(f"trained {args.steps} steps in {time.time() - t0:.0f} s")
        args.model = args.model or run / "best.safetensors"
    torch.set_num_threads(1)
    model = resolve_model(None if args.model is None else str(args.model))
    untrained = _untrained(model)
    label = "shipped default model" if args.model is None else str(args.model)

    t0 = time.time()
    gbm = PixelGBM(args.gbm_iters, args.gbm_max_train).fit(
        [
            cloudfill.simulate_scene((args.gbm_size,) * 2, dates=16, seed=s,
                                     surface_change=args.surface_change)
            for s in GBM_SEEDS
        ]
    )  # fmt: skip
    print(f"GBM fitted on {gbm.n_train} cloudy pixels of seeds {GBM_SEEDS} in "
          f"{time.time() - t0:.0f} s", flush=True)  # fmt: skip

    rows = []
    for design, seed in scenes:
        rows += score_scene(design, seed, model, untrained, gbm, args)
    table = pd.DataFrame(rows)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.out / "learned_gain.csv", index=False)

    print(
        f"\n{cpu_model()}, load {load()}; {label} ({model.variant.name}, reference "
        f"{model.card.reference_mode}); scenes {args.scenes} at {args.size} px "
        f"(sim: {args.dates} dates, surface_change {args.surface_change}); GBM "
        f"{args.gbm_iters} iterations on {gbm.n_train} pixels; {time.time() - t_start:.0f} s"
    )
    report(table)


def report(table: pd.DataFrame) -> None:
    """Print the pooled table, the per-scene table and issue 21's bars of a score table."""
    agg = summarise(table, ["pixels", "method", "adjust"])
    print("\nPooled over scenes (MAE, PSNR in dB on the scored pixels' bands):\n")
    print(main_table(agg))
    per = summarise(table, ["scene", "pixels", "method", "adjust"])
    text, scene_rows = scene_table(per, list(dict.fromkeys(table["scene"])))
    print("\nPer scene (all scored pixels; MAE ratios, PSNR differences in dB):\n")
    print(text)
    print("\nDone when (issue 21), computable here:")
    for line in done_when(agg, scene_rows):
        print("- " + line)


if __name__ == "__main__":
    main()
