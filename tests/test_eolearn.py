"""cube_from_eolearn on a tiny synthetic patch and, when present, the shared Slovenia patch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cloudfill import validate
from cloudfill.cube.eolearn import cube_from_eolearn
from cloudfill.errors import SourceError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALL_BANDS = [
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
]


def write_patch(root: Path, ny: int = 6, nx: int = 5) -> np.ndarray:
    root.mkdir(parents=True)
    rng = np.random.default_rng(5)
    bands = rng.random((2, ny, nx, 13), dtype="float32")
    dates = ["2020-01-05T10:00:00", "2020-01-15T10:00:00"]
    np.save(root / "S2_L1C_13bands_t0-4_chronological.npy", bands)
    (root / "S2_L1C_13bands_t0-4_chronological.json").write_text(
        json.dumps({"dates": dates, "bands": ALL_BANDS})
    )
    (root / "timestamps.json").write_text(json.dumps(["2020-01-01T10:00:00", *dates]))
    clm = np.zeros((3, ny, nx, 1), "uint8")
    clm[2, 0, 0] = 1
    np.save(root / "CLM.npy", clm)
    is_data = np.ones((3, ny, nx, 1), "uint8")
    is_data[1, 1, 1] = 0
    np.save(root / "IS_DATA.npy", is_data)
    np.save(root / "DEM.npy", np.full((ny, nx, 1), 700, "float32"))
    np.save(root / "LULC.npy", np.ones((ny, nx, 1), "uint16"))
    bbox = {
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32633"}},
        "type": "Polygon",
        "coordinates": [
            [
                [1000, 2000],
                [1000, 2000 + 10 * ny],
                [1000 + 10 * nx, 2000 + 10 * ny],
                [1000 + 10 * nx, 2000],
                [1000, 2000],
            ]
        ],
    }
    (root / "bbox.geojson").write_text(json.dumps(bbox))
    return bands


def test_synthetic_patch(tmp_path: Path) -> None:
    bands = write_patch(tmp_path / "patch" / "current")
    ds = cube_from_eolearn(tmp_path / "patch")
    assert ds.rio.crs.to_epsg() == 32633
    np.testing.assert_allclose(ds.x.values, 1005 + 10 * np.arange(5))
    np.testing.assert_allclose(ds.y.values, 2055 - 10 * np.arange(6))
    # B02, B03, B04, B08 are channels 1, 2, 3, 7 of the 13
    np.testing.assert_array_equal(ds.s2.values, np.moveaxis(bands[..., [1, 2, 3, 7]], -1, 1))
    # masks are taken at the S2 dates (entries 1 and 2 of the 3 timestamps)
    assert ds.cloud.values.sum() == 2
    assert ds.cloud.values[1, 0, 0] and ds.cloud.values[0, 1, 1]


def test_missing_patch_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nowhere"):
        cube_from_eolearn(tmp_path / "nowhere")


@pytest.mark.shared_data
def test_slovenia_patch() -> None:
    root = SHARED_DATA / "eolearn_slovenia"
    if not root.is_dir():
        pytest.skip(f"shared data not found at {root}")
    ds = cube_from_eolearn(root, chunks=64)
    validate(ds, require=["s2", "cloud", "dem", "lulc"])
    assert dict(ds.s2.sizes) == {"time": 5, "band": 4, "y": 101, "x": 100}
    assert ds.x.values[0] == pytest.approx(465181.05 + 9.9948 / 2, abs=0.01)
    # the README: dates 2 and 3 are fully cloudy, the others clear
    np.testing.assert_allclose(ds.cloud.mean(["y", "x"]).values, [0, 1, 1, 0, 0])
    assert 600 < float(ds.dem.min()) and float(ds.dem.max()) < 850
