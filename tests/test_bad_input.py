"""Bad input answered as bad input (issue 17, defects 6 and 9): exit 2, a one-line message
naming the problem, nothing written, the inputs unchanged.

- an S1 or DEM source from another place (GeoTIFF or STAC) and a second CRS carried the
  rioxarray way on one variable;
- an output folder that is a file or read-only, a STAC asset whose file does not exist, a
  zarr chunk that does not decode.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

import cloudfill
from cloudfill import cube_from_geotiffs, cube_from_stac, validate
from cloudfill._outputs import check_writable
from cloudfill.cli import run
from cloudfill.cube.zarr_io import store_digest
from cloudfill.errors import (
    CRSMismatchError,
    GridMismatchError,
    OutputError,
    ParameterError,
    SourceError,
)
from tests.test_stac import _item

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

UTM = "EPSG:32633"
LEFT, TOP = 500000.0, 5000000.0
NY, NX = 20, 24


def _tif(path: Path, data: np.ndarray, crs: str, transform) -> Path:
    data = data[None] if data.ndim == 2 else data
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def tifs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("bad_tifs")
    rng = np.random.default_rng(0)
    s2 = rng.integers(1, 10000, (4, NY, NX), dtype="uint16")
    s1 = rng.normal(-12, 2, (2, NY, NX)).astype("float32")
    dem = np.full((NY, NX), 100.0, "float32")
    here = from_origin(LEFT, TOP, 10, 10)
    far = from_origin(LEFT + 50_000, TOP, 10, 10)  # 50 km east: no overlap
    return {
        "s2": _tif(tmp / "s2.tif", s2, UTM, here),
        "s1": _tif(tmp / "s1.tif", s1, UTM, here),
        "dem": _tif(tmp / "dem.tif", dem, UTM, here),
        "s1_far": _tif(tmp / "s1_far.tif", s1, UTM, far),
        # the right numbers labelled with the wrong CRS (the next UTM zone): far away
        "dem_far": _tif(tmp / "dem_far.tif", dem, "EPSG:32634", here),
        # a third of the grid only
        "dem_third": _tif(tmp / "dem_third.tif", dem[:, : NX // 3], UTM, here),
    }


def _args(tifs: dict[str, Path], **over: Path) -> list[str]:
    files = {"s1": tifs["s1"], "dem": tifs["dem"], **over}
    return [
        "--s2",
        f"2021-06-01={tifs['s2']}",
        "--s1",
        f"2021-06-02={files['s1']}",
        "--dem",
        str(files["dem"]),
    ]


# --- defect 6: sources from the wrong place ------------------------------------------------


@pytest.mark.parametrize(
    ("over", "named", "share"),
    [
        ({"dem": "dem_far"}, "DEM file .*dem_far.tif", "0 %"),
        ({"dem": "dem_third"}, "DEM file .*dem_third.tif", "33 %"),
        ({"s1": "s1_far"}, "S1 date 2021-06-02 file .*s1_far.tif", "0 %"),
    ],
)
def test_make_cube_refuses_a_source_from_elsewhere(
    tifs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    over: dict[str, str],
    named: str,
    share: str,
) -> None:
    out = tmp_path / "c.zarr"
    before = {k: p.read_bytes() for k, p in tifs.items()}
    args = _args(tifs, **{k: tifs[v] for k, v in over.items()})
    assert run(["make-cube", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert re.search(named + f" covers {share} of the S2 grid", err), err
    assert "at least 50 % is required" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert {k: p.read_bytes() for k, p in tifs.items()} == before


def test_geotiff_coverage_threshold_is_a_keyword(tifs: dict[str, Path]) -> None:
    kwargs = {"s1": None, "s2": {"2021-06-01": tifs["s2"]}, "dem": tifs["dem_third"]}
    with pytest.raises(GridMismatchError, match=r"dem_third\.tif covers 33 %"):
        cube_from_geotiffs(**kwargs)
    ds = cube_from_geotiffs(**kwargs, min_coverage=0.3, chunks=None)
    assert np.isnan(ds.dem.values[:, NX // 3 :]).all()
    # a source covering the grid passes, whatever its CRS
    assert "dem" in cube_from_geotiffs(**{**kwargs, "dem": tifs["dem"]})


def _stac_items(tmp: Path, s1_east: float = 0.0, dem_east: float = 0.0) -> list:
    ny, nx = 16, 20
    bands = {b: np.full((ny, nx), 1000 + i, "uint16") for i, b in enumerate(cloudfill.BANDS)}
    s2 = _item(tmp, "s2", datetime(2021, 5, 1, tzinfo=UTC), bands, 10.0, "sentinel-2a")
    ramp = np.ones((ny, nx), "float32")
    s1 = _item(tmp, "s1", datetime(2021, 5, 2, tzinfo=UTC), {"vv": ramp, "vh": ramp}, 10.0, None)
    dem = _item(tmp, "dem", datetime(2021, 1, 1, tzinfo=UTC), {"data": ramp}, 10.0, None)
    for item, east in ((s1, s1_east), (dem, dem_east)):
        transform = item.properties["proj:transform"]
        item.properties["proj:transform"] = [*transform[:2], transform[2] + east, *transform[3:]]
    return [s2, s1, dem]


@pytest.mark.parametrize(
    ("shift", "named"),
    [
        ({"s1_east": 30_000.0}, r"S1 date 2021-05-02: STAC items \['s1'\]"),
        ({"dem_east": 150.0}, r"DEM: STAC items \['dem'\].* covers 25 %"),
    ],
)
def test_stac_refuses_items_from_elsewhere(tmp_path: Path, shift: dict, named: str) -> None:
    items = _stac_items(tmp_path, **shift)
    with pytest.raises(GridMismatchError, match=named):
        cube_from_stac(items, dem_asset="data")
    (tmp_path / "ok").mkdir()
    assert "dem" in cube_from_stac(_stac_items(tmp_path / "ok"), dem_asset="data")


def test_geotiff_s1_is_judged_by_the_union_of_its_dates(
    tifs: dict[str, Path], tmp_path: Path
) -> None:
    # Two swath-edge dates: 10 of 24 columns (42 %) and the other 14 (58 %).
    s1 = np.random.default_rng(1).normal(-12, 2, (2, NY, NX)).astype("float32")
    west = _tif(tmp_path / "s1_west.tif", s1[:, :, :10], UTM, from_origin(LEFT, TOP, 10, 10))
    east = _tif(tmp_path / "s1_east.tif", s1[:, :, 10:], UTM, from_origin(LEFT + 100, TOP, 10, 10))
    s2 = {"2021-06-01": tifs["s2"]}
    ds = cube_from_geotiffs(s1={"2021-06-02": west, "2021-06-14": east}, s2=s2, chunks=None)
    # each date keeps its own part; the rest of it is no data
    assert np.isnan(ds.s1.values[0, :, :, 10:]).all() and np.isnan(ds.s1.values[1, :, :, :10]).all()
    np.testing.assert_allclose(ds.s1.values[0, :, :, :10], s1[:, :, :10])
    # a single swath-edge date alone, and dates that cover the same edge, are refused
    with pytest.raises(
        GridMismatchError, match=r"S1 date 2021-06-02 file .*s1_west\.tif covers 42 %"
    ):
        cube_from_geotiffs(s1={"2021-06-02": west}, s2=s2)
    west2 = _tif(tmp_path / "s1_west2.tif", s1[:, :, :10], UTM, from_origin(LEFT, TOP, 10, 10))
    same_edge = {"2021-06-02": west, "2021-06-14": west2, "2021-06-26": west}
    with pytest.raises(GridMismatchError) as caught:
        cube_from_geotiffs(s1=same_edge, s2=s2)
    message = str(caught.value)
    assert "S1, its 3 dates together (2021-06-02 to 2021-06-26), files " in message, message
    assert f"files {west}, {west2} covers 42 % of the S2 grid" in message, message
    assert "the union of its footprints" in message
    assert "s1" in cube_from_geotiffs(s1=same_edge, s2=s2, min_coverage=0.4)


def _s1_item(tmp: Path, day: int, east: float) -> object:
    ramp = np.ones((16, 20), "float32")
    when = datetime(2021, 5, day, tzinfo=UTC)
    item = _item(tmp, f"s1_{day}", when, {"vv": ramp, "vh": ramp}, 10.0, "sentinel-1a")
    transform = item.properties["proj:transform"]
    item.properties["proj:transform"] = [*transform[:2], transform[2] + east, *transform[3:]]
    return item


def test_stac_s1_is_judged_by_the_union_of_its_dates(tmp_path: Path) -> None:
    s2 = _stac_items(tmp_path)[0]  # 20 columns of 10 m
    west, east = _s1_item(tmp_path, 2, -120.0), _s1_item(tmp_path, 8, 120.0)  # 8 columns each
    ds = cube_from_stac([s2, west, east], scl_asset=None)
    assert ds.sizes["s1_time"] == 2
    with pytest.raises(GridMismatchError, match=r"S1 date 2021-05-08: STAC items \['s1_8'\]"):
        cube_from_stac([s2, east])
    east_again = _s1_item(tmp_path, 14, 120.0)
    with pytest.raises(GridMismatchError) as caught:
        cube_from_stac([s2, east, east_again])
    message = str(caught.value)
    assert "S1, its 2 dates together (2021-05-08 to 2021-05-14): STAC items ['s1_8', 's1_14']" in (
        message
    )
    assert "covers 40 % of the S2 grid" in message
    assert "s1" in cube_from_stac([s2, east, east_again], min_coverage=0.4)
    with pytest.raises(ParameterError, match="min_coverage"):
        cube_from_stac([s2], min_coverage=1.5)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_second_crs_on_one_variable_is_refused(tmp_path: Path, capsys) -> None:
    ds = cloudfill.simulate_scene((16, 16), dates=2, seed=0)
    # the rioxarray way: dem names its own grid-mapping coordinate, in another CRS
    bad = ds.assign(dem=ds["dem"].rio.write_crs("EPSG:4326", grid_mapping_name="dem_ref"))
    with pytest.raises(CRSMismatchError, match=r"'dem' carries CRS EPSG:4326.*EPSG:32645"):
        validate(bad)
    # written by plain xarray (not cloudfill) and read back: rioxarray then finds no CRS at
    # all for the cube; the message still names the variable
    path = tmp_path / "two_crs.zarr"
    bad.to_zarr(path, zarr_format=3, consolidated=True)
    digest = store_digest(path)
    assert run(["info", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "variable 'dem' carries CRS EPSG:4326" in err and err.count("\n") == 1
    out = tmp_path / "out.zarr"
    assert run(["fill-series", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "'dem' carries CRS EPSG:4326" in capsys.readouterr().err
    assert not out.exists() and store_digest(path) == digest
    # write_cube validates first: nothing written
    with pytest.raises(CRSMismatchError):
        cloudfill.write_cube(bad, tmp_path / "never.zarr")
    assert not (tmp_path / "never.zarr").exists()


# --- defect 9: outputs that cannot be written, corrupt chunks, missing STAC files ---------


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bad_cube") / "c.zarr"
    assert run(["make-cube", str(path), "--simulate", "--shape", "24x24", "--dates", "3"]) == 0
    return path


def _verbs(cube: Path, out: Path) -> list[list[str]]:
    return [
        ["make-cube", str(out / "m.zarr"), "--simulate", "--shape", "16x16", "--dates", "2"],
        ["preprocess", str(cube), str(out / "p.zarr"), "--no-progress"],
        ["fill-series", str(cube), "--out", str(out / "f.zarr"), "--no-progress"],
        ["synthesize", str(cube), "2023-05-10", "--out", str(out / "s.tif")],
        ["evaluate", str(cube), "--out", str(out / "report")],
    ]


def test_output_folder_that_is_a_file(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("keep")
    digest = store_digest(cube)
    for args in _verbs(cube, blocker / "sub"):
        assert run(args) == 2, args
        err = capsys.readouterr().err
        assert f"{blocker} is a file, not a folder" in err, (args, err)
        assert err.count("\n") == 1
    assert blocker.read_text() == "keep" and sorted(tmp_path.iterdir()) == [blocker]
    assert store_digest(cube) == digest


def test_read_only_output_folder(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the check see the folder as read-only
        real = os.access
        monkeypatch.setattr(
            "cloudfill._outputs.os.access",
            lambda p, mode: False if Path(p) == folder and mode & os.W_OK else real(p, mode),
        )
    try:
        digest = store_digest(cube)
        for args in _verbs(cube, folder):
            assert run(args) == 2, args
            err = capsys.readouterr().err
            assert f"the folder {folder} is read-only" in err, (args, err)
        assert list(folder.iterdir()) == [] and store_digest(cube) == digest
        with pytest.raises(OutputError, match="read-only"):
            check_writable(folder / "new" / "deeper.zarr")
    finally:
        folder.chmod(0o755)


def test_missing_output_folders_are_created(cube: Path, tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "p.zarr"
    assert run(["preprocess", str(cube), str(out), "--no-progress"]) == 0
    assert cloudfill.open_cube(out).sizes["y"] == 24


def test_stac_asset_with_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    items = _stac_items(tmp_path)
    missing = Path(items[1].assets["vh"].href)
    missing.unlink()
    collection = tmp_path / "items.json"
    collection.write_text(
        json.dumps({"type": "FeatureCollection", "features": [item.to_dict() for item in items]})
    )
    with pytest.raises(SourceError, match=f"'s1'.*VH asset, {missing}, does not exist"):
        cube_from_stac(items)
    out = tmp_path / "c.zarr"
    assert run(["make-cube", str(out), "--stac", str(collection)]) == 2
    err = capsys.readouterr().err
    assert f"{missing}, does not exist" in err and err.count("\n") == 1
    assert not out.exists()


def _corrupt(cube: Path, tmp_path: Path, chunk: str) -> tuple[Path, Path]:
    """A copy of ``cube`` with the chunk file ``chunk`` (relative) overwritten by garbage."""
    bad = tmp_path / "bad.zarr"
    shutil.copytree(cube, bad)
    path = bad / chunk
    assert path.is_file()
    path.write_bytes(b"not zstd data")
    return bad, path.resolve()


def test_corrupt_chunk_in_fill_series_cli(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An S2 chunk: met by the value check's sample, the job's first read.
    bad, chunk = _corrupt(cube, tmp_path, "s2/c/1/0/0/0")
    digest = store_digest(bad)
    out = tmp_path / "f.zarr"
    assert run(["fill-series", str(bad), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: corrupt zarr data") and err.count("\n") == 1, err
    assert "Traceback" not in err and "internal error" not in err
    assert f"variable 's2', chunk (1, 0, 0, 0) (file {chunk}) does not decode" in err, err
    assert not out.exists() and store_digest(bad) == digest


def test_corrupt_chunk_in_fill_to_zarr(cube: Path, tmp_path: Path) -> None:
    # The DEM: read only by the synthesis, while a date is written (the job's last site).
    from cloudfill.fill.job import fill_to_zarr

    bad, chunk = _corrupt(cube, tmp_path, "dem/c/0/0")
    with pytest.raises(SourceError) as caught:
        fill_to_zarr(bad, tmp_path / "f.zarr")
    message = str(caught.value)
    assert f"store {bad.resolve()}, variable 'dem', chunk (0, 0) (file {chunk})" in message
    assert "does not decode (RuntimeError: Zstd" in message
