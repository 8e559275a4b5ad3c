"""``load_demo``: the small simulated cube shipped with the package.

The cube (``cloudfill/data/demo_cube.zarr.zip``, a zipped zarr v3 store) is made by
``scripts/make_demo_cube.py``: ``simulate_scene`` with seed 2024, 192 x 192 px, six S2 dates
40 days apart from 2024-02-01 with clouds of varied size (0, 40, 2, 85, 100 and 30 % cover),
one S1 acquisition one to three days from each S2 date, and the DEM. Reflectance is stored as
integers x 10000 and S1 as float16 to keep the file small; :func:`load_demo` returns the
contract's float32. The default model was trained on another seed and never saw it.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd
import xarray as xr
import zarr

from cloudfill.cube.schema import conform
from cloudfill.cube.simulate import simulate_scene

__all__ = ["DEMO_CLOUD", "DEMO_DATES", "DEMO_FILE", "DEMO_SEED", "load_demo", "simulate_demo"]

DEMO_FILE = "demo_cube.zarr.zip"
DEMO_SEED = 2024
DEMO_DATES = pd.date_range("2024-02-01", periods=6, freq="40D")
"""The demo design's six S2 dates, 40 days apart."""
_S1_OFFSETS_DAYS = (2, -1, 1, 3, -2, 1)
DEMO_CLOUD = (0.0, 0.4, 0.02, 0.85, 1.0, 0.3)
"""Cloud cover of each of :data:`DEMO_DATES`: three nearly clear dates serve as references,
the others have clouds of every size."""


def simulate_demo(seed: int = DEMO_SEED, shape: tuple[int, int] = (192, 192)) -> xr.Dataset:
    """The demo's recipe (dates, S1 offsets, cloud cover) with any seed and size, float32.

    ``simulate_demo()`` is the shipped demo before its integer storage; other seeds give
    cubes of the same design for measuring how results vary from scene to scene.

    Examples
    --------
    >>> ds = simulate_demo(seed=1, shape=(64, 64))
    >>> ds.sizes["time"], [f"{d:%m-%d}" for d in ds.indexes["time"][:2]]
    (6, ['02-01', '03-12'])
    """
    s1_dates = [d + pd.Timedelta(days=k) for d, k in zip(DEMO_DATES, _S1_OFFSETS_DAYS, strict=True)]
    return simulate_scene(
        shape, dates=list(DEMO_DATES), s1_dates=s1_dates, seed=seed, cloud_fraction=list(DEMO_CLOUD)
    )


def load_demo() -> xr.Dataset:
    """The embedded demo cube (numpy-backed, with a ``truth`` variable).

    Examples
    --------
    >>> ds = load_demo()
    >>> ds.sizes["time"], ds.sizes["y"], str(ds.s2.dtype)
    (6, 192, 'float32')
    """
    path = resources.files("cloudfill") / "data" / DEMO_FILE
    with resources.as_file(path) as local:
        store = zarr.storage.ZipStore(local, mode="r")
        try:
            ds = xr.open_zarr(store, consolidated=False, decode_coords="all").load()
        finally:
            store.close()
    return conform(ds)
