"""Do the values say what the cube claims? S2 in reflectance 0..1, S1 in its stated units.

:func:`validate <cloudfill.cube.schema.validate>` reads only coordinates and metadata. Two
mistakes pass it and give silent garbage (issue 17): float S2 still in digital numbers
(reflectance x 10000, what ``rioxarray`` with ``masked=True`` gives), and S1 whose values
contradict ``attrs["units"]`` (linear power labelled dB, or dB labelled linear). Both are
refused with :class:`~cloudfill.errors.UnitsError` naming the likely fix; nothing is guessed,
because the fix depends on the product (an L2A offset of 1000 since processing baseline
04.00, for instance). S2 in percent is told to divide by 100. Two more empty the fill
silently: an S2 band with no value in any date (:class:`~cloudfill.errors.BandError`) and,
for the models that read it, a DEM with no value (:func:`check_dem`).

The check reads a small window (at most :data:`WINDOW` pixels a side, at the centre of the
scene: a few chunks per variable and date) of at most :data:`MAX_DATES` dates, once, before
any expensive work; only a band (or DEM) that shows nothing there is read whole.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import xarray as xr

from cloudfill.cube.corrupt import reading
from cloudfill.errors import BandError, MissingVariableError, UnitsError

__all__ = [
    "MAX_DATES",
    "S2_MAX_MEDIAN",
    "WINDOW",
    "check_dem",
    "check_values",
    "guess_s1_units",
]

WINDOW = 128
"""Side in pixels of the central window the check reads."""

MAX_DATES = 3
"""Dates sampled per variable (first, middle, last)."""

S2_MAX_MEDIAN = 2.0
"""A median reflectance above this in the sample means digital numbers: bright clouds and snow
stay near 1 and saturated or fill values are few, while digital numbers are hundreds and
thousands nearly everywhere."""


def _central(var: xr.DataArray) -> dict[str, slice]:
    """The central window, at most :data:`WINDOW` pixels a side."""
    starts = {d: max(0, var.sizes[d] // 2 - WINDOW // 2) for d in ("y", "x")}
    return {d: slice(start, start + WINDOW) for d, start in starts.items()}


def _picks(n: int) -> list[int]:
    """The sampled dates of ``n``: first, middle, last (at most :data:`MAX_DATES`)."""
    return sorted({0, n // 2, n - 1})[:MAX_DATES] if n else []


def _sample(var: xr.DataArray, time_dim: str) -> np.ndarray:
    """Finite, non-zero values of a central window of a few dates (a small, eager read).

    Zeros are left out: no data is stored as 0 in S1 GRD and L2A products.
    """
    picks = _picks(var.sizes[time_dim])
    window = _central(var)
    # The first read of every verb: a chunk here that does not decode is bad input.
    with reading(var.encoding.get("source")):
        # to_numpy, not .values: CuPy-backed chunks come back to the host too.
        values = np.asarray(var.isel({time_dim: picks, **window}).to_numpy(), dtype="float64")
    return values[np.isfinite(values) & (values != 0)]


def _check_s2(ds: xr.Dataset) -> None:
    values = _sample(ds["s2"], "time")
    if values.size == 0:
        return
    median = float(np.median(values))
    high = float(np.percentile(values, 99))
    if S2_MAX_MEDIAN < median <= 100 and high <= 100:  # DN: land is hundreds to thousands
        raise UnitsError(
            f"variable 's2' looks like percent, not reflectance 0..1 (median {median:.0f}, "
            f"99th percentile {high:.0f} in a sample): divide by 100"
        )
    if median > S2_MAX_MEDIAN:
        raise UnitsError(
            f"variable 's2' looks like digital numbers, not reflectance 0..1 (median "
            f"{median:.0f} in a sample): divide by 10000 (and, for L2A since processing "
            "baseline 04.00, subtract the offset 1000 first), or load the files with "
            "cloudfill.cube_from_geotiffs / cube_from_stac, which scale integer S2"
        )


def _shows(values: xr.DataArray, over: list[str]) -> xr.DataArray:
    """Per band: any finite value other than 0 (no data reads 0 in L2A and GRD files)."""
    return (values.notnull() & (values != 0)).any(over)


def _check_bands(ds: xr.Dataset) -> None:
    """An S2 band with no value in any date (all NaN: it empties every pixel, as a pixel is
    used only where all bands are; or all 0: no data read unmasked, which the fill would take
    for black) is refused. Only when the sample shows some bands and not others are those
    read whole, together, in one pass: a sample showing no band at all (a cube without S2
    values, as an S model's input may be; clouds or no data at the centre) proves nothing."""
    s2 = ds["s2"]
    if "band" not in s2.dims or not s2.sizes.get("time", 0):
        return
    over = [d for d in s2.dims if d != "band"]
    with reading(s2.encoding.get("source")):
        sample = s2.isel(time=_picks(s2.sizes["time"]), **_central(s2))
        seen = np.asarray(_shows(sample, over).to_numpy(), dtype=bool)
        if seen.all() or not seen.any():
            return
        empty = [label for label, shown in zip(s2["band"].values, seen, strict=True) if not shown]
        anywhere = np.asarray(_shows(s2.sel(band=empty), over).to_numpy(), dtype=bool)
    for label, shown in zip(empty, anywhere, strict=True):
        if not shown:
            raise BandError(
                f"band {label} of 's2' holds no value in any date (only NaN or 0) while the "
                "other bands do: NaN everywhere would empty every pixel (one is used only "
                "where all bands have a value), 0 everywhere is no data read unmasked, which "
                "the fill would take for black; check how the band was loaded (its file, "
                "nodata value or alignment)"
            )


def check_dem(ds: xr.Dataset) -> xr.Dataset:
    """Refuse a DEM with no value, for the verbs whose model reads it.

    A DEM on another grid or extent, aligned onto the cube by xarray, reads NaN everywhere
    and would silently feed the model nothing. The central window is read; the whole DEM
    only when the window is empty.

    Parameters
    ----------
    ds
        A cube with ``dem``.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, for chaining.

    Raises
    ------
    MissingVariableError
        ``dem`` holds no finite value.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
    >>> check_dem(ds) is ds
    True
    >>> check_dem(ds.assign(dem=ds.dem.where(False)))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.MissingVariableError: variable 'dem' holds no value (all NaN): ...
    """
    dem = ds["dem"]
    with reading(dem.encoding.get("source")):
        if bool(dem.isel(_central(dem)).notnull().any().to_numpy()):
            return ds
        anywhere = bool(dem.notnull().any().to_numpy())
    if not anywhere:
        raise MissingVariableError(
            "variable 'dem' holds no value (all NaN): a DEM on another grid or extent, "
            "aligned onto the cube by xarray, reads NaN everywhere; reproject it onto the S2 "
            "grid (rioxarray's reproject_match, or make-cube --dem), or use a model without "
            "the DEM (S, SO)"
        )
    return ds


def _check_s1(ds: xr.Dataset) -> None:
    units = ds["s1"].attrs.get("units")
    values = _sample(ds["s1"], "s1_time")
    if values.size == 0 or units not in ("dB", "linear"):
        return  # validate() reports a missing or unknown unit
    negative = float(np.mean(values < 0))
    median = float(np.median(values))
    # Backscatter power is never negative (a few values after thermal-noise removal at most);
    # in dB, land and water are mostly negative (-25 .. 0).
    if units == "linear" and median < 0:
        raise UnitsError(
            f"variable 's1' is labelled linear but {100 * negative:.0f} % of a sample is "
            f"negative (median {median:.1f}): it looks like dB; set s1.attrs['units'] = 'dB' "
            "(make-cube --s1-units dB)"
        )
    if units == "dB" and negative == 0.0 and median < 1.0:
        raise UnitsError(
            f"variable 's1' is labelled dB but no value of a sample is negative (median "
            f"{median:.3f}): it looks like linear power; set s1.attrs['units'] = 'linear' "
            "(make-cube --s1-units linear)"
        )


def guess_s1_units(ds: xr.Dataset) -> str:
    """``"dB"`` when the median of a sample of ``s1`` is negative, else ``"linear"``.

    Backscatter power is never negative, while in dB land is mostly negative. An empty
    sample (no data in the window) is a :class:`~cloudfill.errors.UnitsError` asking for
    the unit rather than a guess.

    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
    >>> guess_s1_units(ds), guess_s1_units(ds.assign(s1=10 ** (ds.s1 / 10)))
    ('dB', 'linear')
    """
    values = _sample(ds["s1"], "s1_time")
    if values.size == 0:
        raise UnitsError(
            "cannot tell the S1 units from the values (no data in the sampled window): give "
            "them (make-cube --s1-units dB or linear)"
        )
    return "dB" if float(np.median(values)) < 0 else "linear"


def check_values(ds: xr.Dataset) -> xr.Dataset:
    """Refuse S2 in digital numbers or percent, an S2 band with no value at all, and S1 whose
    values contradict their units (the DEM: :func:`check_dem`, where a model reads it).

    Parameters
    ----------
    ds
        A contract cube (``s2`` and ``s1`` are checked when present).

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, for chaining.

    Raises
    ------
    UnitsError
        Naming the variable, what the sample shows and the fix.
    BandError
        An S2 band that holds no value anywhere.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
    >>> check_values(ds) is ds
    True
    >>> check_values(ds.assign(s2=ds.s2 * 10000))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.UnitsError: variable 's2' looks like digital numbers, not reflectance 0..1 \
(median ... in a sample): divide by 10000 (and, for L2A since processing baseline 04.00, \
subtract the offset 1000 first), or load the files with cloudfill.cube_from_geotiffs / \
cube_from_stac, which scale integer S2
    """
    key = _graph_key(ds)
    if key is not None and key in _PASSED:
        return ds
    if "s2" in ds.data_vars:
        _check_s2(ds)
        _check_bands(ds)
    if "s1" in ds.data_vars:
        _check_s1(ds)
    if key is not None:
        _PASSED[key] = None
        while len(_PASSED) > 64:
            _PASSED.pop(next(iter(_PASSED)))
    return ds


#: Dask graphs already checked: the resumable job rebuilds the fill of each date from the
#: same cube, and a check need not read the same sample again.
_PASSED: dict[tuple, None] = {}


def _graph_key(ds: xr.Dataset) -> tuple | None:
    """The dask names (and S1 units) of ``s2`` and ``s1``, or None unless both are dask."""
    key = []
    for name in ("s2", "s1"):
        if name in ds.data_vars:
            data = ds[name].data
            if not isinstance(data, da.Array):
                return None
            key.append((name, data.name, ds[name].attrs.get("units")))
    return tuple(key) or None
