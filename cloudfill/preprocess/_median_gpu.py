"""GPU median kernel (CuPy): the comparator network compiled into straight-line CUDA.

Imported only when a chunk is a CuPy array (see :mod:`cloudfill.preprocess.despeckle`), and
CuPy itself only when a kernel runs, so ``import cloudfill`` never imports CuPy and the CUDA
source can be generated (and checked on the CPU, ``tests/test_despeckle.py``) without it.

One thread computes one output pixel: it reads its ``k x k`` window (scipy's ``"reflect"`` rule
applied by index arithmetic at the edges of the block, so no padded copy is made), keeps the
values in registers and runs the network of :mod:`cloudfill.preprocess._median_network`
(~200 comparators for 7x7, ~750 for 11x11). ``cupyx.scipy.ndimage.median_filter`` instead
sorts every window in local memory, which grows with the window's square; the ratio is
measured by ``benchmarks/bench_despeckle.py`` (GPU section).

A window that holds NaN takes the NaN path in the same thread (same rule as the CPU: NaN
pixels stay NaN, others get the lower median of the valid values).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

from cloudfill.preprocess._median_network import CE, MIN, median_network

__all__ = ["median_reflect_gpu"]

_BLOCK = (32, 8, 1)


def _cuda_source(k: int, ctype: str) -> str:
    net = median_network(k)
    h = k // 2
    fmin, fmax = ("fminf", "fmaxf") if ctype == "float" else ("fmin", "fmax")
    lines = [
        "__device__ __forceinline__ int cf_reflect(int p, int n) {",
        "    while (p < 0 || p >= n) { p = p < 0 ? -p - 1 : 2 * n - p - 1; }",
        "    return p;",
        "}",
        f'extern "C" __global__ void cf_median_{k}(const {ctype}* __restrict__ src,',
        f"        {ctype}* __restrict__ dst, int H, int W, int Ho, int Wo, int cy, int cx) {{",
        "    int j = blockIdx.x * blockDim.x + threadIdx.x;",
        "    int i = blockIdx.y * blockDim.y + threadIdx.y;",
        "    if (i >= Ho || j >= Wo) return;",
        "    const size_t b = blockIdx.z;",
        "    src += b * (size_t)H * W;",
        f"    int rows[{k}], cols[{k}];",
        f"    #pragma unroll\n    for (int d = 0; d < {k}; ++d) {{",
        f"        rows[d] = cf_reflect(i + cy - {h} + d, H) * W;",
        f"        cols[d] = cf_reflect(j + cx - {h} + d, W);",
        "    }",
        "    bool nan = false;",
    ]
    for r in range(k):
        for c in range(k):
            w = f"w{r}_{c}"
            lines.append(f"    {ctype} {w} = src[rows[{r}] + cols[{c}]]; nan |= {w} != {w};")
    lines += [
        "    const size_t o = (b * Ho + i) * (size_t)Wo + j;",
        "    if (nan) {",
        f"        {ctype} centre = w{h}_{h};",
        "        if (centre != centre) { dst[o] = centre; return; }",
        f"        {ctype} v[{k * k}];",
        "        int m = 0;",
        f"        for (int r = 0; r < {k}; ++r) for (int c = 0; c < {k}; ++c) {{",
        f"            {ctype} x = src[rows[r] + cols[c]];",
        "            if (x != x) continue;",
        "            int p = m++;",
        "            while (p > 0 && v[p - 1] > x) { v[p] = v[p - 1]; --p; }",
        "            v[p] = x;",
        "        }",
        "        dst[o] = v[(m - 1) / 2];",
        "        return;",
        "    }",
        f"    {ctype} t;",
    ]
    for c in range(k):
        for a, b in net.column_sort:
            wa, wb = f"w{a}_{c}", f"w{b}_{c}"
            lines.append(f"    t = {fmin}({wa}, {wb}); {wb} = {fmax}({wa}, {wb}); {wa} = t;")

    def wire(index: int) -> str:
        rank, col = divmod(index, k)
        return f"w{net.column_rank[rank]}_{col}"

    for kind, a, b in net.ops:
        wa, wb = wire(a), wire(b)
        if kind == CE:
            lines.append(f"    t = {fmin}({wa}, {wb}); {wb} = {fmax}({wa}, {wb}); {wa} = t;")
        elif kind == MIN:
            lines.append(f"    {wa} = {fmin}({wa}, {wb});")
        else:
            lines.append(f"    {wb} = {fmax}({wa}, {wb});")
    lines += [f"    dst[o] = {wire(net.output)};", "}"]
    return "\n".join(lines)


@cache
def _kernel(k: int, dtype: str) -> Any:
    import cupy as cp  # optional (the gpu extra): only where chunks are CuPy

    ctype = {"float32": "float", "float64": "double"}[dtype]
    return cp.RawKernel(_cuda_source(k, ctype), f"cf_median_{k}")


def median_reflect_gpu(block: Any, k: int, pads: tuple[int, int, int, int]) -> Any:
    """Median of the last two axes of a CuPy array, reflecting only on the padded sides.

    ``pads`` = (top, bottom, left, right), each 0 (the block carries a halo there) or
    ``k // 2`` (an image edge: scipy's ``"reflect"`` rule). The output has
    ``H + top + bottom - 2 * (k // 2)`` rows and likewise columns.
    """
    import cupy as cp  # optional (the gpu extra): only where chunks are CuPy

    h = k // 2
    top, bottom, left, right = pads
    block = cp.ascontiguousarray(block)
    *lead, n_rows, n_cols = block.shape
    out_rows, out_cols = n_rows + top + bottom - 2 * h, n_cols + left + right - 2 * h
    batch = int(np.prod(lead)) if lead else 1
    out = cp.empty((*lead, out_rows, out_cols), dtype=block.dtype)
    if out.size == 0:
        return out
    grid = (
        (out_cols + _BLOCK[0] - 1) // _BLOCK[0],
        (out_rows + _BLOCK[1] - 1) // _BLOCK[1],
        batch,
    )
    args = (
        block,
        out,
        np.int32(n_rows),
        np.int32(n_cols),
        np.int32(out_rows),
        np.int32(out_cols),
        np.int32(h - top),
        np.int32(h - left),
    )
    _kernel(k, str(block.dtype))(grid, _BLOCK, args)
    return out
