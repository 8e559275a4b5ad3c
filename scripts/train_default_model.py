"""Train the default model shipped in ``cloudfill/data/`` (reproducible on 2 CPU cores).

    python scripts/train_default_model.py --out build/default-model
    cp build/default-model/best.safetensors cloudfill/data/default_model.safetensors

The training cube is simulated (``simulate_scene``, seed 101, 1024 x 1024 px, 16 dates over a
year at irregular 10-40 day gaps, so references of every age occur: varied terrain, land
cover, seasons and snow), with 0-60 % cloud so that most dates offer clear target patches and
partly cloudy neighbours. The demo cube (``load_demo``) uses another seed, so the demo is
never seen in training. The reference is a per-pixel blend of the nearest clear observations
before and after the target, weighted by time and S1 similarity (``reference="blend"``;
``--reference composite`` gives each pixel's nearest clear observation instead, the previous
default), and the model kept is an exponential moving average of the weights
(``ema=0.999``). The reconstruction weight is 100x the paper's and the learning rate a
quarter (``lambda_l1=10000``, ``lr=5e-5``): with the reference skip the L1 term is far smaller
than in pix2pix, and at the paper's settings the adversarial term and Adam's step noise added
grain to pixels that did not change (see benchmarks/RESULTS.md, "Default model training").
The architecture is sized for CPU training and inference (16 base filters, 4 residual blocks
with CBAM attention, a Laplace confidence head; a 32-filter PatchGAN); real use means
training on your own cube with ``cloudfill train``. The best model by validation MAE is
written to ``OUT/best.safetensors`` whenever it improves, so the run can be stopped at any
time (and continued with ``--resume``). The shipped checkpoint is the best-by-validation
model of ``--max-steps 1116`` (three epochs of 372 steps; the best was the last).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

import cloudfill
from cloudfill.training.config import (
    NetworkSettings,
    OptimSettings,
    RuntimeSettings,
    Schedule,
    TrainConfig,
)
from cloudfill.training.index import PatchSettings

SEED = 101
SHAPE = (1024, 1024)
N_DATES = 16
CLOUD = (0.0, 0.1, 0.4, 0.0, 0.3, 0.05, 0.6, 0.15, 0.0, 0.5, 0.25, 0.1, 0.0, 0.35, 0.2, 0.05)


def _dates() -> list[pd.Timestamp]:
    """16 dates from 2023-01-10 at seeded gaps of 10-40 days."""
    gaps = np.random.default_rng(SEED).integers(10, 41, N_DATES - 1)
    start = pd.Timestamp("2023-01-10")
    return [start + pd.Timedelta(days=int(d)) for d in np.r_[0, np.cumsum(gaps)]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/default-model"))
    parser.add_argument("--max-steps", type=int, default=1116)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-workers", type=int, default=0, help="patch-loading processes")
    parser.add_argument("--reference", default="blend", help="reference mode (see train)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    cube = args.out / "train_cube.zarr"
    if not cube.exists():
        ds = cloudfill.simulate_scene(
            SHAPE, dates=_dates(), seed=SEED, cloud_fraction=list(CLOUD), chunks=512
        )
        cloudfill.write_cube(ds, cube)
    t0 = time.time()
    config = TrainConfig(
        "SOD",
        network=NetworkSettings(
            attention="cbam", base_filters=16, n_blocks=4, confidence=True, d_filters=32
        ),
        optim=OptimSettings(batch_size=args.batch_size, lr=5e-5, lambda_l1=10000.0, ema=0.999),
        schedule=Schedule(epochs=1000, max_steps=args.max_steps, patience=None),
        patches=PatchSettings(size=128, overlap=32),
        reference=args.reference,
        seed=0,
        runtime=RuntimeSettings(device=args.device, num_workers=args.num_workers, log_every=25),
    )
    model = cloudfill.train(str(cube), config, args.out, resume=args.resume, progress=False)
    print(f"trained in {time.time() - t0:.0f} s: {model}")


if __name__ == "__main__":
    main()
