"""The command line: exit codes, one-line errors, make-cube and info."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr

import cloudfill
from cloudfill.cli import run
from tests.conftest import make_tiny_cube


def _write_raw(ds: xr.Dataset, path: Path) -> Path:
    """Write a (possibly invalid) cube with plain xarray, bypassing cloudfill's checks."""
    ds.to_zarr(path, mode="w", consolidated=False)
    return path


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    for verb in ("info", "make-cube"):
        assert verb in out
    assert run(["--version"]) == 0
    assert "cloudfill" in capsys.readouterr().out


def test_usage_error_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["info"]) == 2
    assert run(["no-such-verb"]) == 2


def test_make_cube_simulate_then_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sim.zarr"
    assert run(["make-cube", str(out), "--simulate", "--shape", "64x48", "--dates", "4"]) == 0
    assert run(["info", str(out), "--check"]) == 0
    text = capsys.readouterr().out
    assert "y=64" in text and "x=48" in text and "EPSG:32645" in text
    assert "cloud %" in text
    # Existing output is refused (bad input, exit 2) without --overwrite.
    assert run(["make-cube", str(out), "--simulate"]) == 2
    assert "overwrite" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda ds: ds.drop_vars("s1"), "missing variable 's1'"),
        (lambda ds: ds.assign_coords(band=["B02", "B03", "B05", "B08"]), "missing band 'B04'"),
        (lambda ds: ds.isel(time=[0, 2, 1]), "'time' is not sorted"),
    ],
)
def test_bad_cube_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, message: str
) -> None:
    path = _write_raw(mutate(make_tiny_cube()), tmp_path / "bad.zarr")
    assert run(["info", str(path), "--check", "--no-stats"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("error:")
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_debug_shows_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write_raw(make_tiny_cube().drop_vars("s1"), tmp_path / "bad.zarr")
    assert run(["--debug", "info", str(path), "--check"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_missing_path_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["info", "/nonexistent/cube.zarr"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_internal_error_exit_1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cloudfill.cube.zarr_io as zarr_io

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(zarr_io, "open_cube", boom)
    (tmp_path / "c.zarr").mkdir()
    assert run(["info", str(tmp_path / "c.zarr")]) == 1


def test_synthesize_cli_zarr_and_cog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np
    import pandas as pd
    import rioxarray

    import cloudfill
    from tests.conftest import make_tiny_model

    ds = cloudfill.simulate_scene((48, 40), seed=1)
    cube = cloudfill.write_cube(ds, tmp_path / "cube.zarr")
    model = make_tiny_model(ds).save(tmp_path / "m.safetensors")
    date = f"{pd.Timestamp(ds.time.values[2]):%Y-%m-%d}"
    out = tmp_path / "syn.zarr"
    args = ["synthesize", str(cube), date, "--model", str(model), "--no-progress"]
    assert run([*args, "--out", str(out)]) == 0
    syn = cloudfill.open_cube(out)
    assert syn.rio.crs == ds.rio.crs
    assert syn["s2_synthesized"].attrs["date"] == date
    tif = tmp_path / "syn.tif"
    assert run([*args, "--out", str(tif)]) == 0
    cog = rioxarray.open_rasterio(tif)
    assert cog.shape == (4, 48, 40) and cog.rio.crs == ds.rio.crs
    np.testing.assert_allclose(cog.values, syn["s2_synthesized"].values, rtol=1e-6)
    assert run([*args, "--out", str(tif)]) == 2  # exists
    assert "overwrite" in capsys.readouterr().err
    assert run([*args[:2], "not-a-date", "--out", str(tmp_path / "x.zarr")]) == 2


def test_synthesize_cli_builds_inside_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The graph's small whole-date computes (date choice, height table) run on the cluster
    the write runs on: ``synthesize`` is called inside ``open_cluster``."""
    import contextlib

    import pandas as pd

    import cloudfill.cluster
    import cloudfill.infer.synthesize
    from tests.conftest import make_tiny_model

    ds = cloudfill.simulate_scene((32, 32), seed=1)
    cube = cloudfill.write_cube(ds, tmp_path / "cube.zarr")
    model = make_tiny_model(ds).save(tmp_path / "m.safetensors")
    events: list[str] = []

    @contextlib.contextmanager
    def open_cluster(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        events.append("open")
        yield None
        events.append("close")

    real = cloudfill.infer.synthesize.synthesize

    def synthesize(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        events.append("synthesize")
        return real(*args, **kwargs)

    monkeypatch.setattr(cloudfill.cluster, "open_cluster", open_cluster)
    monkeypatch.setattr(cloudfill.infer.synthesize, "synthesize", synthesize)
    date = f"{pd.Timestamp(ds.time.values[2]):%Y-%m-%d}"
    argv = ["synthesize", str(cube), date, "--model", str(model), "--no-progress"]
    assert run([*argv, "--out", str(tmp_path / "syn.zarr")]) == 0
    assert events == ["open", "synthesize", "close"]


def test_preprocess_cli(tmp_path: Path) -> None:
    import numpy as np
    from scipy import ndimage

    import cloudfill

    ds = cloudfill.simulate_scene((40, 32), dates=2, seed=2)
    cube = cloudfill.write_cube(ds, tmp_path / "cube.zarr")
    out = tmp_path / "pre.zarr"
    assert run(["preprocess", str(cube), str(out), "--size", "3", "--no-progress"]) == 0
    res = cloudfill.open_cube(out, chunks=None)
    assert res.s1.attrs["units"] == "dB" and res.rio.crs == ds.rio.crs
    assert "clip_range" in res.s1.attrs
    lo, hi = np.asarray(res.s1.attrs["clip_range"][0])
    expected = np.clip(ndimage.median_filter(ds.s1.values[0, 0], size=3, mode="reflect"), lo, hi)
    np.testing.assert_allclose(res.s1.values[0, 0], expected, rtol=1e-6)
    assert run(["preprocess", str(cube), str(cube)]) == 2


def _fresh(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """``cloudfill ARGS`` in a new interpreter, as a user runs it: nothing imported before the
    CLI (the in-process tests run after pytest and the fixtures have imported torch)."""
    code = "import sys; from cloudfill.cli import main; sys.argv[0] = 'cloudfill'; main()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.mark.slow  # a fresh interpreter importing torch, 6 s
def test_fresh_process_describes_the_default_model(tmp_path: Path) -> None:
    path = Path(cloudfill.__file__).parent / "data" / "default_model.safetensors"
    done = _fresh(["info", str(path)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "GFLOP" in done.stdout and "SOD" in done.stdout


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_fresh_process_trains_and_fills(tmp_path: Path) -> None:
    cube = tmp_path / "c.zarr"
    assert (
        _fresh(["make-cube", str(cube), "--simulate", "--shape", "64x64"], tmp_path).returncode == 0
    )
    train = ["train", str(cube), "--out", "m", "--variant", "S", "--patch-size", "32"]
    train += ["--max-steps", "1", "--base-filters", "4", "--n-blocks", "1", "--no-progress"]
    done = _fresh(train, tmp_path)
    assert done.returncode == 0, done.stderr
    fill = ["fill-series", str(cube), "--out", "f.zarr", "--model", "m/best.safetensors"]
    done = _fresh([*fill, "--no-progress"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert xr.open_zarr(tmp_path / "f.zarr")["s2"].notnull().any()


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_the_smallest_scene_make_cube_accepts_fills(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 17: scenes under 48 px crashed (the same-date adjustment's halo is 48 px).
    cube = tmp_path / "small.zarr"
    assert run(["make-cube", str(cube), "--simulate", "--shape", "8x8", "--dates", "4"]) == 0
    assert run(["fill-series", str(cube), "--out", str(tmp_path / "f.zarr"), "--no-progress"]) == 0
    assert "synthesize" in capsys.readouterr().out
