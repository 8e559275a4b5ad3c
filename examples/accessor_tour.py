"""A tour of the ``ds.cloudfill`` accessor, end to end, on a simulated cube.

validate -> cloud_mask -> despeckle -> pairs -> synthesize -> fill_series -> evaluate, the
way an analysis notebook would use them. The simulated scene carries its cloud-free
``truth``, so the evaluation scores every method on the pixels the clouds hid.

The model is the one shipped with the package (``cloudfill.default_model()``) when this
version has it, otherwise a small *untrained* generator built here with the scene's
statistics: the pipeline runs the same, the model's scores are then those of an untrained
network (the baselines' are real).

Run from the repository root (under a minute on a laptop CPU)::

    python examples/accessor_tour.py
    python examples/accessor_tour.py --size 256 --out tour.zarr
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

import cloudfill
from cloudfill.core.pairs import PairingRule


def pick_model(ds: xr.Dataset, *, untrained: bool = False) -> Any:
    """The shipped default model, or a small untrained SOD generator with ``ds``'s statistics.

    Examples
    --------
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> pick_model(ds, untrained=True).card.variant
    'SOD'
    """
    if not untrained and hasattr(cloudfill, "default_model"):
        return cloudfill.default_model()
    import torch

    from cloudfill.model import CloudfillModel, ModelCard
    from cloudfill.model.generator import Generator
    from cloudfill.preprocess.normalise import scene_stats

    torch.manual_seed(0)
    generator = Generator("SOD", base_filters=8, n_blocks=1, attention=True, confidence=True)
    # Statistics of the whole scene (never per tile): what training would have stored.
    card = ModelCard.from_generator(
        generator, normalisation=scene_stats(ds).to_dict(), training={"despeckle": 5}
    )
    return CloudfillModel(generator, card)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=96, help="scene side in pixels")
    parser.add_argument("--untrained", action="store_true", help="skip the shipped model")
    parser.add_argument("--out", type=Path, default=None, help="also write the filled series")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    pd.set_option("display.width", 120)

    # 1. A cube: six S2 dates (the first clear, one fully cloudy), S1 every 12 days, a DEM.
    ds = cloudfill.simulate_scene((args.size, args.size), dates=6, seed=3, chunks=64)
    ds = ds.cloudfill.validate()  # raises a typed error naming any contract breach
    print(ds)

    # 2. What is unusable, per date (lazy until reduced).
    mask = ds.cloudfill.cloud_mask()
    print("\ncloud fraction per date:", mask.mean(("y", "x")).round(2).values)

    # 3. Speckle filtering of the SAR (a median filter, exact at any chunking).
    smooth = ds.cloudfill.despeckle(size=5)
    print(
        f"VV std before/after despeckle: {float(ds.s1.sel(pol='VV').std()):.2f} / "
        f"{float(smooth.s1.sel(pol='VV').std()):.2f} dB"
    )

    # 4. The plan: for each S2 date, its S1 date and clear reference (or the fallback).
    plan = ds.cloudfill.pairs(PairingRule(max_ref_age=400))
    print("\n", plan[["method", "s1_date", "reference_date", "cloud_fraction"]], sep="")

    # 5. One synthesized image, lazily; computing it runs the tiled generator.
    model = pick_model(ds, untrained=args.untrained)
    print(f"\nmodel: {model}")
    target = plan.index[plan["method"] == "synthesize"][0]
    image = ds.cloudfill.synthesize(target, model, rule=PairingRule(max_ref_age=400))
    print(
        f"synthesized {target:%Y-%m-%d} from S1 {image.attrs['s1_date']} and reference "
        f"{image.attrs['reference_date']}: {dict(image.sizes)}, "
        f"mean reflectance {float(image.mean()):.3f}"
    )

    # 6. The whole series: cloudy pixels replaced, with confidence and provenance.
    filled = ds.cloudfill.fill_series(model, rule=PairingRule(max_ref_age=400)).compute()
    summary = pd.DataFrame(
        {
            "method": filled["method"].values,
            "filled %": (100 * filled["filled"].mean(("y", "x"))).round(1).values,
            "mean confidence": filled["confidence"].mean(("y", "x")).round(3).values,
            "unfilled": filled["unfilled"].values,
        },
        index=pd.DatetimeIndex(filled["time"].values, name="date"),
    )
    print("\n", summary, sep="")
    if args.out is not None:
        cloudfill.write_cube(filled, args.out, overwrite=True)
        print(f"wrote {args.out}")

    # 7. Scores against the hidden truth on the same pixels, model and baselines.
    scores = ds.cloudfill.evaluate(
        model, split="all", landcover=False, mask="cloud", rule=PairingRule(max_ref_age=400)
    )
    table = scores.groupby("method")[["mae", "rmse", "psnr", "ssim", "sam"]].mean()
    print("\nmean over the cloudy dates, cloud pixels:\n", table.round(4), sep="")
    print(f"\ndone in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
