"""The cube's schema: names, dims and dtypes of the contract, conforming and validation.

:func:`conform` turns a near-contract Dataset (band aliases, lower-case polarisations,
integer reflectance, dims in another order) into a contract cube without computing anything.
:func:`validate` checks a cube and raises a typed error naming the variable, band, dim or date
at fault; it reads only coordinates and metadata, never pixel data, so it is cheap on any
cube size.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from rasterio.crs import CRS

from cloudfill.errors import (
    BandError,
    CRSMismatchError,
    DimensionError,
    DTypeError,
    GridMismatchError,
    MissingCRSError,
    MissingVariableError,
    TimeAxisError,
)

__all__ = [
    "BANDS",
    "BAND_ALIASES",
    "DEFAULT_UNUSABLE_SCL",
    "POLS",
    "VARIABLE_DIMS",
    "conform",
    "cube_crs",
    "validate",
]

BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
"""Sentinel-2 bands of the contract, in order (blue, green, red, NIR; all 10 m)."""

BAND_ALIASES: dict[str, str] = {"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}
"""Accepted input names for :data:`BANDS` (case-insensitive); renamed by :func:`conform`."""

POLS: tuple[str, ...] = ("VV", "VH")
"""Sentinel-1 polarisations of the contract, in order."""

DEFAULT_UNUSABLE_SCL: tuple[int, ...] = (0, 1, 3, 8, 9, 10)
"""Sen2Cor scene classes treated as unusable: no data, saturated, cloud shadow, cloud medium
and high probability, thin cirrus."""

VARIABLE_DIMS: dict[str, tuple[str, ...]] = {
    "s2": ("time", "band", "y", "x"),
    "s1": ("s1_time", "pol", "y", "x"),
    "dem": ("y", "x"),
    "cloud": ("time", "y", "x"),
    "scl": ("time", "y", "x"),
    "lulc": ("y", "x"),
    "truth": ("time", "band", "y", "x"),
}
"""Dims of every contract variable, in canonical order."""

S1_UNITS = ("dB", "linear")
REQUIRED_DEFAULT = ("s2", "s1", "dem")


def _band_name(label: Any) -> str:
    text = str(label)
    alias = BAND_ALIASES.get(text.lower())
    if alias is not None:
        return alias
    upper = text.upper()
    # "B2" and "B8" are common spellings of B02 / B08.
    if len(upper) == 2 and upper[0] == "B" and upper[1].isdigit():
        upper = f"B0{upper[1]}"
    return upper


def conform(ds: xr.Dataset) -> xr.Dataset:
    """Bring a near-contract Dataset to the contract layout, lazily.

    Renames band aliases (``blue, green, red, nir``, ``B2``...) to ``B02, B03, B04, B08`` and
    upper-cases polarisations, transposes contract variables to canonical dim order, turns
    integer S2 digital numbers into float32 reflectance (0 = no data, as in L2A products;
    ``(DN + attrs["boa_add_offset"]) / 10000``, the offset -1000 since processing baseline
    04.00, default 0), casts ``s1``/``dem``/``truth`` to float32 and
    ``cloud`` to bool. Nothing is computed; unknown variables are left alone.

    Parameters
    ----------
    ds
        A Dataset with contract variable names.

    Returns
    -------
    xarray.Dataset
        A new Dataset; coordinates and attrs are kept.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"s2": (("time", "band", "y", "x"), np.ones((1, 4, 2, 2), "uint16"))},
    ...                 coords={"band": ["blue", "green", "red", "nir"]})
    >>> out = conform(ds)
    >>> [str(b) for b in out.band.values], str(out.s2.dtype)
    (['B02', 'B03', 'B04', 'B08'], 'float32')
    """
    _require_dataset(ds)
    out = ds.copy()
    if "band" in out.coords:
        out = out.assign_coords(band=[_band_name(b) for b in out["band"].values])
    if "pol" in out.coords:
        out = out.assign_coords(pol=[str(p).upper() for p in out["pol"].values])
    for name, dims in VARIABLE_DIMS.items():
        if name not in out.data_vars:
            continue
        var = out[name]
        if set(var.dims) == set(dims) and var.dims != dims:
            var = var.transpose(*dims)
        if name in ("s2", "truth") and np.issubdtype(var.dtype, np.integer):
            var = _reflectance(var)
        elif name in ("s2", "truth", "s1", "dem") and var.dtype != np.float32:
            if np.issubdtype(var.dtype, np.number):
                var = var.astype("float32")
        elif name == "cloud" and var.dtype != bool:
            var = var.astype(bool)
        out[name] = var
    return out


def _reflectance(dn: xr.DataArray) -> xr.DataArray:
    """Integer Sentinel-2 digital numbers as float32 reflectance, lazily.

    As in L2A products: 0 is no data (NaN here, so it is filled rather than taken for black),
    and reflectance is ``(DN + boa_add_offset) / 10000`` with the product's
    ``BOA_ADD_OFFSET`` (-1000 since processing baseline 04.00) read from
    ``attrs["boa_add_offset"]`` (default 0), which is then dropped: it has been applied.
    """
    attrs = {k: v for k, v in dn.attrs.items() if k not in ("scale_factor", "boa_add_offset")}
    offset = np.float32(dn.attrs.get("boa_add_offset", 0))
    # Cast first: ``where`` on integers would go through float64, twice the memory.
    out = (dn.astype("float32").where(dn != 0) + offset) / np.float32(10000)
    out.attrs = attrs
    return out


def cube_crs(ds: xr.Dataset | xr.DataArray) -> Any:
    """The cube's CRS (a ``rasterio.crs.CRS``) read the rioxarray way, or None."""
    try:
        return ds.rio.crs
    except Exception:  # rioxarray raises on conflicting per-variable CRSs
        return None


def _check_time_axis(ds: xr.Dataset, dim: str) -> None:
    if dim not in ds.dims:
        return
    if dim not in ds.coords:
        raise TimeAxisError(f"dim {dim!r} has no coordinate values; assign datetime64 dates")
    values = ds[dim].values
    if not np.issubdtype(values.dtype, np.datetime64):
        raise TimeAxisError(
            f"coordinate {dim!r} has dtype {values.dtype}, expected datetime64 "
            f"(e.g. ds.assign_coords({dim}=pd.to_datetime(ds.{dim})))"
        )
    index = pd.DatetimeIndex(values)
    if index.hasnans:
        raise TimeAxisError(f"coordinate {dim!r} holds NaT")
    dup = index[index.duplicated()]
    if len(dup):
        raise TimeAxisError(f"coordinate {dim!r} has duplicate date {dup[0]:%Y-%m-%dT%H:%M:%S}")
    if not index.is_monotonic_increasing:
        bad = next(i for i in range(1, len(index)) if index[i] < index[i - 1])
        raise TimeAxisError(
            f"coordinate {dim!r} is not sorted: {index[bad]:%Y-%m-%d} comes after "
            f"{index[bad - 1]:%Y-%m-%d} (use ds.sortby({dim!r}))"
        )


def _check_spatial_axis(ds: xr.Dataset, dim: str) -> None:
    if dim not in ds.coords:
        raise GridMismatchError(f"dim {dim!r} has no coordinate (pixel centres expected)")
    values = np.asarray(ds[dim].values, dtype="float64")
    if values.size < 2:
        return
    if np.isnan(values).any():
        raise GridMismatchError(f"coordinate {dim!r} holds NaN")
    step = np.diff(values)
    if not (np.all(step > 0) or np.all(step < 0)):
        raise GridMismatchError(f"coordinate {dim!r} is not monotonic")
    if not np.allclose(step, step[0], rtol=1e-6, atol=1e-9 * abs(step[0])):
        i = int(np.argmax(np.abs(step - step[0])))
        raise GridMismatchError(
            f"coordinate {dim!r} is not a regular grid (spacing {step[0]:g} but {step[i]:g} "
            f"at index {i}): variables on different grids were probably merged; resample them "
            "onto the S2 grid first (cloudfill.cube_from_geotiffs does this)"
        )


def _check_labels(
    ds: xr.Dataset, var: str, dim: str, expected: tuple[str, ...], exact: bool
) -> None:
    if dim not in ds.coords:
        raise BandError(f"variable {var!r}: dim {dim!r} has no labels; expected {list(expected)}")
    labels = [str(v) for v in ds[dim].values]
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise BandError(f"variable {var!r}: {dim} {label!r} appears twice")
        seen.add(label)
    missing = [b for b in expected if b not in seen]
    if missing:
        unknown = [b for b in labels if b not in expected]
        hint = f"; unknown {dim} labels {unknown}" if unknown else ""
        raise BandError(
            f"variable {var!r}: missing {dim} {missing[0]!r} (expected {list(expected)}{hint})"
        )
    if exact and tuple(labels) != expected:
        raise BandError(
            f"variable {var!r}: {dim} labels {labels} are not in contract order {list(expected)}"
        )


def _crs_of_variable(ds: xr.Dataset, name: Any) -> Any:
    # rioxarray reads the crs from the variable's grid_mapping coordinate (its own one, when
    # it names another than the cube's), else from a ``crs`` attr or encoding.
    da = ds[name]
    crs = da.attrs.get("crs") or da.encoding.get("crs")
    mapping = da.attrs.get("grid_mapping") or da.encoding.get("grid_mapping")
    if crs is None and mapping is not None and mapping in ds.variables:
        attrs = ds[mapping].attrs
        crs = attrs.get("spatial_ref") or attrs.get("crs_wkt")
    if crs is not None:
        try:
            return CRS.from_user_input(crs)
        except Exception:
            return crs
    return None


def _require_dataset(ds: object) -> None:
    # Anything else fails deep inside with an AttributeError naming an internal function.
    if isinstance(ds, xr.Dataset):
        return
    hint = ""
    if isinstance(ds, (str, os.PathLike)):
        hint = "; open a zarr store with cloudfill.open_cube(path)"
    elif isinstance(ds, xr.DataArray):
        hint = "; a cube holds several variables (s2, s1, dem), see docs/contract.md"
    raise DimensionError(f"expected an xarray.Dataset cube, got {type(ds).__name__}{hint}")


def validate(
    ds: xr.Dataset,
    require: Iterable[str] = REQUIRED_DEFAULT,
    *,
    require_crs: bool = True,
) -> xr.Dataset:
    """Check that ``ds`` follows the cube contract; raise a typed error if not.

    Only coordinates and metadata are read, never pixel data (a lazy cube stays lazy).
    Checks, in order: required variables, dims of every contract variable, the spatial grid
    (regular ``x``/``y`` pixel centres), time axes (datetime64, sorted, unique), band/pol labels,
    dtypes and S1 units, the spatial grid shared by all variables and the CRS (present, one
    for all variables).

    Parameters
    ----------
    ds
        The cube. Band aliases are not renamed here: call :func:`conform` first (loaders and
        the ``ds.cloudfill`` accessor do).
    require
        Variables that must be present (default ``s2``, ``s1``, ``dem``).
    require_crs
        Raise :class:`~cloudfill.errors.MissingCRSError` if the cube has no CRS.

    Returns
    -------
    xarray.Dataset
        ``ds`` itself, for chaining.

    Raises
    ------
    MissingVariableError, DimensionError, BandError, DTypeError, TimeAxisError,
    GridMismatchError, MissingCRSError, CRSMismatchError

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> validate(ds) is ds
    True
    """
    _require_dataset(ds)
    for name in require:
        if name not in ds.data_vars:
            present = sorted(str(v) for v in ds.data_vars)
            raise MissingVariableError(f"missing variable {name!r} (cube has {present})")

    for name, dims in VARIABLE_DIMS.items():
        if name not in ds.data_vars:
            continue
        var = ds[name]
        if var.dims != dims:
            missing = [d for d in dims if d not in var.dims]
            extra = [d for d in var.dims if d not in dims]
            detail = (
                f"missing dim {missing[0]!r}"
                if missing
                else f"unexpected dim {extra[0]!r}"
                if extra
                else "dims in the wrong order (call cloudfill.conform)"
            )
            raise DimensionError(
                f"variable {name!r} has dims {var.dims}, expected {dims}: {detail}"
            )

    # A misaligned merge also turns masks into float: report the grid, the root cause.
    _check_spatial_axis(ds, "y")
    _check_spatial_axis(ds, "x")
    _check_time_axis(ds, "time")
    _check_time_axis(ds, "s1_time")

    for name in ("s2", "truth"):
        if name in ds.data_vars:
            _check_labels(ds, name, "band", BANDS, exact=False)
    if "s1" in ds.data_vars:
        _check_labels(ds, "s1", "pol", POLS, exact=False)

    for name in ("s2", "truth", "s1", "dem"):
        if name in ds.data_vars and ds[name].dtype != np.float32:
            raise DTypeError(
                f"variable {name!r} has dtype {ds[name].dtype}, expected float32 "
                "(cloudfill.conform casts and scales integer reflectance)"
            )
    if "s1" in ds.data_vars:
        units = ds["s1"].attrs.get("units")
        if units not in S1_UNITS:
            raise DTypeError(
                f"variable 's1' has attrs['units']={units!r}, expected one of {list(S1_UNITS)}"
            )
    if "cloud" in ds.data_vars and ds["cloud"].dtype != bool:
        raise DTypeError(f"variable 'cloud' has dtype {ds['cloud'].dtype}, expected bool")
    for name in ("scl", "lulc"):
        if name in ds.data_vars and not np.issubdtype(ds[name].dtype, np.integer):
            raise DTypeError(f"variable {name!r} has dtype {ds[name].dtype}, expected integers")

    carried = {n: c for n in ds.data_vars if (c := _crs_of_variable(ds, n)) is not None}
    # rioxarray gives no cube CRS when variables name different grid mappings: S2's is it.
    crs = cube_crs(ds) or carried.get("s2") or next(iter(carried.values()), None)
    if crs is None and require_crs:
        raise MissingCRSError(
            "the cube has no CRS: add a 'spatial_ref' coordinate, "
            "e.g. ds.rio.write_crs('EPSG:32645')"
        )
    for name, var_crs in carried.items():
        if crs is not None and var_crs != crs:
            raise CRSMismatchError(
                f"variable {name!r} carries CRS {var_crs} but the cube's CRS is {crs}; "
                "reproject it onto the S2 grid (rioxarray reproject_match)"
            )
    return ds
