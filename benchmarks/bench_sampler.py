"""Training-patch reading speed: cloudfill's sampler vs xbatcher, and the training step rate.

On one simulated zarr cube (written once to a temporary folder), measured in the same run:

- ``cloudfill sampler``: :class:`cloudfill.training.dataset.PatchDataset` items in the order
  training uses (:class:`~cloudfill.training.sampler.ChunkSampler`, chunk group by chunk
  group), from a cold chunk cache: read, despeckle (5 x 5 median with halo), mask, normalise,
  augment — finished ``(condition, target, valid)`` tensors of the SOD variant;
- ``cloudfill, random order``: the same items in a uniformly random order (the chunk cache
  hits only while the chunks read so far fit in it);
- ``xbatcher``: :class:`xbatcher.BatchGenerator` windows of the same size and overlap over a
  Dataset holding exactly what one sample needs (target and reference S2 and masks, S1 at the
  paired date, DEM), opened lazily with :func:`cloudfill.open_cube` and loaded window by
  window — raw arrays only, no despeckling or normalisation;
- ``xbatcher + same processing``: those windows then despeckled and normalised like the
  sampler's (the comparable product).

Then the training step rate: one generator + discriminator update (``train_step``) at
batch 2 and the same patch size, for the network of the ``--epochs small`` preset and, with
``--paper``, the paper's (base 64, 9 blocks).
The sampler must feed training >= 10x faster than it consumes patches (steps/s x batch).

    python benchmarks/bench_sampler.py                # 2048 x 2048, 1024 px chunks, 256 px
    python benchmarks/bench_sampler.py --chunk 512 --paper
    python benchmarks/bench_sampler.py --record       # also append the tables to RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from _machine import cpu_model, load

import cloudfill
from cloudfill.core.condition import assemble_condition, normalise_bands
from cloudfill.model import Generator, PatchDiscriminator
from cloudfill.preprocess import median_filter
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.experiment import SMALL
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.sampler import ChunkSampler
from cloudfill.training.step import train_step

RESULTS = Path(__file__).with_name("RESULTS.md")


def make_cube(path: Path, shape: int, chunk: int, seed: int) -> None:
    # Mostly clear dates, so most patches of most dates are training samples.
    fractions = [0.0, 0.1, 0.3, 0.05, 0.2, 0.4]
    ds = cloudfill.simulate_scene(
        (shape, shape), dates=6, seed=seed, chunks=chunk, cloud_fraction=fractions
    )
    cloudfill.write_cube(ds, path, chunks={"y": chunk, "x": chunk})


def time_sampler(index: PatchIndex, n: int, shuffle: str) -> float:
    """Patches/s of the first ``n`` training items from a cold cache."""
    data = PatchDataset.from_index(index, "train")
    data.reader._cache = None  # cold: every chunk is decoded from the store again
    if shuffle == "chunks":
        order = ChunkSampler(data.groups, seed=0).order()[:n]
    else:
        order = np.random.default_rng(0).permutation(len(data))[:n]
    start = time.perf_counter()
    for i in order:
        data[int(i)]
    return len(order) / (time.perf_counter() - start)


def xbatcher_datasets(index: PatchIndex, path: Path) -> list:
    """Per target date: a Dataset of exactly the arrays one sample needs."""
    ds = cloudfill.open_cube(path)
    out = []
    for (date, s1_date, ref), _ in index.samples.groupby(["date", "s1_date", "reference_date"]):
        parts = {
            "target": ds.s2.sel(time=date),
            "target_cloud": ds.cloud.sel(time=date),
            "reference": ds.s2.sel(time=ref),
            "reference_cloud": ds.cloud.sel(time=ref),
            "s1": ds.s1.sel(s1_time=s1_date),
            "dem": ds.dem,
        }
        out.append(xr.Dataset({k: v.drop_vars(["time", "s1_time"], errors="ignore")
                               for k, v in parts.items()}))  # fmt: skip
    return out


def time_xbatcher(index: PatchIndex, path: Path, n: int, overlap: int, process: bool) -> float:
    # xbatcher is a test extra, not a cloudfill dependency: needed only for this comparison.
    import xbatcher

    size, stats = index.size, index.stats
    count, start = 0, time.perf_counter()
    for sub in xbatcher_datasets(index, path):
        generator = xbatcher.BatchGenerator(
            sub, input_dims={"y": size, "x": size}, input_overlap={"y": overlap, "x": overlap}
        )
        for batch in generator:
            if process:
                ref = np.where(batch.reference_cloud.values, np.nan, batch.reference.values)
                assemble_condition(
                    stats,
                    "SOD",
                    s1=median_filter(batch.s1.values, 5),
                    s1_units="dB",
                    reference=ref,
                    dem=batch.dem.values,
                )
                target = np.where(batch.target_cloud.values, np.nan, batch.target.values)
                normalise_bands(target, stats, "s2", cloudfill.BANDS)
            else:
                batch.target.values  # noqa: B018  (preload_batch loaded it; touch it anyway)
            count += 1
            if count >= n:
                return count / (time.perf_counter() - start)
    return count / (time.perf_counter() - start)


def time_steps(size: int, base: int, blocks: int, d_filters: int, steps: int) -> float:
    """Generator + discriminator updates per second at batch 2 (SOD, attention on)."""
    torch.manual_seed(0)
    g = Generator("SOD", base_filters=base, n_blocks=blocks)
    d = PatchDiscriminator("SOD", base_filters=d_filters)
    opt_g, opt_d = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    batch = (torch.randn(2, 7, size, size), torch.rand(2, 4, size, size) * 2 - 1,
             torch.ones(2, 1, size, size, dtype=torch.bool))  # fmt: skip
    train_step(g, d, opt_g, opt_d, batch)  # warm-up (oneDNN primitive creation)
    start = time.perf_counter()
    for _ in range(steps):
        train_step(g, d, opt_g, opt_d, batch)
    return steps / (time.perf_counter() - start)


def table(rows: list[tuple[str, float]], baseline: str) -> str:
    base = dict(rows)[baseline]
    lines = ["| reader | patches/s | x vs xbatcher |", "|---|---|---|"]
    lines += [f"| {name} | {rate:.1f} | {rate / base:.1f} |" for name, rate in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=2048, help="scene side in pixels")
    parser.add_argument("--chunk", type=int, default=1024, help="zarr chunk side (write_cube's)")
    parser.add_argument("--size", type=int, default=256, help="patch side")
    parser.add_argument("--overlap", type=int, default=25)
    parser.add_argument("--n", type=int, default=200, help="patches timed per reader")
    parser.add_argument("--steps", type=int, default=5, help="training steps timed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (training)")
    parser.add_argument("--paper", action="store_true", help="also time the paper's network")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--record", action="store_true", help=f"append the tables to {RESULTS}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.zarr"
        t0 = time.perf_counter()
        make_cube(path, args.shape, args.chunk, args.seed)
        t1 = time.perf_counter()
        patches = PatchSettings(args.size, args.overlap, block_size=args.size)
        index = build_index(path, "SOD", patches)
        t2 = time.perf_counter()
        n = min(args.n, index.counts()["train"])
        rows = [
            ("cloudfill sampler (chunk order)", time_sampler(index, n, "chunks")),
            ("cloudfill sampler (random order)", time_sampler(index, n, "random")),
            ("xbatcher BatchGenerator (raw)", time_xbatcher(index, path, n, args.overlap, False)),
            ("xbatcher + same processing", time_xbatcher(index, path, n, args.overlap, True)),
        ]
    setup = (
        f"{args.shape} x {args.shape} px cube, 6 S2 dates, zarr chunks {args.chunk}, patches "
        f"{args.size} px (overlap {args.overlap}), SOD, {n} patches per reader, one process; "
        f"cube written in {t1 - t0:.0f} s, index + scene statistics {t2 - t1:.1f} s "
        f"({index.counts()['train']} training samples)"
    )
    sampler_table = table(rows, "xbatcher + same processing")
    net = SMALL.network
    configs = [("small-preset network", net.base_filters, net.n_blocks, net.d_filters)]
    if args.paper:
        configs.append(("paper network (table 2)", 64, 9, 64))
    sampler_rate = rows[0][1]
    step_lines = [
        "| network | patch | steps/s (batch 2) | patches/s consumed | sampler / consumption |",
        "|---|---|---|---|---|",
    ]
    for name, base, blocks, d_filters in configs:
        rate = time_steps(args.size, base, blocks, d_filters, args.steps)
        step_lines.append(
            f"| {name}: base {base}, {blocks} blocks, D {d_filters} | {args.size} | {rate:.2f} | "
            f"{2 * rate:.1f} | {sampler_rate / (2 * rate):.0f}x |"
        )
    note = (
        "sampler / consumption: the sampler's patches/s (chunk order) over the patches/s a "
        f"training run of that network consumes, same patch size; torch threads {args.threads}."
    )
    text = "\n\n".join([setup, sampler_table, "\n".join(step_lines), note])
    print(text)
    if args.record:
        stamp = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
        header = "" if RESULTS.exists() else "# Benchmark results\n\n"
        with RESULTS.open("a") as f:
            f.write(
                f"{header}## Training sampler vs xbatcher ({stamp})\n\n"
                f"CPU: {cpu_model()}, {os.cpu_count()} cores visible, load {load()}\n\n"
                f"{text}\n\n"
            )
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
