"""One reading of "some dates" for every function that takes them.

A user passes dates as a string, a :class:`pandas.Timestamp`, a ``numpy.datetime64``, a scalar
or 1-D :class:`xarray.DataArray` (``ds.time[2]``, ``ds.time``), or a list of any of these.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.errors import ParameterError

__all__ = ["as_date", "as_dates"]

_SCALARS = (str, pd.Timestamp, np.datetime64)


def _values(value: Any) -> list[Any]:
    if isinstance(value, _SCALARS) or (isinstance(value, xr.DataArray) and value.ndim == 0):
        value = [value]
    if isinstance(value, xr.DataArray | np.ndarray | pd.Index):
        value = np.asarray(value).tolist() if np.asarray(value).dtype.kind in "OUS" else value
    # A DataArray element (``list(ds.time)``) holds its date in ``.values``; a NumPy string
    # is not a str to pandas.
    out = [v.values if isinstance(v, xr.DataArray) else v for v in value]
    return [str(v) if isinstance(v, np.str_) else v for v in out]


def as_dates(value: Any, name: str = "dates", *, strict: bool = False) -> pd.DatetimeIndex:
    """``value`` as a time-zone naive, nanosecond :class:`pandas.DatetimeIndex`.

    Parameters
    ----------
    value
        One date or a sequence of dates (see the module docstring).
    name
        What the error message calls the argument.
    strict
        Also require at least one date, no NaT, no duplicates and increasing order (dates
        that define a time axis rather than pick from one).

    Raises
    ------
    ParameterError
        A value that is not a date, or (``strict``) a list that cannot be a time axis.

    Examples
    --------
    >>> list(as_dates("2023-01-05").strftime("%Y-%m-%d"))
    ['2023-01-05']
    >>> as_dates(["2023-01-05", "2023-01-01"], strict=True)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: dates: dates must be sorted in increasing order
    """
    try:
        # Element by element: pandas infers one format from the first string of a list.
        index = pd.DatetimeIndex([pd.Timestamp(v) for v in _values(value)])
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name}: cannot read {value!r} as dates ({exc})") from exc
    if index.tz is not None:
        index = index.tz_convert(None)
    index = index.as_unit("ns")
    if not strict:
        return index
    if len(index) == 0:
        raise ParameterError(f"{name}: at least one date is needed")
    if index.hasnans:
        raise ParameterError(f"{name}: holds NaT")
    if index.has_duplicates:
        raise ParameterError(f"{name}: date {index[index.duplicated()][0]:%Y-%m-%d} appears twice")
    if not index.is_monotonic_increasing:
        raise ParameterError(f"{name}: dates must be sorted in increasing order")
    return index


def as_date(value: Any, name: str = "date") -> pd.Timestamp:
    """``value`` as one time-zone naive :class:`pandas.Timestamp` (not NaT).

    >>> as_date("2023-01-05")
    Timestamp('2023-01-05 00:00:00')
    >>> as_date(None)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: date: expected one date, got None
    """
    if value is None:
        raise ParameterError(f"{name}: expected one date, got None")
    index = as_dates(value, name)
    if len(index) != 1 or index.hasnans:
        raise ParameterError(f"{name}: expected one date, got {value!r}")
    return index[0]
