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

import xarray as xr

from cloudfill.cube.schema import conform

__all__ = ["DEMO_FILE", "load_demo"]

DEMO_FILE = "demo_cube.zarr.zip"


def load_demo() -> xr.Dataset:
    """The embedded demo cube (numpy-backed, with a ``truth`` variable).

    Examples
    --------
    >>> ds = load_demo()
    >>> ds.sizes["time"], ds.sizes["y"], str(ds.s2.dtype)
    (6, 192, 'float32')
    """
    import zarr

    path = resources.files("cloudfill") / "data" / DEMO_FILE
    with resources.as_file(path) as local:
        store = zarr.storage.ZipStore(local, mode="r")
        try:
            ds = xr.open_zarr(store, consolidated=False, decode_coords="all").load()
        finally:
            store.close()
    return conform(ds)
