"""Build a cube from STAC items that point at local Cloud-Optimised GeoTIFFs.

Real archives (Earth Search, Planetary Computer) serve Sentinel-2 L2A and Sentinel-1 RTC as
STAC items whose assets are COGs; :func:`cloudfill.cube_from_stac` stacks such items onto one
grid with stackstac. This script makes the whole thing offline: it writes COGs from a
simulated scene the way the archives store them (S2 bands as uint16 digital numbers at 10 m,
the SCL at 20 m, S1 VV/VH as linear gamma0 float32 at 20 m, a DEM), describes each
acquisition with a pystac Item (projection extension: EPSG, shape, transform), saves them as
an ItemCollection, reads it back and loads the cube.

Run from the repository root (a few seconds)::

    python examples/stac_example.py
    python examples/stac_example.py --out stac_cube.zarr --keep stac_files/
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from datetime import UTC
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import rasterio
import xarray as xr
from pystac.extensions.projection import ProjectionExtension

import cloudfill

S2_KEYS = ("blue", "green", "red", "nir")  # Earth Search spelling; aliases of B02..B08


def write_cog(path: Path, data: np.ndarray, like: xr.DataArray, factor: int = 1) -> str:
    """One band as a COG on ``like``'s grid, block-averaged by ``factor`` (20 m from 10 m)."""
    if factor > 1:
        ny, nx = data.shape
        data = data.reshape(ny // factor, factor, nx // factor, factor)
        # SCL is categorical: take one pixel per block, never an average of classes.
        data = data[:, 0, :, 0] if data.dtype == np.uint8 else data.mean(axis=(1, 3))
    transform = like.rio.transform() * rasterio.Affine.scale(factor)
    profile = {
        "driver": "COG",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype,
        "crs": like.rio.crs,
        "transform": transform,
        "blocksize": 64,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data.astype(data.dtype), 1)
    return str(path.resolve())


def make_item(item_id: str, when: pd.Timestamp, platform: str | None, like: xr.DataArray):
    """A STAC item on ``like``'s grid (bbox in lon/lat, projection extension)."""
    bounds = like.rio.transform_bounds("EPSG:4326")
    lon0, lat0, lon1, lat1 = bounds
    item = pystac.Item(
        id=item_id,
        geometry={
            "type": "Polygon",
            "coordinates": [[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]],
        },
        bbox=list(bounds),
        datetime=when.to_pydatetime().replace(tzinfo=UTC),
        properties={"platform": platform} if platform else {},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = like.rio.crs.to_epsg()
    proj.shape = [like.sizes["y"], like.sizes["x"]]
    proj.transform = list(like.rio.transform())[:6]
    return item


def add_asset(item: pystac.Item, key: str, href: str, factor: int, like: xr.DataArray) -> None:
    asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG, roles=["data"])
    item.add_asset(key, asset)
    if factor > 1:
        # A coarser asset carries its own shape and transform (like S2's 20 m SCL).
        asset_proj = ProjectionExtension.ext(asset)
        asset_proj.shape = [like.sizes["y"] // factor, like.sizes["x"] // factor]
        asset_proj.transform = list(like.rio.transform() * rasterio.Affine.scale(factor))[:6]


def write_items(scene: xr.Dataset, folder: Path) -> pystac.ItemCollection:
    """COGs and items for every S2 date, S1 date and the DEM of ``scene``."""
    like = scene["dem"]
    items = []
    for when in pd.DatetimeIndex(scene.time.values):
        item = make_item(f"S2_{when:%Y%m%d}", when, "sentinel-2b", like)
        s2 = scene["s2"].sel(time=when).values
        # L2A digital numbers: reflectance x 10000, 0 = no data.
        digital = np.nan_to_num(np.round(s2 * 10000), nan=0).clip(0, 65535).astype("uint16")
        for key, band in zip(S2_KEYS, digital, strict=True):
            add_asset(item, key, write_cog(folder / f"{item.id}_{key}.tif", band, like), 1, like)
        scl = scene["scl"].sel(time=when).values.astype("uint8")
        add_asset(item, "scl", write_cog(folder / f"{item.id}_scl.tif", scl, like, 2), 2, like)
        items.append(item)
    for when in pd.DatetimeIndex(scene.s1_time.values):
        item = make_item(f"S1_{when:%Y%m%d}", when, "sentinel-1a", like)
        db = scene["s1"].sel(s1_time=when).values
        for key, band in zip(("vv", "vh"), 10 ** (db / 10), strict=True):  # linear gamma0
            href = write_cog(folder / f"{item.id}_{key}.tif", band.astype("float32"), like, 2)
            add_asset(item, key, href, 2, like)
        items.append(item)
    dem_item = make_item("DEM", pd.Timestamp("2021-01-01"), None, like)
    href = write_cog(folder / "dem.tif", scene["dem"].values.astype("float32"), like)
    add_asset(dem_item, "data", href, 1, like)
    items.append(dem_item)
    return pystac.ItemCollection(items)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="scene side in pixels (even)")
    parser.add_argument("--out", type=Path, default=None, help="also write the cube to zarr")
    parser.add_argument("--keep", type=Path, default=None, help="keep COGs and items here")
    args = parser.parse_args(argv)

    scene = cloudfill.simulate_scene((args.size, args.size), dates=4, seed=2)
    folder = args.keep or Path(tempfile.mkdtemp(prefix="cloudfill-stac-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        collection = write_items(scene, folder)
        catalog = folder / "items.json"
        collection.save_object(dest_href=str(catalog))
        print(f"{len(collection)} items, {len(list(folder.glob('*.tif')))} COGs in {folder}")

        # What a user does with items from a STAC API search, here read from the file.
        items = pystac.ItemCollection.from_file(str(catalog))
        ds = cloudfill.cube_from_stac(
            items,
            s2_assets=S2_KEYS,
            s1_assets=("vv", "vh"),
            scl_asset="scl",
            dem_asset="data",
            s1_units="linear",
            chunksize=64,
        )
        ds.cloudfill.validate()
        print(ds)

        # The round trip: S2 exact to the digital-number step, S1 resampled 20 m -> 10 m.
        s2_err = float(abs(ds["s2"] - scene["s2"]).max())
        mask_agree = float((ds.cloudfill.cloud_mask() == scene.cloudfill.cloud_mask()).mean())
        print(f"S2 max |error| {s2_err:.5f} (digital numbers are 1e-4 steps)")
        print(f"cloud mask from the 20 m SCL agrees on {100 * mask_agree:.1f}% of pixels")
        print(f"S1 units {ds.s1.attrs['units']}, VV mean {float(ds.s1.sel(pol='VV').mean()):.2f}")
        if args.out is not None:
            cloudfill.write_cube(ds, args.out, overwrite=True)
            print(f"wrote {args.out}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
