"""Does the trained generator beat its untrained self? (issue 21, first measurement)

Trains an SOD blend model (the default model's size: 16 filters, 4 residual blocks, CBAM,
the confidence head) with the recipe of this version (additive reference skip, per-pixel
path, S2 normalised over the physical range, lr 2e-4, EMA 0.99) on one simulated scene
(seed 101, 384 px, 16 dates with the default model's cloud mix), then fills held-out scenes
(seeds never used in training or in choosing settings) with ``fill_series(adjust=0)`` and
scores the synthesized pixels against the simulator's truth:

- the trained model;
- its untrained self (the same architecture at step 0: its zero head returns the blend
  reference, so this is the blend fed through the same pipeline);
- linear interpolation and persistence (``cloudfill.core.temporal``), on the same pixels.

MAE and PSNR (MAX = 1) per scene and over all scenes; "change pixels" are those whose truth
differs from linear interpolation by more than 0.05 in some band.

    python benchmarks/bench_learned_gain.py --steps 1500 --out /tmp/learned   # ~25 min, 2 cores
    python benchmarks/bench_learned_gain.py --score-only --out /tmp/learned    # rescore
    python benchmarks/bench_learned_gain.py --variant SODC --surface-change 0.3 --out DIR

``--variant SODC`` trains the change-aware variant instead; ``--surface-change`` simulates
the training and the held-out scenes with surface change (floods, clearing, tillage, wet
snow: ``simulate_scene(surface_change=...)``). Every run also scores the trained model on
the held-out scenes with their S1 replaced by its scene mean per polarisation ("trained, no
S1": the radar then carries no information, in the blend reference or the network), which
shows what SAR adds. Training resumes from ``OUT/model`` when it exists.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _machine import cpu_model, load

import cloudfill
from cloudfill.core.temporal import linear_interpolation, persistence
from cloudfill.cube.mask import cloud_mask
from cloudfill.model import CloudfillModel, ModelCard
from cloudfill.model.generator import Generator
from cloudfill.model.runtime import load_model
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
TEST_SEEDS = (61, 62, 63, 64, 65, 66)
NETWORK = NetworkSettings(
    base_filters=16, n_blocks=4, attention=True, confidence=True, d_filters=32
)


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
    """The same architecture and card at step 0 (seeded like the run)."""
    torch.manual_seed(0)
    generator = Generator(**trained.card.generator_kwargs())
    card = ModelCard.from_json(trained.card.to_json())
    return CloudfillModel(generator.eval(), card)


def _psnr(err: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean(err**2)))


def _without_s1(ds):
    """``ds`` with S1 replaced by its scene mean per polarisation: no radar information."""
    mean = ds["s1"].mean(("s1_time", "y", "x"))
    return ds.assign(s1=(ds["s1"] * 0 + mean).astype("float32").assign_attrs(ds["s1"].attrs))


def _score(models: dict[str, CloudfillModel], change: float = 0.0) -> pd.DataFrame:
    rows = []
    for seed in TEST_SEEDS:
        ds = cloudfill.simulate_scene((256, 256), dates=16, seed=seed, surface_change=change)
        truth = ds["truth"].values
        mask = cloud_mask(ds).values
        dates = ds.indexes["time"]
        interp = np.stack([linear_interpolation(ds, d).values for d in dates])
        preds = {
            "interpolation": interp,
            "persistence": np.stack([persistence(ds, d).values for d in dates]),
        }
        plan = None
        for name, model in models.items():
            out = cloudfill.fill_series(ds, model, adjust=0)
            preds[name] = out["s2"].values
            plan = out["method"].values
        trained = models["trained"]
        preds["trained, no S1"] = cloudfill.fill_series(_without_s1(ds), trained, adjust=0)[
            "s2"
        ].values
        synth = np.asarray(plan) == "synthesize"
        pixels = mask & synth[:, None, None]
        pixels &= np.isfinite(np.stack([p for p in preds.values()])).all(axis=(0, 2))
        change = pixels & (np.abs(truth - interp).max(axis=1) > 0.05)
        for name, pred in preds.items():
            err = pred - truth
            for subset, where in (("all", pixels), ("change", change)):
                e = np.moveaxis(err, 1, -1)[where]
                rows.append(
                    {"seed": seed, "method": name, "pixels": subset, "n": int(where.sum()),
                     "mae": float(np.abs(e).mean()) if e.size else np.nan,
                     "psnr": _psnr(e) if e.size else np.nan}
                )  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--score-only", action="store_true")
    parser.add_argument("--variant", default="SOD", choices=["SOD", "SODC"])
    parser.add_argument("--surface-change", type=float, default=0.0)
    parser.add_argument("--train-size", type=int, default=384)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(2)
    run = args.out / "model"
    if not args.score_only:
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
    trained = load_model(run / "best.safetensors")
    table = _score({"trained": trained, "untrained": _untrained(trained)}, args.surface_change)
    table.to_csv(args.out / "learned_gain.csv", index=False)
    print(
        f"{cpu_model()}, load {load()}; {trained.variant.name}, surface_change "
        f"{args.surface_change}; test seeds {TEST_SEEDS}, adjust=0, synthesized dates"
    )
    pivot = table.groupby(["pixels", "method"]).apply(
        lambda g: pd.Series({"n": g["n"].sum(), "mae": np.average(g["mae"], weights=g["n"])})
    )
    print(pivot.round(5).to_string())
    by_scene = table[table["pixels"] == "all"].pivot(index="seed", columns="method", values="mae")
    by_scene["trained / untrained"] = by_scene["trained"] / by_scene["untrained"]
    by_scene["trained / interpolation"] = by_scene["trained"] / by_scene["interpolation"]
    by_scene["no S1 / trained"] = by_scene["trained, no S1"] / by_scene["trained"]
    print(by_scene.round(5).to_string())


if __name__ == "__main__":
    main()
