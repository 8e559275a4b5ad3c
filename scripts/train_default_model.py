"""Train the default model shipped in ``cloudfill/data/`` (reproducible on 2 CPU cores).

    python scripts/train_default_model.py --out build/default-model
    cp build/default-model/best.safetensors cloudfill/data/default_model.safetensors

The training cube is simulated (``simulate_scene``, seed 101, 768 x 768 px, 12 dates over a
year: varied terrain, land cover, seasons and snow), with light to moderate clouds (0-30 %)
so that most dates offer clear target patches and a clear earlier reference. The demo cube
(``load_demo``) uses another seed, so the demo is never seen in training. The architecture is
sized for CPU training and inference (16 base filters, 4 residual blocks with CBAM attention,
a Laplace confidence head; a 32-filter PatchGAN); real use means training on your own cube
with ``cloudfill train``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import cloudfill

SEED = 101
SHAPE = (768, 768)
N_DATES = 12
CLOUD = (0.0, 0.1, 0.2, 0.0, 0.3, 0.05, 0.15, 0.0, 0.25, 0.1, 0.0, 0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/default-model"))
    parser.add_argument("--max-steps", type=int, default=600)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    args.out.mkdir(parents=True, exist_ok=True)
    cube = args.out / "train_cube.zarr"
    if not cube.exists():
        ds = cloudfill.simulate_scene(
            SHAPE, dates=N_DATES, seed=SEED, cloud_fraction=list(CLOUD), chunks=384
        )
        cloudfill.write_cube(ds, cube)
    t0 = time.time()
    model = cloudfill.train(
        str(cube),
        "SOD",
        "cbam",
        out=args.out,
        confidence=True,
        base_filters=16,
        n_blocks=4,
        d_filters=32,
        patch_size=128,
        overlap=32,
        batch_size=4,
        epochs=1000,
        patience=None,
        max_steps=args.max_steps,
        seed=0,
        resume=args.resume,
        progress=False,
        log_every=25,
    )
    print(f"trained in {time.time() - t0:.0f} s: {model}")


if __name__ == "__main__":
    main()
