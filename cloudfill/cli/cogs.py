"""``fill-series --cog-dir``: one Cloud-Optimised GeoTIFF per filled date, written beside
the user's files without replacing any of them.

Each COG carries the tag :data:`TAG` (the fill job's fingerprint), so that a rerun
recognises and replaces its own files, while a file of the same name that cloudfill did not
write is refused unless ``--overwrite`` says so. Files are named by day, or by the full time
where two dates fall on one day (two acquisitions must not share a file).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.errors import OutputError

__all__ = ["TAG", "check_cog_dir", "cog_names", "write_cogs"]

TAG = "CLOUDFILL_JOB"
"""The GeoTIFF tag that marks a COG written by ``fill-series`` (its job's fingerprint)."""

_LISTED = 3


def cog_names(times: Iterable[Any]) -> dict[pd.Timestamp, str]:
    """The file name of each date's COG: by day, by the full time where days repeat.

    Examples
    --------
    >>> list(cog_names(["2024-03-12", "2024-04-01"]).values())
    ['s2_filled_2024-03-12.tif', 's2_filled_2024-04-01.tif']
    >>> list(cog_names(["2024-03-12T10:30", "2024-03-12T10:40:05"]).values())
    ['s2_filled_2024-03-12T103000.tif', 's2_filled_2024-03-12T104005.tif']
    """
    stamps = pd.DatetimeIndex(pd.to_datetime(list(times)))
    days = stamps.normalize()
    return {
        t: f"s2_filled_{t:%Y-%m-%dT%H%M%S}.tif" if days.duplicated(keep=False)[i]
        else f"s2_filled_{t:%Y-%m-%d}.tif"
        for i, t in enumerate(stamps)
    }  # fmt: skip


def _is_ours(path: Path) -> bool:
    import rasterio

    try:
        with rasterio.open(path) as src:
            return TAG in src.tags()
    except rasterio.errors.RasterioError:
        return False


def check_cog_dir(
    cog_dir: Path, out: Path, times: Iterable[Any], *, overwrite: bool = False
) -> None:
    """Refuse a COG folder inside the output store, or one holding files of the COGs'
    names that cloudfill did not write (unless ``overwrite``); checked before the fill.

    Raises
    ------
    OutputError
        Naming the folder or the files and what to do instead.
    """
    where, store = cog_dir.expanduser().resolve(), out.expanduser().resolve()
    if where == store or store in where.parents:
        raise OutputError(
            f"--cog-dir {cog_dir} lies inside the output store {out}: choose a folder outside it"
        )
    if overwrite or not where.is_dir():
        return
    foreign = [
        name for name in cog_names(times).values()
        if (where / name).exists() and not _is_ours(where / name)
    ]  # fmt: skip
    if foreign:
        shown = ", ".join(foreign[:_LISTED]) + (
            f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else ""
        )
        raise OutputError(
            f"--cog-dir {cog_dir} holds files the COGs would replace ({shown}) that cloudfill "
            "did not write: choose another folder, or pass --overwrite to replace them"
        )


def write_cogs(result: xr.Dataset, cog_dir: Path) -> int:
    """Write each date of ``result["s2"]`` as a COG in ``cog_dir``, atomically per file,
    tagged with the job's fingerprint; returns how many were written."""
    cog_dir.mkdir(parents=True, exist_ok=True)
    job = str(result.attrs.get("cloudfill_job", "unknown"))
    names = cog_names(result["time"].values)
    for date, name in names.items():
        target = cog_dir / name
        tmp = target.with_name(f".{name}.tmp")
        image = result["s2"].sel(time=date)
        # Band descriptions B02 ... B08 (rioxarray writes a tuple long_name as them).
        image = image.assign_attrs(long_name=tuple(str(b) for b in image["band"].values))
        image.rio.to_raster(tmp, driver="COG", tags={TAG: job, "DATE": f"{date}"})
        os.replace(tmp, target)
    return len(names)
