"""How much of the S2 grid a source covers, from its footprint alone (no pixel is read).

An S1 or DEM source from the wrong place, reprojected onto the S2 grid, is all NaN: the
loaders refuse a source whose footprint covers less than :data:`MIN_COVERAGE` of the grid.
A footprint is the source's bounds (or the union of several, for tiles mosaicked into one
date) reprojected to the S2 CRS; the share is measured on a regular sample of the grid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from rasterio.warp import transform_bounds

from cloudfill.errors import GridMismatchError

__all__ = ["MIN_COVERAGE", "check_coverage", "coverage_share"]

MIN_COVERAGE: float = 0.5
"""The least share of the S2 grid that an S1, DEM, cloud, SCL or land-cover source must cover;
less is refused with :class:`~cloudfill.errors.GridMismatchError` (the source is probably from
another place or labelled with a wrong CRS). Pixels outside a source are NaN (or "no data")."""

Bounds = tuple[float, float, float, float]  # left, bottom, right, top

_SAMPLES = 100  # per axis: the share is exact to 1 %, for 10 000 point tests


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
        boxes = "; ".join(f"{tuple(round(v, 6) for v in b)} in {crs}" for crs, b in footprints)
        raise GridMismatchError(
            f"{what} covers {100 * share:.0f} % of the S2 grid (at least "
            f"{100 * min_coverage:.0f} % is required): its footprint {boxes} lies mostly "
            f"outside the S2 grid {tuple(round(v, 6) for v in grid_bounds)} in {grid_crs}; "
            "is it from another place, or is its CRS wrong?"
        )
    return share
