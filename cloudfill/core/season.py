"""The time-of-year inputs of the ``SODCT`` variant, in the scene's own hemisphere.

:data:`~cloudfill.core.variants.SEASON_CHANNELS` are ``sin`` and ``cos`` of the target
date's day-of-year angle, two constant planes (:func:`season_channels`). What they stand for
is the season: green-up, senescence, snow. South of the equator the seasons come half a year
later in the calendar, so there the angle is turned by half a turn (both planes change sign):
a scene in Argentina in January gets the values of a scene in Spain in July. Training and
inference decide it the same way, from the latitude of the centre of the cube's grid
(:func:`southern_hemisphere`); a cube whose latitude is unknown (no CRS, or a local one)
counts as northern, as the simulated training scenes are (about 28 degrees north).

In the tropics the seasons follow rain, not the sun's height, and neither calendar says much;
the models shipped with cloudfill have seen no tropical or southern scene.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from pyproj import Transformer
from pyproj.exceptions import CRSError, ProjError

from cloudfill.cube.schema import cube_crs

__all__ = ["centre_latitude", "season_channels", "southern_hemisphere"]


def season_channels(date: Any, like: Any, *, southern: bool = False) -> Any:
    """The :data:`~cloudfill.core.variants.SEASON_CHANNELS` of target ``date`` (2, y, x),
    float32: ``sin`` and ``cos`` of ``2 pi day_of_year / 365.25``, constant over the image;
    with ``southern`` the angle is turned by ``pi`` (the same season half a year later).
    ``like``: a (y, x) array giving the shape and array type.

    >>> x = season_channels("2024-04-01", np.zeros((1, 2), "float32"))
    >>> x.shape, [round(float(v), 3) for v in x[:, 0, 0]]
    ((2, 1, 2), [1.0, -0.012])
    >>> [round(float(v), 3) for v in season_channels("2024-04-01", np.zeros((1, 1)),
    ...                                               southern=True)[:, 0, 0]]
    [-1.0, 0.012]
    """
    angle = 2.0 * np.pi * pd.Timestamp(date).dayofyear / 365.25 + (np.pi if southern else 0.0)
    zero = np.zeros_like(like, dtype="float32")  # not like * 0: NaN where S1 is missing
    return np.stack([zero + np.float32(np.sin(angle)), zero + np.float32(np.cos(angle))])


def centre_latitude(ds: xr.Dataset | xr.DataArray) -> float | None:
    """Latitude in degrees of the centre of ``ds``'s ``x``/``y`` grid; None where it is
    unknown: no CRS (or conflicting ones), or one with no way to the globe (a local
    engineering CRS), or a centre outside the CRS's domain.

    Only the first and last coordinates are read (no data).

    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((16, 16), seed=0)
    >>> round(centre_latitude(ds), 2), centre_latitude(ds.drop_vars("spatial_ref"))
    (28.01, None)
    """
    crs = cube_crs(ds)
    if crs is None or "x" not in ds.coords or "y" not in ds.coords:
        return None
    x = (float(ds["x"].values[0]) + float(ds["x"].values[-1])) / 2.0
    y = (float(ds["y"].values[0]) + float(ds["y"].values[-1])) / 2.0
    try:
        _, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    except (ProjError, CRSError):
        return None
    return float(lat) if np.isfinite(lat) else None


def southern_hemisphere(ds: xr.Dataset | xr.DataArray) -> bool:
    """Whether the centre of ``ds``'s grid lies south of the equator; False where its
    latitude is unknown (:func:`centre_latitude`).

    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((16, 16), seed=0)
    >>> southern_hemisphere(ds), southern_hemisphere(ds.rio.write_crs("EPSG:32745"))
    (False, True)
    """
    lat = centre_latitude(ds)
    return lat is not None and lat < 0.0
