"""Outputs never go into an input, and --overwrite never deletes a user's files (issue 17, 1-2)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import cloudfill
from cloudfill._outputs import check_output, nested
from cloudfill.cli import run
from cloudfill.errors import OutputError


def _digest(root: Path) -> str:
    """Names and bytes of every file below ``root``: equal digests, untouched folder."""
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture
def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "proj"
    folder.mkdir()
    (folder / "important.txt").write_text("keep")
    return folder


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scene = cloudfill.simulate_scene((32, 32), dates=3, seed=0)
    return cloudfill.write_cube(scene, tmp_path_factory.mktemp("in") / "c.zarr")


def test_overwrite_replaces_only_empty_folders_zarr_stores_and_rasters(
    tmp_path: Path, user_folder: Path, cube: Path
) -> None:
    with pytest.raises(OutputError, match="may hold your own files"):
        check_output(user_folder, overwrite=True)
    with pytest.raises(OutputError, match="pass --overwrite"):
        check_output(user_folder)
    assert (user_folder / "important.txt").read_text() == "keep"
    (tmp_path / "empty").mkdir()
    check_output(tmp_path / "empty", overwrite=True)
    check_output(cube, overwrite=True)  # a zarr store: what cloudfill writes
    (tmp_path / "old.tif").write_bytes(b"")
    check_output(tmp_path / "old.tif", overwrite=True)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="it is a file"):
        check_output(tmp_path / "notes.txt", overwrite=True)
    check_output(user_folder, exists_ok=True)  # a folder written into, nothing deleted
    with pytest.raises(OutputError, match="not a folder"):
        check_output(tmp_path / "notes.txt", exists_ok=True)
    check_output(tmp_path / "new.zarr")


def test_an_output_may_not_touch_an_input(tmp_path: Path) -> None:
    inp = tmp_path / "c.zarr"
    assert nested(inp / "report", inp) and nested(tmp_path, inp) and nested(inp, inp)
    assert not nested(tmp_path / "c2.zarr", inp)
    for out, where in [
        (inp / "report", "lies inside the input"),
        (tmp_path, "the input lies inside it"),
        (inp, "the same path"),
    ]:
        with pytest.raises(OutputError, match=where):
            check_output(out, [inp], overwrite=True)


def test_cli_overwrite_keeps_a_users_folder(
    cube: Path, user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    date = "2023-03-21"
    store = user_folder.with_suffix(".zarr")
    user_folder.rename(store)
    before = _digest(store)
    for argv in (
        ["fill-series", str(cube), "--out", str(store), "--overwrite", "--no-progress"],
        ["synthesize", str(cube), date, "--out", str(store), "--overwrite", "--no-progress"],
    ):
        assert run(argv) == 2, argv
        assert "may hold your own files" in capsys.readouterr().err
    assert _digest(store) == before


def test_fill_series_names_a_users_folder_as_such(
    cube: Path, user_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --overwrite too: not "made by a different job ... discarding 0 dates"."""
    argv = ["fill-series", str(cube), "--out", str(user_folder), "--no-progress"]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "may hold your own files" in err and "discarding" not in err
    assert (user_folder / "important.txt").read_text() == "keep"


def test_cli_never_writes_inside_its_input(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _digest(cube)
    date = str(cloudfill.open_cube(cube).time.values[1])[:10]
    for argv in (
        ["evaluate", str(cube), "--out", str(cube / "report")],
        ["synthesize", str(cube), date, "--out", str(cube / "s.tif"), "--no-progress"],
        [
            "fill-series",
            str(cube),
            "--out",
            str(tmp_path / "f.zarr"),
            "--cog-dir",
            str(cube / "cogs"),
            "--no-progress",
        ],
        ["fill-series", str(cube), "--out", str(cube / "f.zarr"), "--no-progress"],
        ["train", str(cube), "--out", str(cube / "m"), "--no-progress"],
        ["experiment", str(cube), "--out", str(cube / "e"), "--no-progress"],
    ):
        assert run(argv) == 2, argv
        assert "would overwrite the input" in capsys.readouterr().err, argv
    assert _digest(cube) == before
    assert not (tmp_path / "f.zarr").exists()  # refused before any work


def test_a_refused_cluster_leaves_no_output(cube: Path, tmp_path: Path) -> None:
    # Issue 17, 10: the store was laid out before the cluster was opened.
    out = tmp_path / "f.zarr"
    assert run(["fill-series", str(cube), "--out", str(out), "--cluster", "bogus"]) == 2
    assert not out.exists()


def test_a_failed_evaluation_leaves_no_report_folder(
    cube: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudfill.evaluation import report

    def fail(*args: object, **kwargs: object) -> None:
        raise cloudfill.errors.ParameterError("stop here")

    monkeypatch.setattr(report, "run_evaluation", fail)
    with pytest.raises(cloudfill.errors.ParameterError, match="stop here"):
        report.write_report(cloudfill.open_cube(cube), None, tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_repeated_or_shuffled_dates_fill_each_date_once(cube: Path) -> None:
    ds = cloudfill.open_cube(cube)
    first, second = ds.time.values[:2]
    out = cloudfill.fill_series(ds.drop_vars("s1"), dates=[second, first, second])
    assert list(out.time.values) == [first, second]


def test_cog_dir_keeps_a_users_files_and_replaces_its_own(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from cloudfill.cli.cogs import CUBE_TAG

    date = str(cloudfill.open_cube(cube).time.values[1])[:10]
    cogs, out = tmp_path / "cogs", tmp_path / "f.zarr"
    cogs.mkdir()
    mine = cogs / f"s2_filled_{date}.tif"
    profile = {"driver": "GTiff", "height": 2, "width": 2, "count": 1, "dtype": "uint8",
               "crs": "EPSG:32633", "transform": from_origin(0, 2, 1, 1)}  # fmt: skip
    with rasterio.open(mine, "w", **profile) as dst:  # a user's own GeoTIFF, no tags
        dst.write(np.ones((1, 2, 2), "uint8"))
    before = mine.read_bytes()
    argv = ["fill-series", str(cube), "--out", str(out), "--cog-dir", str(cogs), "--no-progress"]
    assert run(argv) == 2
    assert "cloudfill did not write them" in capsys.readouterr().err
    assert mine.read_bytes() == before and not out.exists()  # refused before the fill
    inside = ["fill-series", str(cube), "--out", str(out), "--cog-dir", str(out / "cogs")]
    assert run(inside) == 2 and "inside the output store" in capsys.readouterr().err
    mine.unlink()
    assert run(argv) == 0  # written, tagged, bands named
    with rasterio.open(mine) as src:
        assert src.tags()[CUBE_TAG] == str(cube.resolve())
        assert src.descriptions == ("B02", "B03", "B04", "B08")
    written = mine.stat().st_ino
    assert run(argv) == 0  # a rerun on the same cube replaces its own COGs (a new file)
    assert mine.stat().st_ino != written
    # Another cube's COG of the same name (a tile of a mosaic sharing the folder): refused.
    other = cloudfill.write_cube(cloudfill.open_cube(cube), tmp_path / "other.zarr")
    again = ["fill-series", str(other), "--out", str(tmp_path / "g.zarr"), "--cog-dir",
             str(cogs), "--no-progress"]  # fmt: skip
    assert run(again) == 2
    assert "from another cube" in capsys.readouterr().err
    (cogs / "notes.txt").write_text("keep")
    assert run([*again, "--overwrite"]) == 0  # replaced, as asked; nothing else touched
    assert (cogs / "notes.txt").read_text() == "keep"
    with rasterio.open(mine) as src:
        assert src.tags()[CUBE_TAG] == str(other.resolve())


def test_cog_names_keep_two_acquisitions_of_one_day_apart() -> None:
    from cloudfill.cli.cogs import cog_names

    axis = ["2023-05-10T00:00", "2023-05-10T00:10", "2023-06-01T10:30"]
    names = cog_names(axis)
    assert len(set(names.values())) == 3
    assert list(names.values())[-1] == "s2_filled_2023-06-01.tif"
    # A run of one of the two (--dates) names it as a run of all does.
    first = cog_names(axis[:1], axis=axis)
    assert list(first.values()) == [next(iter(names.values()))] != ["s2_filled_2023-05-10.tif"]


def test_an_unfinished_fill_store_says_so(
    cube: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed job's store (fewer date markers than dates) warns on opening and in info."""
    import warnings

    from cloudfill.cube.zarr_io import MARKER_DIR, fill_progress

    out = tmp_path / "f.zarr"
    assert run(["fill-series", str(cube), "--out", str(out), "--no-progress"]) == 0
    assert fill_progress(out) == (3, 3) and fill_progress(cube) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        cloudfill.open_cube(out)  # finished: quiet
    assert run(["info", str(out), "--no-stats"]) == 0
    assert "3 of 3 dates written (complete)" in capsys.readouterr().out
    sorted((out / MARKER_DIR).glob("[0-9]*.json"))[-1].unlink()  # as if killed before it
    with pytest.warns(UserWarning, match="unfinished fill-series job: 2 of 3 dates"):
        cloudfill.open_cube(out)
    assert run(["info", str(out), "--no-stats"]) == 0
    assert "2 of 3 dates written (UNFINISHED" in capsys.readouterr().out
