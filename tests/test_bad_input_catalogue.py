"""The bad-input catalogue (issue 17): every known bad input, through the CLI and Python.

One table, one body. Each case builds its input in a fresh folder, runs one CLI command (in
process, as ``cloudfill ...`` would) or one Python call, and the body asserts the same things
for all of them:

- the exact outcome: the exit code, or the exception type (a ``cloudfill.errors`` class);
- the message names the problem (a regular expression), on one line, with no traceback
  (``--debug`` is never passed here);
- nothing written or half-written: the case's folder holds exactly the files it held before
  the command, byte for byte (so a refused ``--overwrite`` deleted nothing), and the shared
  input cube and model are byte-identical.

A few cases are inputs the tool conforms rather than refuses (integer S2 with no-data zeros,
a scene smaller than the model's halo, repeated dates); they assert exit code 0 and check the
result instead. A fill job that fails during its work keeps its store, resumable by design:
``Case.leaves`` names it, and the case checks that the store is marked incomplete. The
numbers in ``Case.item`` are the defects of issue 17; more cases, and the checks that are no
table row, are in tests/test_bad_input_catalogue_more.py.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import cloudfill
from cloudfill import errors
from cloudfill.cli import run
from cloudfill.fill.job import fill_to_zarr
from cloudfill.training.loop import LAST_NAME
from tests.conftest import make_tiny_model

pytestmark = pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")

# --- the shared inputs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """Inputs every case may read and none may change."""

    root: Path
    cube: Path  # a valid 32 x 32 cube of 4 dates (2023-01-10, 04-10, 07-09, 10-07)
    model: Path  # a tiny untrained SOD checkpoint with the cube's statistics
    scene: xr.Dataset  # the cube in memory
    tifs: dict[str, Path]  # GeoTIFF sources, some from the wrong place

    @property
    def date(self) -> str:
        """A cloudy date with S1 near it (synthesizable)."""
        return "2023-04-10"


def _tif(path: Path, data: np.ndarray, crs: str, transform: Any) -> Path:
    data = data[None] if data.ndim == 2 else data
    profile = {"driver": "GTiff", "height": data.shape[1], "width": data.shape[2]}
    with rasterio.open(
        path, "w", **profile, count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform
    ) as dst:
        dst.write(data)
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("catalogue")
    scene = cloudfill.simulate_scene((32, 32), dates=4, seed=0)
    cube = cloudfill.write_cube(scene, root / "c.zarr")
    model = make_tiny_model(scene).save(root / "model.safetensors")
    rng = np.random.default_rng(0)
    here, far = from_origin(500000.0, 5000000.0, 10, 10), from_origin(550000.0, 5000000.0, 10, 10)
    s1 = rng.normal(-12, 2, (2, 20, 24)).astype("float32")
    dem = np.full((20, 24), 100.0, "float32")
    utm = "EPSG:32633"
    tifs = {
        "s2": _tif(root / "s2.tif", rng.integers(1, 10000, (4, 20, 24), dtype="uint16"), utm, here),
        "s1": _tif(root / "s1.tif", s1, utm, here),
        "dem": _tif(root / "dem.tif", dem, utm, here),
        "s1_far": _tif(root / "s1_far.tif", s1, utm, far),
        "dem_zone": _tif(root / "dem_zone.tif", dem, "EPSG:32634", here),
    }
    return Inputs(root, cube, model, scene, tifs)


def _tree(root: Path) -> dict[str, str]:
    """Every file and folder below ``root`` with its content's digest (folders: "")."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return out


def _raw_store(ds: xr.Dataset, path: Path) -> Path:
    """Write ``ds`` with plain xarray (no cloudfill checks): what another tool might write."""
    ds.drop_vars("truth").to_zarr(path, zarr_format=3, consolidated=False)
    return path


# --- the catalogue ----------------------------------------------------------------------------

Action = list[str] | Callable[[], Any]


@dataclass(frozen=True)
class Case:
    """One bad input.

    ``build(inputs, folder)`` makes what the case needs inside ``folder`` and returns the
    action: CLI arguments or a Python call. ``expect`` is an exit code or an exception type;
    ``match`` must be found in the message (stderr, or ``str(exception)``); ``check`` looks
    at the result of a case that succeeds.
    """

    id: str
    item: str
    build: Callable[[Inputs, Path], Action]
    expect: int | type[Exception]
    match: str = ""
    check: Callable[[Inputs, Path, str], None] | None = None
    avoid: tuple[str, ...] = field(default=())  # phrases the message must not contain
    leaves: tuple[str, ...] = field(default=())  # what a failed job may leave (resumable)
    slow: bool = False  # over 3 s: run by .ci/run's slow pass, not the default suite


def params(cases: list[Case]) -> list[Any]:
    """``cases`` for ``pytest.mark.parametrize``, the slow ones marked ``slow``."""
    return [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else []) for c in cases]


def _user_folder(folder: Path, name: str = "proj") -> Path:
    proj = folder / name
    proj.mkdir()
    (proj / "important.txt").write_text("keep")
    return proj


def _fill(i: Inputs, out: Path, *extra: str) -> list[str]:
    return [
        "fill-series", str(i.cube), "--model", str(i.model), "--out", str(out),
        "--tile", "32", "--no-progress", *extra,
    ]  # fmt: skip


def _dn_cube(i: Inputs, f: Path) -> Path:
    return _raw_store(i.scene.assign(s2=(i.scene.s2 * 10000).astype("float32")), f / "dn.zarr")


def _s1_labelled(i: Inputs, f: Path, units: str) -> Path:
    s1 = i.scene.s1 if units == "linear" else 10 ** (i.scene.s1 / 10)
    ds = i.scene.assign(s1=s1.astype("float32").assign_attrs(units=units))
    return _raw_store(ds, f / f"s1_{units}.zarr")


def _corrupt_chunk(i: Inputs, f: Path) -> Path:
    cube = f / "c.zarr"
    shutil.copytree(i.cube, cube)
    chunk = next(p for p in sorted((cube / "s2").rglob("*")) if p.is_file() and "c" in p.parts)
    chunk.write_bytes(b"\x00garbage" * 8)
    return cube


def _changed_under_a_finished_job(i: Inputs, f: Path) -> list[str]:
    cube = cloudfill.write_cube(cloudfill.simulate_scene((24, 24), dates=3, seed=0), f / "c.zarr")
    argv = ["fill-series", str(cube), "--model", str(i.model), "--out", str(f / "out.zarr"),
            "--tile", "16", "--no-progress"]  # fmt: skip
    assert run(argv) == 0
    shutil.rmtree(cube)
    cloudfill.write_cube(cloudfill.simulate_scene((24, 24), dates=3, seed=1), cube)
    return argv


class _Unpickled:
    """Loading this pickle would create ``marker``: a checkpoint must never be unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def _pickle_checkpoint(f: Path) -> Path:
    path = f / "model.pt"
    path.write_bytes(pickle.dumps(_Unpickled(f.parent / "unpickled-marker")))
    return path


def _file(folder: Path) -> Path:
    path = folder / "afile"
    path.write_text("keep")
    return path


def _with_crs(i: Inputs, crs: str) -> xr.Dataset:
    # The rioxarray way: the variable names its own grid-mapping coordinate.
    return i.scene.assign(dem=i.scene.dem.rio.write_crs(crs, grid_mapping_name="dem_ref"))


def _training_run(folder: Path) -> Path:
    # A run's state file; the refusal comes before the state is read, so no training is needed.
    out = folder / "m"
    out.mkdir()
    (out / LAST_NAME).write_bytes(b"")
    return out


def _unsorted(i: Inputs) -> xr.Dataset:
    return i.scene.isel(time=[1, 0, 2, 3])


def _check_l2a_zero(i: Inputs, f: Path, text: str) -> None:
    assert text == "nan"


def _check_small_scene(i: Inputs, f: Path, text: str) -> None:
    out = cloudfill.open_cube(f / "f.zarr")
    assert out.sizes["y"] == 8 and np.isfinite(out.s2.values).mean() > 0.9


def _check_dates_once(i: Inputs, f: Path, text: str) -> None:
    out = cloudfill.open_cube(f / "f.zarr")
    assert list(out.time.values) == [np.datetime64("2023-04-10")]


def _check_passed(i: Inputs, f: Path, text: str) -> None:
    assert "passed" in text.lower()


def _l2a_zero(i: Inputs, f: Path) -> Callable[[], str]:
    dn = i.scene.assign(s2=(i.scene.s2 * 10000).astype("uint16"))
    dn.s2[0, :, 0, 0] = 0
    return lambda: str(cloudfill.conform(dn).s2[0, 0, 0, 0].values)


# A table: one case per entry, kept compact on purpose.
# fmt: off
CASES: list[Case] = [
    # 1: --overwrite replaces only what cloudfill wrote, or an empty folder
    Case("overwrite-folder-fill", "1", lambda i, f: _fill(i, _user_folder(f), "--overwrite"),
         2, "may hold your own files"),
    Case("overwrite-folder-synthesize", "1", lambda i, f: [
        "synthesize", str(i.cube), i.date, "--model", str(i.model),
        "--out", str(_user_folder(f, "p.zarr")), "--overwrite", "--no-progress"],
         2, "may hold your own files"),
    Case("overwrite-folder-make-cube", "1", lambda i, f: [
        "make-cube", str(_user_folder(f)), "--simulate", "--shape", "16x16", "--overwrite"],
         2, "your own files|not a zarr store"),
    Case("overwrite-folder-preprocess", "1", lambda i, f: [
        "preprocess", str(i.cube), str(_user_folder(f)), "--overwrite", "--no-progress"],
         2, "your own files|not a zarr store"),
    Case("overwrite-folder-write_cube", "1", lambda i, f: partial(
        cloudfill.write_cube, i.scene, _user_folder(f), overwrite=True),
         errors.OutputError, "not a zarr store"),
    Case("overwrite-folder-fill_to_zarr", "1", lambda i, f: partial(
        fill_to_zarr, i.cube, _user_folder(f), i.model, overwrite=True),
         errors.OutputError, "may hold your own files"),
    # 2: nothing is written inside an input, and no input lies inside an output
    Case("out-inside-input-evaluate", "2", lambda i, f: [
        "evaluate", str(i.cube), "--out", str(i.cube / "report")],
         2, "would overwrite the input"),
    Case("out-inside-input-synthesize", "2", lambda i, f: [
        "synthesize", str(i.cube), i.date, "--out", str(i.cube / "s.tif"), "--no-progress"],
         2, "would overwrite the input"),
    Case("cog-dir-inside-input", "2", lambda i, f: _fill(
        i, f / "f.zarr", "--cog-dir", str(i.cube / "cogs")), 2, "would overwrite the input"),
    Case("out-inside-input-fill", "2", lambda i, f: _fill(i, i.cube / "f.zarr"),
         2, "would overwrite the input"),
    Case("out-inside-input-train", "2", lambda i, f: [
        "train", str(i.cube), "--out", str(i.cube / "m"), "--no-progress"],
         2, "would overwrite the input"),
    Case("input-inside-out", "2", lambda i, f: _fill(i, i.root, "--overwrite"),
         2, "the input lies inside it"),
    Case("write_cube-onto-its-source", "2", lambda i, f: partial(
        cloudfill.write_cube, cloudfill.open_cube(i.cube), i.cube, overwrite=True),
         errors.OutputError, "read from"),
    # 3: float reflectance x 10000
    Case("s2-dn-as-float-cli", "3", lambda i, f: [
        "fill-series", str(_dn_cube(i, f)), "--out", str(f / "f.zarr"), "--no-progress"],
         2, "digital numbers"),
    Case("s2-dn-as-float-python", "3", lambda i, f: partial(
        cloudfill.fill_series, i.scene.assign(s2=i.scene.s2 * 10000)),
         errors.UnitsError, "divide by 10000"),
    # 4: integer S2: 0 is no data (conformed, not refused)
    Case("l2a-zero-is-no-data", "4", _l2a_zero, 0, check=_check_l2a_zero),
    # 5: S1 values against their units; the CLI can set the units
    Case("s1-linear-labelled-db", "5", lambda i, f: [
        "fill-series", str(_s1_labelled(i, f, "dB")), "--out", str(f / "f.zarr"),
        "--no-progress"], 2, "labelled dB.*looks like linear"),
    Case("s1-db-labelled-linear", "5", lambda i, f: partial(
        cloudfill.synthesize, i.scene.assign(s1=i.scene.s1.assign_attrs(units="linear")), i.date),
         errors.UnitsError, "labelled linear.*looks like dB"),
    Case("s1-without-units", "5", lambda i, f: partial(
        cloudfill.fill_series, i.scene.assign(s1=i.scene.s1.copy().drop_attrs())),
         errors.DTypeError, "units"),
    Case("make-cube-bad-s1-units", "5", lambda i, f: [
        "make-cube", str(f / "c.zarr"), "--s2", f"2021-06-01={i.tifs['s2']}",
        "--s1", f"2021-06-02={i.tifs['s1']}", "--dem", str(i.tifs["dem"]),
        "--s1-units", "decibel"], 2, "decibel"),
    # 6: sources from the wrong place; a second CRS on one variable
    Case("s1-from-elsewhere", "6", lambda i, f: [
        "make-cube", str(f / "c.zarr"), "--s2", f"2021-06-01={i.tifs['s2']}",
        "--s1", f"2021-06-02={i.tifs['s1_far']}", "--dem", str(i.tifs["dem"])],
         2, r"s1_far\.tif.*0 %"),
    Case("dem-in-another-crs", "6", lambda i, f: [
        "make-cube", str(f / "c.zarr"), "--s2", f"2021-06-01={i.tifs['s2']}",
        "--s1", f"2021-06-02={i.tifs['s1']}", "--dem", str(i.tifs["dem_zone"])],
         2, r"dem_zone\.tif"),
    Case("second-crs-validate", "6", lambda i, f: partial(
        cloudfill.validate, _with_crs(i, "EPSG:4326")),
         errors.CRSMismatchError, "'dem' carries CRS EPSG:4326"),
    Case("second-crs-write_cube", "6", lambda i, f: partial(
        cloudfill.write_cube, _with_crs(i, "EPSG:4326"), f / "c.zarr"),
         errors.CRSMismatchError, "EPSG:4326"),
    # 7: any scene make-cube accepts fills (conformed: exit 0)
    Case("scene-smaller-than-the-halo", "7", lambda i, f: run(
        ["make-cube", str(f / "s.zarr"), "--simulate", "--shape", "8x8", "--dates", "4"]
    ) == 0 and ["fill-series", str(f / "s.zarr"), "--out", str(f / "f.zarr"), "--no-progress"],
         0, check=_check_small_scene, slow=True),
    # 8: a changed input is not resumed
    Case("changed-input-not-resumed", "8", _changed_under_a_finished_job,
         2, "different job.*--overwrite", avoid=("overwrite=True",), slow=True),
    # 9: bad input, not internal errors
    Case("output-under-a-file", "9", lambda i, f: _fill(i, _file(f) / "f.zarr"),
         2, "is a file, not a folder"),
    Case("missing-cube", "9", lambda i, f: [
        "fill-series", str(f / "nowhere.zarr"), "--out", str(f / "f.zarr"), "--no-progress"],
         2, "nowhere.zarr"),
    Case("missing-model", "9", lambda i, f: [
        "synthesize", str(i.cube), i.date, "--model", str(f / "none.safetensors"),
        "--out", str(f / "s.tif"), "--no-progress"], 2, "none.safetensors"),
    Case("pickle-checkpoint", "9", lambda i, f: [
        "synthesize", str(i.cube), i.date, "--model", str(_pickle_checkpoint(f)),
        "--out", str(f / "s.tif"), "--no-progress"], 2, "model.pt"),
    Case("corrupt-chunk", "9", lambda i, f: [
        "fill-series", str(_corrupt_chunk(i, f)), "--model", str(i.model),
        "--out", str(f / "f.zarr"), "--tile", "32", "--no-progress"], 2, "'s2'.*chunk"),
    Case("corrupt-chunk-preprocess", "9", lambda i, f: [
        "preprocess", str(_corrupt_chunk(i, f)), str(f / "p.zarr"), "--no-progress"],
         2, "corrupt zarr data"),
    Case("corrupt-chunk-evaluate", "9", lambda i, f: [
        "evaluate", str(_corrupt_chunk(i, f)), "--out", str(f / "report"), "--no-progress",
        "--no-landcover"], 2, "corrupt zarr data"),
    Case("model-for-another-cube", "9", lambda i, f: partial(
        cloudfill.synthesize, i.scene.drop_vars("dem"), i.date, cloudfill.load_model(i.model)),
         errors.ModelMismatchError, "dem"),
    # 10: no leftovers, no duplicates
    Case("unknown-cluster", "10", lambda i, f: _fill(i, f / "f.zarr", "--cluster", "bogus"),
         2, "bogus"),
    Case("repeated-dates", "10", lambda i, f: _fill(
        i, f / "f.zarr", "--dates", "2023-04-10,2023-04-10"), 0, check=_check_dates_once),
    # 11: the Python API answers with cloudfill's errors
    Case("synthesize-none", "11", lambda i, f: partial(cloudfill.synthesize, i.scene, None),
         errors.ParameterError, "date"),
    Case("synthesize-not-a-date", "11", lambda i, f: partial(
        cloudfill.synthesize, i.scene, "2023-13-45"), errors.ParameterError, "2023-13-45"),
    Case("synthesize-no-s1-near", "11", lambda i, f: partial(
        cloudfill.synthesize, i.scene, "2031-01-01"), errors.ParameterError, "no S1 acquisition"),
    Case("fill_series-not-a-cube", "11", lambda i, f: partial(
        cloudfill.fill_series, str(i.cube)), errors.DimensionError, "open_cube"),
    Case("evaluate-not-a-cube", "11", lambda i, f: partial(cloudfill.evaluate, None),
         errors.DimensionError, "NoneType"),
    Case("train-a-data-array", "11", lambda i, f: partial(
        cloudfill.train, i.scene.s2, out=f / "m"), errors.DimensionError, "several variables"),
    Case("fill_series-bad-dates", "11", lambda i, f: partial(
        cloudfill.fill_series, i.scene, dates=["soon"]), errors.ParameterError, "soon"),
    Case("write_cube-unsorted", "11", lambda i, f: partial(
        cloudfill.write_cube, _unsorted(i), f / "c.zarr"), errors.TimeAxisError, "sorted"),
    Case("write_cube-duplicate-time", "11", lambda i, f: partial(
        cloudfill.write_cube, i.scene.isel(time=[0, 1, 1, 2]), f / "c.zarr"),
         errors.TimeAxisError, "2023-04-10"),
    Case("write_cube-no-crs", "11", lambda i, f: partial(
        cloudfill.write_cube, i.scene.drop_vars("spatial_ref"), f / "c.zarr"),
         errors.MissingCRSError, "CRS"),
    # options out of range, before any work
    Case("cloud-threshold-above-1", "options", lambda i, f: _fill(
        i, f / "f.zarr", "--cloud-threshold", "1.5"), 2, "--cloud-threshold .*1.5",
         avoid=("cloud_threshold",)),
    Case("negative-feather", "options", lambda i, f: _fill(i, f / "f.zarr", "--feather", "-1"),
         2, "--feather must"),
    Case("tile-not-a-multiple", "options", lambda i, f: _fill(i, f / "f.zarr", "--tile", "30"),
         2, "30"),
    Case("unknown-date", "options", lambda i, f: _fill(i, f / "f.zarr", "--dates", "2031-01-01"),
         2, "2031-01-01"),
    Case("unknown-variant", "options", lambda i, f: [
        "train", str(i.cube), "--out", str(f / "m"), "--variant", "XYZ", "--no-progress"],
         2, "XYZ"),
    # the first hour: messages name CLI flags; info --check says the cube passed
    Case("flags-not-keywords-overwrite", "first hour", lambda i, f: _fill(
        i, cloudfill.write_cube(i.scene, f / "other.zarr")), 2, "--overwrite",
         avoid=("overwrite=True",)),
    Case("flags-not-keywords-resume", "first hour", lambda i, f: [
        "train", str(i.cube), "--out", str(_training_run(f)), "--no-progress"],
         2, "already holds a training run; pass --resume", avoid=("resume=True",)),
    Case("info-check-passes", "first hour", lambda i, f: ["info", str(i.cube), "--check"],
         0, check=_check_passed),
]
# fmt: on


def check_case(
    case: Case, inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The catalogue's one body (tests/test_bad_input_catalogue_more.py runs it too)."""
    guarded = _tree(inputs.root)
    folder = tmp_path / "case"
    folder.mkdir()
    action = case.build(inputs, folder)
    capsys.readouterr()  # what building printed is not the case's output
    before = _tree(folder)
    if isinstance(action, list):
        code = run(action)
        captured = capsys.readouterr()
        message, text = captured.err, captured.out
        if isinstance(case.expect, int):
            assert code == case.expect, (action, message)
        else:
            raise AssertionError("a CLI case expects an exit code")
    elif isinstance(case.expect, int):
        text = str(action())
        message = ""
    else:
        with pytest.raises(case.expect) as info:
            action()
        message = str(info.value)
        text = ""
    if case.expect != 0:
        assert case.match, "a refused input must name the problem"
    if case.match:
        assert re.search(case.match, message, re.S), message
    for phrase in case.avoid:
        assert phrase not in message, message
    assert "Traceback" not in message and "internal error" not in message, message
    if case.expect != 0:
        assert message.strip().count("\n") == 0, message  # one line
        after = {k: v for k, v in _tree(folder).items() if k.split("/")[0] not in case.leaves}
        assert after == before, "a refused command wrote or deleted something"
    if case.check is not None:
        case.check(inputs, folder, text)
    assert not (tmp_path / "unpickled-marker").exists(), "a checkpoint was unpickled"
    assert _tree(inputs.root) == guarded, "an input was changed"


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(
    case: Case, inputs: Inputs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_case(case, inputs, tmp_path, capsys)


def test_the_catalogue_covers_every_item() -> None:
    items = {c.item for c in CASES}
    assert {str(n) for n in range(1, 12)} <= items, items
    assert len(CASES) >= 40
