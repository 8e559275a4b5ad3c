"""Resumable date-by-date zarr writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.fill.writer import DateWriter, fingerprint
from tests.conftest import make_tiny_cube


def _job_ds() -> xr.Dataset:
    ds = make_tiny_cube(n_time=4)
    return ds[["s2", "cloud"]].chunk({"time": 1, "y": 5})


def test_write_all_dates_equals_source(tmp_path: Path) -> None:
    ds = _job_ds()
    w = DateWriter(tmp_path / "o.zarr", ds, job="j1")
    assert w.pending() == [0, 1, 2, 3]
    for i in w.pending():
        w.write(ds.isel(time=[i]), i, record={"method": "synthesize"})
    out = xr.open_zarr(tmp_path / "o.zarr", consolidated=False, decode_coords="all")
    xr.testing.assert_identical(out[["s2", "cloud"]].load().drop_attrs(), ds.load().drop_attrs())
    assert out.attrs["cloudfill_job"] == "j1"
    assert list(w.records()["method"]) == ["synthesize"] * 4


def test_resume_rewrites_only_missing_dates(tmp_path: Path) -> None:
    ds = _job_ds()
    w = DateWriter(tmp_path / "o.zarr", ds, job="j1")
    w.write(ds.isel(time=[0]), 0)
    w.write(ds.isel(time=[2]), 2)
    # A killed run: date 1 half written without its marker.
    w2 = DateWriter(tmp_path / "o.zarr", ds, job="j1")
    assert w2.pending() == [1, 3]
    for i in w2.pending():
        w2.write(ds.isel(time=[i]), i)
    out = xr.open_zarr(tmp_path / "o.zarr", consolidated=False).load()
    np.testing.assert_array_equal(out.s2.values, ds.s2.values)


def test_different_job_refused_unless_overwrite(tmp_path: Path) -> None:
    ds = _job_ds()
    DateWriter(tmp_path / "o.zarr", ds, job="j1")
    with pytest.raises(errors.OutputError, match="different job"):
        DateWriter(tmp_path / "o.zarr", ds, job="j2")
    w = DateWriter(tmp_path / "o.zarr", ds, job="j2", overwrite=True)
    assert w.pending() == [0, 1, 2, 3]
    with pytest.raises(errors.OutputError, match="exists"):
        DateWriter(tmp_path / "o.zarr", ds, job="j2", resume=False)


def test_never_writes_into_input(tmp_path: Path) -> None:
    src = tmp_path / "in.zarr"
    src.mkdir()
    with pytest.raises(errors.OutputError, match="would overwrite the input"):
        DateWriter(src, _job_ds(), job="j", inputs=[src], overwrite=True)
    with pytest.raises(errors.OutputError, match="would overwrite the input"):
        DateWriter(src / "inner.zarr", _job_ds(), job="j", inputs=[src])


def test_fingerprint_stable_and_sensitive() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
