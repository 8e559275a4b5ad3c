"""cube_from_stac on local COGs described by pystac Items written to tmp_path."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import rasterio
from pystac.extensions.projection import ProjectionExtension
from rasterio.transform import from_origin

from cloudfill import cube_from_stac, open_cube, write_cube
from cloudfill.errors import BandError, ParameterError, SourceError

EPSG = 32633
ORIGIN = (500000.0, 5000000.0)
SHAPE = (16, 20)  # rows, cols at 10 m


def _cog(path: Path, data: np.ndarray, res: float) -> str:
    transform = from_origin(*ORIGIN, res, res)
    profile = {
        "driver": "COG",
        "height": data.shape[0],
        "width": data.shape[1],
        "count": 1,
        "dtype": data.dtype,
        "crs": f"EPSG:{EPSG}",
        "transform": transform,
        "blocksize": 16,
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return str(path)


def _item(
    tmp: Path,
    item_id: str,
    when: datetime,
    assets: dict[str, np.ndarray],
    res: float,
    platform: str | None,
) -> pystac.Item:
    """An item whose assets are COGs at ``res`` m, except 2-D arrays half the size of the
    first one, which are written at twice the resolution (like S2's 20 m SCL)."""
    rows, cols = next(iter(assets.values())).shape
    left, top = ORIGIN
    item = pystac.Item(
        id=item_id,
        geometry=None,
        bbox=[14.99, 45.1, 15.01, 45.2],
        datetime=when,
        properties={"platform": platform} if platform else {},
    )
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.epsg = EPSG  # written as proj:code by the v2 extension; the loader maps it back
    proj.shape = [rows, cols]
    proj.transform = [res, 0.0, left, 0.0, -res, top]
    for key, data in assets.items():
        asset_res = res * rows / data.shape[0]
        href = _cog(tmp / f"{item_id}_{key}.tif", data, asset_res)
        asset = pystac.Asset(href=href, media_type=pystac.MediaType.COG)
        item.add_asset(key, asset)
        if asset_res != res:
            asset_proj = ProjectionExtension.ext(asset)
            asset_proj.shape = list(data.shape)
            asset_proj.transform = [asset_res, 0.0, left, 0.0, -asset_res, top]
    return item


@pytest.fixture(scope="module")
def stac_items(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("stac")
    rng = np.random.default_rng(7)
    ny, nx = SHAPE
    s2_values = {}
    items = []
    for i, (day, keys, platform) in enumerate(
        [
            (3, ("B02", "B03", "B04", "B08"), "sentinel-2a"),
            (1, ("blue", "green", "red", "nir"), None),  # Earth Search spelling, no platform
        ]
    ):
        bands = rng.integers(1, 10000, (4, ny, nx), dtype="uint16")
        s2_values[day] = bands
        assets = dict(zip(keys, bands, strict=True))
        assets["scl"] = np.full((ny // 2, nx // 2), 4 + i, dtype="uint8")  # 20 m
        items.append(
            _item(tmp, f"s2_{day}", datetime(2021, 5, day, tzinfo=UTC), assets, 10.0, platform)
        )
    ramp = np.broadcast_to(np.arange(nx // 2, dtype="float32"), (ny // 2, nx // 2)).copy()
    items.append(
        _item(
            tmp,
            "s1_2",
            datetime(2021, 5, 2, tzinfo=UTC),
            {"VV": ramp, "vh": 2 * ramp},
            20.0,
            "sentinel-1a",
        )
    )
    dem = np.full((ny, nx), 321.0, dtype="float32")
    items.append(_item(tmp, "dem", datetime(2021, 1, 1, tzinfo=UTC), {"data": dem}, 10.0, None))
    return {"items": items, "s2": s2_values, "tmp": tmp}


def test_stac_cube_layout_and_values(stac_items: dict) -> None:
    ds = cube_from_stac(stac_items["items"], dem_asset="data", s1_units="dB")
    assert ds.s2.dims == ("time", "band", "y", "x")
    assert list(ds.band.values) == ["B02", "B03", "B04", "B08"]
    assert list(ds.pol.values) == ["VV", "VH"]
    assert [str(t)[:10] for t in ds.time.values] == ["2021-05-01", "2021-05-03"]
    assert ds.rio.crs.to_epsg() == EPSG
    assert ds.sizes["y"] == SHAPE[0] and ds.sizes["x"] == SHAPE[1]
    # pixel centres of the 10 m S2 grid
    assert ds.x.values[0] == pytest.approx(ORIGIN[0] + 5)
    assert ds.y.values[0] == pytest.approx(ORIGIN[1] - 5)
    assert ds.s2.chunks is not None  # lazy
    c = ds.compute()
    # the alias-named item (May 1) is read into contract bands and scaled to reflectance
    np.testing.assert_allclose(
        c.s2.sel(time="2021-05-01").values, stac_items["s2"][1] / 1e4, rtol=1e-6
    )
    np.testing.assert_allclose(
        c.s2.sel(time="2021-05-03").values, stac_items["s2"][3] / 1e4, rtol=1e-6
    )
    assert c.scl.dtype == np.uint8 and set(np.unique(c.scl.values)) == {4, 5}
    np.testing.assert_allclose(c.dem.values, 321.0)
    assert c.s1.attrs["units"] == "dB"
    # VH was written as twice VV; bilinear resampling is linear, so that holds on the grid
    vv, vh = c.s1.isel(s1_time=0).values
    np.testing.assert_allclose(vh, 2 * vv, rtol=1e-5)
    assert not np.isnan(vv).any()


def test_stac_cube_writes_to_zarr(stac_items: dict, tmp_path: Path) -> None:
    ds = cube_from_stac(stac_items["items"], dem_asset="data")
    out = write_cube(ds, tmp_path / "stac.zarr")
    back = open_cube(out)
    assert back.rio.crs.to_epsg() == EPSG
    np.testing.assert_array_equal(back.s2.values, ds.s2.values)
    np.testing.assert_array_equal(back.x.values, ds.x.values)


def test_stac_from_itemcollection_json(stac_items: dict, tmp_path: Path) -> None:
    collection = pystac.ItemCollection(stac_items["items"])
    path = tmp_path / "items.json"
    path.write_text(json.dumps(collection.to_dict()))
    ds = cube_from_stac(json.loads(path.read_text()), scl_asset=None)
    assert "scl" not in ds and "s1" in ds and "dem" not in ds
    assert cube_from_stac(collection).sizes == ds.sizes


def test_stac_without_s2_items_is_a_source_error(stac_items: dict) -> None:
    s1_only = [i for i in stac_items["items"] if i.id.startswith("s1")]
    with pytest.raises(SourceError, match="no Sentinel-2 item"):
        cube_from_stac(s1_only)


def test_stac_sentinel2_item_missing_band_names_item_and_band(stac_items: dict) -> None:
    item = stac_items["items"][0].clone()
    del item.assets["B08"]
    with pytest.raises(BandError, match=r"s2_3.*'B08'"):
        cube_from_stac([item])


def test_stac_bad_parameters() -> None:
    with pytest.raises(ParameterError, match="s2_assets"):
        cube_from_stac([], s2_assets=("B02",))
    with pytest.raises(SourceError, match="not a STAC item"):
        cube_from_stac([42])


def test_stac_item_without_projection_metadata_is_a_source_error(stac_items: dict) -> None:
    item = copy.deepcopy(stac_items["items"][0].to_dict())  # not the shared fixture's
    for key in ("proj:code", "proj:epsg", "proj:shape", "proj:transform"):
        item["properties"].pop(key, None)
    with pytest.raises(SourceError, match="s2_3"):
        cube_from_stac([item])


# --- the STAC raster extension: per-item scale and offset ---------------------------------


def _with_raster_bands(item: pystac.Item, **fields: float) -> pystac.Item:
    """``item`` whose band assets declare ``fields`` (scale, offset) in raster:bands."""
    for key in ("B02", "B03", "B04", "B08"):
        item.assets[key].extra_fields["raster:bands"] = [{"data_type": "uint16", **fields}]
    return item


@pytest.fixture
def baselines(tmp_path: Path) -> dict[str, object]:
    """Three S2 dates of one series: processing baseline 04.00 (offset -0.1 declared), an
    older one (offset 0 declared), and one without raster:bands; DN 0 declared no data."""
    rng = np.random.default_rng(11)
    dn = rng.integers(1000, 9000, (4, *SHAPE), dtype="uint16")
    dn[:, 0, 0] = 0  # no data (the files declare nodata 0)
    items = []
    for day in (1, 2, 3):
        bands = dict(zip(("B02", "B03", "B04", "B08"), dn, strict=True))
        item = _item(tmp_path, f"s2_{day}", datetime(2022, 1, day, tzinfo=UTC), bands, 10, None)
        for key in bands:
            href = item.assets[key].href
            with rasterio.open(href, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
                dst.nodata = 0
        items.append(item)
    _with_raster_bands(items[0], scale=0.0001, offset=-0.1)
    _with_raster_bands(items[1], scale=0.0001, offset=0.0)
    return {"items": items, "dn": dn, "tmp": tmp_path}


def test_stac_applies_each_items_scale_and_offset(baselines: dict) -> None:
    items = baselines["items"]
    before = copy.deepcopy([item.to_dict() for item in items])  # to_dict shares properties
    ds = cube_from_stac(items, scl_asset=None)
    assert ds.s2.chunks is not None  # lazy: applied as stackstac reads
    assert [item.to_dict() for item in items] == before  # the caller's items are unchanged
    dn = baselines["dn"].astype("float64")
    got = ds.s2.values
    valid = np.s_[:, 1:, :]
    # baseline 04.00: DN / 10000 - 0.1; older: DN / 10000; none declared: the default 1/10000
    np.testing.assert_allclose(got[0][valid], (dn * 1e-4 - 0.1)[valid], atol=1e-6)
    np.testing.assert_allclose(got[1][valid], (dn * 1e-4)[valid], atol=1e-6)
    np.testing.assert_allclose(got[2][valid], (dn * 1e-4)[valid], atol=1e-6)
    # declared no data is masked before the offset: NaN, not -0.1
    assert np.isnan(got[:, :, 0, 0]).all()


def test_stac_scale_and_offset_precedence(baselines: dict) -> None:
    items = baselines["items"]
    # the keywords fill in for the item that declares nothing, and agree with the others
    ds = cube_from_stac(items[::2], scl_asset=None, s2_offset=-0.1, s2_scale=1e-4)
    dn = baselines["dn"][:, 1:, :].astype("float64")
    np.testing.assert_allclose(ds.s2.values[:, :, 1:, :], [dn * 1e-4 - 0.1] * 2, atol=1e-6)
    # an explicit offset the older item contradicts
    with pytest.raises(ParameterError, match=r"s2_offset=-0.1 contradicts STAC item 's2_2'"):
        cube_from_stac(items, s2_offset=-0.1)
    with pytest.raises(ParameterError, match=r"s2_scale=1 .*'s2_1'.*declares scale 0.0001"):
        cube_from_stac(items, s2_scale=1)
    # a declared value that is no number
    item = items[1].clone()
    item.assets["B03"].extra_fields["raster:bands"] = [{"scale": "1e-4x"}]
    with pytest.raises(SourceError, match=r"'s2_2'.*raster:bands scale of its B03 asset"):
        cube_from_stac([item])


def test_stac_scaling_from_the_cli(baselines: dict, capsys: pytest.CaptureFixture[str]) -> None:
    from cloudfill.cli import run

    tmp = baselines["tmp"]
    collection = tmp / "items.json"
    collection.write_text(json.dumps(pystac.ItemCollection(baselines["items"][:2]).to_dict()))
    out = tmp / "c.zarr"
    # --s2-offset's default (0) asks for nothing: each item's own offset is applied
    assert run(["make-cube", str(out), "--stac", str(collection)]) == 0
    got = open_cube(out).s2.isel(time=0, y=slice(1, None)).values
    expected = baselines["dn"][:, 1:, :] * 1e-4 - 0.1
    np.testing.assert_allclose(got, expected, atol=1e-6)
    capsys.readouterr()
    other = tmp / "d.zarr"
    assert run(["make-cube", str(other), "--stac", str(collection), "--s2-offset", "-0.1"]) == 2
    err = capsys.readouterr().err
    # (the CLI may spell the keyword as its flag)
    assert "-0.1 contradicts STAC item 's2_2'" in err and err.count("\n") == 1, err
    assert not other.exists()


def test_stac_s1_raster_bands_scale_is_applied(stac_items: dict) -> None:
    items = [item.clone() for item in stac_items["items"]]
    s1 = next(item for item in items if item.id.startswith("s1"))
    for key in ("VV", "vh"):
        s1.assets[key].extra_fields["raster:bands"] = [{"scale": 2.0}]
    plain = cube_from_stac(stac_items["items"], scl_asset=None).s1.values
    scaled = cube_from_stac(items, scl_asset=None).s1.values
    np.testing.assert_allclose(scaled, 2 * plain, rtol=1e-6)


def test_stac_s2_no_data_is_masked_before_the_offset(tmp_path: Path) -> None:
    # Files without a nodata tag: DN 0 (L2A no data: declared, or not) and a declared nodata
    # are NaN, not -0.1 or 6.45, as the GeoTIFF loader reads DN 0.
    dn = np.random.default_rng(3).integers(1000, 9000, (4, *SHAPE), dtype="uint16")
    dn[:, 0, 0] = 0
    dn[:, 0, 1] = 65535
    bands = dict(zip(("B02", "B03", "B04", "B08"), dn, strict=True))
    items = [
        _item(tmp_path, f"s2_{day}", datetime(2022, 1, day, tzinfo=UTC), bands, 10, None)
        for day in (1, 2, 3)
    ]
    _with_raster_bands(items[0], scale=0.0001, offset=-0.1, nodata=0)
    _with_raster_bands(items[1], scale=0.0001, offset=-0.1, nodata=65535)
    got = cube_from_stac(items, scl_asset=None).s2.values
    assert np.isnan(got[:, :, 0, 0]).all()  # DN 0, declared or not
    assert np.isnan(got[1, :, 0, 1]).all() and np.allclose(got[2, :, 0, 1], 6.5535)
    for t, offset in enumerate((-0.1, -0.1, 0.0)):
        np.testing.assert_allclose(got[t, :, 1:], dn[:, 1:] * 1e-4 + offset, atol=1e-6)


def test_stac_keeps_each_s2_dates_sun_from_the_items(stac_items: dict) -> None:
    """``view:sun_*`` (or Sentinel-2's mean solar zenith and azimuth) become ``sun_elevation``
    and ``sun_azimuth`` along ``time``, NaN for a date whose items do not say; the slopes'
    sunlight then uses them (:mod:`cloudfill.core.illumination`)."""
    from cloudfill.core.illumination import light_geometry

    items = [item.clone() for item in stac_items["items"]]
    by_id = {item.id: item for item in items}
    by_id["s2_1"].properties.update({"view:sun_elevation": 61.5, "view:sun_azimuth": 141.0})
    ds = cube_from_stac(items, dem_asset="data", s1_units="dB")
    assert ds["sun_elevation"].dims == ("time",) and ds["sun_elevation"].attrs["units"] == "degree"
    np.testing.assert_allclose(ds["sun_elevation"].values, [61.5, np.nan])
    np.testing.assert_allclose(ds["sun_azimuth"].values, [141.0, np.nan])
    assert light_geometry(ds).suns == (("2021-05-01T00:00:00", 61.5, 141.0),)
    by_id["s2_3"].properties.update({"s2:mean_solar_zenith": 30.0, "s2:mean_solar_azimuth": 150.0})
    ds = cube_from_stac(items, dem_asset="data", s1_units="dB")
    np.testing.assert_allclose(ds["sun_elevation"].values, [61.5, 60.0])
    np.testing.assert_allclose(ds["sun_azimuth"].values, [141.0, 150.0])
    # without any: no coordinates
    assert "sun_elevation" not in cube_from_stac(stac_items["items"], dem_asset="data").coords


def test_stac_sun_azimuths_of_one_date_average_as_directions() -> None:
    from cloudfill.cube.sun import sun_angles

    when = "2021-05-01T10:00:00Z"
    items = [
        {"properties": {"datetime": when, "view:sun_elevation": 40.0, "view:sun_azimuth": a}}
        for a in (359.0, 1.0)
    ]
    items.append({"properties": {"datetime": None, "view:sun_elevation": 1.0}})  # skipped
    coords = sun_angles(items, pd.DatetimeIndex(["2021-05-01T10:00:00", "2021-05-02"]))
    np.testing.assert_allclose(coords["sun_elevation"][1], [40.0, np.nan])
    az = coords["sun_azimuth"][1]
    assert min(az[0], 360.0 - az[0]) < 1e-9 and np.isnan(az[1])
