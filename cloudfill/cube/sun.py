"""The sun's position at each S2 date, as STAC items state it.

A model that reads the slopes' sunlight (:mod:`cloudfill.core.illumination`) computes the sun
from the date and the latitude unless the cube states it: Sentinel-2 items on Earth Search and
Planetary Computer carry ``view:sun_elevation`` and ``view:sun_azimuth`` (or the product's
``s2:mean_solar_zenith`` and ``s2:mean_solar_azimuth``), the sun at the acquisition itself.
:func:`cloudfill.cube.stac.cube_from_stac` keeps them as the ``sun_elevation`` and
``sun_azimuth`` coordinates along ``time`` (degrees, azimuth clockwise from north).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["sun_angles"]


def sun_angles(items: list[dict[str, Any]], times: pd.DatetimeIndex) -> dict[str, Any] | None:
    """The ``sun_elevation`` and ``sun_azimuth`` coordinates of ``times`` from the S2 items'
    properties (plain item dicts): per date the mean over its items (azimuths averaged as
    directions: 359 and 1 degrees give 0, not 180), NaN where no item of a date says; None
    where no item says.

    Examples
    --------
    >>> items = [{"properties": {"datetime": "2021-05-01T10:00:00Z",
    ...                          "view:sun_elevation": 40.0, "view:sun_azimuth": a}}
    ...          for a in (359.0, 1.0)]
    >>> coords = sun_angles(items, pd.DatetimeIndex(["2021-05-01T10:00:00"]))
    >>> float(coords["sun_elevation"][1][0]), round(float(coords["sun_azimuth"][1][0]) % 360, 6)
    (40.0, 0.0)
    """
    rows = []
    for item in items:
        props = item.get("properties", {})
        el, az = props.get("view:sun_elevation"), props.get("view:sun_azimuth")
        if el is None and props.get("s2:mean_solar_zenith") is not None:
            el = 90.0 - float(props["s2:mean_solar_zenith"])
        if az is None:
            az = props.get("s2:mean_solar_azimuth")
        when = pd.Timestamp(props.get("datetime"))
        if el is None or az is None or pd.isna(when):
            continue
        when = when.tz_convert("UTC").tz_localize(None) if when.tz is not None else when
        rows.append((when, float(el), np.sin(np.radians(az)), np.cos(np.radians(az))))
    if not rows:
        return None
    table = pd.DataFrame(rows, columns=["time", "el", "east", "north"])
    table = table.groupby("time").mean().reindex(times)
    azimuth = np.degrees(np.arctan2(table["east"], table["north"])).to_numpy() % 360.0
    return {
        "sun_elevation": ("time", table["el"].to_numpy(), {"units": "degree"}),
        "sun_azimuth": ("time", azimuth, {"units": "degree"}),
    }
