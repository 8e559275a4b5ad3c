"""What the target date shows at each height: its clear pixels by elevation band.

Snow comes and goes by height: on a winter date the snow line lies along a contour, and the
clear part of the date shows where it lies today. A pixel under a cloud 300 px from the
nearest clear pixel at its own height is out of reach of the context path's 32 px
(:mod:`cloudfill.model.context`), and the per-pixel linear blend of the two sides puts half
a snow cover on every pixel whose side dates disagree. On fresh generic scenes most of the
error left on change pixels is on such dates (RESULTS, "Height context").

So the SODCTXH variant also reads, at each pixel, what the date's clear pixels *at the same
height* look like: over the whole date, their mean S2 (normalised as the model's ``s2``) in
100 m elevation bands, how much they spread about it, and the share of the band's pixels that
were clear (:data:`~cloudfill.core.variants.HEIGHT_CHANNELS`). A bright band of small spread
is a snow-covered one. A table of :data:`HEIGHT_BINS` x 11 sums (:func:`height_sums`) is all
it takes: an inference block looks its pixels up in the table of its date
(:func:`height_channels`), a training patch in its date's table less the pixels it hides, so
a sample never reads the values it is scored on.

The bands are absolute (``HEIGHT_BASE_M + k * HEIGHT_BIN_M``), not a scene's own range, so a
table means the same on a 256 px test scene and a 100 km cube. A pixel without a DEM value
belongs to no band and reads zeros.
"""

from __future__ import annotations

from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.array.core import unify_chunks

from cloudfill._backend import namespace, to_numpy

__all__ = [
    "HEIGHT_BASE_M",
    "HEIGHT_BINS",
    "HEIGHT_BIN_M",
    "HEIGHT_MIN_SHOWN",
    "HEIGHT_VERSION",
    "height_bin",
    "height_channels",
    "height_light",
    "height_sums",
    "without_pixels",
]

HEIGHT_VERSION: int = 1
"""Changes whenever the table or its channels change (part of the patch cache's key)."""

HEIGHT_BIN_M: float = 100.0
"""Width of an elevation band, metres: about the width of a snow line's transition."""

HEIGHT_BASE_M: float = -500.0
"""Lower edge of the first band (the Dead Sea shore is at -430 m)."""

HEIGHT_BINS: int = 96
"""Number of bands: -500 m to 9100 m; higher pixels fall into the last."""

HEIGHT_MIN_SHOWN: int = 16
"""A band with fewer clear pixels says nothing: its channels read 0."""

_COLUMNS = 11  # per band: sums of the values and of their squares (4 bands each), clear,
# all, and the clear pixels' summed slope light (:mod:`cloudfill.core.illumination`)
_ALL = 9  # the column of all pixels with a DEM value: the one hiding a pixel leaves alone


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


def _block_sums(values: Any, dem: Any, light: Any = None) -> np.ndarray:
    """(HEIGHT_BINS, 11) float64 sums of one block (on the host: a CuPy block is copied); a
    pixel is clear where every band of ``values`` (4, y, x) is finite."""
    k = height_bin(to_numpy(dem)).ravel()
    v = to_numpy(values).astype("float64").reshape(values.shape[0], -1)
    has = k >= 0
    clear = has & np.isfinite(v).all(axis=0)
    out = np.zeros((HEIGHT_BINS, _COLUMNS))
    for b in range(4):
        out[:, b] = np.bincount(k[clear], weights=v[b, clear], minlength=HEIGHT_BINS)
        out[:, 4 + b] = np.bincount(k[clear], weights=v[b, clear] ** 2, minlength=HEIGHT_BINS)
    out[:, 8] = np.bincount(k[clear], minlength=HEIGHT_BINS)
    out[:, _ALL] = np.bincount(k[has], minlength=HEIGHT_BINS)
    if light is not None:
        lit = to_numpy(light).astype("float64").ravel()
        out[:, 10] = np.bincount(k[clear], weights=lit[clear], minlength=HEIGHT_BINS)
    return out


def height_sums(values: Any, dem: Any, light: Any = None) -> np.ndarray:
    """Per elevation band, the sums of a date's clear pixels' values and the counts.

    Parameters
    ----------
    values
        (4, y, x) the date's B02, B03, B04, B08 in the model's normalised ``s2`` units, NaN
        where a pixel is not shown (cloudy, no data). NumPy, or dask: then the blocks are
        reduced one by one and the (small) table is computed here, so a date of any size
        streams through once.
    dem
        (y, x) elevation, metres.
    light
        (y, x) the light on each pixel's slope at the date
        (:func:`~cloudfill.core.illumination.slope_light`; SODCTXHI), or None (its column
        stays 0).

    Returns
    -------
    numpy.ndarray
        (HEIGHT_BINS, 11) float64: per band the sums of the values in B02, B03, B04, B08,
        of their squares, the number of clear pixels, the number of pixels with a DEM
        value and the sum of the clear pixels' light. Sums of disjoint parts add up, so a
        training patch's hidden pixels are subtracted from its date's.

    Examples
    --------
    >>> values = np.array([[[0.2, np.nan], [0.4, 1.0]]] * 4)
    >>> s = height_sums(values, np.array([[10.0, 20.0], [30.0, 900.0]]))
    >>> s[5].round(6).tolist()
    [0.6, 0.6, 0.6, 0.6, 0.2, 0.2, 0.2, 0.2, 2.0, 3.0, 0.0]
    """
    if not any(isinstance(a, da.Array) for a in (values, dem, light)):
        return _block_sums(values, dem, light)

    values = da.asarray(values).rechunk({0: -1})
    if light is None:
        _, (values, dem) = unify_chunks(values, "byx", da.asarray(dem), "yx")
        lights = None
    else:
        _, (values, dem, light) = unify_chunks(
            values, "byx", da.asarray(dem), "yx", da.asarray(light), "yx"
        )
        lights = light.to_delayed()
    blocks = values.to_delayed()[0]
    dems = dem.to_delayed()
    parts = [
        dask.delayed(_block_sums)(
            blocks[i][j], dems[i][j], None if lights is None else lights[i][j]
        )
        for i in range(len(dems))
        for j in range(len(dems[i]))
    ]
    (total,) = dask.compute(dask.delayed(sum)(parts))
    return np.asarray(total)


def without_pixels(sums: np.ndarray, part: np.ndarray) -> np.ndarray:
    """The table ``sums`` with the pixels summed in ``part`` no longer shown: their values
    and clear counts come off, they still count among the band's pixels (as cloudy ones do).
    A training patch's table is its date's without the pixels it hides.

    Examples
    --------
    >>> values = np.array([[[0.2, 0.4]]] * 4)
    >>> dem = np.array([[10.0, 20.0]])
    >>> less = without_pixels(height_sums(values, dem), height_sums(values[..., 1:], dem[:, 1:]))
    >>> less[5].round(6).tolist()
    [0.2, 0.2, 0.2, 0.2, 0.04, 0.04, 0.04, 0.04, 1.0, 2.0, 0.0]
    """
    out = np.array(sums, dtype="float64")
    shown = np.arange(out.shape[1]) != _ALL  # all pixels with a DEM value stay counted
    out[:, shown] -= np.asarray(part)[:, shown]
    return out


def height_channels(sums: np.ndarray, dem: Any) -> Any:
    """The :data:`~cloudfill.core.variants.HEIGHT_CHANNELS` (6, y, x), float32, of a table.

    At each pixel: its band's mean value in B02, B03, B04, B08, their standard deviation
    (averaged over the four bands) and the share of the band's pixels that were clear; all 0
    where the band has fewer than :data:`HEIGHT_MIN_SHOWN` clear pixels or the pixel has no
    DEM value (a share of 0 says "nothing known"). Lazy when ``dem`` is a dask array.

    Examples
    --------
    >>> sums = np.zeros((HEIGHT_BINS, 10))
    >>> sums[5] = [3.2, 1.6, 0.0, -1.6, 0.64, 0.32, 0.0, 0.32, 16, 64]
    >>> height_channels(sums, np.array([[50.0, 150.0]]))[:, 0, 0].astype(float).round(4).tolist()
    [0.2, 0.1, 0.0, -0.1, 0.05, 0.25]
    """
    sums = np.asarray(sums, dtype="float64")
    shown, total = sums[:, 8], sums[:, 9]
    table = np.zeros((HEIGHT_BINS + 1, 6), dtype="float32")  # the last row: no DEM value
    enough = shown >= HEIGHT_MIN_SHOWN
    n = shown[enough, None]
    mean = sums[enough, :4] / n
    var = np.maximum(sums[enough, 4:8] / n - mean**2, 0)
    table[:-1, :4][enough] = mean
    table[:-1, 4][enough] = np.sqrt(var).mean(axis=1)
    table[:-1, 5][enough] = shown[enough] / np.maximum(total[enough], 1)
    return _look_up(table, dem)


def height_light(sums: np.ndarray, dem: Any) -> Any:
    """At each pixel (y, x), float32: the mean slope light of the clear pixels of its
    elevation band (the table's last column over its clear count); 0 where the band has fewer
    than :data:`HEIGHT_MIN_SHOWN` clear pixels or the pixel has no DEM value, as
    :func:`height_channels`. Lazy when ``dem`` is a dask array.

    Examples
    --------
    >>> sums = np.zeros((HEIGHT_BINS, 11))
    >>> sums[5, 8], sums[5, 10] = 16, 12.0
    >>> height_light(sums, np.array([[50.0, 150.0, np.nan]])).tolist()
    [[0.75, 0.0, 0.0]]
    """
    sums = np.asarray(sums, dtype="float64")
    shown = sums[:, 8]
    table = np.zeros((HEIGHT_BINS + 1, 1), dtype="float32")  # the last row: no DEM value
    enough = shown >= HEIGHT_MIN_SHOWN
    table[:-1, 0][enough] = sums[enough, 10] / shown[enough]
    return _look_up(table, dem)[0]


def _look_up(table: np.ndarray, dem: Any) -> Any:
    """(k, y, x) float32: the row of ``table`` ((HEIGHT_BINS + 1, k); the last row for a pixel
    without a DEM value) of each pixel's band; lazy when ``dem`` is a dask array."""

    def look_up(block: Any) -> Any:
        xp = namespace(block)
        return xp.moveaxis(xp.asarray(table)[height_bin(block)], -1, 0)

    if isinstance(dem, da.Array):
        chunks = ((table.shape[1],), *dem.chunks)
        return da.map_blocks(look_up, dem, new_axis=0, chunks=chunks, dtype="float32")
    return look_up(dem)
