"""Same-date adjustment: a fill made to agree with the clear pixels of its own date.

A synthesized (or interpolated) image is built from other dates, so it misses what changed
scene-wide or regionally on the target date and no input shows: the sun's angle on the
slopes, the snow line, a haze of green-up. The clear pixels of the same date show it. The
adjustment adds to the fill the residual ``real - fill`` of those clear pixels, smoothed
by a Gaussian of ``sigma`` pixels (normalised convolution: a weighted mean of the nearby
residuals)::

    fill + G(residual * clear) / (G(clear) + ADJUST_FLOOR)

``ADJUST_FLOOR`` damps the correction where clear pixels are scarce (deep inside a large
cloud it fades to 0), so a few distant residuals are never extrapolated far. A date with no
clear pixel is left as it is. The approach is that of the residual step of gap-filling
methods such as NSPI (Chen et al., 2011); sigma and the floor were chosen on the default
model's training cube (benchmarks/RESULTS.md, "Blend reference and same-date adjustment").

The Gaussian runs block by block with a halo of its radius (:func:`dask.array.map_overlap`),
so the result is the same whatever the chunking, and on CuPy blocks with
``cupyx.scipy.ndimage``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import xarray as xr

from cloudfill._backend import map_with_halo, ndimage
from cloudfill.errors import ParameterError

__all__ = [
    "ADJUST_FLOOR",
    "DEFAULT_ADJUST_SIGMA",
    "adjust_to_date",
    "check_sigma",
    "gaussian_smooth",
]

DEFAULT_ADJUST_SIGMA = 12.0
"""Gaussian sigma (pixels) of the residual smoothing; 120 m at Sentinel-2's 10 m."""

ADJUST_FLOOR = 0.0025
"""Added to the smoothed clear-pixel weight: the correction is halved where the clear pixels
within reach weigh this much (about 3 sigma inside a large cloud)."""

_TRUNCATE = 4.0  # scipy's default: the kernel reaches int(4 * sigma + 0.5) pixels


def _smooth_block(block: Any, sigma: float) -> Any:
    """Gaussian of every 2-D image of a (..., y, x) block, 'nearest' at the edges."""
    sigmas = (0,) * (block.ndim - 2) + (sigma, sigma)
    return ndimage(block).gaussian_filter(block, sigmas, mode="nearest", truncate=_TRUNCATE)


def gaussian_smooth(array: xr.DataArray, sigma: float) -> xr.DataArray:
    """Gaussian smoothing over ``y`` and ``x`` (sigma in pixels), the same for any chunking.

    Examples
    --------
    >>> a = xr.DataArray(np.eye(1, 9, 4, dtype="float32"), dims=("y", "x"))
    >>> round(float(gaussian_smooth(a, 1.0).sum()), 6)  # the kernel is normalised
    1.0
    """
    if array.dims[-2:] != ("y", "x"):
        raise ParameterError(f"gaussian_smooth needs (..., y, x) dims, got {array.dims}")
    radius = int(_TRUNCATE * sigma + 0.5)
    return map_with_halo(array, _smooth_block, radius, array.dtype, sigma=sigma)


def check_sigma(sigma: float) -> None:
    """Raise :class:`~cloudfill.errors.ParameterError` unless ``sigma`` is a finite number
    of pixels >= 0 (0: no adjustment).

    >>> check_sigma(12.0)
    """
    if not (sigma >= 0 and math.isfinite(sigma)):
        raise ParameterError(f"adjust: sigma must be >= 0 pixels, got {sigma}")


def adjust_to_date(
    fill: xr.DataArray,
    real: xr.DataArray,
    clear: xr.DataArray,
    sigma: float = DEFAULT_ADJUST_SIGMA,
    *,
    floor: float = ADJUST_FLOOR,
) -> xr.DataArray:
    """``fill`` (band, y, x) plus the smoothed residual of the date's ``clear`` pixels.

    Parameters
    ----------
    fill
        The fill of the whole date (synthesized or interpolated), NaN where there is none.
    real
        The date's observation (band, y, x).
    clear
        (y, x) bool, True where ``real`` is usable. Pixels where ``real`` or ``fill`` is
        NaN in any band do not contribute.
    sigma
        Gaussian sigma in pixels; 0 returns ``fill`` unchanged.
    floor
        Damping where clear pixels are scarce (:data:`ADJUST_FLOOR`).

    Returns
    -------
    xarray.DataArray
        Like ``fill`` (coords and attrs kept), lazily where the inputs are dask-backed.

    Examples
    --------
    >>> real = xr.DataArray(np.full((1, 5, 5), 0.3, "float32"), dims=("band", "y", "x"))
    >>> fill = real - 0.1  # the fill is 0.1 too dark everywhere
    >>> clear = xr.DataArray(np.arange(25).reshape(5, 5) % 2 == 0, dims=("y", "x"))
    >>> out = adjust_to_date(fill, real, clear, sigma=2.0)
    >>> round(float(out[0, 1, 1]), 3)  # cloudy pixel next to clear ones: corrected
    0.3
    """
    check_sigma(sigma)
    if not floor > 0:
        raise ParameterError(f"adjust: floor must be positive, got {floor}")
    if sigma == 0:
        return fill
    zero = np.float32(0)
    usable = clear & real.notnull().all("band") & fill.notnull().all("band")
    residual = (real - fill).where(usable, zero).astype("float32")
    weight = usable.astype("float32")
    correction = gaussian_smooth(residual.transpose(..., "y", "x"), sigma) / (
        gaussian_smooth(weight.transpose(..., "y", "x"), sigma) + np.float32(floor)
    )
    out = (fill + correction.astype("float32")).astype(fill.dtype)
    return out.transpose(*fill.dims).assign_attrs(fill.attrs)
