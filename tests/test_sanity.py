"""Values against claims: S2 digital numbers and S1 units are refused (issue 17, 3 and 5)."""

from __future__ import annotations

from pathlib import Path

import pytest
import xarray as xr

import cloudfill
from cloudfill.cli import run
from cloudfill.cube.sanity import check_dem, check_values, guess_s1_units
from cloudfill.errors import BandError, DTypeError, MissingVariableError, UnitsError


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene((48, 48), dates=3, seed=2)


def _linear(ds: xr.Dataset, label: str) -> xr.Dataset:
    s1 = (10 ** (ds.s1 / 10)).astype("float32").assign_attrs(units=label)
    return ds.assign(s1=s1)


def test_a_consistent_cube_passes(cube: xr.Dataset) -> None:
    assert check_values(cube) is cube
    assert check_values(_linear(cube, "linear")) is not None
    assert check_values(cube.chunk({"y": 16, "x": 16})) is not None  # lazy cubes too


def test_reflectance_times_10000_is_refused_with_the_fix(cube: xr.Dataset) -> None:
    # What rioxarray gives with masked=True: float digital numbers.
    dn = cube.assign(s2=(cube.s2 * 10000).astype("float32"))
    with pytest.raises(UnitsError, match=r"digital numbers.*divide by 10000.*offset 1000"):
        check_values(dn)
    with pytest.raises(UnitsError, match="digital numbers"):
        cloudfill.fill_series(dn)
    with pytest.raises(UnitsError, match="digital numbers"):
        cloudfill.synthesize(dn, dn.time.values[1])
    with pytest.raises(UnitsError, match="digital numbers"):
        cloudfill.evaluate(dn, with_model=False)


def test_s1_values_that_contradict_their_units(cube: xr.Dataset) -> None:
    with pytest.raises(UnitsError, match="labelled dB.*looks like linear"):
        check_values(_linear(cube, "dB"))
    labelled_linear = cube.assign(s1=cube.s1.assign_attrs(units="linear"))
    with pytest.raises(UnitsError, match="labelled linear.*looks like dB"):
        check_values(labelled_linear)
    with pytest.raises(UnitsError):
        cloudfill.fill_series(labelled_linear)
    assert guess_s1_units(cube) == "dB" and guess_s1_units(_linear(cube, "dB")) == "linear"


def test_percent_is_refused_with_its_own_fix(cube: xr.Dataset) -> None:
    percent = cube.assign(s2=(cube.s2 * 100).astype("float32"))
    with pytest.raises(UnitsError, match="percent.*divide by 100$"):
        check_values(percent)


@pytest.mark.parametrize("lazy", [False, True])
def test_a_band_without_any_value_is_refused(cube: xr.Dataset, lazy: bool) -> None:
    """One empty band empties every pixel: refused by name, while a band empty only in the
    sampled window (or NaN under clouds) passes."""
    ds = cube.chunk({"y": 16, "x": 16}) if lazy else cube
    empty = ds.assign(s2=ds.s2.where(ds.s2.band != "B08"))
    with pytest.raises(BandError, match="band B08 of 's2' holds no value in any date"):
        check_values(empty)
    with pytest.raises(BandError, match="B08"):
        cloudfill.fill_series(empty)
    clouded = ds.assign(s2=ds.s2.where((ds.s2.band != "B08") | (ds.time == ds.time[0])))
    assert check_values(clouded) is clouded  # NaN in some dates only: fine
    only_edge = ds.assign(
        s2=ds.s2.where((ds.s2.band != "B08") | ((ds.y == ds.y[0]) & (ds.x == ds.x[0])))
    )
    with pytest.MonkeyPatch.context() as mp:  # a window that misses the one B08 value
        mp.setattr("cloudfill.cube.sanity.WINDOW", 8)
        assert check_values(only_edge) is only_edge


@pytest.mark.parametrize("lazy", [False, True])
def test_a_dem_without_any_value_is_refused_where_a_model_reads_it(
    cube: xr.Dataset, lazy: bool
) -> None:
    ds = cube.chunk({"y": 16, "x": 16}) if lazy else cube
    # A DEM on a grid shifted by 5 m, aligned by xarray: NaN everywhere.
    shifted = ds.dem.assign_coords(x=ds.x + 5)
    aligned = ds.drop_vars("dem").assign(dem=shifted.reindex_like(ds))
    assert aligned.dem.isnull().all()
    with pytest.raises(MissingVariableError, match="'dem' holds no value"):
        check_dem(aligned)
    with pytest.raises(MissingVariableError, match="reproject"):
        cloudfill.synthesize(aligned, aligned.time.values[1])  # the default model reads it
    with pytest.raises(MissingVariableError, match="reproject"):
        cloudfill.fill_series(aligned)
    # Verbs whose model does not read it leave it alone: interpolation only (no S1).
    assert check_values(aligned) is aligned
    cloudfill.fill_series(aligned.drop_vars("s1"))
    corner = ds.assign(dem=ds.dem.where((ds.y == ds.y[0]) & (ds.x == ds.x[0])))
    with pytest.MonkeyPatch.context() as mp:  # the sample is empty, the DEM is not
        mp.setattr("cloudfill.cube.sanity.WINDOW", 8)
        assert check_dem(corner) is corner


def test_a_band_of_zeros_is_refused(cube: xr.Dataset) -> None:
    """No data read without masking (float 0 in every pixel) is no reflectance."""
    zeros = cube.assign(s2=cube.s2.where(cube.s2.band != "B04", 0.0))
    with pytest.raises(BandError, match="band B04 .*only NaN or 0"):
        check_values(zeros)


def test_s2_without_any_value_is_no_broken_band(cube: xr.Dataset) -> None:
    """A cube whose S2 holds nothing (an S model's input, a tile outside the S2 swath) is
    not a broken band: the check leaves it to the verbs."""
    empty = cube.assign(s2=cube.s2.where(False))
    assert check_values(empty) is empty
    assert check_values(cube.isel(time=[])) is not None  # no S2 date at all


def test_python_applies_the_clis_contract_check(cube: xr.Dataset) -> None:
    # A cube without S1 units ran in Python and failed in the CLI.
    no_units = cube.assign(s1=cube.s1.copy().drop_attrs())
    with pytest.raises(DTypeError, match="units"):
        cloudfill.fill_series(no_units)
    with pytest.raises(DTypeError, match="units"):
        cloudfill.synthesize(no_units, no_units.time.values[1])


def test_cli_refuses_digital_numbers(
    cube: xr.Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # write_cube checks the contract, not the values: the verbs read them.
    path = cloudfill.write_cube(
        cube.assign(s2=(cube.s2 * 10000).astype("float32")), tmp_path / "c.zarr"
    )
    out = tmp_path / "f.zarr"
    assert run(["fill-series", str(path), "--out", str(out), "--no-progress"]) == 2
    assert "digital numbers" in capsys.readouterr().err
    assert not out.exists()


def test_make_cube_reads_or_checks_the_s1_units(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    def tif(path: Path, data: np.ndarray) -> str:
        profile = {"driver": "GTiff", "height": 16, "width": 16, "count": data.shape[0]}
        profile.update(dtype=data.dtype, crs="EPSG:32633", transform=from_origin(0, 160, 10, 10))
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
        return str(path)

    rng = np.random.default_rng(0)
    s2 = tif(tmp_path / "s2.tif", rng.integers(1, 3000, (4, 16, 16), dtype="uint16"))
    power = rng.uniform(0.005, 0.4, (2, 16, 16)).astype("float32")  # linear backscatter
    s1 = tif(tmp_path / "s1.tif", power)
    argv = ["make-cube", "--s2", f"2023-05-01={s2}", "--s1", f"2023-05-02={s1}"]
    assert run([*argv[:1], str(tmp_path / "auto.zarr"), *argv[1:]]) == 0
    assert cloudfill.open_cube(tmp_path / "auto.zarr").s1.attrs["units"] == "linear"
    wrong = [*argv[:1], str(tmp_path / "db.zarr"), *argv[1:], "--s1-units", "dB"]
    assert run(wrong) == 2
    assert "looks like linear power" in capsys.readouterr().err
    assert not (tmp_path / "db.zarr").exists()
