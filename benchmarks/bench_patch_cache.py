"""Training fed from the patch cache vs in-memory tensors vs today's sampler; bf16 vs fp32.

One simulated zarr cube (written to a temporary folder), the default model's training set-up
(SOD, blend reference, 128 px patches; generator: CBAM, 16 filters, 4 blocks, confidence
head; discriminator 32 filters), one process. In the same run, at each batch size:

- ``(a) in-memory tensors``: one training step (:meth:`Networks.step
  <cloudfill.training.step.Networks.step>`) on batches stacked in memory beforehand: the
  step alone;
- ``(b) patch cache``: the step fed as a run feeds it from the cache
  (:meth:`CachedPatches.batches
  <cloudfill.training.cached_patches.CachedPatches.batches>`: gather by index, augment on the
  device), in the epoch's order;
- ``(c) sampler``: the step fed by a DataLoader over the
  :class:`~cloudfill.training.dataset.PatchDataset` (the cube read, despeckled, masked,
  blended and normalised each time), as a run without the cache feeds it.

The modes take turns (a b c, b c a, c a b, ...) so that the machine's load falls on all alike;
each figure is the median of ``--repeats`` timed steps. All three give the same batches
in the same order (epoch 0's, whole batches only), so the step itself costs the same.
Then the step on in-memory tensors in fp32 and under bfloat16 autocast (``--precision
bf16``, taking turns too), what gathering a batch costs (in memory and memory-mapped), and
what float16 storage would change (the largest rounding error) and save. The issue asks
(b) / (a) >= 0.9.

    python benchmarks/bench_patch_cache.py                 # 384 x 384 px cube, batches 8, 16
    python benchmarks/bench_patch_cache.py --batches 16 --precision-batches ""  # ~3 min
    python benchmarks/bench_patch_cache.py --device cuda --batches 16 --precision-batches 16 \
        --repeats 20 --shape 1024   # the issue's >= 20 steps/s at batch 16 (add --resident)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model, load

import cloudfill
from cloudfill.training.cache import open_patch_cache
from cloudfill.training.cached_patches import CachedPatches
from cloudfill.training.config import (
    NetworkSettings,
    OptimSettings,
    RuntimeSettings,
    TrainConfig,
)
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.index import PatchSettings, build_index
from cloudfill.training.sampler import ChunkSampler
from cloudfill.training.step import Networks

NETWORK = NetworkSettings(
    attention="cbam", base_filters=16, n_blocks=4, confidence=True, d_filters=32
)


def cpu_flags() -> str:
    """The bf16-relevant flags of /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "n/a"
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    wanted = ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16"]
    return ", ".join(f"{f} {'yes' if f in flags else 'no'}" for f in wanted)


def config(batch: int, precision: str = "fp32") -> TrainConfig:
    return TrainConfig(
        "SOD",
        network=NETWORK,
        optim=OptimSettings(batch_size=batch, lr=5e-5, lambda_l1=10000.0),
        patches=PatchSettings(size=128, overlap=32),
        reference="blend",
        runtime=RuntimeSettings(precision=precision),
    )


def cycle(make: Callable[[], Iterator]) -> Iterator:
    """Batches from ``make()``, started again whenever it runs out."""
    while True:
        yield from make()


def epoch_order(data: PatchDataset | CachedPatches, batch: int) -> list[int]:
    """Epoch 0's sample order as a run draws it, cut to whole batches."""
    order = list(ChunkSampler(data.groups, seed=0))
    return order[: len(order) - len(order) % batch]


DEVICE = torch.device("cpu")


def sampler_batches(data: PatchDataset, batch: int) -> Iterator:
    """(c): a DataLoader over the cube's samples, as a run without the cache."""

    def epoch() -> Iterator:
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=batch,
            sampler=epoch_order(data, batch),
            pin_memory=DEVICE.type == "cuda",
        )
        return ([x.to(DEVICE, non_blocking=True) for x in b] for b in loader)

    return cycle(epoch)


def cache_batches(data: CachedPatches, batch: int) -> Iterator:
    """(b): batches gathered from the cache and augmented, as a run with the cache."""
    return cycle(lambda: data.batches(epoch_order(data, batch), batch, DEVICE))


def memory_batches(data: CachedPatches, batch: int) -> Iterator:
    """(a): the same batches as (b) and (c), made beforehand and handed out again."""
    stacked = list(data.batches(epoch_order(data, batch), batch, DEVICE))
    return cycle(lambda: iter(stacked))


def timed_step(nets: Networks, feed: Iterator, cfg: TrainConfig) -> tuple[float, float]:
    """Seconds of fetching one batch and of the step on it."""
    started = time.perf_counter()
    batch = next(feed)
    fetched = time.perf_counter()
    nets.step(batch, cfg)
    return fetched - started, time.perf_counter() - fetched


def compare(
    feeds: dict[str, Iterator], cfg: TrainConfig | dict[str, TrainConfig], repeats: int
) -> dict[str, tuple[float, float]]:
    """Median (feed, step) seconds per feed, the feeds taking turns; one warm-up step each.

    ``cfg``: the configuration of every feed's run, or one per feed.
    """
    cfgs = cfg if isinstance(cfg, dict) else dict.fromkeys(feeds, cfg)
    nets = {name: Networks.build(cfgs[name], DEVICE) for name in feeds}
    for name, feed in feeds.items():
        nets[name].train()
        timed_step(nets[name], feed, cfgs[name])
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in feeds}
    names = list(feeds)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # a turn, rotated
            times[name].append(timed_step(nets[name], feeds[name], cfgs[name]))
    return {
        name: (statistics.median(f for f, _ in t), statistics.median(s for _, s in t))
        for name, t in times.items()
    }


def gather_rates(data: CachedPatches, batch: int, n: int = 40) -> float:
    """Batches per second gathered (and augmented) from ``data``."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    for _ in range(n):
        picks = rng.choice(len(data), batch, replace=len(data) < batch).tolist()
        data.batch(picks, DEVICE)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=384, help="cube side in pixels")
    parser.add_argument("--batches", default="8,16")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (a GPU run: batch 16)")
    parser.add_argument(
        "--resident", action="store_true", help="on CUDA: the training split on the GPU whole"
    )
    parser.add_argument("--precision-batches", default="8", help="batches of bf16 vs fp32")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per mode")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: OpenMP threads of a shared machine wait for each other)",
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, torch threads {args.threads}, load {load()}")
    print(f"CPU flags: {cpu_flags()}; torch {torch.__version__}; device {DEVICE}")
    if DEVICE.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(DEVICE)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cube.zarr"
        t0 = time.perf_counter()
        ds = cloudfill.simulate_scene(
            (args.shape, args.shape),
            dates=6,
            seed=0,
            chunks=args.shape // 2,
            cloud_fraction=[0.0, 0.1, 0.3, 0.05, 0.2, 0.4],
        )
        cloudfill.write_cube(ds, path)
        t1 = time.perf_counter()
        cfg = config(8)
        index = build_index(
            str(path), "SOD", cfg.patches, rule=cfg.pairing, reference="blend", despeckle=5
        )
        t2 = time.perf_counter()
        splits = [PatchDataset.from_index(index, s) for s in ("train", "val", "test")]
        cached = open_patch_cache(splits, Path(tmp) / "cache")
        t3 = time.perf_counter()
        train_set, cached_train = splits[0], cached[0]
        mapped = open_patch_cache(splits, Path(tmp) / "cache", in_memory=0)[0]
        if args.resident:
            print("training split on the GPU whole:", cached_train.place(DEVICE))
        n = len(train_set)
        size = sum(c.nbytes for c in cached)
        print(
            f"cube {args.shape} px, 6 dates, zarr chunks {args.shape // 2}: written in "
            f"{t1 - t0:.1f} s; index + statistics {t2 - t1:.1f} s; "
            f"{sum(len(s) for s in splits)} samples ({n} training), cache built in "
            f"{t3 - t2:.1f} s ({(t3 - t2) / sum(len(s) for s in splits) * 1e3:.1f} ms a "
            f"sample), {size / 2**20:.0f} MiB"
        )
        print()
        print("| batch | feed | batch made in (ms) | step (s) | steps/s | x (a) | step share |")
        print("|---|---|---|---|---|---|---|")
        names = {"a": "(a) in-memory tensors", "b": "(b) patch cache", "c": "(c) sampler"}
        seconds = {}
        for batch in [int(b) for b in args.batches.split(",") if b]:
            feeds = {
                "a": memory_batches(cached_train, batch),
                "b": cache_batches(cached_train, batch),
                "c": sampler_batches(train_set, batch),
            }
            sec = compare(feeds, config(batch), args.repeats)
            seconds[batch] = sec["a"][1]
            rate = {k: 1 / (f + s) for k, (f, s) in sec.items()}
            for key, (feed, step) in sec.items():
                print(
                    f"| {batch} | {names[key]} | {feed * 1e3:.1f} | {step:.2f} | "
                    f"{rate[key]:.3f} | {rate[key] / rate['a']:.2f} | "
                    f"{step / (step + feed):.4f} |"
                )
        print()
        print(
            f"median of {args.repeats} timed steps each (one warm-up step), the feeds taking "
            "turns; steps/s = 1 / (batch + step); step share = step / (batch + step): the "
            "rate relative to a step on in-memory tensors with the step's cost itself equal"
        )
        print()
        print("| precision | batch | s a step | steps/s | x fp32 |")
        print("|---|---|---|---|---|")
        for batch in [int(b) for b in args.precision_batches.split(",") if b]:
            precisions = ("fp32", "bf16")
            feeds = {p: memory_batches(cached_train, batch) for p in precisions}
            timing = compare(feeds, {p: config(batch, p) for p in precisions}, args.repeats)
            steps = {p: timing[p][1] for p in precisions}
            for precision, sec in steps.items():
                print(
                    f"| {precision} | {batch} | {sec:.3f} | {1 / sec:.3f} | "
                    f"{steps['fp32'] / sec:.2f} |"
                )
        print()
        for batch in [int(b) for b in args.batches.split(",") if b]:
            ram, mm = gather_rates(cached_train, batch), gather_rates(mapped, batch)
            step = seconds[batch]
            print(
                f"batch {batch}: gathering + augmenting a batch of random samples: in memory "
                f"{1e3 / ram:.1f} ms, memory-mapped {1e3 / mm:.1f} ms; with the step on "
                f"in-memory tensors ({step:.2f} s) that bounds (b)/(a) at "
                f"{step / (step + 1 / ram):.4f} (in memory), {step / (step + 1 / mm):.4f} "
                "(memory-mapped)"
            )
        errors = []
        for name, array in (("condition", cached_train.condition), ("target", cached_train.target)):
            half = array.astype(np.float16).astype(np.float32)
            errors.append(f"{name} max {np.abs(half - array).max():.2e}")
        print(
            "float16 storage: largest rounding error (normalised units, range [-1, 1]): "
            + ", ".join(errors)
            + f"; would save {size / 2 / 2**20:.0f} of {size / 2**20:.0f} MiB"
        )
        print(f"load after: {load()}")


if __name__ == "__main__":
    main()
