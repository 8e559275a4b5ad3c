"""``simulate_scene``: the public entry point, and the assembly of the block functions into
lazy dask arrays and an xarray Dataset.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine
from dask.array.core import PerformanceWarning
from dask.base import tokenize

from cloudfill.cube.schema import BANDS, POLS
from cloudfill.cube.simulate.args import (
    _chunk_sizes,
    _cloud_fractions,
    _grid_shape,
    _s1_dates,
    _s2_dates,
    _surface_change,
)
from cloudfill.cube.simulate.blocks import _optical_task, _sar_task, _static_task, n_static
from cloudfill.cube.simulate.constants import (
    _L_DEM,
    _L_LULC,
    _N_OPTICAL,
    LULC_CLASSES,
    S1_LOOKS,
)
from cloudfill.cube.simulate.scene import _Scene, _scene

LAZY_PIXELS = 2048 * 2048
"""Scenes with more pixels than this are returned dask-backed even without ``chunks``."""

_DESCRIPTION = (
    "cloudfill synthetic scene: fractal terrain, terrain-driven land cover, "
    "phenology, illumination, snow, SAR with speckle, clouds and shadows"
)


def _layers(block: np.ndarray, lo: int, hi: int | None, axis: int) -> np.ndarray:
    """Channels ``lo:hi`` (or the single channel ``lo`` when ``hi`` is None) of a block."""
    index = (slice(None),) * axis + ((lo if hi is None else slice(lo, hi)),)
    return block[index]


def _lazy_arrays(sc: _Scene, cy: int, cx: int) -> dict[str, da.Array]:
    """The cube's variables as dask arrays: one task per block for the static layers, one per
    block and date for each sensor, and cheap per-block views for the variables."""
    ny, nx = sc.shape
    token = tokenize(sc, cy, cx)
    ys = da.arange(ny, chunks=cy, dtype=np.int64)
    xs = da.arange(nx, chunks=cx, dtype=np.int64)
    n_s2, n_s1 = len(sc.s2_days), len(sc.s1_days)
    meta3 = np.empty((0, 0, 0), dtype=np.float32)
    meta4 = np.empty((0, 0, 0, 0), dtype=np.float32)
    with warnings.catch_warnings():
        # New date axes multiply the chunk count by design; dask warns about that.
        warnings.simplefilter("ignore", PerformanceWarning)
        static = da.blockwise(
            _static_task, "lyx", ys, "y", xs, "x",
            new_axes={"l": n_static(sc)}, dtype=np.float32, meta=meta3,
            name=f"simulate-static-{token}", sc=sc,
        )  # fmt: skip
        optical = da.blockwise(
            _optical_task, "tcyx", da.arange(n_s2, chunks=1), "t", static, "lyx", ys, "y",
            xs, "x", new_axes={"c": _N_OPTICAL}, concatenate=False, dtype=np.float32,
            meta=meta4, name=f"simulate-s2-{token}", sc=sc,
        )  # fmt: skip
        sar = da.blockwise(
            _sar_task, "tpyx", da.arange(n_s1, chunks=1), "t", static, "lyx", ys, "y", xs, "x",
            new_axes={"p": len(POLS)}, concatenate=False, dtype=np.float32, meta=meta4,
            name=f"simulate-s1-{token}", sc=sc,
        )  # fmt: skip

    # map_blocks keeps these views lazy layers; slicing a dask array would build one task per
    # chunk up front, which is slow for scenes of many thousand chunks.
    def bands(lo: int) -> da.Array:
        chunks = (optical.chunks[0], (4,), *optical.chunks[2:])
        return optical.map_blocks(_layers, lo, lo + 4, 1, chunks=chunks, dtype=np.float32)

    def plane(array: da.Array, lo: int, axis: int) -> da.Array:
        return array.map_blocks(_layers, lo, None, axis, drop_axis=axis, dtype=np.float32)

    return {
        "s2": bands(4),
        "truth": bands(0),
        "s1": sar,
        "dem": plane(static, _L_DEM, 0),
        "cloud": plane(optical, 8, 1) > 0.5,
        "scl": plane(optical, 9, 1).astype(np.uint8),
        "lulc": plane(static, _L_LULC, 0).astype(np.uint8),
    }


def simulate_scene(
    shape: tuple[int, int] = (256, 256),
    dates: int | Sequence[Any] | None = None,
    seed: int = 0,
    *,
    s1_dates: Sequence[Any] | None = None,
    cloud_fraction: float | Sequence[float] | None = None,
    chunks: int | dict[str, int] | None = None,
    crs: str = "EPSG:32645",
    resolution: float = 10.0,
    origin: tuple[float, float] = (300000.0, 3100000.0),
    surface_change: float = 0.0,
) -> xr.Dataset:
    """Simulate a Sentinel-1 / Sentinel-2 / DEM cube with clouds and its cloud-free truth.

    The scene is a fractal landscape in central Nepal (latitude 28 N): a DEM with river
    valleys, land cover shaped by the terrain, S2 reflectance with seasonal phenology, terrain
    illumination and winter snow, S1 backscatter with local-incidence, soil-moisture and
    speckle effects, and bright fractal clouds with offset shadows. The cube follows the
    contract (``cloudfill.validate`` passes). Values depend only on the seed, the dates and the
    pixel position, so they are bit-identical whatever ``chunks`` is.

    Parameters
    ----------
    shape
        ``(ny, nx)`` pixels.
    dates
        Sentinel-2 dates: None for 6, an int ``n`` for ``n`` dates spread over about a year
        from 2023-01-10 (every ``max(5, round(360 / n))`` days), or a sorted sequence of
        date-likes.
    seed
        Seed of every random field; the same seed gives the same scene.
    s1_dates
        Sentinel-1 dates; None for a 12-day repeat from a few days before the first S2 date to
        after the last, phased so S1 acquisitions fall 1-6 days from the S2 dates.
    cloud_fraction
        Fraction of unusable (cloud or shadow) pixels per S2 date: a float for all dates, one
        value per date, or None for a seeded mix whose first date is clear and which, from four
        dates on, includes one fully cloudy date and one at 0.6-0.9.
    chunks
        Spatial chunk size (an int, or a dict with ``"y"``/``"x"``; ``time``/``s1_time`` are
        always one chunk per date, ``band``/``pol`` one chunk). When given, or when the scene
        has more than 2048 x 2048 pixels, variables are dask arrays computed block by block on
        demand (default chunks 1024); otherwise they are numpy arrays.
    crs, resolution, origin
        The grid: CRS, pixel size in CRS units (metres) and the top-left corner ``(x, y)``.
        Only the grid: sun, phenology and snow follow about 28 degrees north wherever it
        is, so a scene placed south of the equator has northern seasons (and an SODCT model
        reads it as southern, :mod:`cloudfill.core.season`).
    surface_change
        Share (0..1) of the eligible land whose surface changes during the series, in
        irregular patches of about 300 m, each with its own onset between the first and last
        S2 date: forest is cleared for good; crops and grass are tilled (bare for 40-100 days)
        or, on low flat ground, flooded (6-30 days). Optical reflectance and backscatter both
        follow the change, with magnitudes from the literature (``docs/method.md``), and wet
        snow darkens the radar in the melt season. 0 (the default) leaves the scene as it was
        before this option existed, bit for bit.

    Returns
    -------
    xarray.Dataset
        ``s2`` and ``truth`` (time, band, y, x) float32 reflectance; ``s1`` (s1_time, pol, y,
        x) float32 dB; ``dem`` (y, x) float32 metres; ``cloud`` (time, y, x) bool, True on
        cloud or shadow; ``scl`` (time, y, x) uint8 Sen2Cor classes; ``lulc`` (y, x) uint8
        classes (see ``attrs["classes"]``); CRS in the ``spatial_ref`` coordinate. Attrs:
        ``seed``, ``cloud_fraction`` (asked, per date), ``description`` and, with
        ``surface_change``, ``surface_change``.

    Raises
    ------
    ParameterError
        On a bad shape, dates, cloud fraction, chunks or resolution.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), dates=4, seed=1)
    >>> dict(ds.sizes)["time"], str(ds.s2.dtype), ds.s1.attrs["units"]
    (4, 'float32', 'dB')
    >>> bool(ds.cloud.isel(time=0).any())  # the first date is clear by default
    False
    """
    ny, nx = _grid_shape(shape, resolution)
    seed = int(seed)
    s2 = _s2_dates(dates)
    s1 = _s1_dates(s1_dates, s2)
    fractions = _cloud_fractions(cloud_fraction, len(s2), seed)
    lazy = chunks is not None or ny * nx > LAZY_PIXELS
    cy, cx = _chunk_sizes(chunks, (ny, nx))
    change = _surface_change(surface_change)
    sc = _scene((ny, nx), s2, s1, fractions, seed, float(resolution), change)

    attrs = {
        "description": _DESCRIPTION,
        "seed": seed,
        "cloud_fraction": fractions,
        "simulator": "cloudfill.simulate_scene",
    }
    if change > 0:
        attrs["surface_change"] = change
    ds = _dataset(_lazy_arrays(sc, cy, cx), s2, s1, resolution, origin, attrs)
    # Georeference while still lazy: rioxarray deep-copies the Dataset it writes to.
    ds = ds.rio.write_crs(crs)
    ds = ds.rio.write_transform(Affine(resolution, 0.0, origin[0], 0.0, -resolution, origin[1]))
    return ds if lazy else _materialise(ds)


def _dataset(
    arrays: dict[str, da.Array],
    s2: pd.DatetimeIndex,
    s1: pd.DatetimeIndex,
    resolution: float,
    origin: tuple[float, float],
    attrs: dict[str, Any],
) -> xr.Dataset:
    """The cube's variables with their dims, attrs and coordinates, and the global ``attrs``
    (no CRS yet).

    ``resolution`` is the caller's value, not a float copy, so coordinates come out exactly as
    ``origin +- (i + 0.5) * resolution`` computes them for that value.
    """
    ny, nx = arrays["dem"].shape
    classes = ",".join(f"{code}={name}" for code, name in enumerate(LULC_CLASSES))
    return xr.Dataset(
        {
            "s2": (
                ("time", "band", "y", "x"),
                arrays["s2"],
                {"long_name": "S2 surface reflectance with clouds", "units": "1"},
            ),
            "truth": (
                ("time", "band", "y", "x"),
                arrays["truth"],
                {"long_name": "cloud-free S2 surface reflectance", "units": "1"},
            ),
            "s1": (
                ("s1_time", "pol", "y", "x"),
                arrays["s1"],
                {"long_name": "S1 backscatter sigma0", "units": "dB", "looks": S1_LOOKS},
            ),
            "dem": (("y", "x"), arrays["dem"], {"long_name": "elevation", "units": "m"}),
            "cloud": (
                ("time", "y", "x"),
                arrays["cloud"],
                {"long_name": "unusable S2 pixel (cloud or shadow)"},
            ),
            "scl": (
                ("time", "y", "x"),
                arrays["scl"],
                {
                    "long_name": "Sen2Cor scene classification",
                    "flag_values": [3, 4, 5, 6, 8, 9, 11],
                },
            ),
            "lulc": (
                ("y", "x"),
                arrays["lulc"],
                {"long_name": "land use / land cover", "classes": classes},
            ),
        },
        coords={
            "time": s2.values,
            "s1_time": s1.values,
            "band": list(BANDS),
            "pol": list(POLS),
            "y": origin[1] - (np.arange(ny) + 0.5) * resolution,
            "x": origin[0] + (np.arange(nx) + 0.5) * resolution,
        },
        attrs=attrs,
    )


def _materialise(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with numpy data: small scenes are returned in memory, as users of numpy expect."""
    # Store block by block into preallocated arrays: one graph (static layers shared by
    # every variable and date), no concatenation copies.
    names = list(ds.data_vars)
    targets = {name: np.empty(ds[name].shape, dtype=ds[name].dtype) for name in names}
    da.store([ds[name].data for name in names], [targets[name] for name in names], lock=False)
    return ds.copy(data=targets)
