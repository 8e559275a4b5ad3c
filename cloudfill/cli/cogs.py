"""``fill-series --cog-dir``: one Cloud-Optimised GeoTIFF per filled date, written beside
the user's files without replacing any of them.

Each COG carries the tags :data:`CUBE_TAG` (the resolved path of the cube it was filled
from) and :data:`JOB_TAG` (the fill job's fingerprint). A rerun on the same cube, or another
``--dates`` batch of it, recognises and replaces its own files; a file of the same name that
cloudfill did not write, or wrote from another cube (tiles of a mosaic sharing one folder),
is refused unless ``--overwrite`` says so. Files are named by day, or by the full time where
two dates of the cube fall on one day (two acquisitions must not share a file), so a date's
name does not depend on which dates a run fills.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.errors import OutputError

__all__ = ["CUBE_TAG", "JOB_TAG", "check_cog_dir", "cog_names", "write_cogs"]

CUBE_TAG = "CLOUDFILL_CUBE"
"""GeoTIFF tag of a ``fill-series`` COG: the resolved path of the cube it was filled from."""

JOB_TAG = "CLOUDFILL_JOB"
"""GeoTIFF tag of a ``fill-series`` COG: the fingerprint of the job that wrote it."""

_LISTED = 3


def cog_names(times: Iterable[Any], axis: Iterable[Any] | None = None) -> dict[pd.Timestamp, str]:
    """The file name of each date's COG: by day, by the full time where two dates of
    ``axis`` (the cube's time axis; default ``times``) share the day.

    Examples
    --------
    >>> list(cog_names(["2024-03-12", "2024-04-01"]).values())
    ['s2_filled_2024-03-12.tif', 's2_filled_2024-04-01.tif']
    >>> axis = ["2024-03-12T10:30", "2024-03-12T10:40"]  # two acquisitions on one day
    >>> list(cog_names(["2024-03-12T10:30"], axis=axis).values())
    ['s2_filled_2024-03-12T103000.tif']
    >>> len(set(cog_names(["2024-03-12T10:30:00.2", "2024-03-12T10:30:00.7"]).values()))
    2
    """
    stamps = pd.DatetimeIndex(pd.to_datetime(list(times)))
    whole = stamps if axis is None else pd.DatetimeIndex(pd.to_datetime(list(axis)))
    days = whole.normalize().value_counts()
    seconds = whole.floor("s").value_counts()

    def name(t: pd.Timestamp) -> str:
        if days.get(t.normalize(), 0) < 2:
            return f"s2_filled_{t:%Y-%m-%d}.tif"
        if seconds.get(t.floor("s"), 0) < 2:
            return f"s2_filled_{t:%Y-%m-%dT%H%M%S}.tif"
        return f"s2_filled_{t:%Y-%m-%dT%H%M%S%f}.tif"  # within one second: microseconds

    return {t: name(t) for t in stamps}


def _owner(path: Path) -> str | None:
    """The cube a COG was filled from (its :data:`CUBE_TAG`), or None for any other file."""
    import rasterio

    try:
        with rasterio.open(path) as src:
            return src.tags().get(CUBE_TAG)
    except rasterio.errors.RasterioError:
        return None


def check_cog_dir(
    cog_dir: Path,
    out: Path,
    cube: Path,
    times: Iterable[Any],
    axis: Iterable[Any],
    *,
    overwrite: bool = False,
) -> None:
    """Refuse a COG folder inside the output store, or one holding files of the COGs' names
    that cloudfill did not write from ``cube`` (unless ``overwrite``); before the fill.

    Parameters
    ----------
    cog_dir, out, cube
        The COG folder, the output store and the input cube.
    times, axis
        The dates the run fills and the cube's whole time axis (:func:`cog_names`).
    overwrite
        Replace such files (``--overwrite``).

    Raises
    ------
    OutputError
        Naming the folder or the files, who wrote them, and what to do instead.

    Examples
    --------
    >>> check_cog_dir(Path("f.zarr/cogs"), Path("f.zarr"), Path("c.zarr"), [], [])
    Traceback (most recent call last):
    ...
    cloudfill.errors.OutputError: --cog-dir f.zarr/cogs lies inside the output store f.zarr: \
choose a folder outside it
    """
    where, store = cog_dir.expanduser().resolve(), out.expanduser().resolve()
    if where == store or store in where.parents:
        raise OutputError(
            f"--cog-dir {cog_dir} lies inside the output store {out}: choose a folder outside it"
        )
    if overwrite or not where.is_dir():
        return
    mine = str(cube.expanduser().resolve())
    foreign, others = [], set()
    for name in cog_names(times, axis).values():
        if (where / name).exists():
            owner = _owner(where / name)
            if owner != mine:
                foreign.append(name)
                others.add(owner)
    if foreign:
        shown = ", ".join(foreign[:_LISTED]) + (
            f" and {len(foreign) - _LISTED} more" if len(foreign) > _LISTED else ""
        )
        who = "; ".join(
            "cloudfill did not write them (or a version that did not tag its COGs)"
            if o is None
            else f"cloudfill wrote them from another cube, {o}"
            for o in sorted(others, key=str)
        )
        raise OutputError(
            f"--cog-dir {cog_dir} holds files the COGs would replace ({shown}): {who}; "
            "choose another folder, or pass --overwrite to replace them"
        )


def write_cogs(result: xr.Dataset, cog_dir: Path, cube: Path, axis: Iterable[Any]) -> int:
    """Write each date of ``result["s2"]`` as a COG in ``cog_dir`` (atomically per file,
    bands described B02 ... B08, tagged with the cube and the job) and return how many."""
    cog_dir.mkdir(parents=True, exist_ok=True)
    tags = {
        CUBE_TAG: str(cube.expanduser().resolve()),
        JOB_TAG: str(result.attrs.get("cloudfill_job", "unknown")),
    }
    names = cog_names(result["time"].values, axis)
    for date, name in names.items():
        target = cog_dir / name
        tmp = target.with_name(f".{name}.tmp")
        image = result["s2"].sel(time=date)
        # Band descriptions B02 ... B08 (rioxarray writes a tuple long_name as them).
        image = image.assign_attrs(long_name=tuple(str(b) for b in image["band"].values))
        image.rio.to_raster(tmp, driver="COG", tags={**tags, "DATE": f"{date}"})
        os.replace(tmp, target)
    return len(names)
