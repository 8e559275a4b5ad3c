"""The bad-input catalogue, continued: more table rows run by the same body
(:func:`tests.test_bad_input_catalogue.check_case`), and the checks that are no table row
(a read-only folder, closed and broken pipes, shutdown noise, outputs written into).

The rows here came from a review of the first catalogue (issue 17): folders written into
without ``--overwrite``, a failure in the middle of a fill job, values unchecked by
``preprocess`` and ``info --check``, messages naming Python keywords, training patches the
discriminator cannot score, ``--dates`` holding no date.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import cloudfill
from cloudfill.cli import run
from cloudfill.cube.zarr_io import MARKER_DIR
from cloudfill.evaluation.plan import plan_evaluation
from cloudfill.fill.job import FillSettings, fill_to_zarr
from cloudfill.infer.settings import InferenceSettings
from tests.test_bad_input_catalogue import (
    Case,
    Inputs,
    _dn_cube,
    _fill,
    _raw_store,
    _s1_labelled,
    _user_folder,
    check_case,
    inputs,  # noqa: F401  (the shared inputs fixture)
    params,
)

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")


def _report_folder(folder: Path) -> Path:
    proj = _user_folder(folder)
    for name in ("index.html", "metrics.csv"):
        (proj / name).write_text("mine")
    return proj


def _model_folder(folder: Path) -> Path:
    proj = _user_folder(folder)
    (proj / "best.safetensors").write_bytes(b"my model")
    return proj


def _corrupt_dem(i: Inputs, f: Path) -> list[str]:
    # The DEM is read only by the model, date by date: the job fails after its layout.
    cube = f / "c.zarr"
    shutil.copytree(i.cube, cube)
    for chunk in (p for p in (cube / "dem").rglob("*") if p.is_file() and "c" in p.parts):
        chunk.write_bytes(b"\x00garbage" * 8)
    argv = _fill(i, f / "f.zarr")
    return [str(cube) if a == str(i.cube) else a for a in argv]


def _check_incomplete(i: Inputs, f: Path, text: str) -> None:
    out = f / "f.zarr"
    if not out.exists():
        return  # failed before the layout: nothing left
    done = list((out / MARKER_DIR).glob("*.json"))
    assert len(done) < i.scene.sizes["time"], "a failed job's store looks complete"
    assert "consolidated_metadata" not in (out / "zarr.json").read_text()


def _train(i: Inputs, out: Path, *extra: str) -> list[str]:
    return ["train", str(i.cube), "--out", str(out), "--no-progress", *extra]


# fmt: off
MORE: list[Case] = [
    # folders written into: a user's folder only with --overwrite
    Case("evaluate-into-a-user-folder", "1", lambda i, f: [
        "evaluate", str(i.cube), "--model", str(i.model), "--out", str(_report_folder(f)),
        "--no-progress"], 2, "holds no previous report.*--overwrite",
         avoid=("overwrite=True",)),
    Case("train-into-a-user-folder", "1", lambda i, f: _train(i, _model_folder(f)),
         2, "holds no previous training run.*--overwrite", avoid=("overwrite=True",)),
    Case("experiment-into-a-user-folder", "1", lambda i, f: [
        "experiment", str(i.cube), "--out", str(_report_folder(f)), "--no-progress"],
         2, "holds no previous experiment"),
    # a failure during the fill job: exit 2, one line, the resumable store marked incomplete
    Case("corrupt-dem-mid-job", "9", _corrupt_dem, 2, "corrupt zarr data.*'dem'",
         check=_check_incomplete, leaves=("f.zarr",)),
    # values checked by every verb, preprocess and info --check too
    Case("preprocess-s2-dn-as-float", "3", lambda i, f: [
        "preprocess", str(_dn_cube(i, f)), str(f / "p.zarr"), "--no-progress"],
         2, "digital numbers"),
    Case("preprocess-s1-linear-labelled-db", "5", lambda i, f: [
        "preprocess", str(_s1_labelled(i, f, "dB")), str(f / "p.zarr"), "--no-progress"],
         2, "labelled dB.*looks like linear"),
    Case("info-check-s2-dn-as-float", "3", lambda i, f: [
        "info", str(_dn_cube(i, f)), "--check"], 2, "digital numbers"),
    # messages name the command's flags, not Python keywords
    Case("flags-max-ref-cloud", "first hour", lambda i, f: _fill(
        i, f / "f.zarr", "--max-ref-cloud", "2"), 2, "--max-ref-cloud must",
         avoid=("max_ref_cloud",)),
    Case("flags-max-s1-gap", "first hour", lambda i, f: _fill(
        i, f / "f.zarr", "--max-s1-gap", "-1"), 2, "--max-s1-gap must", avoid=("max_s1_gap",)),
    Case("flags-synthesize-no-s1", "first hour", lambda i, f: [
        "synthesize", str(i.cube), i.date, "--model", str(i.model), "--out", str(f / "s.tif"),
        "--max-s1-gap", "0", "--no-progress"], 2, "raise --max-s1-gap.*of fill-series",
         avoid=("max_s1_gap", "fill_series")),
    Case("flags-overlap", "first hour", lambda i, f: _train(
        i, f / "m", "--patch-size", "24", "--overlap", "24"), 2, "--overlap must",
         avoid=("[0, size)",)),
    # training patches the discriminator cannot score: refused before any work
    Case("train-patch-16", "options", lambda i, f: _train(i, f / "m", "--patch-size", "16"),
         2, "--patch-size must be at least 24.*got 16"),
    Case("train-patch-20", "options", lambda i, f: _train(i, f / "m", "--patch-size", "20"),
         2, "at least 24.*got 20"),
    # --dates given but holding no date
    Case("dates-holding-no-date", "10", lambda i, f: _fill(i, f / "f.zarr", "--dates", ","),
         2, "--dates ',' holds no date"),
    Case("evaluate-dates-holding-no-date", "10", lambda i, f: [
        "evaluate", str(i.cube), "--model", str(i.model), "--out", str(f / "r"),
        "--dates", " , ", "--no-progress"], 2, "holds no date"),
]
# fmt: on


@pytest.mark.parametrize("case", params(MORE))
def test_more_bad_input(
    case: Case,
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    check_case(case, inputs, tmp_path, capsys)


# --- checks that are no table row -------------------------------------------------------------


# Over 4 s (two whole reports); the refusal of a user's folder without --overwrite is the
# table's "evaluate-into-a-user-folder" row, in the default suite.
@pytest.mark.slow
def test_evaluate_writes_into_a_report_or_with_overwrite(
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    proj = _report_folder(tmp_path)
    argv = ["evaluate", str(inputs.cube), "--model", str(inputs.model), "--out", str(proj),
            "--no-progress", "--no-landcover", "--baselines", "none"]  # fmt: skip
    assert run([*argv, "--overwrite"]) == 0  # into the user's folder, as asked
    assert (proj / "important.txt").read_text() == "keep"  # nothing else deleted
    assert (proj / ".cloudfill-report").is_file()
    assert run(argv) == 0  # a previous report: written again without --overwrite


def test_a_read_only_output_folder(
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kept apart: as root the folder's mode does not stop a write, so the check is told.
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(
            "cloudfill._outputs.os.access",
            lambda p, mode: False if Path(p) == folder and mode & os.W_OK else real(p, mode),
        )
    try:
        assert run(_fill(inputs, folder / "f.zarr")) == 2
        assert list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def _cloudfill(*args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "cloudfill"
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.slow  # a fresh process; tests/test_cli_first_hour.py covers it in the suite
def test_broken_pipe_is_not_an_error(inputs: Inputs) -> None:  # noqa: F811
    # `cloudfill info CUBE | head -1` must exit 0: the reader leaving is not a failure.
    exe = Path(sys.executable).parent / "cloudfill"
    script = f"set -o pipefail; {exe} info {inputs.cube} | head -c 1"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_another_broken_pipe_is_an_internal_error(
    inputs: Inputs,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A pipe other than stdout (a socket, a subprocess) breaking is a failure, not exit 0.
    def broken(*args: object, **kwargs: object) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr("cloudfill.cli.cube.zarr_io.open_cube", broken)
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # typer wraps it on a broken pipe
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    assert run(["info", str(inputs.cube)]) == 1
    assert "internal error: BrokenPipeError" in capsys.readouterr().err


@pytest.mark.slow  # three fresh processes, about 11 s
def test_a_failure_mid_read_prints_one_line(
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Dask stops on the corrupt chunk while other reads are in flight on zarr's event loop:
    # the interpreter's shutdown must not print their tasks ("Task was destroyed ...").
    scene = cloudfill.simulate_scene((64, 64), dates=6, seed=0)
    cube = cloudfill.write_cube(scene, tmp_path / "c.zarr", chunks={"y": 16, "x": 16})
    chunk = next(p for p in sorted((cube / "s2").rglob("*")) if p.is_file() and "c" in p.parts)
    chunk.write_bytes(b"\x00garbage" * 8)
    for attempt in range(3):  # the noise depended on thread timing
        done = _cloudfill("preprocess", str(cube), str(tmp_path / f"p{attempt}.zarr"),
                          "--no-progress")  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1, done.stderr
        assert done.stderr.startswith("error: corrupt zarr data"), done.stderr


def test_python_fill_settings_errors_before_work(
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    with pytest.raises(cloudfill.errors.ParameterError):
        fill_to_zarr(
            inputs.cube,
            tmp_path / "f.zarr",
            inputs.model,
            FillSettings(inference=InferenceSettings(tile=30)),
        )
    assert not (tmp_path / "f.zarr").exists()


def test_repeated_evaluation_dates_are_scored_once(inputs: Inputs) -> None:  # noqa: F811
    date = inputs.date
    plan = plan_evaluation(inputs.scene, with_model=False, dates=[date, "2023-01-10", date])
    assert [f"{d:%Y-%m-%d}" for d in plan.dates] == ["2023-01-10", date]


def test_a_plain_xarray_store_opens_without_warnings(
    inputs: Inputs,  # noqa: F811
    tmp_path: Path,
) -> None:
    # No consolidated metadata (plain xarray, consolidated=False): no RuntimeWarning that
    # would drown a one-line error.
    store = _raw_store(inputs.scene, tmp_path / "plain.zarr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = cloudfill.open_cube(store)
    np.testing.assert_array_equal(ds.s2.values, inputs.scene.s2.values)
