"""Write ``cloudfill/data/demo_cube.zarr.zip``, the cube behind ``cloudfill.load_demo()``.

    python scripts/make_demo_cube.py

See :mod:`cloudfill.cube.demo` for what it holds. Deterministic: rerunning it gives the
same values (the simulator is a pure function of the seed).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import zarr

import cloudfill
from cloudfill.cube.demo import DEMO_FILE

SEED = 2024
SHAPE = (192, 192)
DATES = pd.date_range("2024-02-01", periods=6, freq="40D")
S1_OFFSETS_DAYS = (2, -1, 1, 3, -2, 1)
# Three nearly clear dates serve as references; the others have clouds of every size.
CLOUD = (0.0, 0.4, 0.02, 0.85, 1.0, 0.3)


def main() -> None:
    warnings.simplefilter("ignore")
    s1_dates = [d + pd.Timedelta(days=k) for d, k in zip(DATES, S1_OFFSETS_DAYS, strict=True)]
    ds = cloudfill.simulate_scene(
        SHAPE, dates=list(DATES), s1_dates=s1_dates, seed=SEED, cloud_fraction=list(CLOUD)
    )
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
