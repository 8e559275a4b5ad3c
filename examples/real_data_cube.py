"""Build cubes from the real sample data in ../shared/data and write them to zarr.

Two sources, two loaders:

- ``bigearthnet_pairs``: one co-registered Sentinel-1/Sentinel-2 patch pair (GeoTIFFs, one
  file per band) through :func:`cloudfill.cube_from_geotiffs`. None of the DEM tiles in
  ``dem_tiles`` (Rome, Los Angeles, Fairbanks) overlaps a BigEarthNet patch, so the pair's
  cube has no ``dem``; the script checks the overlap rather than assuming it.
- ``eolearn_slovenia``: a real S2 L1C series with cloud masks, DEM and land cover (numpy
  arrays) through :func:`cloudfill.cube.eolearn.cube_from_eolearn`; it has no Sentinel-1.

Run from the repository root::

    python examples/real_data_cube.py                 # writes ./real_data_cubes/*.zarr
    python examples/real_data_cube.py --data /path/to/shared/data --out /tmp/cubes
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import rasterio
import xarray as xr
from rasterio.warp import transform_bounds

import cloudfill
from cloudfill.cube.eolearn import cube_from_eolearn

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def bigearthnet_cube(root: Path, dem_tiles: Path) -> xr.Dataset:
    """The first S1 patch of ``root`` with its S2 twin, plus a DEM tile if one overlaps."""
    s1_dir = sorted((root / "BigEarthNet-S1-Example").iterdir())[0]
    s1_meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
    s2_dir = root / "BigEarthNet-S2-Example" / s1_meta["corresponding_s2_patch"]
    s2_meta = json.loads(next(s2_dir.glob("*_labels_metadata.json")).read_text())
    s2_files = [next(s2_dir.glob(f"*_{band}.tif")) for band in cloudfill.BANDS]
    s1_files = [next(s1_dir.glob(f"*_{pol}.tif")) for pol in cloudfill.POLS]
    dem = overlapping_dem(s2_files[0], dem_tiles)
    print(f"BigEarthNet pair: {s1_dir.name} + {s2_dir.name}")
    print(f"  DEM: {dem if dem else 'none of the dem_tiles overlaps this patch: no dem'}")
    return cloudfill.cube_from_geotiffs(
        s1={s1_meta["acquisition_time"]: s1_files},
        s2={s2_meta["acquisition_date"]: s2_files},
        dem=dem,
        s1_units="dB",
    )


def overlapping_dem(reference: Path, dem_tiles: Path) -> Path | None:
    """The first DEM tile whose footprint intersects ``reference``'s, if any."""
    with rasterio.open(reference) as ref:
        west, south, east, north = transform_bounds(ref.crs, "EPSG:4326", *ref.bounds)
    for tile in sorted(dem_tiles.rglob("*.tif")):
        with rasterio.open(tile) as src:
            w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
        if w < east and e > west and s < north and n > south:
            return tile
    return None


def summary(name: str, ds: xr.Dataset, path: Path) -> None:
    print(f"{name}: written to {path}")
    print(f"  CRS {ds.rio.crs}, {ds.sizes['y']} x {ds.sizes['x']} px")
    for var in ds.data_vars.values():
        value = var.astype("float32").mean().compute().item()
        print(f"  {var.name:6s} {var.dims} {var.dtype}  mean {value:.4g}")
    print(f"  S2 dates: {[str(t)[:10] for t in ds.time.values]}")
    if "s1_time" in ds.dims:
        print(f"  S1 dates: {[str(t)[:10] for t in ds.s1_time.values]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--out", type=Path, default=Path("real_data_cubes"), help="output folder")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)

    pair = bigearthnet_cube(args.data / "bigearthnet_pairs", args.data / "dem_tiles")
    path = cloudfill.write_cube(pair, args.out / "bigearthnet_pair.zarr", overwrite=True)
    summary("bigearthnet_pair", cloudfill.open_cube(path), path)

    slovenia = cube_from_eolearn(args.data / "eolearn_slovenia")
    path = cloudfill.write_cube(slovenia, args.out / "eolearn_slovenia.zarr", overwrite=True)
    summary("eolearn_slovenia", cloudfill.open_cube(path), path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
