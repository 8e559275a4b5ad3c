"""The usability mask: which S2 pixels are cloud, shadow or no data."""

from __future__ import annotations

from collections.abc import Iterable

import xarray as xr

from cloudfill.cube.schema import DEFAULT_UNUSABLE_SCL
from cloudfill.errors import MissingVariableError

__all__ = ["cloud_mask"]


def cloud_mask(ds: xr.Dataset, unusable_scl: Iterable[int] = DEFAULT_UNUSABLE_SCL) -> xr.DataArray:
    """Boolean (time, y, x) mask, True where the S2 pixel is unusable.

    Taken from the ``cloud`` variable when present, else from the Sen2Cor ``scl`` classes in
    ``unusable_scl``. Pixels where any S2 band is NaN (no data) are unusable in both cases.
    Lazy: a dask-backed cube gives a dask-backed mask.

    Parameters
    ----------
    ds
        A contract cube with ``s2`` and ``cloud`` or ``scl``.
    unusable_scl
        Scene classes treated as unusable when the mask comes from ``scl``
        (default 0, 1, 3, 8, 9, 10).

    Returns
    -------
    xarray.DataArray
        Named ``"cloud"``, dims (time, y, x), dtype bool, with the cube's coords.

    Raises
    ------
    MissingVariableError
        If neither ``cloud`` nor ``scl`` is present.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> cloud_mask(ds).dims
    ('time', 'y', 'x')
    """
    if "cloud" in ds.data_vars:
        mask = ds["cloud"].astype(bool)
        source = "cloud"
    elif "scl" in ds.data_vars:
        mask = ds["scl"].isin(list(unusable_scl))
        source = "scl"
    else:
        raise MissingVariableError(
            "no cloud mask: the cube has neither a 'cloud' nor an 'scl' variable"
        )
    if "s2" in ds.data_vars:
        mask = mask | ds["s2"].isnull().any("band")
    mask = mask.transpose("time", "y", "x")
    mask.name = "cloud"
    mask.attrs = {"long_name": "unusable S2 pixel (cloud, shadow or no data)", "source": source}
    return mask
