"""Comparator networks that select the median of a ``k x k`` window.

Shared by the CPU kernel (which runs them on rows of pixels at once) and the GPU kernel (which
compiles them into straight-line CUDA code). A median is one of the window's values, chosen by
comparisons only, so any correct selection returns exactly the value
``scipy.ndimage.median_filter`` returns: the results are bit-identical (up to the sign of a zero
when a window holds both ``0.0`` and ``-0.0``, which compare equal).

How the network is built (after Adams, "Fast median filters using separable sorting networks",
ACM TOG 2021, simplified):

1. Sort each of the ``k`` columns of the window (a Batcher sorting network). The CPU kernel
   shares these sorts between the ``k`` windows that contain a column.
2. Merge the sorted columns pairwise in a balanced tree (Batcher odd-even merges; lists are
   padded to a power of two with virtual ``+inf`` wires that are resolved at build time).
3. After each merge, drop values that provably cannot be the median: in a sorted sub-list of
   ``m`` values out of a window of ``n = 2 r + 1``, the lowest ``m - 1 - r`` have at least
   ``r + 1`` values above them, so each lies strictly below the median, and symmetrically for
   the highest ``m - 1 - r``. Removing as many values below as above leaves the median of the
   rest unchanged (``n -= 2 d``, ``r -= d``), so later merges are smaller.
4. Keep only comparators whose outputs can reach the median wire (liveness); a comparator with
   one live output becomes a single ``min`` or ``max``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

__all__ = ["CE", "MAX", "MIN", "MedianNetwork", "median_network"]

CE = 0
"""Compare-exchange: wire ``a`` gets ``min(a, b)``, wire ``b`` gets ``max(a, b)``."""
MIN = 1
"""Only wire ``a`` is needed afterwards: ``a = min(a, b)``."""
MAX = 2
"""Only wire ``b`` is needed afterwards: ``b = max(a, b)``."""

_INF = -1  # a virtual wire holding +inf: comparators touching it are resolved at build time


def _merge_pairs(lo: int, n: int, r: int = 1) -> Iterator[tuple[int, int]]:
    """Batcher's odd-even merge of positions ``lo..lo+n-1`` (``n`` a power of two)."""
    step = r * 2
    if step < n:
        yield from _merge_pairs(lo, n, step)
        yield from _merge_pairs(lo + r, n, step)
        for i in range(lo + r, lo + n - r, step):
            yield (i, i + r)
    else:
        yield (lo, lo + r)


def _sort_pairs(lo: int, n: int) -> Iterator[tuple[int, int]]:
    if n > 1:
        half = n // 2
        yield from _sort_pairs(lo, half)
        yield from _sort_pairs(lo + half, half)
        yield from _merge_pairs(lo, n)


def _pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


class _Builder:
    """Records comparators on named wires while positions are shuffled symbolically."""

    def __init__(self) -> None:
        self.ops: list[tuple[int, int, int]] = []

    def _apply(self, pos: list[int], pairs: Iterator[tuple[int, int]]) -> None:
        for p, q in pairs:
            a, b = pos[p], pos[q]
            if b == _INF:
                continue
            if a == _INF:  # +inf moves up: a relabelling, no work at run time
                pos[p], pos[q] = b, a
                continue
            self.ops.append((CE, a, b))

    def sort(self, wires: list[int]) -> list[int]:
        size = _pow2(len(wires))
        pos = list(wires) + [_INF] * (size - len(wires))
        self._apply(pos, _sort_pairs(0, size))
        return pos[: len(wires)]

    def merge(self, first: list[int], second: list[int]) -> list[int]:
        size = _pow2(max(len(first), len(second)))
        pos = first + [_INF] * (size - len(first)) + second + [_INF] * (size - len(second))
        self._apply(pos, _merge_pairs(0, 2 * size))
        return pos[: len(first) + len(second)]


def _prune(ops: list[tuple[int, int, int]], out: int) -> list[tuple[int, int, int]]:
    live = {out}
    kept: list[tuple[int, int, int]] = []
    for _, a, b in reversed(ops):
        live_a, live_b = a in live, b in live
        if live_a and live_b:
            kept.append((CE, a, b))
        elif live_a:
            kept.append((MIN, a, b))
            live.add(b)
        elif live_b:
            kept.append((MAX, a, b))
            live.add(a)
    return kept[::-1]


@dataclass(frozen=True)
class MedianNetwork:
    """The median of a ``k x k`` window as a comparator program.

    Attributes
    ----------
    k
        Window side (odd).
    column_sort
        Comparators ``(a, b)`` on wires ``0..k-1`` (the rows of one column, top to bottom);
        afterwards wire ``column_rank[i]`` holds the column's ``i``-th smallest value.
    column_rank
        See ``column_sort``.
    ops
        ``(kind, a, b)`` with kind :data:`CE`, :data:`MIN` or :data:`MAX` on wires
        ``i * k + j`` = the ``i``-th smallest value of window column ``j``.
    output
        The wire holding the median after ``ops``.
    """

    k: int
    column_sort: tuple[tuple[int, int], ...]
    column_rank: tuple[int, ...]
    ops: tuple[tuple[int, int, int], ...]
    output: int


@cache
def median_network(k: int) -> MedianNetwork:
    """Build the median network of a ``k x k`` window (``k`` odd).

    >>> net = median_network(3)
    >>> len(net.column_sort), len(net.ops)
    (3, 12)
    """
    if k < 1 or k % 2 == 0:
        raise ValueError(f"window side must be odd and positive, got {k}")
    col = _Builder()
    column_rank = tuple(col.sort(list(range(k))))
    column_sort = tuple((a, b) for _, a, b in col.ops)

    builder = _Builder()
    lists = [[i * k + j for i in range(k)] for j in range(k)]
    n = k * k
    r = (n - 1) // 2
    while len(lists) > 1:
        merged = []
        for first, second in zip(lists[0::2], lists[1::2], strict=False):
            out = builder.merge(first, second)
            drop = max(0, len(out) - 1 - r)
            if drop:
                out = out[drop : len(out) - drop]
                n -= 2 * drop
                r -= drop
            merged.append(out)
        if len(lists) % 2:
            merged.append(lists[-1])
        lists = merged
    output = lists[0][r]
    return MedianNetwork(
        k=k,
        column_sort=column_sort,
        column_rank=column_rank,
        ops=tuple(_prune(builder.ops, output)),
        output=output,
    )
