"""Benchmark ``synthesize``: model forward on the exact tiles vs. end to end.

Prints, for each case, (a) the pure model forward throughput on exactly the tiles the
global tile grid needs (batched tensors, no dask, no I/O), (b) end-to-end
``synthesize(...).compute()`` on a simulated cube (despeckle, normalisation, blockwise
inference, blending), their Mpix/s and the ratio (b)/(a), and the peak RSS of the process
that ran the case (each case runs in its own subprocess, so peaks do not mix).

    python benchmarks/bench_synthesize.py                 # default cases
    python benchmarks/bench_synthesize.py --quick         # small and fast
    python benchmarks/bench_synthesize.py --device cuda   # on a GPU (NumPy chunks)
    python benchmarks/bench_synthesize.py --device cuda --cupy --fast  # CuPy chunks, bf16

Baseline: (a) measured in the same run on the same machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

from cloudfill.core.pairs import PairingRule
from cloudfill.infer.settings import InferenceSettings


def _case(args: argparse.Namespace) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import numpy as np
    import pandas as pd
    import torch

    import cloudfill
    from cloudfill.infer.synthesize import default_batch_size, plan_tiles, synthesize
    from cloudfill.model import CloudfillModel, ModelCard
    from cloudfill.model.generator import Generator
    from cloudfill.preprocess.normalise import scene_stats

    torch.set_num_threads(args.threads)
    ds = cloudfill.simulate_scene((args.size, args.size), dates=4, seed=7, chunks=args.chunk)
    # Materialised first: the simulator's own cost is not inference.
    ds = ds.chunk({"y": args.chunk, "x": args.chunk}).persist()
    if args.cupy:  # the cube's chunks live on the GPU, as a dask+CuPy user's would
        import cupy

        ds = ds.assign({n: v.copy(data=v.data.map_blocks(cupy.asarray)) for n, v in ds.items()})
        ds = ds.persist()
    gen = Generator(
        "SOD",
        base_filters=args.base_filters,
        n_blocks=args.n_blocks,
        attention=True,
        confidence=True,
    )
    card = ModelCard.from_generator(
        gen,
        normalisation=scene_stats(ds).to_dict(),
        training={"despeckle": 5},
        # As the default model: each pixel's nearest clear value, so (nearly) every pixel has
        # a reference and is synthesized (pixels without one are left NaN, not computed less).
        reference_mode="composite",
    )
    model = CloudfillModel(gen, card, device=args.device, fast=args.fast)
    date = pd.Timestamp(ds.time.values[2])
    grid = plan_tiles(args.size, args.size, model.halo, args.tile)
    batch = default_batch_size(model.device)
    cuda = model.device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else lambda: None

    # (a) forward only, on exactly the tiles needed (inputs already on the device), batched
    # as synthesize batches them.
    sizes = [min(batch, grid.n_tiles - i) for i in range(0, grid.n_tiles, batch)]
    inputs = {n: torch.randn(n, 7, grid.tile_y, grid.tile_x, device=model.device) for n in sizes}
    for n in set(sizes):
        model.predict(inputs[n])  # warm-up (cuDNN picks its kernels per shape)
    sync()
    fwd = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for n in sizes:
            model.predict(inputs[n])
        sync()
        fwd.append(time.perf_counter() - t0)
    # (b) end to end, lazily built then computed.
    e2e = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = synthesize(
            ds,
            date,
            model,
            rule=PairingRule(max_ref_age=400),
            inference=InferenceSettings(tile=args.tile, device=args.device, fast=args.fast),
        )
        values = out.data.compute()
        e2e.append(time.perf_counter() - t0)
    values = values.get() if args.cupy else values
    assert np.isfinite(values).mean() > 0.99
    mpix = args.size * args.size / 1e6
    return {
        "size": args.size,
        "chunk": args.chunk,
        "model": f"{args.base_filters}f/{args.n_blocks}b",
        "tiles": f"{grid.n_tiles}x{grid.tile_y}",
        "batch": batch,
        "forward_s": statistics.median(fwd),
        "e2e_s": statistics.median(e2e),
        "forward_mpix_s": mpix / statistics.median(fwd),
        "e2e_mpix_s": mpix / statistics.median(e2e),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # torch's allocations only (CuPy's pool is not counted).
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else 0,
    }


CASES = {
    "default": [
        # The paper's 12 km study area with the paper-size generator.
        {"size": 1200, "chunk": 1200, "base_filters": 64, "n_blocks": 9, "repeats": 1},
        # The same area with cloudfill's default-size generator.
        {"size": 1200, "chunk": 1200, "base_filters": 24, "n_blocks": 4, "repeats": 3},
        # A multi-block scene: tiles shared across blocks.
        {"size": 2048, "chunk": 1024, "base_filters": 24, "n_blocks": 4, "repeats": 3},
    ],
    "quick": [{"size": 512, "chunk": 256, "base_filters": 16, "n_blocks": 2, "repeats": 3}],
    # A GPU finishes the cases above in well under a second each: add a larger scene.
    "gpu": [
        {"size": 1200, "chunk": 1200, "base_filters": 64, "n_blocks": 9, "repeats": 5},
        {"size": 1200, "chunk": 1200, "base_filters": 24, "n_blocks": 4, "repeats": 5},
        {"size": 4096, "chunk": 2048, "base_filters": 64, "n_blocks": 9, "repeats": 3},
    ],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fast", action="store_true", help="bf16 autocast + channels_last")
    parser.add_argument("--cupy", action="store_true", help="cube in dask+CuPy chunks (GPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        ns = argparse.Namespace(**{**vars(args), **json.loads(args.case)})
        print(json.dumps(_case(ns)))
        return
    rows = []
    cases = "quick" if args.quick else "gpu" if args.device.startswith("cuda") else "default"
    for case in CASES[cases]:
        cmd = [sys.executable, __file__, "--case", json.dumps(case), "--device", args.device]
        cmd += ["--threads", str(args.threads)] + (["--fast"] if args.fast else [])
        cmd += ["--cupy"] if args.cupy else []
        if args.tile:
            cmd += ["--tile", str(args.tile)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:  # say why, and go on with the other cases
            print(f"case {case} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    if not rows:
        sys.exit("every case failed")
    head = (
        f"{'scene':>9} {'chunk':>5} {'model':>7} {'tiles':>9} {'(a) fwd s':>9} {'(b) e2e s':>9}"
        f" {'(a) Mpix/s':>10} {'(b) Mpix/s':>10} {'(b)/(a)':>7} {'peak RSS MB':>11}"
        f" {'torch GPU MB':>12}"
    )
    print(
        f"device={args.device} fast={args.fast} cupy={args.cupy} threads={args.threads}"
        f" batch={rows[0]['batch']} (medians)"
    )
    print(head)
    for r in rows:
        print(
            f"{r['size']:>4}x{r['size']:<4} {r['chunk']:>5} {r['model']:>7} {r['tiles']:>9}"
            f" {r['forward_s']:>9.2f} {r['e2e_s']:>9.2f} {r['forward_mpix_s']:>10.3f}"
            f" {r['e2e_mpix_s']:>10.3f} {r['e2e_mpix_s'] / r['forward_mpix_s']:>7.2f}"
            f" {r['peak_rss_mb']:>11.0f} {r['peak_gpu_mb']:>12.0f}"
        )


if __name__ == "__main__":
    main()
