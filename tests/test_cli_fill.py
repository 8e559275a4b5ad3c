"""`cloudfill fill-series`: output, refusal rules, and resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import cloudfill
from cloudfill.cli import run
from cloudfill.core.pairs import PairingRule
from cloudfill.fill.job import FillSettings, fill_to_zarr
from cloudfill.fill.writer import IDENTITY_ATTR
from cloudfill.infer.settings import InferenceSettings
from tests.conftest import count_model_blocks, fill_series_argv, make_tiny_model


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("fill")
    ds = cloudfill.simulate_scene((64, 64), dates=5, seed=4, cloud_fraction=[0, 0.5, 1, 0.3, 0])
    cube = cloudfill.write_cube(ds, tmp / "cube.zarr")
    model = make_tiny_model(ds).save(tmp / "model.safetensors")
    return {"tmp": tmp, "cube": cube, "model": model}


def _args(job: dict[str, Path], out: Path) -> list[str]:
    return fill_series_argv(job["cube"], job["model"], out)


def _load(path: Path) -> xr.Dataset:
    return cloudfill.open_cube(path, chunks=None)


# About 10 s, kept in the default suite: the one default test of the whole fill-series job
# (the --overwrite rerun of a different job is the slow test below).
def test_fill_series_writes_everything(
    job: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = job["tmp"] / "full.zarr"
    assert run(_args(job, out)) == 0
    text = capsys.readouterr().out
    assert "fill-series summary" in text and "synthesize" in text
    res = _load(out)
    cube = cloudfill.open_cube(job["cube"], chunks=None)
    assert res.rio.crs == cube.rio.crs
    assert set(res.data_vars) >= {"s2", "filled", "confidence", "method", "s1_date"}
    mask = cube.cloudfill.cloud_mask().values
    np.testing.assert_array_equal(res["filled"].values, mask)
    assert not np.isnan(res["s2"].values).any()
    # The input is untouched and a different job is refused.
    assert run([*_args(job, job["cube"])]) == 2
    other = [*_args(job, out), "--feather", "2"]
    assert run(other) == 2
    assert "different job" in capsys.readouterr().err


@pytest.mark.slow  # two whole jobs, over 10 s; .ci/run runs the slow tests too
def test_fill_series_overwrite_redoes_a_different_job(
    job: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = job["tmp"] / "redo.zarr"
    assert run(_args(job, out)) == 0
    other = [*_args(job, out), "--feather", "2"]
    assert run(other) == 2
    assert "different job" in capsys.readouterr().err
    assert run([*other, "--overwrite"]) == 0
    assert "different job" not in capsys.readouterr().err
    redone = _load(out)
    assert not np.isnan(redone["s2"].values).any()
    # The store is the new job's, not the old one kept.
    assert json.loads(redone.attrs[IDENTITY_ATTR])["feather"] == 2


# Run in a child process that SIGKILLs itself at one fixed point: once date 2's pixels are
# written, just before its marker is renamed into place. The kill is a real SIGKILL (no
# cleanup runs) but lands at the same point whatever the machine's load.
_KILL_BEFORE_MARKER_2 = """
import os, signal
replace = os.replace
def replace_or_die(src, dst, *args, **kwargs):
    if str(dst).endswith("000002.json"):
        os.kill(os.getpid(), signal.SIGKILL)
    return replace(src, dst, *args, **kwargs)
os.replace = replace_or_die
from cloudfill.cli import main
main()
"""


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_sigkill_then_resume_is_identical(
    job: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    reference = job["tmp"] / "ref.zarr"
    assert run(_args(job, reference)) == 0
    out = job["tmp"] / "killed.zarr"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-c", _KILL_BEFORE_MARKER_2, *_args(job, out)]
    proc = subprocess.run(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600
    )
    assert proc.returncode == -signal.SIGKILL
    markers = out / ".cloudfill-done"
    recorded = {p.name: p.stat() for p in markers.glob("*.json")}
    # Dates 0 and 1 recorded; date 2 written (a synthesized date) but not recorded.
    assert sorted(recorded) == ["000000.json", "000001.json"]
    capsys.readouterr()
    assert run(_args(job, out)) == 0
    assert "resuming: 2 of 5 dates already done" in capsys.readouterr().out
    # The rerun skipped the recorded dates (their markers are the same files) and wrote
    # the others, date 2 again included.
    for name, before in recorded.items():
        after = (markers / name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), name
    assert len(list(markers.glob("*.json"))) == 5
    a, b = _load(out), _load(reference)
    for name in ("s2", "filled", "confidence", "method", "s1_date", "reference_date"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_chain_reads_the_written_dates_and_resumes_mid_chain(
    spell_scene: xr.Dataset, tmp_path: Path
) -> None:
    from cloudfill.fill.series import fill_series

    cube = cloudfill.write_cube(spell_scene, tmp_path / "spell.zarr")
    model = make_tiny_model(spell_scene)
    path = model.save(tmp_path / "model.safetensors")
    out = tmp_path / "chained.zarr"
    args = fill_series_argv(cube, path, out, "--max-ref-age", "40", "--chain")
    assert run(args) == 0
    first = _load(out)
    expected = fill_series(
        spell_scene,
        model,
        chain=True,
        rule=PairingRule(max_ref_age=40),
        inference=InferenceSettings(tile=32),
    ).compute()
    np.testing.assert_array_equal(first["s2"].values, expected["s2"].values)
    assert list(first["reference_chained"].values) == [False, False, True, True, False]
    # As if killed after two dates: the rerun reads dates 0-1 back and redoes 2-4.
    for marker in sorted((out / ".cloudfill-done").glob("*.json"))[2:]:
        marker.unlink()
    assert run(args) == 0
    np.testing.assert_array_equal(_load(out)["s2"].values, first["s2"].values)
    # The values read back are the written ones: brighten the written date 1 and the
    # redone date 2 (whose reference it is) follows, while the recomputation would not.
    (out / ".cloudfill-done" / "000002.json").unlink()
    bright = first[["s2"]].isel(time=[1]) + np.float32(0.01)
    bright = bright.drop_vars(["spatial_ref", "x", "y", "band"])
    bright.to_zarr(out, region={"time": slice(1, 2)}, consolidated=False)
    assert run(args) == 0
    shift = _load(out)["s2"].values[2] - first["s2"].values[2]
    assert np.median(shift) == pytest.approx(0.01, abs=1e-3)
    # An unchained job is a different job: refused without --overwrite.
    assert run(fill_series_argv(cube, path, out, "--max-ref-age", "40")) == 2


def _settings(window: int | None, adjust: float | str = "auto") -> FillSettings:
    """16 px tiles, references up to 400 days old, dates cut in windows of ``window`` px."""
    return FillSettings(
        rule=PairingRule(max_ref_age=400),
        inference=InferenceSettings(tile=16),
        window=window,
        adjust=adjust,
    )


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_windows_run_the_model_once_per_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfill.cube import zarr_io

    calls = count_model_blocks(monkeypatch)
    # Output zarr chunks of 32 px, so that windows can be cut in a small scene.
    monkeypatch.setitem(zarr_io.DEFAULT_WRITE_CHUNKS, "y", 32)
    monkeypatch.setitem(zarr_io.DEFAULT_WRITE_CHUNKS, "x", 32)
    ds = cloudfill.simulate_scene((128, 128), dates=3, seed=2, cloud_fraction=[0, 0.4, 0])
    # 32 px chunks: inference blocks of 4 tiles (64 px), four per date.
    cube = cloudfill.write_cube(ds, tmp_path / "cube.zarr", chunks={"y": 32, "x": 32})
    model = make_tiny_model(ds).save(tmp_path / "model.safetensors")
    # "auto" chooses the date's sigma on a window of its synthesis (stored first, so the
    # model runs once per block there too); 12: a fixed adjustment, whose halo crosses the
    # window edges.
    for adjust in ("auto", 12.0):
        outs, counts = {}, {}
        for window in (None, 64):
            calls.clear()
            out = tmp_path / f"{window}-{adjust}.zarr"
            fill_to_zarr(cube, out, model, _settings(window, adjust))
            counts[window] = len(calls)
            outs[window] = _load(out)
            # The scratch copies of the syntheses are gone once their dates are written.
            assert not (out / ".cloudfill-done" / "work").exists()
        assert counts[64] == counts[None] == 4, adjust  # one synthesized date, four blocks
        for name in ("s2", "filled", "confidence", "error_scale", "adjust_sigma"):
            np.testing.assert_array_equal(outs[64][name].values, outs[None][name].values)
        assert outs[64].attrs["cloudfill_adjust"] == adjust
    assert outs[64]["adjust_sigma"].values.tolist() == [0.0, 12.0, 0.0]
    # A scratch copy left by a run killed between recording a date and removing it goes
    # with the next run, even one with nothing left to do.
    stale = tmp_path / "64-12.0.zarr" / ".cloudfill-done" / "work" / "20230101T000000.zarr"
    stale.mkdir(parents=True)
    fill_to_zarr(cube, tmp_path / "64-12.0.zarr", model, _settings(64, 12.0))
    assert not stale.parent.exists()


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_a_cube_rewritten_at_the_same_path_is_not_resumed(tmp_path: Path) -> None:
    # Issue 17, defect 8: the job identity holds the input's content, not only its path.
    scene = cloudfill.simulate_scene((24, 24), dates=3, seed=0)
    cube = cloudfill.write_cube(scene, tmp_path / "c.zarr")
    model = make_tiny_model(scene)
    settings = FillSettings(inference=InferenceSettings(tile=16))
    out = tmp_path / "f.zarr"
    fill_to_zarr(cube, out, model, settings)
    fill_to_zarr(cube, out, model, settings)  # the same job: nothing left to do, no error
    other = cloudfill.simulate_scene((24, 24), dates=3, seed=1)
    cloudfill.write_cube(other, cube, overwrite=True)
    with pytest.raises(cloudfill.errors.OutputError, match="different job.*overwrite=True"):
        fill_to_zarr(cube, out, model, settings)
    redone = fill_to_zarr(cube, out, model, settings, overwrite=True)
    np.testing.assert_array_equal(
        redone["s2"].values[0], other["s2"].where(~other["cloud"]).values[0]
    )
