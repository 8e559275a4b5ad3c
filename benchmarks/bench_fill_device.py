"""Benchmark ``fill-series --device DEVICE`` from a zarr store on disk against the forward pass.

Writes a simulated scene (3 dates, the middle one fully cloudy, so it is synthesized) to a
zarr store, then prints (a) the generator's forward pass on exactly the tiles of one date
(inputs already on the device, batched as the fill batches them), (b) ``cloudfill
fill-series CUBE --dates DATE --device DEVICE`` end to end for that date (open the store,
plan, place the chunks, despeckle, references, condition stack, inference, blending, the
same-date adjustment, the fill, the zarr write), (b)/(a), tiles/s, the generator's FLOPs per
tile (``torch.utils.flop_counter.FlopCounterMode``) and what share of the card's dense
peak the forward pass reaches (TF32 for fp32, cuDNN's default for convolutions; bf16 with
``--fast``).

    python benchmarks/bench_fill_device.py --device cuda                  # 4096 px, paper size
    python benchmarks/bench_fill_device.py --device cuda --fast           # bf16 autocast
    python benchmarks/bench_fill_device.py --size 256 --device cpu --base-filters 8 --n-blocks 1

Baseline: (a) measured in the same run on the same machine; (b) is the median of
``--repeats`` runs after one warm-up run (CUDA context, cuDNN's kernel choice, model load).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

import cloudfill
from cloudfill.cli import run
from cloudfill.infer.synthesize import default_batch_size, plan_tiles
from cloudfill.model import CloudfillModel, ModelCard
from cloudfill.model.generator import Generator
from cloudfill.preprocess.normalise import scene_stats

#: Dense (no sparsity) tensor-core peaks, TFLOPS: (bf16, TF32), from NVIDIA's datasheets.
PEAKS = {
    "H200": (989.0, 495.0),  # the H100 SXM's tensor cores
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 495.0),  # SXM (e.g. "NVIDIA H100 80GB HBM3")
    "A100": (312.0, 156.0),
}


def peak_tflops(card: str, bf16: bool) -> float | None:
    """The dense peak of ``card`` (a CUDA device name) for bf16 or TF32, None if unknown.

    >>> peak_tflops("NVIDIA H100 80GB HBM3", bf16=True), peak_tflops("NVIDIA H200", False)
    (989.0, 495.0)
    """
    for name, (bf16_peak, tf32_peak) in PEAKS.items():
        if all(word in card for word in name.split()):
            return bf16_peak if bf16 else tf32_peak
    return None


def build(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, pd.Timestamp]:
    """The cube store, the model file and the date to fill."""
    # Three dates 10 days apart (so a few S1 dates only: the store stays ~2 GB at 4096 px).
    dates = list(pd.date_range("2024-06-01", periods=3, freq="10D"))
    ds = cloudfill.simulate_scene(
        (args.size, args.size), dates=dates, seed=7, cloud_fraction=[0.0, 1.0, 0.0], chunks=1024
    )
    cube = cloudfill.write_cube(ds, folder / "cube.zarr")
    gen = Generator("SOD", base_filters=args.base_filters, n_blocks=args.n_blocks, attention=True)
    card = ModelCard.from_generator(
        gen,
        normalisation=scene_stats(ds).to_dict(),
        training={"despeckle": 5},
        reference_mode="composite",  # (nearly) every pixel has a reference: all synthesized
    )
    model = CloudfillModel(gen, card).save(folder / "model.safetensors")
    return cube, model, pd.Timestamp(ds.time.values[1])


def forward(args: argparse.Namespace, model_path: Path) -> dict:
    """(a): the forward pass on the tiles of one date, and the FLOPs of one tile."""
    model = cloudfill.load_model(model_path, device=args.device, fast=args.fast)
    grid = plan_tiles(args.size, args.size, model.halo, args.tile)
    batch = default_batch_size(model.device)
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None
    sizes = [min(batch, grid.n_tiles - i) for i in range(0, grid.n_tiles, batch)]
    channels = len(model.card.input_channels)
    shape = (channels, grid.tile_y, grid.tile_x)
    inputs = {n: torch.randn(n, *shape, device=model.device) for n in sizes}
    for n in set(sizes):
        model.predict(inputs[n], fast=args.fast)  # warm-up: cuDNN picks its kernels per shape
    with FlopCounterMode(display=False) as counter:
        model.predict(inputs[sizes[0]][:1], fast=args.fast)
    sync()
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for n in sizes:
            model.predict(inputs[n], fast=args.fast)
        sync()
        times.append(time.perf_counter() - t0)
    return {
        "tiles": grid.n_tiles,
        "tile": f"{grid.tile_y}x{grid.tile_x}",
        "batch": batch,
        "flops_per_tile": counter.get_total_flops(),
        "forward_s": statistics.median(times),
        "card": torch.cuda.get_device_name(model.device) if cuda else "cpu",
    }


def end_to_end(args: argparse.Namespace, cube: Path, model: Path, date: pd.Timestamp) -> dict:
    """(b): ``cloudfill fill-series`` for the one date, into a new store each run."""
    argv = [
        "fill-series", str(cube), "--model", str(model), "--dates", f"{date:%Y-%m-%d}",
        "--device", args.device, "--max-ref-age", "400", "--no-progress",
    ]  # fmt: skip
    argv += ["--fast"] if args.fast else []
    argv += ["--tile", str(args.tile)] if args.tile else []
    times = []
    for i in range(args.repeats + 1):  # the first is the warm-up
        out = cube.parent / f"out-{i}.zarr"
        t0 = time.perf_counter()
        if run([*argv, "--out", str(out)]) != 0:
            raise SystemExit(f"fill-series failed: {' '.join(argv)}")
        times.append(time.perf_counter() - t0)
    filled = cloudfill.open_cube(out, chunks=None)
    assert str(filled["method"].values[0]) == "synthesize"
    assert np.isfinite(filled["s2"].values).mean() > 0.99
    return {"first_s": times[0], "e2e_s": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--fast", action="store_true", help="bf16 autocast + channels_last")
    parser.add_argument("--base-filters", type=int, default=64, help="64: the paper's")
    parser.add_argument("--n-blocks", type=int, default=9, help="9: the paper's")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-fill-device-") as tmp:
        t0 = time.perf_counter()
        cube, model, date = build(args, Path(tmp))
        setup_s = time.perf_counter() - t0
        a = forward(args, model)
        b = end_to_end(args, cube, model, date)
    tiles_s = a["tiles"] / a["forward_s"]
    tflops = a["flops_per_tile"] * tiles_s / 1e12
    peak = peak_tflops(a["card"], bf16=args.fast) if a["card"] != "cpu" else None
    precision = "bf16" if args.fast else "fp32 (TF32 convolutions)" if peak else "fp32"
    row = {
        **a,
        **b,
        "size": args.size,
        "generator": f"{args.base_filters}f/{args.n_blocks}b",
        "device": args.device,
        "precision": precision,
        "tiles_per_s": tiles_s,
        "tflops": tflops,
        "peak_tflops": peak,
        "share_of_peak": None if peak is None else tflops / peak,
        "b_over_a": a["forward_s"] / b["e2e_s"],
        "setup_s": setup_s,
    }
    print(
        f"card={a['card']} device={args.device} {precision} scene={args.size}px "
        f"generator={row['generator']} tiles={a['tiles']}x{a['tile']} batch={a['batch']} "
        f"(setup {setup_s:.0f} s, first fill-series run {b['first_s']:.2f} s)"
    )
    print(
        f"{'(a) fwd s':>9} {'(b) e2e s':>9} {'(b)/(a)':>7} {'tiles/s':>8} {'GFLOP/tile':>10}"
        f" {'TFLOPS':>7} {'peak':>6} {'of peak':>7}"
    )
    share = "n/a" if peak is None else f"{row['share_of_peak']:.1%}"
    print(
        f"{a['forward_s']:>9.3f} {b['e2e_s']:>9.3f} {row['b_over_a']:>7.2f} {tiles_s:>8.2f}"
        f" {a['flops_per_tile'] / 1e9:>10.1f} {tflops:>7.2f} {peak or 'n/a':>6} {share:>7}"
    )
    print(json.dumps(row))


if __name__ == "__main__":
    main()
