"""Write ``cloudfill/data/demo_cube.zarr.zip``, the cube behind ``cloudfill.load_demo()``.

    python scripts/make_demo_cube.py

See :mod:`cloudfill.cube.demo` for what it holds. Deterministic: rerunning it gives the
same values (the simulator is a pure function of the seed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import zarr

import cloudfill
from cloudfill.cube.demo import DEMO_FILE, simulate_demo


def main() -> None:
    warnings.simplefilter("ignore")
    ds = simulate_demo()  # the recipe (seed 2024, 192 x 192 px) lives in cloudfill.cube.demo
    small = ds.copy()
    for name in ("s2", "truth"):
        # Integer reflectance x 10000, the contract's on-disk convention (conform scales it).
        small[name] = (ds[name] * 10000).round().clip(0, 65535).astype("uint16")
        small[name].attrs = {**ds[name].attrs, "scale_factor_applied_on_load": 1e-4}
    small["s1"] = ds["s1"].astype("float16").assign_attrs(ds["s1"].attrs)
    target = Path(cloudfill.__file__).parent / "data" / DEMO_FILE
    tmp = target.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    store = zarr.storage.ZipStore(tmp, mode="w")
    try:
        small.to_zarr(store, mode="w", zarr_format=3, consolidated=False)
    finally:
        store.close()
    tmp.replace(target)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
