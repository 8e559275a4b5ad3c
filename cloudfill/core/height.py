"""What the target date shows at each height: its clear pixels' residual by elevation band.

Snow comes and goes by height: on a winter date the snow line lies along a contour, and the
clear part of the date shows where it lies today. A pixel under a cloud 300 px from the
nearest clear pixel at its own height is out of reach of the context path's 32 px
(:mod:`cloudfill.model.context`), and the per-pixel linear blend of the two sides puts half
a snow cover on every pixel whose side dates disagree. On the held-out scenes most of the
error left on change pixels is on such dates (RESULTS, "Height context").

So the SODCTXH variant also reads, at each pixel, how the date's clear pixels *at the same
height* differ from the blend reference: over the whole date, the mean of ``context -
reference`` (both normalised as the model's ``s2``) in 100 m elevation bands, and the share
of the band's pixels that were clear enough to say so (:data:`HEIGHT_CHANNELS`). A table of
:data:`HEIGHT_BINS` x 6 sums (:func:`height_sums`) is all it takes: an inference block looks
its pixels up in the table of its date (:func:`height_channels`), a training patch in its
date's table less the pixels it hides, so a sample never reads the values it is scored on.

The bands are absolute (``HEIGHT_BASE_M + k * HEIGHT_BIN_M``), not a scene's own range, so a
table means the same on a 256 px test scene and a 100 km cube. A pixel without a DEM value
belongs to no band and reads zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cloudfill._backend import namespace, to_numpy

__all__ = [
    "HEIGHT_BASE_M",
    "HEIGHT_BINS",
    "HEIGHT_BIN_M",
    "HEIGHT_MIN_SHOWN",
    "height_bin",
    "height_channels",
    "height_sums",
]

HEIGHT_BIN_M: float = 100.0
"""Width of an elevation band, metres: about the width of a snow line's transition."""

HEIGHT_BASE_M: float = -500.0
"""Lower edge of the first band (the Dead Sea shore is at -430 m)."""

HEIGHT_BINS: int = 96
"""Number of bands: -500 m to 9100 m; higher pixels fall into the last."""

HEIGHT_MIN_SHOWN: int = 16
"""A band with fewer clear pixels says nothing: its residual and share read 0."""

_COLUMNS = 6  # per band: the residual's sum in B02, B03, B04, B08; clear pixels; all pixels


def height_bin(dem: np.ndarray) -> np.ndarray:
    """The elevation band of each pixel, int64, -1 where the DEM is NaN.

    Examples
    --------
    >>> height_bin(np.array([-600.0, -500.0, 149.0, 20000.0, np.nan])).tolist()
    [0, 0, 6, 95, -1]
    """
    xp = namespace(dem)
    dem = xp.asarray(dem, dtype="float64")
    k = xp.clip(xp.floor((dem - HEIGHT_BASE_M) / HEIGHT_BIN_M), 0, HEIGHT_BINS - 1)
    return xp.where(xp.isnan(dem), -1, k).astype("int64")


def _block_sums(residual: np.ndarray, dem: np.ndarray) -> np.ndarray:
    """(HEIGHT_BINS, 6) float64 sums of one block (on the host: a CuPy block is copied); a
    pixel is clear where every band of ``residual`` (4, y, x) is finite."""
    k = height_bin(to_numpy(dem)).ravel()
    res = to_numpy(residual).astype("float64").reshape(residual.shape[0], -1)
    shown = np.isfinite(res).all(axis=0)
    has = k >= 0
    out = np.zeros((HEIGHT_BINS, _COLUMNS))
    out[:, 5] = np.bincount(k[has], minlength=HEIGHT_BINS)
    clear = has & shown
    out[:, 4] = np.bincount(k[clear], minlength=HEIGHT_BINS)
    for b in range(res.shape[0]):
        out[:, b] = np.bincount(k[clear], weights=res[b, clear], minlength=HEIGHT_BINS)
    return out


def height_sums(residual: Any, dem: Any) -> np.ndarray:
    """Per elevation band, the sums of a date's residual over its clear pixels and the counts.

    Parameters
    ----------
    residual
        (4, y, x) ``context - reference`` in the model's normalised ``s2`` units, NaN where a
        pixel is not shown (cloudy, no data, no reference). NumPy, or dask: then the blocks
        are reduced one by one and the (small) table is computed here, so a date of any size
        streams through once.
    dem
        (y, x) elevation, metres.

    Returns
    -------
    numpy.ndarray
        (HEIGHT_BINS, 6) float64: per band the residual's sum in B02, B03, B04, B08, the
        number of clear pixels and the number of pixels with a DEM value. Sums of disjoint
        parts add up, so a training patch's hidden pixels are subtracted from its date's.

    Examples
    --------
    >>> res = np.array([[[0.2, np.nan], [0.4, 1.0]]] * 4)
    >>> s = height_sums(res, np.array([[10.0, 20.0], [30.0, 900.0]]))
    >>> s[5].round(6).tolist(), s[14].tolist()
    ([0.6, 0.6, 0.6, 0.6, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    """
    if not _is_dask(residual) and not _is_dask(dem):
        return _block_sums(residual, dem)
    import dask
    import dask.array as da
    from dask.array.core import unify_chunks

    residual = da.asarray(residual)
    residual = residual.rechunk({0: -1})
    _, (residual, dem) = unify_chunks(residual, "byx", da.asarray(dem), "yx")
    blocks = residual.to_delayed()[0]
    dems = dem.to_delayed()
    parts = [
        dask.delayed(_block_sums)(blocks[i][j], dems[i][j])
        for i in range(len(dems))
        for j in range(len(dems[i]))
    ]
    (total,) = dask.compute(dask.delayed(sum)(parts))
    return np.asarray(total)


def height_channels(sums: np.ndarray, dem: Any) -> Any:
    """The :data:`~cloudfill.core.variants.HEIGHT_CHANNELS` (5, y, x), float32, of a table.

    At each pixel: its band's mean residual and the share of the band's pixels that were
    clear; both 0 where the band has fewer than :data:`HEIGHT_MIN_SHOWN` clear pixels or the
    pixel has no DEM value (a share of 0 says "nothing known"). Lazy when ``dem`` is a dask
    array.

    Examples
    --------
    >>> sums = np.zeros((HEIGHT_BINS, 6))
    >>> sums[5] = [3.2, 1.6, 0.0, -1.6, 16, 64]
    >>> height_channels(sums, np.array([[50.0, 150.0]]))[:, 0, 0].tolist()
    [0.20000000298023224, 0.10000000149011612, 0.0, -0.10000000149011612, 0.25]
    """
    sums = np.asarray(sums, dtype="float64")
    shown, total = sums[:, 4], sums[:, 5]
    table = np.zeros((HEIGHT_BINS + 1, 5), dtype="float32")  # the last row: no DEM value
    enough = shown >= HEIGHT_MIN_SHOWN
    table[:-1, :4][enough] = (sums[enough, :4] / shown[enough, None]).astype("float32")
    share = np.where(enough, shown / np.maximum(total, 1), 0)
    table[:-1, 4] = share.astype("float32")

    def lookup(block: Any) -> Any:
        xp = namespace(block)
        return xp.moveaxis(xp.asarray(table)[height_bin(block)], -1, 0)

    if _is_dask(dem):
        import dask.array as da

        return da.map_blocks(lookup, dem, new_axis=0, chunks=((5,), *dem.chunks), dtype="float32")
    return lookup(dem)


def _is_dask(x: Any) -> bool:
    return type(x).__module__.startswith("dask.")
