"""Median-filter speed: scipy vs OpenCV vs cloudfill's kernels, on one square float32 image.

Prints, for each window size 3..11, the throughput (Mpix/s, median of ``--repeats`` runs) of

- ``scipy``: ``scipy.ndimage.median_filter(a, size, mode="reflect")``, the reference;
- ``cv2 pad+blur``: OpenCV ``medianBlur`` on a reflect-padded copy (float32: 3 and 5 only);
- ``numba network``: reflect-padded copy + cloudfill's network kernel, all cores;
- ``cloudfill``: ``cloudfill.preprocess.median_filter``, the dispatch despeckle uses;

with the ratio to scipy measured in the same run and whether the output equals scipy's
(``identical``). With CuPy and a GPU present it also times ``cupyx.scipy.ndimage.median_filter``
against cloudfill's CUDA kernel.

    python benchmarks/bench_despeckle.py             # 4096 x 4096, ~6 min on 2 cores
    python benchmarks/bench_despeckle.py --n 2048    # quick
    python benchmarks/bench_despeckle.py --record    # also append the table to RESULTS.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi
from _machine import cpu_model, load

from cloudfill.preprocess import SIZES, median_filter
from cloudfill.preprocess._median_cpu import median_valid_numba, usable_cpus

RESULTS = Path(__file__).with_name("RESULTS.md")


def speckled_image(n: int, seed: int = 0) -> np.ndarray:
    """SAR-like dB image: a smooth field times gamma speckle (4 looks)."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=(n, n)), 8) * 20 + 0.1
    speckle = rng.gamma(4.0, 0.25, (n, n))
    return (10 * np.log10(np.abs(field) * speckle + 1e-4)).astype(np.float32)


def timed(func: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cv2_padded(image: np.ndarray, size: int) -> np.ndarray:
    import cv2

    h = size // 2
    padded = cv2.copyMakeBorder(image, h, h, h, h, cv2.BORDER_REFLECT)  # = scipy "reflect"
    return cv2.medianBlur(padded, size)[h:-h, h:-h]


def numba_padded(image: np.ndarray, size: int) -> np.ndarray:
    return median_valid_numba(np.pad(image, size // 2, mode="symmetric"), size)


def cpu_rows(image: np.ndarray, repeats: int) -> list[tuple]:
    rows = []
    mpix = image.size / 1e6
    for size in SIZES:
        t_ref, reference = timed(
            lambda s=size: ndi.median_filter(image, s, mode="reflect"), repeats
        )
        rows.append(("scipy", size, mpix / t_ref, 1.0, True))
        candidates: list[tuple[str, Callable[[], np.ndarray]]] = []
        if size in (3, 5):
            candidates.append(("cv2 pad+blur", lambda s=size: cv2_padded(image, s)))
        candidates.append(("numba network", lambda s=size: numba_padded(image, s)))
        candidates.append(("cloudfill", lambda s=size: median_filter(image, s)))
        for name, func in candidates:
            t, out = timed(func, repeats)
            rows.append((name, size, mpix / t, t_ref / t, bool(np.array_equal(out, reference))))
        print(f"  size {size} done (load {load()})", flush=True)
    return rows


def gpu_rows(n: int, repeats: int) -> list[tuple] | None:
    if importlib.util.find_spec("cupy") is None:
        return None
    import cupy as cp

    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            return None
    except cp.cuda.runtime.CUDARuntimeError:
        return None
    from cupyx.scipy import ndimage as cndi

    image = speckled_image(n)
    on_gpu = cp.asarray(image)
    mpix = image.size / 1e6

    def sync(func: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            out = func()
            cp.cuda.Device().synchronize()
            return out

        return run

    rows = []
    for size in SIZES:
        reference = ndi.median_filter(image, size, mode="reflect")
        baseline = sync(lambda s=size: cndi.median_filter(on_gpu, s, mode="reflect"))
        ours = sync(lambda s=size: median_filter(on_gpu, s))
        baseline()
        ours()  # compile both kernels outside the timing
        t_ref, out_ref = timed(baseline, repeats)
        t, out = timed(ours, repeats)
        rows.append(
            ("cupyx", size, mpix / t_ref, 1.0, bool(np.array_equal(out_ref.get(), reference)))
        )
        rows.append(
            (
                "cloudfill cuda",
                size,
                mpix / t,
                t_ref / t,
                bool(np.array_equal(out.get(), reference)),
            )
        )
    return rows


def table(rows: list[tuple], baseline: str) -> str:
    lines = [
        f"| implementation | size | Mpix/s | x {baseline} | identical to scipy |",
        "|---|---|---|---|---|",
    ]
    for name, size, rate, ratio, same in rows:
        lines.append(f"| {name} | {size} | {rate:.1f} | {ratio:.1f} | {'yes' if same else 'NO'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4096, help="image side (default 4096)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per timing (median)")
    parser.add_argument("--record", action="store_true", help=f"append the table to {RESULTS}")
    args = parser.parse_args()

    image = speckled_image(args.n)
    small = image[:64, :64].copy()
    for size in SIZES:  # numba (cache load or compile) and OpenCV start-up, outside timings
        median_filter(small, size)
        numba_padded(small, size)
    cores = usable_cpus()
    load_before = load()
    print(f"{args.n}x{args.n} float32, {cpu_model()}, {cores} cores, load {load_before}")
    rows = cpu_rows(image, args.repeats)
    load_after = load()
    cpu_table = table(rows, "scipy")
    print(cpu_table)
    gpu = gpu_rows(args.n, args.repeats)
    gpu_table = None if gpu is None else table(gpu, "cupyx")
    if gpu_table:
        print(gpu_table)
    else:
        print("GPU section skipped: no CuPy or no CUDA device")

    if args.record:
        today = dt.date.today().isoformat()
        text = [
            f"## despeckle (CPU, {today}, {cpu_model()}, {cores} cores)",
            "",
            f"`python benchmarks/bench_despeckle.py --n {args.n} --repeats {args.repeats}`: "
            f"{args.n}x{args.n} float32 SAR-like dB image, median of {args.repeats} runs; "
            "ratios measured in the same run. Load average (1, 5, 15 min) "
            f"before: {load_before}, after: {load_after}.",
            "",
            cpu_table,
            "",
        ]
        if gpu_table:
            text += ["### despeckle (GPU)", "", gpu_table, ""]
        if not RESULTS.exists():
            header = "# Benchmark results\n\n"
        else:
            header = "" if RESULTS.read_text().endswith("\n\n") else "\n"
        with RESULTS.open("a") as f:
            f.write(header + "\n".join(text) + "\n")
        print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
