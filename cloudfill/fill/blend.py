"""The feathered blend band: how far a filled image reaches into the real one.

:func:`~cloudfill.fill.series.fill_series` blends a date's fill into its real image with
these weights, so there is no hard seam at the mask's edge.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from cloudfill._backend import map_with_halo, namespace, ndimage
from cloudfill.errors import ParameterError

__all__ = ["feather_weights"]


def _feather_block(mask: np.ndarray, width: int) -> np.ndarray:
    """Weights of a (..., y, x) block, each 2-D image on its own (NumPy or CuPy)."""
    xp = namespace(mask)
    edt = ndimage(mask).distance_transform_edt
    out = xp.zeros(mask.shape, dtype="float32")
    for index in np.ndindex(mask.shape[:-2]):
        image = mask[index]
        if image.any():
            dist = edt(~image)
            out[index] = xp.clip(1.0 - dist / (width + 1), 0.0, 1.0)
    return out


DEFAULT_FEATHER = 8
"""Width in pixels of the band outside the mask where filled values blend into real ones."""


def feather_weights(mask: xr.DataArray, width: int) -> xr.DataArray:
    """Blend weight of the filled image: 1 on masked pixels, falling linearly to 0 over
    ``width`` pixels outside the mask (Euclidean distance). Exact for any chunking: the
    distance transform runs with a halo of ``width`` pixels.

    Examples
    --------
    >>> m = xr.DataArray(np.eye(1, 7, 3, dtype=bool), dims=("y", "x"))
    >>> feather_weights(m, 2).values.astype(float).round(2).tolist()
    [[0.0, 0.33, 0.67, 1.0, 0.67, 0.33, 0.0]]
    """
    if width < 0:
        raise ParameterError(f"feather must be >= 0 pixels, got {width}")
    if width == 0:
        return mask.astype("float32")
    weights = map_with_halo(mask, _feather_block, width + 1, "float32", width=width)
    return weights.rename("feather")
