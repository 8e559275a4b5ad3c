"""Resumable date-by-date zarr writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.core.pairs import PairingRule
from cloudfill.fill.job import FillSettings, JobIdentity, model_digest
from cloudfill.fill.writer import DateWriter, fingerprint
from cloudfill.infer.settings import InferenceSettings
from tests.conftest import count_model_blocks, make_tiny_cube


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


def test_dates_are_written_in_windows_of_whole_blocks(tmp_path: Path) -> None:
    ds = _job_ds().chunk({"x": 5})
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    w = DateWriter(tmp_path / "o.zarr", ds, job="j", window=5, chunks={"y": 5, "x": 5})
    windows = w.windows(ds.isel(time=[0]))
    assert len(windows) >= 4
    rows = sorted({(v["y"].start, v["y"].stop) for v in windows})
    cols = sorted({(v["x"].start, v["x"].stop) for v in windows})
    assert len(windows) == len(rows) * len(cols)  # a grid covering the image once
    for cuts, n in ((rows, ny), (cols, nx)):
        assert cuts[0][0] == 0 and cuts[-1][1] == n
        assert all(a % 5 == 0 and b - a >= 5 for a, b in cuts)
        assert all(cuts[k][1] == cuts[k + 1][0] for k in range(len(cuts) - 1))
    calls = []

    def compute(delayed):
        calls.append(1)
        return delayed.compute()

    for i in w.pending():
        w.write(ds.isel(time=[i]), i, compute=compute)
    assert len(calls) == len(windows) * ds.sizes["time"]
    out = xr.open_zarr(tmp_path / "o.zarr", consolidated=False, decode_coords="all")
    xr.testing.assert_identical(out[["s2", "cloud"]].load().drop_attrs(), ds.load().drop_attrs())
    # Cuts only where every variable has a block boundary; numpy data is written at once.
    mixed = ds.assign(cloud=ds["cloud"].chunk({"y": ny, "x": nx}))
    assert w.windows(mixed.isel(time=[0])) == [{}]
    assert w.windows(ds.load().isel(time=[0])) == [{}]
    assert DateWriter(tmp_path / "p.zarr", ds, job="j", window=None).windows(ds) == [{}]


def test_sums_are_counted_per_window_with_each_block_computed_once(tmp_path: Path) -> None:
    # A per-date count over the whole date, written with every window, would compute the
    # whole date once per window (and hold it): the sums share each window's blocks instead.
    ds = _job_ds().chunk({"x": 5})
    ds["s2"] = ds["s2"].where(ds["s2"] > 0.3)  # some NaN to count
    runs: list[tuple] = []

    def counted(block: np.ndarray, block_info=None) -> np.ndarray:
        runs.append(tuple(block_info[0]["chunk-location"]))
        return block

    ds["s2"] = ds["s2"].copy(data=ds["s2"].data.map_blocks(counted, dtype="float32"))
    expected = ds["s2"].isnull().any("band").sum(("y", "x")).compute().values
    ds["nan_pixels"] = ds["s2"].isnull().any("band").sum(("y", "x"))
    runs.clear()

    def count(piece: xr.Dataset) -> xr.DataArray:
        return piece["s2"].isnull().any("band").sum(("y", "x"))

    w = DateWriter(
        tmp_path / "o.zarr",
        ds,
        job="j",
        window=5,
        chunks={"y": 5, "x": 5},
        sums={"nan_pixels": count},
    )
    assert len(w.windows(ds.isel(time=[0]))) >= 4
    for i in w.pending():
        w.write(ds.isel(time=[i]), i)
    assert sorted(runs) == sorted(set(runs)) and len(runs) == ds["s2"].data.npartitions
    out = xr.open_zarr(tmp_path / "o.zarr", consolidated=False)
    np.testing.assert_array_equal(out["nan_pixels"].values, expected)
    xr.testing.assert_identical(out["s2"].load().drop_attrs(), ds["s2"].load().drop_attrs())


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_windowed_fill_equals_whole_dates(
    scene: xr.Dataset, tiny_model, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfill.fill.series import count_unfilled, fill_series

    calls = count_model_blocks(monkeypatch)
    # A corner with nothing usable on any date (no S2, no S1): pixels left NaN to count.
    corner = xr.zeros_like(scene.dem, dtype=bool)
    corner[80:, 80:] = True
    cube = scene.assign(s2=scene.s2.where(~corner), s1=scene.s1.where(~corner))
    # Inference blocks (4 tiles of 16 px: 64 + 32) larger than the cube's 24 px chunks.
    cube = cube.chunk({"time": 1, "s1_time": 1, "y": 24, "x": 24})
    # Without the same-date adjustment, whose halo reaches into neighbouring windows
    # (fill_to_zarr stores the synthesis first for that: tests/test_cli_fill.py).
    filled = fill_series(
        cube, tiny_model, feather=4, adjust=0, inference=InferenceSettings(tile=16)
    )
    assert filled["s2"].chunks[2:] == ((64, 32), (64, 32))
    expected = filled["unfilled"].values
    assert expected.sum() > 0
    outs, counts = {}, {}
    for window in (None, 32):
        w = DateWriter(
            tmp_path / f"{window}.zarr",
            filled,
            job="j",
            window=window,
            chunks={"y": 32, "x": 32},
            sums={"unfilled": count_unfilled},
        )
        assert len(w.windows(filled.isel(time=[0]))) == (4 if window else 1)
        calls.clear()
        for i in w.pending():
            w.write(filled.isel(time=[i]), i)
        counts[window] = len(calls)
        outs[window] = xr.open_zarr(tmp_path / f"{window}.zarr", consolidated=False).load()
    xr.testing.assert_identical(outs[None], outs[32])
    np.testing.assert_array_equal(outs[32]["unfilled"].values, expected)
    # Windows never split an inference block: the model runs on each block once either way.
    assert counts[32] == counts[None] > 0


def test_job_identity_is_what_changes_the_values(tiny_model, tmp_path: Path) -> None:
    """A fill job's fingerprint hashes its named fields: the window, the device and the
    batch size (how the same values are computed) leave it alone, the rest changes it."""
    cube = tmp_path / "cube.zarr"
    dates = pd.DatetimeIndex(["2024-03-12"])

    def key(settings: FillSettings = FillSettings(), model=None) -> str:
        return JobIdentity.of(cube, model, dates, settings).fingerprint()

    elsewhere = InferenceSettings(device="cuda", batch_size=8)
    assert key(FillSettings(window=None, inference=elsewhere)) == key()
    for other in (
        FillSettings(feather=2),
        FillSettings(chain=True),
        FillSettings(rule=PairingRule(max_ref_age=40)),
        FillSettings(inference=InferenceSettings(tile=64)),
    ):
        assert key(other) != key(), other
    # A model in memory is named by its card and weights, a checkpoint by its bytes.
    digest = model_digest(tiny_model)
    assert digest.startswith("weights-") and model_digest(tiny_model) == digest
    path = tiny_model.save(tmp_path / "m.safetensors")
    assert model_digest(path) == model_digest(str(path)) != model_digest(None)
    assert key(model=path) != key() != key(model=tiny_model)
