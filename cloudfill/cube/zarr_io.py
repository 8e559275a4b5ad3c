"""Reading and writing cubes as zarr (format 3) stores.

:func:`write_cube` makes any contract cube writable, whatever produced it: stackstac and
rioxarray leave rasterio objects, nested dicts and object-dtype coordinates in attrs and
coords, and dask arrays that were rechunked carry stale zarr chunk encodings. Those are
cleaned on a copy, never on the caller's Dataset. Writes go to a temporary sibling store
that is renamed into place only when complete, so a failed or interrupted write never leaves
a half-written cube under the requested name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import uuid
import warnings
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from affine import Affine

from cloudfill._backend import is_cupy, to_numpy
from cloudfill._outputs import check_writable, is_zarr_store, nested
from cloudfill.cube.schema import conform, validate
from cloudfill.errors import OutputError, ParameterError, SourceError

__all__ = ["DEFAULT_WRITE_CHUNKS", "fill_progress", "open_cube", "store_digest", "write_cube"]

#: Folder inside an output store where the resumable writer keeps its per-date markers.
MARKER_DIR = ".cloudfill-done"
MARKER_GLOB = "[0-9]*.json"
"""A fill job's date markers in :data:`MARKER_DIR` (its scratch folder lies beside them)."""


@contextlib.contextmanager
def quiet_markers() -> Iterator[None]:
    """Silence zarr's warning that :data:`MARKER_DIR` is not part of the hierarchy (it is
    cloudfill's own bookkeeping, not data), and xarray's that a store has no consolidated
    metadata (a store written by plain xarray or zarr opens as well without; the warning
    would drown a one-line error)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=f"Object at {MARKER_DIR} is not recognized")
        warnings.filterwarnings(
            "ignore",
            message="Failed to open Zarr store with consolidated metadata",
            category=RuntimeWarning,
        )
        yield


DEFAULT_WRITE_CHUNKS: dict[str, int] = {
    "time": 1,
    "s1_time": 1,
    "band": -1,
    "pol": -1,
    "y": 1024,
    "x": 1024,
}
"""Zarr chunks written by default: one date per chunk, all bands together, 1024 px tiles."""

# Attributes that xarray's CF encoder manages itself; a stale copy in attrs conflicts with it
# (``_FillValue``) or is re-applied on decode (``scale_factor`` on already-scaled data).
_CF_ENCODING_ATTRS = ("_FillValue", "missing_value", "scale_factor", "add_offset", "dtype")
_TIME_ENCODING_ATTRS = ("units", "calendar")


def open_cube(path: str | os.PathLike[str], chunks: Any = "auto") -> xr.Dataset:
    """Open a cube written by :func:`write_cube` (or any contract zarr store), lazily.

    Parameters
    ----------
    path
        The zarr store: a local folder or an fsspec URL.
    chunks
        Dask chunks, as for :func:`xarray.open_zarr`. ``"auto"`` (default) uses multiples of
        the stored chunks; ``None`` loads every variable into memory as numpy arrays.

    Returns
    -------
    xarray.Dataset
        The conformed cube (see :func:`cloudfill.conform`) with its CRS restored, so
        ``ds.rio.crs`` works; ``ds.encoding["source"]`` holds the store path.

    Raises
    ------
    SourceError
        If the store does not exist or cannot be read.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.open_cube("scene.zarr")  # doctest: +SKIP
    >>> ds.rio.crs  # doctest: +SKIP
    CRS.from_epsg(32633)
    """
    location = os.fspath(path)
    if "://" not in location and not Path(location).exists():
        raise SourceError(f"cannot open cube {location}: no such zarr store")
    if "://" not in location and Path(location).is_file():
        raise SourceError(
            f"cannot open cube {location}: it is a file, and a cube is a zarr store (a "
            "folder); build one with make-cube (GeoTIFFs, STAC) or, from NetCDF, "
            "cloudfill.write_cube(xarray.open_dataset(path), 'cube.zarr')"
        )
    try:
        # decode_coords="all" turns the grid-mapping variable (spatial_ref) back into a
        # coordinate, which is where rioxarray looks for the CRS.
        with quiet_markers():
            ds = xr.open_zarr(location, chunks=None, decode_coords="all")
        if chunks is None:
            ds = ds.load()
        else:
            # Variable-length strings cannot be auto-chunked by dask (unknown item size):
            # text variables (coordinates, per-date provenance) are small, so they are read
            # into memory instead.
            text = [n for n, c in ds.variables.items() if c.dtype.kind not in "biufcmM"]
            with quiet_markers():
                lazy = xr.open_zarr(
                    location,
                    chunks=chunks,
                    decode_coords="all",
                    drop_variables=text,
                )
            coords = [n for n in text if n in ds.coords]
            lazy = lazy.assign_coords({n: ds[n].load() for n in coords})
            ds = lazy.assign({n: ds[n].load() for n in text if n not in ds.coords})
    except Exception as exc:  # zarr raises many types for a store that is not one
        raise SourceError(f"cannot open cube {location}: {exc}") from exc
    source = _resolve(location)
    progress = fill_progress(location, ds)
    if progress is not None and progress[0] < progress[1]:
        warnings.warn(
            f"{location} is an unfinished fill-series job: {progress[0]} of {progress[1]} "
            "dates written, the others hold no values yet; unless a fill-series is writing "
            "it now, rerun the same command to finish it",
            UserWarning,
            stacklevel=2,
        )
    ds.encoding["source"] = source
    for var in ds.data_vars.values():
        # Variable encodings survive more xarray operations than the Dataset's, so
        # write_cube can still recognise the store a derived cube was read from.
        var.encoding["source"] = source
    return conform(ds)


def write_cube(
    ds: xr.Dataset,
    path: str | os.PathLike[str],
    *,
    mode: str = "w-",
    overwrite: bool = False,
    chunks: Mapping[str, int] | None = None,
) -> Path:
    """Write a cube to a zarr (format 3) store, atomically.

    Dask arrays stay lazy until the write streams them chunk by chunk. Attributes that are
    not JSON-serialisable are converted to strings, object-dtype coordinates (stackstac's
    per-item metadata) are dropped, and stale chunk encodings are replaced, so the output of
    any loader can be written as is.

    Parameters
    ----------
    ds
        The cube.
    path
        A local folder for the store. It is written under a temporary sibling name and
        renamed into place when complete.
    mode
        ``"w-"`` (default) refuses to replace an existing store; ``"w"`` replaces it (same
        as ``overwrite=True``).
    overwrite
        Replace an existing store at ``path``. Never allowed for the store ``ds`` was read
        from, nor for a path that is not a zarr store.
    chunks
        Zarr chunk sizes per dim, overriding :data:`DEFAULT_WRITE_CHUNKS` (``-1`` = whole
        dim). Dask arrays are rechunked to match.

    Returns
    -------
    pathlib.Path
        The path of the written store.

    Raises
    ------
    OutputError
        If ``path`` exists and overwriting was not asked for, is not a zarr store, or is the
        store the cube was read from.
    ParameterError
        If ``mode`` is not ``"w-"`` or ``"w"``, or ``path`` names another format's file
        (``.tif``, ``.nc``, ...).
    CloudfillError
        The typed error of :func:`~cloudfill.cube.schema.validate` for a cube no verb could
        read back (unsorted or repeated dates, no CRS, an irregular grid, wrong dims).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> out = cloudfill.write_cube(ds, "scene.zarr", overwrite=True)  # doctest: +SKIP
    >>> cloudfill.open_cube(out).rio.crs == ds.rio.crs  # doctest: +SKIP
    True
    """
    if mode not in ("w-", "w"):
        raise ParameterError(f"write_cube mode must be 'w-' or 'w', got {mode!r}")
    # Only what every verb would refuse on reading it back (unsorted or repeated dates, no
    # CRS, a broken grid), checked on coordinates before anything is written.
    validate(conform(ds), require=())  # as a reader sees it: aliases renamed, dtypes cast
    location = os.fspath(path)
    if "://" in location:
        raise ParameterError(
            f"write_cube writes local stores only, got {location!r}; use ds.to_zarr for "
            "object storage"
        )
    target = Path(_resolve(location))
    if target.suffix.lower() in _OTHER_FORMATS:
        raise ParameterError(
            f"write_cube writes a zarr store, not a {target.suffix} file ({location}): name "
            "it *.zarr; for a GeoTIFF use ds.rio.to_raster, for NetCDF ds.to_netcdf"
        )
    replace = overwrite or mode == "w"
    _check_target(ds, target, replace)

    prepared = prepare_for_zarr(ds, {**DEFAULT_WRITE_CHUNKS, **(chunks or {})})
    tmp = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is not yet in the v3 spec; it is still
            # what makes opening fast, and xarray reads it back.
            warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
            prepared.to_zarr(tmp, mode="w-", zarr_format=3, consolidated=True, compute=True)
        _swap_into_place(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def fill_progress(
    path: str | os.PathLike[str], ds: xr.Dataset | None = None
) -> tuple[int, int] | None:
    """How far a fill-series output store is written.

    A fill job records each date it finishes by a marker in :data:`MARKER_DIR`; a killed
    job leaves fewer markers than dates (and the unwritten dates empty).

    Parameters
    ----------
    path
        A local zarr store.
    ds
        The store, already opened (its attrs and time axis are read), or None.

    Returns
    -------
    tuple of int or None
        ``(dates written, dates)``, or None for a store no fill job wrote (or a remote one).

    Examples
    --------
    >>> import tempfile, cloudfill
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     fill_progress(cloudfill.write_cube(cloudfill.simulate_scene((16, 16), seed=0),
    ...                                        f"{tmp}/c.zarr")) is None
    True
    """
    location = os.fspath(path)
    if "://" in location or not (Path(location) / MARKER_DIR).is_dir():
        return None
    if ds is None:
        with quiet_markers():
            ds = xr.open_zarr(location, chunks=None)
    if "cloudfill_job" not in ds.attrs or "time" not in ds.sizes:
        return None
    return count_markers(location), int(ds.sizes["time"])


def count_markers(path: str | os.PathLike[str]) -> int:
    """How many dates a fill job recorded as written in the store at ``path``."""
    return len(list((Path(path) / MARKER_DIR).glob(MARKER_GLOB)))


def store_digest(path: str | os.PathLike[str]) -> str:
    """A short digest of a zarr store on disk: its metadata documents and the name and size of
    every chunk file.

    Cheap (no chunk is read), and it changes when the store is rewritten with other content
    at the same path, which a resumed job must notice. Not for object storage.

    >>> import tempfile, cloudfill
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     a = store_digest(cloudfill.write_cube(cloudfill.simulate_scene((16, 16), seed=0),
    ...                                           f"{tmp}/c.zarr"))
    ...     b = store_digest(cloudfill.write_cube(cloudfill.simulate_scene((16, 16), seed=1),
    ...                                           f"{tmp}/c.zarr", overwrite=True))
    >>> len(a), a == b
    (16, False)
    """
    root = Path(path)
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            rel = file.relative_to(root).as_posix()
            digest.update(rel.encode())
            if name in _METADATA_DOCUMENTS:
                digest.update(file.read_bytes())
            else:
                digest.update(str(file.stat().st_size).encode())
    return digest.hexdigest()[:16]


#: File suffixes of other formats: a zarr store (a folder) under such a name misleads.
_OTHER_FORMATS = frozenset(
    (".tif", ".tiff", ".nc", ".nc4", ".h5", ".hdf5", ".hdf", ".grib", ".grb", ".jp2", ".vrt",
     ".png", ".jpg", ".jpeg", ".csv", ".json", ".npy", ".npz")
)  # fmt: skip

#: Small JSON documents that describe a store (shapes, chunks, dtypes, attrs): hashed whole.
_METADATA_DOCUMENTS = frozenset(("zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"))


def _resolve(location: str) -> str:
    if "://" in location:
        return location
    return str(Path(location).expanduser().resolve())


def _sources(ds: xr.Dataset) -> set[Path]:
    """The local stores ``ds`` reads: those its encodings name and those its dask graphs
    read (a result computed from an opened cube, e.g. ``fill_series``'s, carries no
    encoding, yet writing it onto its input would destroy what it is computed from)."""
    found = {ds.encoding.get("source")}
    for var in ds.variables.values():
        found.add(var.encoding.get("source"))
        found.update(_graph_stores(var.data))
    return {Path(_resolve(str(s))) for s in found if s and "://" not in str(s)}


def _graph_stores(data: Any) -> set[str]:
    """The zarr stores a dask array's graph reads: its ``original-`` layers hold xarray's
    lazily indexed zarr arrays (best effort: an unknown wrapper is skipped)."""
    if not isinstance(data, da.Array):
        return set()
    stores = set()
    for name, layer in data.__dask_graph__().layers.items():
        if not str(name).startswith("original-"):
            continue
        for task in layer.values():
            wrapped = getattr(task, "value", task)  # dask's DataNode holds the object
            for _ in range(8):  # adapters wrap one another through .array
                if hasattr(wrapped, "get_array") and not hasattr(wrapped, "array"):
                    break
                wrapped = getattr(wrapped, "array", None)
            array = wrapped.get_array() if hasattr(wrapped, "get_array") else None
            store = getattr(array, "store", None)
            # Local folders only: a remote store's path (bucket/key) is no local path.
            if isinstance(store, zarr.storage.LocalStore):
                stores.add(str(store.root))
    return stores


def _check_target(ds: xr.Dataset, target: Path, replace: bool) -> None:
    for source in _sources(ds):
        if nested(target, source):
            raise OutputError(
                f"refusing to write onto {target}: the cube was read from {source}; "
                "write to another path"
            )
    check_writable(target)  # its folder: a file or read-only fails before any work
    if not target.exists():
        return
    if not replace:
        raise OutputError(f"{target} exists; pass overwrite=True to replace it")
    if not is_zarr_store(target):
        raise OutputError(f"refusing to replace {target}: it exists and is not a zarr store")


def _swap_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    # Move the old store aside first so that a crash leaves either the old or the new store
    # under the name, never a mix of both.
    old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
    target.rename(old)
    try:
        tmp.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def prepare_for_zarr(ds: xr.Dataset, chunks: Mapping[str, int]) -> xr.Dataset:
    # stackstac's per-item metadata coords (object dtype) cannot be written and are not data.
    drop = [n for n, c in ds.coords.items() if c.dtype == object and n not in ds.dims]
    # A shallow copy gives new Variable objects: their attrs and encoding can be replaced
    # below without touching the caller's Dataset.
    out = ds.drop_vars(drop).copy()
    target = {
        dim: max(min(size if (size := int(chunks.get(str(dim), -1))) > 0 else n, n), 1)
        for dim, n in out.sizes.items()
    }
    if any(var.chunks is not None for var in out.variables.values()):
        # Zarr chunks must tile dask chunks; rechunking to the written layout guarantees it
        # whatever chunking the cube had (rechunked cubes keep stale encodings otherwise).
        # In-memory text (per-date provenance) stays in memory: as a dask array its string
        # type is unknown until computed, and xarray warns when it has to load it to find out.
        text_vars = {
            n: v for n, v in out.data_vars.items() if v.dtype == object and v.chunks is None
        }
        out = out.chunk(target).assign(text_vars)
    # Zarr takes NumPy buffers: CuPy chunks are copied to the host as each chunk is written.
    out = out.assign({n: _on_host(v) for n, v in out.data_vars.items() if is_cupy(v.data)})
    # Fixed-width unicode has no zarr v3 spec yet (zarr warns), variable-length strings do.
    text = {n: c for n, c in out.coords.items() if c.dtype.kind in "OU"}
    out = out.assign_coords(
        {n: (c.dims, c.values.astype(str).astype(object), c.attrs) for n, c in text.items()}
    )
    out.attrs = _clean_attrs(out.attrs)
    out.encoding = {}
    for name, var in out.variables.items():
        attrs = _clean_attrs(var.attrs)
        for key in _CF_ENCODING_ATTRS:
            attrs.pop(key, None)
        if np.issubdtype(var.dtype, np.datetime64):
            for key in _TIME_ENCODING_ATTRS:
                attrs.pop(key, None)
        var.attrs = attrs
        var.encoding = {}
        if var.ndim and name not in out.dims:
            var.encoding["chunks"] = tuple(target[dim] for dim in var.dims)
    return out


def _on_host(var: xr.DataArray) -> xr.DataArray:
    data = var.data
    if isinstance(data, da.Array):
        meta = np.empty((0,) * data.ndim, dtype=data.dtype)
        return var.copy(data=data.map_blocks(to_numpy, dtype=data.dtype, meta=meta))
    return var.copy(data=to_numpy(data))


def _clean_attrs(attrs: Mapping[Hashable, Any]) -> dict[str, Any]:
    cleaned = {}
    for key, value in attrs.items():
        value = _jsonable(value)
        if value is not None:
            cleaned[str(key)] = value
    return cleaned


def _jsonable(value: Any) -> Any:
    """A JSON-serialisable version of an attribute value, or None to drop it."""
    if value is None:
        return None
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, Affine):
        return list(value)[:6]  # a, b, c, d, e, f: rasterio's order
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist()) if value.size <= 1024 else None
    if isinstance(value, list | tuple):
        items = [_jsonable(v) for v in value]
        return items if all(v is not None for v in items) else None
    if isinstance(value, Mapping):
        return _clean_attrs(value) or None
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        # rasterio CRS, Affine, RasterSpec ...: their str() is informative and short.
        text = str(value)
        # A default repr ("<object at 0x...>") carries no information worth keeping.
        return text if len(text) <= 4096 and " at 0x" not in text else None
    return value
