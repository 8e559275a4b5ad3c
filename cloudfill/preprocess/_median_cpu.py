"""CPU median kernels: OpenCV for 3x3 / 5x5 float32, a numba network kernel otherwise.

Everything here works on *valid* windows: ``median_valid(P, k)`` returns, for an array ``P`` of
shape ``(H + k - 1, W + k - 1)``, the ``(H, W)`` medians of the windows that lie entirely in
``P``. Padding (scipy's ``"reflect"`` rule) and chunk halos are the caller's business
(:mod:`cloudfill.preprocess.despeckle`).

Why these kernels (``benchmarks/bench_despeckle.py``, figures in ``benchmarks/RESULTS.md``):
``scipy.ndimage.median_filter`` copies and partially sorts every window on one core
(~2-6 Mpix/s for 3x3-5x5, < 1 Mpix/s for 11x11). OpenCV's ``medianBlur`` runs a vectorised
sorting network for float32 3x3 and 5x5 (> 60x scipy) but supports no larger float window.
For 7..11 the numba kernel runs comparator networks (merges of sorted columns, built in
:mod:`cloudfill.preprocess._median_network`) on rows of pixels at once, so LLVM vectorises each
comparator across ``x``; sorted columns and merged runs of adjacent columns are shared between
horizontally overlapping windows (:func:`_program`).

NaN rule (a pixel whose window holds NaN): a NaN pixel stays NaN; otherwise the result is the
*lower median* of the window's non-NaN values (element ``(m - 1) // 2`` of the ``m`` sorted valid
values), so it is always one of the input values and NaN never spreads. Those pixels are
recomputed by a scalar kernel after the fast pass; windows without NaN are untouched.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import numba
import numpy as np

from cloudfill.preprocess._median_network import CE, MIN, _Builder, _prune, median_network

__all__ = [
    "fix_nan_windows",
    "median_blur_cv2",
    "median_valid",
    "median_valid_numba",
    "usable_cpus",
    "uses_cv2",
]

_LANES = 384
"""Pixels per row segment of the network kernel: the working rows (up to ~140 for 11x11)
then fit in L2 (~210 KB) while each comparator loop is long enough to amortise its set-up
(measured: 64 lanes cost twice as many cycles per pixel as 384)."""

_MIN_ROWS_PER_TASK = 32

_pool: ThreadPoolExecutor | None = None


def usable_cpus() -> int:
    """Number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _thread_pool() -> ThreadPoolExecutor:
    # numba's default (workqueue) threading layer aborts when two threads launch parallel
    # kernels at once, which dask's threaded scheduler does; serial nogil kernels on a shared
    # pool are safe under any scheduler and give the same speed.
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=usable_cpus(), thread_name_prefix="cloudfill")
    return _pool


def _run_row_strips(func, n_rows: int, threads: int | None) -> None:
    """Call ``func(y0, y1)`` over row strips covering ``0..n_rows``, in parallel."""
    threads = usable_cpus() if threads is None else max(1, threads)
    n_tasks = min(4 * threads, max(1, n_rows // _MIN_ROWS_PER_TASK))
    if threads == 1 or n_tasks == 1:
        func(0, n_rows)
        return
    bounds = np.linspace(0, n_rows, n_tasks + 1).astype(int)
    futures = [
        _thread_pool().submit(func, int(y0), int(y1))
        for y0, y1 in itertools.pairwise(bounds)
        if y1 > y0
    ]
    for future in futures:
        future.result()


def _pieces(k: int) -> list[int]:
    """``k`` as a sum of powers of two, largest first (11 -> [8, 2, 1])."""
    return [1 << b for b in range(k.bit_length() - 1, -1, -1) if k >> b & 1]


@cache
def _program(k: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The median of ``k x k`` windows as a program on the rows of a scratch buffer.

    A row holds one value for up to ``_LANES`` adjacent windows. Work is shared between
    windows that overlap along ``x`` (Adams 2021): sorted columns (``level 1``) are merged
    into sorted runs of 2, 4, ... adjacent columns (``level m``) once per position, and each
    window then merges the few runs that tile it (11 = 8 + 2 + 1 columns, the 8 from two
    runs of 4), dropping values that cannot be its median after each merge (see
    :mod:`cloudfill.preprocess._median_network`). For 11x11 this halves the comparators
    of a per-window network (~380 against ~680 per pixel).

    Every comparator writes to fresh rows instead of updating its inputs in place: an in-place
    ``a[x] = min(a[x], b[x])`` is compiled into masked stores, which cost ~5x more than plain
    stores on the AMD cores this was measured on. Rows of dead values are reused.

    Returns ``(column_program, median_program, output_row, n_rows)``. Column program rows are
    ``(a, b, lo, hi)``; median program rows are ``(kind, a, a_shift, b, b_shift, lo, hi,
    extra)``: read row ``a`` at ``x + a_shift``, and compute ``_LANES + extra`` lanes (runs are
    needed further right than the windows).
    """
    net = median_network(k)
    n_rows = k  # rows 0..k-1 receive the k input rows
    free: list[int] = []
    pinned: set[int] = set()
    median_program: list[tuple[int, ...]] = []

    def take() -> int:
        nonlocal n_rows
        if free:
            return free.pop()
        n_rows += 1
        return n_rows - 1

    row_of = list(range(k))
    column_program = []
    for a, b in net.column_sort:
        lo, hi = take(), take()
        column_program.append((row_of[a], row_of[b], lo, hi))
        free.extend((row_of[a], row_of[b]))
        row_of[a], row_of[b] = lo, hi

    def emit(ops: Iterable[tuple[int, int, int]], where: dict, extra: int) -> None:
        # ``where`` maps a wire to its current (row, shift); comparators get fresh rows.
        for kind, a, b in ops:
            (row_a, shift_a), (row_b, shift_b) = where.pop(a), where.pop(b)
            lo = take() if kind in (CE, MIN) else -1
            hi = take() if kind != MIN else -1
            median_program.append((kind, row_a, shift_a, row_b, shift_b, lo, hi, extra))
            free.extend(r for r in (row_a, row_b) if r not in pinned)
            if lo >= 0:
                where[a] = (lo, 0)
            if hi >= 0:
                where[b] = (hi, 0)

    def pin(values: list[tuple[int, int]]) -> None:
        pinned.update(row for row, _ in values)
        free[:] = [r for r in free if r not in pinned]

    # Which runs a window reads, at which shift, in merge order.
    pieces = _pieces(k)
    top = pieces[0]
    reads = [(top // 2, 0), (top // 2, top // 2)] if top > 1 else [(1, 0)]
    offset = top
    for size in pieces[1:]:
        reads.append((size, offset))
        offset += size
    extra = {1: k - 1}
    for size, shift in reads:
        extra[size] = max(extra.get(size, 0), shift)
    size = top // 4
    while size >= 1:
        extra[size] = max(extra.get(size, 0), extra.get(2 * size, 0) + size)
        size //= 2

    runs = {1: [(row_of[w], 0) for w in net.column_rank]}
    pin(runs[1])
    size = 2
    while size <= top // 2:
        half = runs[size // 2]
        builder = _Builder()
        order = builder.merge(list(range(len(half))), list(range(len(half), 2 * len(half))))
        where = {i: v for i, v in enumerate(half)}
        where.update({len(half) + i: (row, s + size // 2) for i, (row, s) in enumerate(half)})
        emit(builder.ops, where, extra[size])
        runs[size] = [where[w] for w in order]
        pin(runs[size])
        size *= 2

    # The per-window stage, on wire ids, pruned to what reaches the median.
    builder = _Builder()
    where: dict[int, tuple[int, int]] = {}

    def wires(size: int, shift: int) -> list[int]:
        ids = list(range(len(where), len(where) + len(runs[size])))
        where.update({i: (row, s + shift) for i, (row, s) in zip(ids, runs[size], strict=True)})
        return ids

    n, r = k * k, (k * k - 1) // 2
    merged: list[int] = []
    for index, (size, shift) in enumerate(reads):
        merged = wires(size, shift) if index == 0 else builder.merge(merged, wires(size, shift))
        drop = max(0, len(merged) - 1 - r)
        if drop:
            merged = merged[drop : len(merged) - drop]
            n, r = n - 2 * drop, r - drop
    output = merged[r]
    emit(_prune(builder.ops, output), where, 0)
    out_row, out_shift = where[output]
    if out_shift != 0:  # only for k == 1, which despeckle never asks for
        raise AssertionError("median wire is an unsorted input")
    return (
        np.asarray(column_program, dtype=np.int32).reshape(-1, 4),
        np.asarray(median_program, dtype=np.int32).reshape(-1, 8),
        out_row,
        n_rows,
    )


@numba.njit(nogil=True, cache=True)
def _network_rows(padded, out, k, column_program, median_program, out_row, n_rows, y0, y1):
    """Rows ``y0..y1`` of the valid ``k x k`` medians of ``padded`` into ``out``.

    Hand-written because no library has a float median beyond 5x5 that is not a per-pixel
    sort: ``benchmarks/bench_despeckle.py`` ("numba network" rows) shows 15-50x scipy for 7..11.
    Each comparator of :func:`_program` runs over up to ``_LANES`` pixels of a row at once.
    """
    width = out.shape[1]
    buf = np.empty((n_rows, _LANES + k - 1), dtype=padded.dtype)
    for y in range(y0, y1):
        for x0 in range(0, width, _LANES):
            n_out = min(_LANES, width - x0)
            n_in = n_out + k - 1
            for i in range(k):
                dst = buf[i]
                src = padded[y + i]
                for x in range(n_in):
                    dst[x] = src[x0 + x]
            for t in range(column_program.shape[0]):
                ra = buf[column_program[t, 0]]
                rb = buf[column_program[t, 1]]
                rlo = buf[column_program[t, 2]]
                rhi = buf[column_program[t, 3]]
                for x in range(n_in):
                    u = ra[x]
                    v = rb[x]
                    rlo[x] = min(u, v)
                    rhi[x] = max(u, v)
            for t in range(median_program.shape[0]):
                kind = median_program[t, 0]
                ra = buf[median_program[t, 1]][median_program[t, 2] :]
                rb = buf[median_program[t, 3]][median_program[t, 4] :]
                n = n_out + median_program[t, 7]
                if kind == 0:
                    rlo = buf[median_program[t, 5]]
                    rhi = buf[median_program[t, 6]]
                    for x in range(n):
                        u = ra[x]
                        v = rb[x]
                        rlo[x] = min(u, v)
                        rhi[x] = max(u, v)
                elif kind == 1:
                    rlo = buf[median_program[t, 5]]
                    for x in range(n):
                        rlo[x] = min(ra[x], rb[x])
                else:
                    rhi = buf[median_program[t, 6]]
                    for x in range(n):
                        rhi[x] = max(ra[x], rb[x])
            res = buf[out_row]
            for x in range(n_out):
                out[y, x0 + x] = res[x]


@numba.njit(nogil=True, cache=True)
def _nan_windows(padded, out, k, y0, y1):
    """Apply the NaN rule in ``out`` to rows ``y0..y1`` whose windows hold NaN (scalar)."""
    # Running NaN counts per column over the k rows of the window, then along x: O(1) per
    # pixel to find the windows that need the slow path.
    width = out.shape[1]
    h = k // 2
    n_cols = padded.shape[1]
    counts = np.zeros(n_cols, dtype=np.int32)
    for i in range(y0, y0 + k - 1):
        for x in range(n_cols):
            if np.isnan(padded[i, x]):
                counts[x] += 1
    values = np.empty(k * k, dtype=padded.dtype)
    for y in range(y0, y1):
        for x in range(n_cols):
            if np.isnan(padded[y + k - 1, x]):
                counts[x] += 1
        total = 0
        for x in range(k - 1):
            total += counts[x]
        for x in range(width):
            total += counts[x + k - 1]
            if total > 0:
                centre = padded[y + h, x + h]
                if np.isnan(centre):
                    out[y, x] = centre
                else:
                    m = 0
                    for i in range(k):
                        for j in range(k):
                            v = padded[y + i, x + j]
                            if not np.isnan(v):
                                # insertion keeps values[:m] sorted
                                p = m
                                while p > 0 and values[p - 1] > v:
                                    values[p] = values[p - 1]
                                    p -= 1
                                values[p] = v
                                m += 1
                    out[y, x] = values[(m - 1) // 2]
            total -= counts[x]
        for x in range(n_cols):
            if np.isnan(padded[y, x]):
                counts[x] -= 1


def _valid_output(padded: np.ndarray, k: int, out: np.ndarray | None) -> np.ndarray:
    if padded.ndim != 2:
        raise ValueError(f"expected a 2-D array, got {padded.ndim}-D")
    shape = (max(padded.shape[0] - k + 1, 0), max(padded.shape[1] - k + 1, 0))
    if out is None:
        return np.empty(shape, dtype=padded.dtype)
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, expected {shape}")
    return out


def uses_cv2(dtype: np.dtype, k: int, shape: tuple[int, ...]) -> bool:
    """Whether :func:`median_valid` hands this case to OpenCV."""
    return np.dtype(dtype) == np.float32 and k in (3, 5) and min(shape) > k


def median_valid_numba(
    padded: np.ndarray, k: int, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Medians of all full ``k x k`` windows of ``padded`` with the network kernel.

    Written into ``out`` (which may be a view) when given. NaN windows are not treated
    specially here (see :func:`fix_nan_windows`).
    """
    out = _valid_output(padded, k, out)
    if out.size == 0:
        return out
    padded = np.ascontiguousarray(padded)
    column_program, median_program, out_row, n_buf = _program(k)

    def strip(y0: int, y1: int) -> None:
        _network_rows(padded, out, k, column_program, median_program, out_row, n_buf, y0, y1)

    _run_row_strips(strip, out.shape[0], threads)
    return out


def median_blur_cv2(image: np.ndarray, k: int) -> np.ndarray:
    """OpenCV ``medianBlur`` (float32, ``k`` 3 or 5): same shape as ``image``.

    OpenCV replicates the border, so only pixels whose window lies inside ``image`` are
    scipy's values (bit-identical there); callers crop or overwrite the rest.
    """
    import cv2  # ~0.1 s to import: only when a 3x3 / 5x5 filter runs

    return cv2.medianBlur(np.ascontiguousarray(image), k)


def fix_nan_windows(
    padded: np.ndarray, k: int, out: np.ndarray, threads: int | None = None
) -> np.ndarray:
    """Apply the NaN rule to the windows of ``padded`` that hold NaN, in ``out``.

    ``out`` holds the fast kernels' result for the valid windows of ``padded``; a no-op
    (one ``isnan`` pass) when ``padded`` has no NaN.
    """
    if out.size and np.isnan(padded).any():
        padded = np.ascontiguousarray(padded)

        def strip(y0: int, y1: int) -> None:
            _nan_windows(padded, out, k, y0, y1)

        _run_row_strips(strip, out.shape[0], threads)
    return out


def median_valid(
    padded: np.ndarray, k: int, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Medians of all full ``k x k`` windows of ``padded``, with the NaN rule applied.

    The fastest kernel for the size and dtype is used (OpenCV for float32 3x3 and 5x5, the
    network kernel otherwise); windows that contain NaN are then recomputed by the scalar
    NaN-aware kernel. See the module docstring for the NaN rule.

    Examples
    --------
    >>> import numpy as np, scipy.ndimage as ndi
    >>> a = np.random.default_rng(0).random((20, 30), dtype=np.float32)
    >>> p = np.pad(a, 3, mode="symmetric")
    >>> bool((median_valid(p, 7) == ndi.median_filter(a, 7, mode="reflect")).all())
    True
    """
    out = _valid_output(padded, k, out)
    if out.size == 0:
        return out
    if uses_cv2(padded.dtype, k, padded.shape):
        h = k // 2
        out[...] = median_blur_cv2(padded, k)[h:-h, h:-h]
    else:
        median_valid_numba(padded, k, threads, out)
    return fix_nan_windows(padded, k, out, threads)
