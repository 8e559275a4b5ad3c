"""A cube from the eo-learn example patch (``../shared/data/eolearn_slovenia``).

The patch is a folder of numpy arrays (eo-learn's ``EOPatch`` layout, arrays as
(time, y, x, channel)) plus ``bbox.geojson`` and ``timestamps.json``. It holds a real
Sentinel-2 L1C series over Slovenia with cloud masks, a DEM and a land-cover reference, but
only five S2 dates carry band values and there is no Sentinel-1, so the cube has no ``s1``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.cube.schema import BANDS, conform, validate
from cloudfill.errors import SourceError

__all__ = ["cube_from_eolearn"]

_S2_FILE = "S2_L1C_13bands_t0-4_chronological"


def cube_from_eolearn(path: str | os.PathLike[str], chunks: int | None = None) -> xr.Dataset:
    """Build a cube from the eo-learn Slovenia example patch.

    Variables: ``s2`` (B02, B03, B04, B08 TOA reflectance, the 5 dates with band values),
    ``cloud`` (eo-learn's ``CLM`` mask, or where ``IS_DATA`` is false), ``dem`` and ``lulc``
    (classes 1..8, 0 = no data). The grid comes from ``bbox.geojson`` in its CRS (EPSG:32633):
    the 100 x 101 px patch spans the bbox exactly, so the pixel size is the bbox extent over
    the array shape (about 9.995 m).

    Parameters
    ----------
    path
        The ``eolearn_slovenia`` folder or its ``current`` subfolder.
    chunks
        Spatial chunk size for dask arrays; None (default) keeps numpy arrays (the patch is
        small).

    Returns
    -------
    xarray.Dataset
        A validated cube without ``s1``.

    Raises
    ------
    SourceError
        If a file of the patch is missing or unreadable.

    Examples
    --------
    >>> ds = cube_from_eolearn("../shared/data/eolearn_slovenia")  # doctest: +SKIP
    >>> dict(ds.s2.sizes)  # doctest: +SKIP
    {'time': 5, 'band': 4, 'y': 101, 'x': 100}
    """
    root = Path(path)
    if (root / "current").is_dir():
        root = root / "current"
    try:
        meta = json.loads((root / f"{_S2_FILE}.json").read_text())
        bands = np.load(root / f"{_S2_FILE}.npy", mmap_mode="r")
        cloud = np.load(root / "CLM.npy", mmap_mode="r")[..., 0]
        is_data = np.load(root / "IS_DATA.npy", mmap_mode="r")[..., 0]
        dem = np.load(root / "DEM.npy")[..., 0]
        lulc = np.load(root / "LULC.npy")[..., 0]
        stamps = json.loads((root / "timestamps.json").read_text())
        bbox = json.loads((root / "bbox.geojson").read_text())
    except (OSError, ValueError, KeyError) as exc:
        raise SourceError(f"cannot read eo-learn patch {root}: {exc}") from exc

    times = pd.DatetimeIndex(pd.to_datetime(meta["dates"]))
    # The masks cover all acquisition times; keep those of the dates with band values.
    index = pd.DatetimeIndex(pd.to_datetime(stamps)).get_indexer(times)
    if (index < 0).any():
        raise SourceError(f"{root}: S2 dates {list(times[index < 0])} not in timestamps.json")
    band_index = [meta["bands"].index(b) for b in BANDS]
    s2 = np.moveaxis(np.asarray(bands[..., band_index], dtype="float32"), -1, 1)
    unusable = (np.asarray(cloud[index]) != 0) | (np.asarray(is_data[index]) == 0)

    ny, nx = dem.shape
    x, y = _pixel_centres(bbox, ny, nx)
    ds = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), s2, {"long_name": "TOA reflectance (L1C)"}),
            "cloud": (("time", "y", "x"), unusable),
            "dem": (("y", "x"), dem.astype("float32"), {"units": "m"}),
            "lulc": (("y", "x"), lulc.astype("uint8")),
        },
        coords={"time": times, "band": list(BANDS), "y": y, "x": x},
        attrs={"source": "eo-learn example patch (Slovenia), Sentinel-2 L1C"},
    )
    ds = conform(ds.rio.write_crs(_crs_of(bbox)))
    validate(ds, require=["s2", "cloud", "dem", "lulc"])
    if chunks is not None:
        ds = ds.chunk({"time": 1, "band": -1, "y": chunks, "x": chunks})
    return ds


def _pixel_centres(bbox: dict, ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    ring = np.asarray(bbox["coordinates"][0], dtype="float64")
    west, south = ring.min(axis=0)
    east, north = ring.max(axis=0)
    dx, dy = (east - west) / nx, (north - south) / ny
    # Rows run north to south, as in every eo-learn raster feature.
    return west + dx * (np.arange(nx) + 0.5), north - dy * (np.arange(ny) + 0.5)


def _crs_of(bbox: dict) -> str:
    name = bbox.get("crs", {}).get("properties", {}).get("name", "")
    # "urn:ogc:def:crs:EPSG::32633" -> "EPSG:32633"
    code = name.rsplit(":", 1)[-1]
    if not code.isdigit():
        raise SourceError(f"bbox.geojson has no EPSG CRS (crs name {name!r})")
    return f"EPSG:{code}"
