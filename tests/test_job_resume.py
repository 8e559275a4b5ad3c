"""Resuming a fill job's store: refused up front, naming what differs, when a store was made
by a different job or by a cloudfill that wrote other variables; resumed otherwise."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
import zarr

import cloudfill
from cloudfill import errors
from cloudfill.cli import run
from cloudfill.core.pairs import PairingRule
from cloudfill.fill import job as job_module
from cloudfill.fill.job import OUTPUT_LAYOUT, FillSettings, fill_to_zarr, model_digest
from cloudfill.fill.progress import FillProgress
from cloudfill.fill.writer import IDENTITY_ATTR, DateWriter
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.default import DEFAULT_MODEL_FILE
from tests.conftest import fill_series_argv, make_tiny_cube, make_tiny_model

# The variables a fill writes at each OUTPUT_LAYOUT: a change here must raise OUTPUT_LAYOUT,
# or stores of the other layout would be resumed and crash in the middle of a date.
LAYOUTS = {
    2: {
        "s2": ("time", "band", "y", "x"),
        "filled": ("time", "y", "x"),
        "confidence": ("time", "y", "x"),
        "error_scale": ("time", "band", "y", "x"),
        "adjust_sigma": ("time",),
        "unfilled": ("time",),
        "method": ("time",),
        "reason": ("time",),
        "cloud_fraction": ("time",),
        "s1_date": ("time",),
        "reference_date": ("time",),
        "reference_chained": ("time",),
    },
}
NEW_IN_2 = ("error_scale", "adjust_sigma")

SETTINGS = FillSettings(
    rule=PairingRule(max_ref_age=400), inference=InferenceSettings(tile=32), window=None
)


class _Killed(Exception):
    """Stands for a run killed once its first date is written."""


class _KillAfterOneDate(FillProgress):
    def advance(self) -> None:
        raise _Killed


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    ds = cloudfill.simulate_scene((32, 32), dates=3, seed=1, cloud_fraction=[0, 0.5, 0.4])
    cube = cloudfill.write_cube(ds, tmp / "cube.zarr")
    model = make_tiny_model(ds).save(tmp / "model.safetensors")
    full = tmp / "full.zarr"
    fill_to_zarr(cube, full, model, SETTINGS)
    half = tmp / "half.zarr"
    with pytest.raises(_Killed):
        fill_to_zarr(cube, half, model, SETTINGS, progress=_KillAfterOneDate())
    return {"tmp": tmp, "cube": cube, "model": model, "full": full, "half": half}


def _copy(scene: dict[str, Path], name: str) -> Path:
    out = scene["tmp"] / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(scene["half"], out)
    return out


def _files(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def _make_old(out: Path) -> None:
    """Turn a store into one of layout 1, as the cloudfill before it wrote it: without the
    variables layout 2 added, and with a fingerprint but no description of its job."""
    for name in NEW_IN_2:
        shutil.rmtree(out / name)
    group = zarr.open_group(str(out), mode="r+")
    attrs = dict(group.attrs)
    del attrs[IDENTITY_ATTR]
    attrs["cloudfill_job"] = "3f9a7ecaf1b87c0f"
    group.attrs.clear()
    group.attrs.update(attrs)


@pytest.mark.slow  # the fixture fills twice, ~15 s; .ci/run runs the slow tests too
def test_the_output_variables_are_those_of_the_layout(scene: dict[str, Path]) -> None:
    out = xr.open_zarr(scene["full"])
    assert {n: v.dims for n, v in out.data_vars.items()} == LAYOUTS[OUTPUT_LAYOUT]
    identity = json.loads(out.attrs[IDENTITY_ATTR])
    assert identity["layout"] == OUTPUT_LAYOUT and identity["adjust"] == "auto"


@pytest.mark.slow  # the fixture fills twice, ~15 s; .ci/run runs the slow tests too
def test_a_store_of_an_earlier_layout_is_refused_and_kept(
    scene: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = _copy(scene, "old.zarr")
    _make_old(out)
    before = _files(out)
    for settings in (SETTINGS, FillSettings(**{**vars(SETTINGS), "adjust": 12.0})):
        with pytest.raises(errors.OutputError) as refused:
            fill_to_zarr(scene["cube"], out, scene["model"], settings)
        message = str(refused.value)
        assert "an earlier cloudfill wrote it" in message
        assert "lacks 'error_scale', 'adjust_sigma'" in message
        assert "cannot be resumed" in message and "discarding its 1 finished date" in message
        assert _files(out) == before  # nothing of it deleted, nothing written
    # The command line names its flag.
    assert run(fill_series_argv(scene["cube"], scene["model"], out)) == 2
    err = capsys.readouterr().err
    assert "earlier cloudfill" in err and "--overwrite" in err and "overwrite=True" not in err
    assert _files(out) == before
    fill_to_zarr(scene["cube"], out, scene["model"], SETTINGS, overwrite=True)
    xr.testing.assert_identical(xr.open_zarr(out).load(), xr.open_zarr(scene["full"]).load())


@pytest.mark.slow  # the fixture fills twice, ~15 s; .ci/run runs the slow tests too
def test_a_store_of_other_settings_names_the_fields_that_differ(scene: dict[str, Path]) -> None:
    out = _copy(scene, "other.zarr")
    before = _files(out)
    fixed = FillSettings(**{**vars(SETTINGS), "adjust": 12.0, "feather": 2})
    with pytest.raises(errors.OutputError, match="different job") as refused:
        fill_to_zarr(scene["cube"], out, scene["model"], fixed)
    message = str(refused.value)
    assert "adjust ('auto' there, 12.0 here), feather (8 there, 2 here)" in message
    assert "Rerun with its inputs and settings to resume it" in message
    assert "variables" not in message  # the same layout: resumable with its settings
    assert _files(out) == before


@pytest.mark.slow  # the fixture fills twice, ~15 s; .ci/run runs the slow tests too
def test_a_store_of_the_same_job_resumes(scene: dict[str, Path]) -> None:
    out = _copy(scene, "same.zarr")
    assert sorted(p.name for p in (out / ".cloudfill-done").glob("*.json")) == ["000000.json"]
    fill_to_zarr(scene["cube"], out, scene["model"], SETTINGS)
    xr.testing.assert_identical(xr.open_zarr(out).load(), xr.open_zarr(scene["full"]).load())


def test_a_changed_default_model_is_another_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = cloudfill.__path__[0] + f"/data/{DEFAULT_MODEL_FILE}"
    digest = hashlib.sha256(Path(shipped).read_bytes()).hexdigest()[:16]
    assert model_digest(None) == f"default-{digest}"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / DEFAULT_MODEL_FILE).write_bytes(b"another default model")
    monkeypatch.setattr(job_module, "resources", SimpleNamespace(files=lambda _: tmp_path))
    assert re.fullmatch("default-[0-9a-f]{16}", model_digest(None))
    assert model_digest(None) != f"default-{digest}"


def _ds() -> xr.Dataset:
    return make_tiny_cube(n_time=3)[["s2", "cloud"]].chunk({"time": 1})


def test_the_writer_resumes_only_a_store_with_the_templates_variables(tmp_path: Path) -> None:
    ds = _ds()
    out = tmp_path / "o.zarr"
    w = DateWriter(out, ds, job="j", identity={"a": 1})
    w.write(ds.isel(time=[0]), 0)
    assert DateWriter(out, ds, job="j").pending() == [1, 2]
    # The same fingerprint, other variables: refused before any write, not an xarray error.
    bigger = ds.assign(extra=ds["cloud"])
    with pytest.raises(errors.OutputError, match=r"has other variables.*lacks 'extra'"):
        DateWriter(out, bigger, job="j")
    renamed = ds.assign(s2=ds["s2"].rename(band="channel"))
    with pytest.raises(errors.OutputError, match=r"'s2' has dims \(time, band, y, x\), not"):
        DateWriter(out, renamed, job="j")
    with pytest.raises(errors.OutputError, match=r"different job: its job differs in a \(1"):
        DateWriter(out, ds, job="k", identity={"a": 2})
    assert np.array_equal(
        xr.open_zarr(out, consolidated=False)["s2"].isel(time=0), ds["s2"].isel(time=0)
    )
    assert DateWriter(out, bigger, job="j", overwrite=True).pending() == [0, 1, 2]
