"""How much do a date's shown clear pixels say about its hidden ones? (issue 21; the SODCTX
variant)

Reads the validation split of an SODCTX run's patch cache (``OUT/patch-cache``, written by
``scripts/train_default_model.py --variant SODCTX``: each patch hides cloud-like blobs of its
clear pixels, :mod:`cloudfill.training.hide`) and scores, on the hidden pixels (normalised
units, all four bands), the blend reference, a model's output (``--model``: an SODCT
checkpoint, reading the condition without the context channels, such as the default model's
stage 2, the default until 2026-12-07; or an SODCTX one, reading all), and each plus the
Gaussian-smoothed residual of the shown pixels (the fill's same-date adjustment,
:func:`cloudfill.fill.adjust.adjust_to_date`, with its default floor). "partial" counts only
the patches that show something.

    python benchmarks/probe_shown_pixels.py --cache build/context/patch-cache \
        --model build/default-model/best.safetensors
"""

from __future__ import annotations

import argparse
import glob
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from probe_learning import markdown

from cloudfill.core.variants import CONTEXT_CHANNELS, REFERENCE_CHANNELS, get_variant
from cloudfill.cube.schema import BANDS
from cloudfill.fill.adjust import adjust_to_date
from cloudfill.model import load_model


def smoothed(base: np.ndarray, context: np.ndarray, flag: np.ndarray, sigma: float) -> np.ndarray:
    """``base`` (patch, band, y, x) adjusted to the shown pixels (``context`` where ``flag``)
    by the fill's own same-date adjustment, :func:`cloudfill.fill.adjust.adjust_to_date`."""
    dims = ("patch", "band", "y", "x")
    out = adjust_to_date(
        xr.DataArray(base, dims=dims),
        xr.DataArray(context, dims=dims),
        xr.DataArray(flag, dims=("patch", "y", "x")),
        sigma,
    )
    return out.values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True, help="an SODCTX run's patch-cache")
    parser.add_argument("--model", required=True, help="SODCT (or SODCTX) checkpoint")
    parser.add_argument("--sigmas", default="2,4,8")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    (folder,) = glob.glob(str(args.cache / "*/"))
    c = np.load(Path(folder) / "val-condition.npy")
    t = np.load(Path(folder) / "val-target.npy")
    hidden = np.load(Path(folder) / "val-valid.npy")[:, 0]
    channels = get_variant("SODCTX").channels
    if c.shape[1] != len(channels):
        raise SystemExit(f"{args.cache} is not an SODCTX cache ({c.shape[1]} channels)")
    model = load_model(args.model)
    n = model.variant.n_inputs
    if channels[:n] != model.variant.channels:
        raise SystemExit(f"the model's inputs are not a prefix of SODCTX's: {model.variant}")
    with torch.no_grad():
        net = model.generator.eval()
        pred = np.concatenate(
            [net(torch.from_numpy(c[i : i + 32, :n])).mean.numpy() for i in range(0, len(c), 32)]
        )
    ref = c[:, [channels.index(r) for r in REFERENCE_CHANNELS]]
    context = c[:, [channels.index(f"context_{b}") for b in BANDS]]
    flag = c[:, channels.index(CONTEXT_CHANNELS[-1])] > 0.5
    shows = flag.reshape(len(c), -1).any(1)
    partial = hidden & shows[:, None, None]

    def mae(x: np.ndarray, where: np.ndarray) -> float:
        return float(np.abs(x - t).transpose(1, 0, 2, 3)[:, where].mean())

    rows = []
    for name, base in (("reference", ref), ("model", pred)):
        rows.append({"estimate": name, "residual": "none", "hidden": mae(base, hidden),
                     "hidden, partial patches": mae(base, partial)})  # fmt: skip
        for sigma in (float(s) for s in args.sigmas.split(",")):
            out = smoothed(base, context, flag, sigma)
            rows.append({"estimate": name, "residual": f"Gaussian, sigma {sigma:g} px",
                         "hidden": mae(out, hidden),
                         "hidden, partial patches": mae(out, partial)})  # fmt: skip
    print(
        f"{len(c)} validation patches, {int(hidden.sum())} hidden pixels, "
        f"{(~shows).mean():.1%} of the patches show nothing; {time.time() - t0:.0f} s"
    )
    print(markdown(rows))


if __name__ == "__main__":
    main()
