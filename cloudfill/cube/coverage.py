"""How much of the S2 grid a source covers, from its footprint alone (no pixel is read).

An S1 or DEM source from the wrong place, reprojected onto the S2 grid, is all NaN: the
loaders refuse a source whose footprint covers less than :data:`MIN_COVERAGE` of the grid.
A footprint is the source's bounds (or the union of several: tiles mosaicked into one date,
and all dates of S1) reprojected to the S2 CRS; the share is measured on a regular sample of
the grid.

S1 is judged by the union of its dates: a pass at the edge of its swath covers part of the
scene and other dates cover the rest, which the fill copes with (a pixel without S1 on a date
falls back to another date or to interpolation). A source from another place still covers
nothing on every date.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.warp import transform_bounds

from cloudfill.errors import GridMismatchError, ParameterError

__all__ = [
    "MIN_COVERAGE",
    "check_coverage",
    "check_min_coverage",
    "coverage_share",
    "item_footprint",
    "listed",
    "union_label",
]

MIN_COVERAGE: float = 0.5
"""The least share of the S2 grid that an S1 (all its dates together), DEM, cloud, SCL or
land-cover source must cover; less is refused with :class:`~cloudfill.errors.GridMismatchError`
(the source is probably from another place or labelled with a wrong CRS). Pixels outside a
source are NaN (or "no data")."""

Bounds = tuple[float, float, float, float]  # left, bottom, right, top

_SAMPLES = 100  # per axis: the share is exact to 1 %, for 10 000 point tests
_LISTED = 4  # names (files, items, footprints) a message lists before "and N more"


def check_min_coverage(min_coverage: float) -> float:
    """``min_coverage`` if it is a share in 0..1 (the loaders' keyword), else a ParameterError.

    >>> check_min_coverage(1.5)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: min_coverage must be a share in 0..1, got 1.5
    """
    if not 0 <= min_coverage <= 1:
        raise ParameterError(f"min_coverage must be a share in 0..1, got {min_coverage}")
    return min_coverage


def listed(names: Sequence[object], limit: int = _LISTED, sep: str = ", ") -> str:
    """``names`` joined by ``sep``, the first ``limit`` of them and a count of the rest.

    >>> listed(["a.tif", "b.tif", "c.tif"], limit=2)
    'a.tif, b.tif and 1 more'
    """
    shown = sep.join(str(n) for n in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def union_label(kind: str, dates: Sequence[str]) -> str:
    """How a message names a source judged over all its ``dates`` together.

    >>> union_label("S1", ["2021-06-02"])
    'S1 date 2021-06-02'
    >>> union_label("S1", ["2021-06-02", "2021-06-14", "2021-06-26"])
    'S1, its 3 dates together (2021-06-02 to 2021-06-26),'
    """
    if len(dates) == 1:
        return f"{kind} date {dates[0]}"
    return f"{kind}, its {len(dates)} dates together ({dates[0]} to {dates[-1]}),"


def coverage_share(
    footprints: Sequence[tuple[Any, Bounds]], grid_crs: Any, grid_bounds: Bounds
) -> float:
    """The share (0..1) of ``grid_bounds`` inside the union of ``footprints``.

    Each footprint is ``(crs, (left, bottom, right, top))`` and is reprojected (densified
    edges) to ``grid_crs``; one that cannot be reprojected covers nothing.

    >>> coverage_share([("EPSG:32633", (0, 0, 50, 100))], "EPSG:32633", (0, 0, 100, 100))
    0.5
    """
    left, bottom, right, top = grid_bounds
    offsets = (np.arange(_SAMPLES) + 0.5) / _SAMPLES
    xs = left + offsets * (right - left)
    ys = bottom + offsets * (top - bottom)
    inside = np.zeros((_SAMPLES, _SAMPLES), dtype=bool)
    for crs, bounds in footprints:
        try:
            box = transform_bounds(crs, grid_crs, *bounds, densify_pts=21)
        except Exception:  # rasterio/PROJ raise several types for an impossible transform
            continue
        if not np.all(np.isfinite(box)):
            continue
        in_x = (xs >= box[0]) & (xs <= box[2])
        in_y = (ys >= box[1]) & (ys <= box[3])
        inside |= in_y[:, None] & in_x[None, :]
    return float(inside.mean())


def check_coverage(
    what: str,
    footprints: Sequence[tuple[Any, Bounds]],
    grid_crs: Any,
    grid_bounds: Bounds,
    min_coverage: float = MIN_COVERAGE,
) -> float:
    """Refuse a source (``what`` names it and its file) covering too little of the S2 grid.

    Returns the share covered.

    Raises
    ------
    GridMismatchError
        Naming ``what``, the share covered and the least accepted.
    """
    share = coverage_share(footprints, grid_crs, grid_bounds)
    if share < min_coverage:
        boxes = [f"{tuple(round(v, 6) for v in b)} in {crs}" for crs, b in footprints]
        # Many dates of S1 would otherwise make a message of hundreds of boxes.
        footprint = "its footprint" if len(boxes) == 1 else "the union of its footprints"
        raise GridMismatchError(
            f"{what} covers {100 * share:.0f} % of the S2 grid (at least "
            f"{100 * min_coverage:.0f} % is required): {footprint} "
            f"{listed(boxes, sep='; ')} lies mostly outside the S2 grid "
            f"{tuple(round(v, 6) for v in grid_bounds)} in {grid_crs}; is it from another "
            "place, or is its CRS wrong?"
        )
    return share


def item_footprint(item: dict[str, Any]) -> tuple[Any, tuple[float, float, float, float]] | None:
    """A STAC item's (crs, bounds): its first asset's ``proj:`` fields (else the item's),
    else its lon/lat ``bbox``; None when it has neither.

    >>> item_footprint({"assets": {}, "properties": {}, "bbox": [15.0, 45.1, 15.1, 45.2]})
    ('EPSG:4326', (15.0, 45.1, 15.1, 45.2))
    """
    asset = next(iter(item["assets"].values()), {})
    fields = {**item["properties"], **{k: v for k, v in asset.items() if v is not None}}
    epsg = fields.get("proj:epsg")
    if epsg is not None:
        if fields.get("proj:bbox") and len(fields["proj:bbox"]) == 4:
            return f"EPSG:{epsg}", tuple(fields["proj:bbox"])
        transform, shape = fields.get("proj:transform"), fields.get("proj:shape")
        if transform and shape and len(transform) >= 6 and transform[1] == transform[3] == 0:
            a, _, c, _, e, f = transform[:6]
            xs, ys = (c, c + a * shape[1]), (f, f + e * shape[0])
            return f"EPSG:{epsg}", (min(xs), min(ys), max(xs), max(ys))
    bbox = item.get("bbox")
    if bbox and len(bbox) == 4:
        return "EPSG:4326", tuple(bbox)
    return None
