"""cube_from_geotiffs: alignment onto the S2 grid, values, and typed errors."""

from __future__ import annotations

import datetime as dt
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rioxarray
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from cloudfill import cube_from_geotiffs, open_cube, validate, write_cube
from cloudfill.errors import (
    BandError,
    GridMismatchError,
    MissingCRSError,
    ParameterError,
    SourceError,
    TimeAxisError,
)

UTM = "EPSG:32633"
LEFT, TOP = 500000.0, 5000000.0
NY, NX = 20, 24  # S2 grid, 10 m
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# cloudfill.cube.geotiff filters this rasterio warning at import; pytest resets warning
# filters for each test, so the tests repeat it.
pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def write_tif(path: Path, data: np.ndarray, crs: str | None, transform, nodata=None) -> Path:
    data = np.asarray(data)
    data = data[None] if data.ndim == 2 else data
    profile = {
        "driver": "GTiff",
        "height": data.shape[1],
        "width": data.shape[2],
        "count": data.shape[0],
        "dtype": data.dtype,
        "transform": transform,
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """S2 (uint16, 10 m UTM), S1 (20 m UTM, ramps), cloud (20 m), DEM (EPSG:4326, 1")."""
    tmp = tmp_path_factory.mktemp("geotiff")
    rng = np.random.default_rng(1)
    s2_grid = from_origin(LEFT, TOP, 10, 10)
    s2a = rng.integers(1, 10000, (4, NY, NX), dtype="uint16")
    s2a[:, 0, 0] = 0  # nodata
    s2b = rng.integers(1, 10000, (4, NY, NX), dtype="uint16")
    files = {
        "s2a": write_tif(tmp / "s2a.tif", s2a, UTM, s2_grid, nodata=0),
        # date 2 as single-band files, in contract order
        "s2b": [
            write_tif(tmp / f"s2b_{b}.tif", s2b[i], UTM, s2_grid)
            for i, b in enumerate(("B02", "B03", "B04", "B08"))
        ],
    }
    # S1 at 20 m: VV is a ramp along x (column index), VH along y (row index)
    cols = np.broadcast_to(np.arange(NX // 2, dtype="float32"), (NY // 2, NX // 2))
    rows = np.broadcast_to(np.arange(NY // 2, dtype="float32")[:, None], (NY // 2, NX // 2))
    files["s1"] = write_tif(
        tmp / "s1.tif", np.stack([cols, rows]), UTM, from_origin(LEFT, TOP, 20, 20)
    )
    cloud = rng.integers(0, 2, (NY // 2, NX // 2)).astype("uint8")
    files["cloud"] = write_tif(tmp / "cloud.tif", cloud, UTM, from_origin(LEFT, TOP, 20, 20))
    lulc = rng.integers(1, 6, (NY // 2, NX // 2)).astype("uint8")
    files["lulc"] = write_tif(tmp / "lulc.tif", lulc, UTM, from_origin(LEFT, TOP, 20, 20))
    # DEM in lon/lat at 1 arc-second, covering the S2 area with a margin; linear in latitude
    # (1 m per arc-second) so bilinear resampling reproduces it.
    west, south, east, north = transform_bounds(
        UTM, "EPSG:4326", LEFT, TOP - NY * 10, LEFT + NX * 10, TOP
    )
    res = 1 / 3600
    lon0, lat0 = west - 4 * res, north + 4 * res
    dem_ny, dem_nx = int((north - south) / res) + 9, int((east - west) / res) + 9
    lat = lat0 - (np.arange(dem_ny) + 0.5) * res
    dem = np.broadcast_to(((lat - south) * 3600 + 100)[:, None], (dem_ny, dem_nx)).astype("float32")
    files["dem"] = write_tif(tmp / "dem.tif", dem, "EPSG:4326", from_origin(lon0, lat0, res, res))
    return {
        "tmp": tmp,
        "files": files,
        "s2a": s2a,
        "s2b": s2b,
        "cloud": cloud,
        "lulc": lulc,
        "dem_south": south,
    }


def build(scene: dict, **kwargs) -> object:
    f = scene["files"]
    args = {
        "s1": {"2021-06-02": f["s1"]},
        # keys in any order and any date type; sorted on output
        "s2": {dt.date(2021, 6, 5): f["s2b"], "2021-06-01": f["s2a"]},
        "dem": f["dem"],
        "cloud": {"2021-06-01": f["cloud"], "2021-06-05": f["cloud"]},
        "lulc": f["lulc"],
    }
    args.update(kwargs)
    return cube_from_geotiffs(**args)


def test_cube_is_lazy_and_on_the_s2_grid(scene: dict) -> None:
    ds = build(scene, chunks=8)
    validate(ds, require=["s2", "s1", "dem", "cloud", "lulc"])
    assert all(ds[v].chunks is not None for v in ds.data_vars)
    assert ds.s2.chunks[1] == (4,) and ds.s2.chunks[2] == (8, 8, 4)
    reference = rioxarray.open_rasterio(scene["files"]["s2a"])
    np.testing.assert_array_equal(ds.x.values, reference.x.values)
    np.testing.assert_array_equal(ds.y.values, reference.y.values)
    assert ds.rio.crs == reference.rio.crs
    assert [str(t)[:10] for t in ds.time.values] == ["2021-06-01", "2021-06-05"]


def test_s2_values_scaled_and_nodata_is_nan(scene: dict) -> None:
    ds = build(scene, chunks=None)
    assert isinstance(ds.s2.data, np.ndarray)
    expected = scene["s2a"] / np.float32(10000)
    got = ds.s2.isel(time=0).values
    assert np.isnan(got[:, 0, 0]).all()
    np.testing.assert_allclose(got[:, 1:, 1:], expected[:, 1:, 1:], rtol=1e-6)
    np.testing.assert_allclose(
        ds.s2.isel(time=1).values, scene["s2b"] / np.float32(10000), rtol=1e-6
    )


def test_s1_bilinear_from_20m(scene: dict) -> None:
    s1 = build(scene, chunks=None).s1.isel(s1_time=0)
    assert s1.attrs["units"] == "dB"
    # a 10 m pixel centre at column i lies at 20 m column i/2 - 1/4: a ramp interpolates to it
    expected = np.arange(NX) / 2 - 0.25
    np.testing.assert_allclose(
        s1.sel(pol="VV").values[:, 1:-1], np.broadcast_to(expected, (NY, NX))[:, 1:-1], atol=1e-5
    )
    expected_rows = np.arange(NY) / 2 - 0.25
    np.testing.assert_allclose(s1.sel(pol="VH").values[1:-1, 3], expected_rows[1:-1], atol=1e-5)


def test_masks_and_classes_nearest(scene: dict) -> None:
    ds = build(scene, chunks=None)
    blocks = np.kron(scene["cloud"], np.ones((2, 2), dtype="uint8")).astype(bool)
    assert ds.cloud.dtype == bool
    np.testing.assert_array_equal(ds.cloud.isel(time=0).values, blocks)
    np.testing.assert_array_equal(
        ds.lulc.values, np.kron(scene["lulc"], np.ones((2, 2), dtype="uint8"))
    )
    assert np.issubdtype(ds.lulc.dtype, np.integer)


def test_dem_reprojected_from_lonlat(scene: dict) -> None:
    ds = build(scene, chunks=None)
    xx, yy = np.meshgrid(ds.x.values, ds.y.values)
    _, lat = warp_transform(UTM, "EPSG:4326", xx.ravel(), yy.ravel())
    expected = ((np.asarray(lat) - scene["dem_south"]) * 3600 + 100).reshape(xx.shape)
    assert ds.dem.dtype == np.float32 and not np.isnan(ds.dem.values).any()
    # GDAL's approximate transformer is within 1/8 px (1/8 m here) of exact
    np.testing.assert_allclose(ds.dem.values, expected, atol=0.2)


def test_integer_dem_partial_cover_and_nodata_become_nan(scene: dict) -> None:
    dem = np.arange(NY * (NX // 2), dtype="int16").reshape(NY, NX // 2)
    dem[3, 4] = -32768
    path = write_tif(
        scene["tmp"] / "dem_half.tif", dem, UTM, from_origin(LEFT, TOP, 10, 10), -32768
    )
    got = build(scene, dem=path, chunks=None).dem.values
    assert got.dtype == np.float32
    assert np.isnan(got[:, NX // 2 :]).all()  # outside the file
    assert np.isnan(got[3, 4])  # the file's nodata
    expected = dem.astype("float32")
    expected[3, 4] = np.nan
    np.testing.assert_array_equal(got[:, : NX // 2], expected)


def test_round_trip_through_zarr(scene: dict, tmp_path: Path) -> None:
    ds = build(scene)
    path = write_cube(ds, tmp_path / "cube.zarr")
    back = open_cube(path)
    assert back.rio.crs == ds.rio.crs
    for name in ds.data_vars:
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.s1.attrs["units"] == "dB"


def test_missing_crs_names_file(scene: dict) -> None:
    path = write_tif(
        scene["tmp"] / "nocrs.tif",
        np.zeros((4, NY, NX), "uint16"),
        None,
        from_origin(LEFT, TOP, 10, 10),
    )
    with pytest.raises(MissingCRSError, match="nocrs.tif"):
        cube_from_geotiffs(s1=None, s2={"2021-06-01": path})


def test_wrong_band_count_names_file_and_date(scene: dict) -> None:
    path = write_tif(
        scene["tmp"] / "three.tif",
        np.zeros((3, NY, NX), "uint16"),
        UTM,
        from_origin(LEFT, TOP, 10, 10),
    )
    with pytest.raises(BandError, match=r"2021-06-01.*three\.tif.*3 bands"):
        cube_from_geotiffs(s1=None, s2={"2021-06-01": path})
    with pytest.raises(BandError, match=r"S1 date 2021-06-02: 3 files"):
        build(scene, s1={"2021-06-02": [scene["files"]["s1"]] * 3})


def test_unreadable_file_names_path(scene: dict) -> None:
    bad = scene["tmp"] / "garbage.tif"
    bad.write_text("not a tiff")
    with pytest.raises(SourceError, match="garbage.tif"):
        build(scene, dem=bad)
    with pytest.raises(SourceError, match="missing.tif"):
        build(scene, s1={"2021-06-02": scene["tmp"] / "missing.tif"})


def test_s2_grid_mismatch_names_date(scene: dict) -> None:
    shifted = write_tif(
        scene["tmp"] / "shifted.tif", scene["s2b"], UTM, from_origin(LEFT + 10, TOP, 10, 10)
    )
    with pytest.raises(GridMismatchError, match=r"2021-06-09.*shifted\.tif"):
        cube_from_geotiffs(s1=None, s2={"2021-06-01": scene["files"]["s2a"], "2021-06-09": shifted})


def test_date_errors(scene: dict) -> None:
    f = scene["files"]
    with pytest.raises(TimeAxisError, match="2021-06-07"):
        build(scene, cloud={"2021-06-01": f["cloud"], "2021-06-07": f["cloud"]})
    with pytest.raises(TimeAxisError, match="given twice"):
        build(scene, s2={"2021-06-01": f["s2a"], dt.datetime(2021, 6, 1): f["s2a"]})
    with pytest.raises(TimeAxisError, match="not-a-date"):
        build(scene, s1={"not-a-date": f["s1"]})
    with pytest.raises(ParameterError, match="s1_units"):
        build(scene, s1_units="db")


@pytest.mark.shared_data
def test_bigearthnet_pair() -> None:
    root = SHARED_DATA / "bigearthnet_pairs"
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    s1_dir = sorted((root / "BigEarthNet-S1-Example").iterdir())[0]
    meta = json.loads(next(s1_dir.glob("*_labels_metadata.json")).read_text())
    s2_dir = root / "BigEarthNet-S2-Example" / meta["corresponding_s2_patch"]
    s2_meta = json.loads(next(s2_dir.glob("*_labels_metadata.json")).read_text())
    ds = cube_from_geotiffs(
        s1={meta["acquisition_time"]: [next(s1_dir.glob(f"*_{p}.tif")) for p in ("VV", "VH")]},
        s2={
            s2_meta["acquisition_date"]: [
                next(s2_dir.glob(f"*_{b}.tif")) for b in ("B02", "B03", "B04", "B08")
            ]
        },
    )
    validate(ds, require=["s2", "s1"])
    assert ds.sizes["x"] == 120 and ds.sizes["y"] == 120
    c = ds.compute()
    assert 0 < float(c.s2.mean()) < 1
    assert -40 < float(c.s1.mean()) < 10  # dB
    assert not c.s1.isnull().any()


def test_l2a_zero_is_no_data_and_the_offset_applies(scene: dict, tmp_path: Path) -> None:
    # Issue 17, 4: DN 0 of integer S2 is no data even when the file declares no nodata, and
    # baseline 04.00+ products need their offset (DN = reflectance x 10000 + 1000).
    dn = scene["s2b"].copy()
    dn[:, 3, 4] = 0
    path = write_tif(tmp_path / "l2a.tif", dn, UTM, from_origin(LEFT, TOP, 10, 10))
    plain = build(scene, s2={"2021-06-01": path}, cloud=None, s1=None).s2.isel(time=0)
    assert bool(plain[:, 3, 4].isnull().all()) and bool(plain[:, 3, 5].notnull().all())
    shifted = build(scene, s2={"2021-06-01": path}, cloud=None, s1=None, s2_offset=-0.1)
    expected = dn[:, 5, 5].astype("float32") * np.float32(1e-4) - np.float32(0.1)
    np.testing.assert_allclose(shifted.s2.isel(time=0, y=5, x=5).values, expected, rtol=1e-6)


def test_baseline_04_dates_without_the_offset_warn(scene: dict) -> None:
    """Integer L2A from 2022-01-25 on carries DN + 1000: scaling it without the offset reads
    0.1 too bright, which no value check can tell from a bright scene; so it warns."""
    f = scene["files"]
    later = {"s2": {"2023-06-01": f["s2a"]}, "cloud": None, "s1": None}
    with pytest.warns(UserWarning, match="s2_offset=-0.1"):
        build(scene, **later)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        build(scene, **later, s2_offset=-0.1)  # said
        build(scene, s2={"2021-06-01": f["s2a"]}, cloud=None, s1=None)  # before 04.00
        build(scene, **later, s2_scale=1e-4)  # a scale given: the user chose
