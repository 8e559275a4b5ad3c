"""Building a cube from GeoTIFFs: S1, S2, DEM and mask files aligned onto the S2 grid.

The grid of the first S2 date is the cube's grid; every S2 date must share it. Other inputs
may be in any CRS and resolution: files already on the grid are opened lazily with
rioxarray as they are, the others are warped with ``rio.reproject`` (bilinear for continuous
S1 and DEM values, nearest for cloud, scene-class and land-cover codes). A warp needs the
whole source file in memory, so each one runs as a single dask task per date, at compute
time, and its output is then split into the cube's spatial chunks: building the cube reads
only file headers, but a reprojected date costs one S2-sized array of memory when computed.
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import pandas as pd
import rasterio
import rioxarray
import xarray as xr
from affine import Affine
from rasterio.enums import Resampling
from rioxarray.rioxarray import affine_to_coords

from cloudfill.cube.coverage import (
    MIN_COVERAGE,
    check_coverage,
    check_min_coverage,
    listed,
    union_label,
)
from cloudfill.cube.schema import BANDS, POLS, S1_UNITS, conform, validate
from cloudfill.errors import (
    BandError,
    GridMismatchError,
    MissingCRSError,
    ParameterError,
    SourceError,
    TimeAxisError,
)

__all__ = ["cube_from_geotiffs"]

# rasterio.warp.reproject wraps numpy arrays in in-memory datasets and warns before it sets
# their transforms; the transforms we pass are used. A filter set around the call would not
# do: warnings.catch_warnings is not thread-safe and warps run in dask worker threads.
warnings.filterwarnings(
    "ignore", category=rasterio.errors.NotGeoreferencedWarning, module="rasterio.warp"
)

PathLike = str | os.PathLike[str]
Sources = PathLike | Sequence[PathLike]


@dataclass(frozen=True)
class _Kind:
    """How one cube variable is read: its labels, resampling and value handling."""

    name: str
    labels: tuple[str, ...]
    resampling: Resampling
    continuous: bool
    fill: int = 0  # for codes: the value given to pixels outside the source file


_KINDS = {
    "s2": _Kind("S2", BANDS, Resampling.bilinear, continuous=True),
    "s1": _Kind("S1", POLS, Resampling.bilinear, continuous=True),
    "dem": _Kind("DEM", ("dem",), Resampling.bilinear, continuous=True),
    # Outside the cloud file nothing is known, so those pixels are unusable (True).
    "cloud": _Kind("cloud", ("cloud",), Resampling.nearest, continuous=False, fill=1),
    # Scene class 0 and land-cover class 0 both mean "no data".
    "scl": _Kind("SCL", ("scl",), Resampling.nearest, continuous=False, fill=0),
    "lulc": _Kind("LULC", ("lulc",), Resampling.nearest, continuous=False, fill=0),
}


@dataclass(frozen=True)
class _Raster:
    """Header of one GeoTIFF, read without its pixels."""

    path: Path
    crs: rasterio.crs.CRS
    transform: Affine
    shape: tuple[int, int]
    count: int
    dtype: np.dtype
    nodata: float | None


def cube_from_geotiffs(
    s1: Mapping[Any, Sources] | None,
    s2: Mapping[Any, Sources],
    dem: PathLike | None = None,
    cloud: Mapping[Any, PathLike] | None = None,
    scl: Mapping[Any, PathLike] | None = None,
    lulc: PathLike | None = None,
    *,
    s1_units: str = "dB",
    s2_scale: float | None = None,
    s2_offset: float = 0.0,
    chunks: int | None = 1024,
    min_coverage: float = MIN_COVERAGE,
) -> xr.Dataset:
    """Build a contract cube from GeoTIFF files, aligned onto the S2 grid.

    Each date maps to one multi-band file or a list of single-band files in contract order
    (``VV, VH`` for S1; ``B02, B03, B04, B08`` for S2). Nodata pixels of continuous inputs
    become NaN. Only file headers are read here; pixels are read when the cube is computed.

    Parameters
    ----------
    s1
        ``{date: path or [vv_path, vh_path]}``; None or empty for a cube without ``s1``.
        Dates are anything :class:`pandas.Timestamp` parses.
    s2
        ``{date: path or [b02, b03, b04, b08]}``. The first date (in time order) defines the
        cube's grid; all S2 files must be on it.
    dem
        A DEM file (metres) in any CRS/resolution; resampled bilinearly.
    cloud
        ``{s2_date: path}`` of single-band masks, nonzero = unusable; resampled with nearest
        neighbour. Must cover exactly the S2 dates.
    scl
        ``{s2_date: path}`` of Sen2Cor scene-classification files (nearest neighbour).
    lulc
        A land-cover class file (nearest neighbour).
    s1_units
        ``"dB"`` or ``"linear"``: what the S1 files hold (recorded in ``s1.attrs["units"]``).
    s2_scale
        Factor applied to S2 values; None (default) means 1/10000 for integer files and 1
        for float files. In integer files 0 is no data (as in L2A products), declared or not.
    s2_offset
        Added to S2 after the scale: -0.1 for L2A products of processing baseline 04.00 and
        later (DN = reflectance x 10000 + 1000), as ``cube_from_stac``'s ``s2_offset``.
    chunks
        Spatial chunk size in pixels (one date and all bands per chunk); None loads the
        cube into memory as numpy arrays.
    min_coverage
        The least share (0..1) of the S2 grid that each other file (DEM, cloud, SCL, land
        cover) must cover, judged from its bounds reprojected to the S2 CRS (no pixel is
        read); default :data:`~cloudfill.cube.coverage.MIN_COVERAGE` (0.5). A file from
        another place would be all NaN on the grid. S1 is judged by the union of all its
        files: one date at the edge of its swath may cover less, as long as the dates
        together cover enough.

    Returns
    -------
    xarray.Dataset
        A cube with ``s2`` and whichever of ``s1``, ``dem``, ``cloud``, ``scl``, ``lulc``
        were given, in the S2 CRS (``spatial_ref``), validated.

    Raises
    ------
    SourceError
        A file cannot be read (the message names the path).
    MissingCRSError
        A file has no CRS.
    BandError
        A date has the wrong number of bands or files.
    GridMismatchError
        An S2 file is not on the grid of the first S2 date, or another file (for S1: all S1
        files together) covers less than ``min_coverage`` of the S2 grid (the message names
        the files and the share).
    TimeAxisError
        A date cannot be parsed, appears twice, or the cloud/SCL dates differ from the S2
        dates.

    Examples
    --------
    >>> ds = cube_from_geotiffs(  # doctest: +SKIP
    ...     s1={"2020-06-01": ["vv.tif", "vh.tif"]},
    ...     s2={"2020-06-02": "s2_4band.tif"},
    ...     dem="dem_4326.tif",
    ... )
    >>> ds.s2.dims  # doctest: +SKIP
    ('time', 'band', 'y', 'x')
    """
    if s1_units not in S1_UNITS:
        raise ParameterError(f"s1_units must be one of {list(S1_UNITS)}, got {s1_units!r}")
    if chunks is not None and chunks < 1:
        raise ParameterError(f"chunks must be a positive pixel count or None, got {chunks}")
    if not s2:
        raise ParameterError("s2 needs at least one date: the S2 grid defines the cube's grid")
    check_min_coverage(min_coverage)
    chunk = chunks or 1024

    s2_dates = _dated(s2, "S2")
    first = _rasters(s2_dates[0][1], _KINDS["s2"], s2_dates[0][0])[0]
    grid = _Grid.of(first, min_coverage)
    data_vars: dict[str, xr.DataArray] = {}
    data_vars["s2"] = _stack(s2_dates, _KINDS["s2"], grid, chunk, "time", s2_scale=s2_scale)
    _warn_offset(s2_dates, first, s2_scale, s2_offset)
    if s2_offset:
        data_vars["s2"] = data_vars["s2"] + np.float32(s2_offset)
    if s1:
        s1_var = _stack(_dated(s1, "S1"), _KINDS["s1"], grid, chunk, "s1_time")
        data_vars["s1"] = s1_var.rename(band="pol").assign_attrs(units=s1_units)
    s2_times = pd.DatetimeIndex([t for t, _ in s2_dates])
    for name, masks in (("cloud", cloud), ("scl", scl)):
        if masks:
            dated = _dated(masks, _KINDS[name].name)
            _check_same_dates(dated, s2_times, _KINDS[name].name)
            data_vars[name] = _stack(dated, _KINDS[name], grid, chunk, "time").isel(band=0)
    for name, path in (("dem", dem), ("lulc", lulc)):
        if path is not None:
            kind = _KINDS[name]
            data_vars[name] = _read(_rasters(path, kind, None), kind, grid, chunk).isel(band=0)

    ds = xr.Dataset(data_vars, coords={"y": grid.y, "x": grid.x, "band": list(BANDS)})
    if "s1" in ds:
        ds = ds.assign_coords(pol=list(POLS))
    ds = conform(ds.rio.write_crs(grid.crs))
    validate(ds, require=list(data_vars))
    return ds.compute() if chunks is None else ds


# --- dates and files ---------------------------------------------------------------------


def _dated(sources: Mapping[Any, Any], what: str) -> list[tuple[pd.Timestamp, Any]]:
    """``sources`` as (timestamp, value) pairs sorted by time."""
    dated = []
    for key, value in sources.items():
        try:
            stamp = pd.Timestamp(key)
        except (TypeError, ValueError) as exc:
            raise TimeAxisError(f"{what}: cannot read {key!r} as a date") from exc
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        dated.append((stamp, value))
    dated.sort(key=lambda pair: pair[0])
    for (a, _), (b, _) in itertools.pairwise(dated):
        if a == b:
            raise TimeAxisError(f"{what}: date {a:%Y-%m-%dT%H:%M:%S} is given twice")
    return dated


def _check_same_dates(
    dated: list[tuple[pd.Timestamp, Any]], s2_times: pd.DatetimeIndex, what: str
) -> None:
    times = pd.DatetimeIndex([t for t, _ in dated])
    for stamp in times.difference(s2_times):
        raise TimeAxisError(f"{what} date {stamp:%Y-%m-%dT%H:%M:%S} is not an S2 date")
    for stamp in s2_times.difference(times):
        raise TimeAxisError(f"{what}: no file for S2 date {stamp:%Y-%m-%dT%H:%M:%S}")


def _inspect(path: PathLike, what: str) -> _Raster:
    path = Path(path)
    try:
        with rasterio.open(path) as src:
            raster = _Raster(
                path=path,
                crs=src.crs,
                transform=src.transform,
                shape=(src.height, src.width),
                count=src.count,
                dtype=np.dtype(src.dtypes[0]),
                nodata=src.nodata,
            )
    except rasterio.errors.RasterioIOError as exc:
        raise SourceError(f"cannot read {what} file {path}: {exc}") from exc
    if raster.crs is None:
        raise MissingCRSError(f"{what} file {path} has no CRS; set one (e.g. gdal_edit -a_srs)")
    return raster


def _rasters(sources: Sources, kind: _Kind, date: pd.Timestamp | None) -> list[_Raster]:
    """Headers of a date's files, checked to hold ``kind.labels`` bands in total."""
    what = kind.name if date is None else f"{kind.name} date {date:%Y-%m-%d}"
    paths = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    rasters = [_inspect(p, what) for p in paths]
    n = len(kind.labels)
    if len(rasters) == 1 and rasters[0].count != n:
        raise BandError(
            f"{what} file {rasters[0].path} has {rasters[0].count} bands, expected {n} "
            f"({', '.join(kind.labels)})"
        )
    if len(rasters) > 1:
        if len(rasters) != n:
            raise BandError(
                f"{what}: {len(rasters)} files given, expected one {n}-band file or {n} "
                f"single-band files ({', '.join(kind.labels)})"
            )
        for raster, label in zip(rasters, kind.labels, strict=True):
            if raster.count != 1:
                raise BandError(
                    f"{what} file {raster.path} (for {label}) has {raster.count} bands, expected 1"
                )
    return rasters


# --- the grid and reading onto it ---------------------------------------------------------


@dataclass(frozen=True)
class _Grid:
    """The cube's pixel grid: the first S2 file's CRS, transform and shape."""

    crs: rasterio.crs.CRS
    transform: Affine
    shape: tuple[int, int]
    source: Path
    min_coverage: float = MIN_COVERAGE

    @classmethod
    def of(cls, raster: _Raster, min_coverage: float = MIN_COVERAGE) -> _Grid:
        if raster.transform.b != 0 or raster.transform.d != 0:
            raise GridMismatchError(f"S2 file {raster.path} has a rotated grid (unsupported)")
        return cls(raster.crs, raster.transform, raster.shape, raster.path, min_coverage)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return _bounds(self.transform, self.shape)

    def check_covered(self, rasters: Sequence[_Raster], what: str) -> None:
        """Refuse ``rasters`` if the union of their footprints covers less than
        ``min_coverage`` of the grid (``what`` names them, without their files)."""
        footprints = [(r.crs, _bounds(r.transform, r.shape)) for r in rasters]
        paths = list(dict.fromkeys(str(r.path) for r in rasters))  # unique, in order
        files = f"file {paths[0]}" if len(paths) == 1 else f"files {listed(paths)}"
        check_coverage(f"{what} {files}", footprints, self.crs, self.bounds, self.min_coverage)

    @property
    def x(self) -> np.ndarray:
        # rioxarray's own arithmetic, so coordinates equal those of open_rasterio.
        return affine_to_coords(self.transform, self.shape[1], self.shape[0])["x"]

    @property
    def y(self) -> np.ndarray:
        return affine_to_coords(self.transform, self.shape[1], self.shape[0])["y"]

    def holds(self, raster: _Raster) -> bool:
        """Whether ``raster`` lies exactly on this grid (no resampling needed)."""
        if raster.shape != self.shape:
            return False
        res = abs(self.transform.a)
        if not raster.transform.almost_equals(self.transform, precision=1e-6 * res):
            return False
        if raster.crs == self.crs:
            return True
        # Equivalent CRSs can have different WKT (axis order notes, authority tags).
        epsg = self.crs.to_epsg()
        return epsg is not None and raster.crs.to_epsg() == epsg


def _bounds(transform: Affine, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a north-up raster."""
    xs = (transform.c, transform.c + transform.a * shape[1])
    ys = (transform.f, transform.f + transform.e * shape[0])
    return min(xs), min(ys), max(xs), max(ys)


def _labels(rasters: list[_Raster], kind: _Kind, date: pd.Timestamp | None) -> list[str]:
    """How messages name each file of a date: kind and date, and a single-band file's band."""
    what = kind.name if date is None else f"{kind.name} date {date:%Y-%m-%d}"
    if len(rasters) == 1:
        return [what]
    return [f"{what} ({label})" for label in kind.labels]


def _stack(
    dated: list[tuple[pd.Timestamp, Sources]],
    kind: _Kind,
    grid: _Grid,
    chunk: int,
    dim: str,
    s2_scale: float | None = None,
) -> xr.DataArray:
    headers = [(date, _rasters(sources, kind, date)) for date, sources in dated]
    if kind is _KINDS["s1"]:
        # Judged by its dates together: a swath-edge date covers part of the grid only.
        dates = [f"{date:%Y-%m-%d}" for date, _ in headers]
        grid.check_covered([r for _, rasters in headers for r in rasters], union_label("S1", dates))
    arrays = []
    for date, rasters in headers:
        if kind is _KINDS["s2"]:
            _check_s2_grid(rasters, grid, date)
        arrays.append(_read(rasters, kind, grid, chunk, s2_scale=s2_scale, date=date))
    times = pd.DatetimeIndex([t for t, _ in dated])
    out = xr.concat(arrays, dim=dim, join="override").assign_coords({dim: times})
    return out.transpose(dim, "band", "y", "x")


def _check_s2_grid(rasters: list[_Raster], grid: _Grid, date: pd.Timestamp) -> None:
    for raster in rasters:
        if not grid.holds(raster):
            raise GridMismatchError(
                f"S2 date {date:%Y-%m-%d}: file {raster.path} ({raster.shape[0]}x"
                f"{raster.shape[1]} px, {raster.crs}, origin {raster.transform.c:g}, "
                f"{raster.transform.f:g}, pixel {raster.transform.a:g} m) is not on the grid of "
                f"the first S2 date's {grid.source} ({grid.shape[0]}x{grid.shape[1]} px, "
                f"{grid.crs}, origin {grid.transform.c:g}, {grid.transform.f:g}, pixel "
                f"{grid.transform.a:g} m); resample it first"
            )


def _read(
    rasters: list[_Raster],
    kind: _Kind,
    grid: _Grid,
    chunk: int,
    s2_scale: float | None = None,
    date: pd.Timestamp | None = None,
) -> xr.DataArray:
    """One date's bands as a lazy (band, y, x) DataArray on ``grid``."""
    # S2 files are on the grid (checked), S1 is judged by the union of its dates (_stack).
    if kind not in (_KINDS["s2"], _KINDS["s1"]):
        for raster, label in zip(rasters, _labels(rasters, kind, date), strict=True):
            grid.check_covered([raster], label)
    parts = [
        _open_on_grid(r, kind, chunk) if grid.holds(r) else _warp_lazily(r, kind, grid, chunk)
        for r in rasters
    ]
    data = da.concatenate(parts, axis=0) if len(parts) > 1 else parts[0]
    data = data.rechunk((-1, chunk, chunk))  # all bands of a date in one chunk
    if kind.continuous:
        scale = s2_scale
        integer = np.issubdtype(rasters[0].dtype, np.integer)
        if scale is None:
            # Sentinel-2 integer products hold reflectance x 10000.
            scale = 1e-4 if kind is _KINDS["s2"] and integer else 1.0
        if kind is _KINDS["s2"] and integer:
            # As in L2A products, DN 0 is no data, also where the file declares no nodata.
            data = da.where(data == 0, np.float32(np.nan), data.astype(np.float32))
        data = data.astype(np.float32)
        if scale != 1.0:
            data = data * np.float32(scale)
    return xr.DataArray(data, dims=("band", "y", "x"), coords={"y": grid.y, "x": grid.x})


def _open_on_grid(raster: _Raster, kind: _Kind, chunk: int) -> da.Array:
    opened = rioxarray.open_rasterio(
        raster.path, chunks={"band": -1, "y": chunk, "x": chunk}, masked=False
    )
    data = opened.data
    if kind.continuous and raster.nodata is not None and not np.isnan(raster.nodata):
        data = da.where(data == raster.nodata, np.nan, data.astype(np.float32))
    return data


def _warp_lazily(raster: _Raster, kind: _Kind, grid: _Grid, chunk: int) -> da.Array:
    dtype = np.dtype(np.float32) if kind.continuous else raster.dtype
    task = dask.delayed(_warp, pure=True)(raster.path, kind, grid, dtype)
    shape = (raster.count, *grid.shape)
    return da.from_delayed(task, shape=shape, dtype=dtype).rechunk((-1, chunk, chunk))


def _warp(path: Path, kind: _Kind, grid: _Grid, dtype: np.dtype) -> np.ndarray:
    """Read a whole file and resample it onto ``grid`` (runs inside a dask task)."""
    with rioxarray.open_rasterio(path, masked=False) as source:
        # Float output so nodata (kept by astype in attrs) and off-file pixels become NaN.
        source = source.astype(dtype)
        fill = np.nan if kind.continuous else kind.fill
        warped = source.rio.reproject(
            grid.crs,
            shape=grid.shape,
            transform=grid.transform,
            resampling=kind.resampling,
            nodata=fill,
        )
        return np.asarray(warped.values, dtype=dtype)


L2A_OFFSET_SINCE = pd.Timestamp("2022-01-25")
"""Processing baseline 04.00: L2A digital numbers carry an offset of 1000 from this date."""


def _warn_offset(dates: list, first: Any, s2_scale: float | None, s2_offset: float) -> None:
    """Warn when integer S2 of baseline 04.00+ dates is scaled without its offset: every
    reflectance would read 0.1 too bright (the files do not say which baseline made them)."""
    integer = np.issubdtype(np.dtype(first.dtype), np.integer)
    later = [t for t, _ in dates if pd.Timestamp(t) >= L2A_OFFSET_SINCE]
    if s2_offset or s2_scale is not None or not integer or not later:
        return
    warnings.warn(
        f"{len(later)} S2 date(s) from {L2A_OFFSET_SINCE:%Y-%m-%d} on (processing baseline "
        "04.00 and later), whose L2A digital numbers carry an offset of 1000, are scaled "
        "without it: reflectance would read 0.1 too bright. Pass s2_offset=-0.1 "
        "(make-cube --s2-offset -0.1) unless the files were already harmonised.",
        UserWarning,
        stacklevel=3,
    )
