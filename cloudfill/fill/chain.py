"""What the synthesis of one date reads when filled dates stand in for their observations.

With ``fill_series(..., chain=True)`` a date filled by synthesis serves as the reference of
later dates (:func:`cloudfill.core.pairs.pairs`); :func:`chained_cube` builds the cube one
such synthesis reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

__all__ = ["chained_cube"]


def chained_cube(
    ds: xr.Dataset,
    mask: xr.DataArray,
    date: pd.Timestamp,
    max_ref_age: float,
    sources: Mapping[pd.Timestamp, xr.DataArray],
) -> xr.Dataset:
    """What the synthesis of ``date`` reads in a chained fill.

    The S2 dates at most ``max_ref_age`` days from ``date``, with the filled (band, y, x)
    images of ``sources`` in place of their observations; ``cloud`` then flags only the
    pixels still NaN there (``scl`` is dropped). Without a source in that window the cube is
    returned as it is. Only the window is rebuilt, so a long chain adds a bounded number of
    tasks per date.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), dates=3, seed=0)
    >>> t = pd.DatetimeIndex(ds.time.values)
    >>> mask = ds.cloudfill.cloud_mask()
    >>> out = chained_cube(ds, mask, t[2], 400, {t[1]: ds.truth.sel(time=t[1])})
    >>> bool(out.cloud.sel(time=t[1]).any()), out.sizes["time"]
    (False, 3)
    """
    times = pd.DatetimeIndex(ds["time"].values)
    near = times[np.abs(times - date) <= pd.Timedelta(days=max_ref_age)]
    if not any(t in sources for t in near):
        return ds
    s2, unusable = [], []
    for t in near:
        if t in sources:
            image = sources[t].transpose("band", "y", "x").expand_dims(time=[t])
            s2.append(image.astype("float32"))
            unusable.append(image.isnull().any("band"))
        else:
            s2.append(ds["s2"].sel(time=[t]))
            unusable.append(mask.sel(time=[t]))
    window = ds.drop_vars(["s2", "cloud", "scl"], errors="ignore").sel(time=near)
    return window.assign(
        s2=xr.concat(s2, "time", coords="minimal", compat="override"),
        cloud=xr.concat(unusable, "time", coords="minimal", compat="override"),
    )
