"""Issue 17, the first hour: help at 80 columns, flags in messages, evaluate's progress,
``info --check``, a closed pipe, and why a date was not synthesized."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
import xarray as xr
from rich.console import Console

import cloudfill
from cloudfill.cli import app, run
from cloudfill.cli._common import fill_summary, reason_with_flags
from cloudfill.cli.app import cli_message
from cloudfill.core.pairs import PairingRule, pairs
from cloudfill.evaluation.plan import plan_evaluation
from cloudfill.evaluation.scoring import run_evaluation
from cloudfill.fill.progress import FillProgress
from tests.conftest import fill_series_argv, make_tiny_model

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def cube(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ds = cloudfill.simulate_scene((32, 32), dates=3, seed=0)
    return cloudfill.write_cube(ds, tmp_path_factory.mktemp("cube") / "c.zarr")


# --- 1. help ------------------------------------------------------------------------------------


def _help(command: str, columns: int, monkeypatch: pytest.MonkeyPatch, capsys) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert run([command, "--help"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("columns", [80, 200])
@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_every_option_in_full(
    command: str, columns: int, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    assert {"train", "fill-series", "evaluate", "synthesize", "make-cube", "info"} <= set(COMMANDS)
    text = _help(command, columns, monkeypatch, capsys)
    params = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    names = [n for p in params for n in (*p.opts, *p.secondary_opts) if n.startswith("-")]
    assert names
    for name in names:  # whole: not cut ("--cloud-thresh…") nor wrapped
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), name
    assert "…" not in text
    assert not re.search(r"<[a-z][^>]*>", text)  # no <bool>, <path>, <list[str]> ...
    usage = text.strip().splitlines()[0]
    assert usage.startswith(f"Usage: cloudfill {command} [OPTIONS]") and "{" not in usage
    assert max(len(line) for line in text.splitlines()) <= 80


def test_help_paragraphs_are_rewrapped(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # fill-series' docstring is hard-wrapped at 92 columns: at 80 its lines must be refilled,
    # not broken where the docstring broke them.
    text = _help("fill-series", 80, monkeypatch, capsys)
    description = text.split("Arguments:")[0].strip().splitlines()[1:]
    paragraphs = "\n".join(line.strip() for line in description).strip().split("\n\n")
    assert len(paragraphs) == 2
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        assert all(len(line) > 55 for line in lines[:-1]), lines
    assert "--resume, the default" in text and "-o, --out PATH" in text


# --- 2. flags, not keywords --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            "output o.zarr was made by a different job (...); pass overwrite=True to replace it",
            "output o.zarr was made by a different job (...); pass --overwrite to replace it",
        ),
        (
            "'run' already holds a training run; pass resume=True to continue it",
            "'run' already holds a training run; pass --resume to continue it",
        ),
        ("pass --overwrite (overwrite=True) to replace it", "pass --overwrite to replace it"),
        ("pass overwrite=True (--overwrite) to replace it", "pass --overwrite to replace it"),
        ("no default model; pass model=PATH", "no default model; pass --model PATH"),
        ("no such cube", "no such cube"),
    ],
)
def test_cli_message_names_flags(message: str, expected: str) -> None:
    assert cli_message(message) == expected


def test_errors_under_the_cli_name_flags(tmp_path: Path, capsys) -> None:
    out = tmp_path / "c.zarr"
    args = ["make-cube", str(out), "--simulate", "--shape", "16x16", "--dates", "2"]
    assert run(args) == 0
    capsys.readouterr()
    assert run(args) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "=True" not in err


@pytest.mark.parametrize("value", ["-3", "nan", "inf", "abc"])
def test_a_bad_adjust_is_named_as_the_flag(tmp_path: Path, capsys, value: str) -> None:
    # Refused while parsing (before the cube is opened), under the option's own name.
    args = ["fill-series", str(tmp_path / "none.zarr"), "-o", str(tmp_path / "o.zarr")]
    assert run([*args, f"--adjust={value}"]) == 2
    err = capsys.readouterr().err
    assert "'--adjust'" in err and "adjust:" not in err
    assert not (tmp_path / "o.zarr").exists()


def test_library_messages_name_keywords(tmp_path: Path) -> None:
    from cloudfill.training.run import _saved_state

    (tmp_path / "last").mkdir()
    with pytest.raises(cloudfill.errors.OutputError) as caught:
        _saved_state(tmp_path, resume=False)
    assert "resume=True" in str(caught.value) and "--resume" not in str(caught.value)


# --- 3. evaluate's progress --------------------------------------------------------------------


class _Recorder(FillProgress):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def start(self, total: int, done: int, where: str | None) -> None:
        self.calls.append(("start", total, done))

    def date(self, date: pd.Timestamp, method: str) -> None:
        self.calls.append(("date", date))

    def advance(self) -> None:
        self.calls.append(("advance",))

    def stop(self) -> None:
        self.calls.append(("stop",))


def test_evaluation_reports_each_date() -> None:
    ds = cloudfill.simulate_scene((32, 32), seed=1)
    plan = plan_evaluation(ds, with_model=False, baselines=["persistence"], landcover=False)
    recorder = _Recorder()
    run_evaluation(plan, progress=recorder)
    n = len(plan.dates)
    assert n and recorder.calls[0] == ("start", n, 0) and recorder.calls[-1] == ("stop",)
    assert [c[1] for c in recorder.calls if c[0] == "date"] == list(plan.dates)
    assert sum(c == ("advance",) for c in recorder.calls) == n


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_evaluate_cli_shows_progress(cube: Path, tmp_path: Path, capsys) -> None:
    ds = cloudfill.open_cube(cube)
    model = make_tiny_model(ds).save(tmp_path / "m.safetensors")
    args = ["evaluate", str(cube), "--model", str(model), "-o", str(tmp_path / "report")]
    args += ["--no-landcover", "--baselines", "none", "--max-side", "32"]
    assert run(args) == 0
    assert re.search(r"scoring \d{4}-\d\d-\d\d .*dates", capsys.readouterr().out)
    assert run([*args, "--no-progress"]) == 0
    assert "scoring" not in capsys.readouterr().out


# --- 4. info --check ---------------------------------------------------------------------------


def test_info_check_says_it_passed(cube: Path, capsys) -> None:
    assert run(["info", str(cube), "--check", "--no-stats"]) == 0
    assert "check passed" in capsys.readouterr().out
    assert run(["info", str(cube), "--no-stats"]) == 0
    assert "check passed" not in capsys.readouterr().out


# --- 5. a closed pipe --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["info", "CUBE"], ["--version"]])
def test_closed_stdout_exits_0(cube: Path, tmp_path: Path, args: list[str]) -> None:
    # The reader is gone before the first write: every write fails (`| head -1`, reliably).
    # `info` writes through rich and fails at the last flush; `--version` through click,
    # which turns the error into SystemExit(1) inside the command.
    code = "import sys; from cloudfill.cli import main; sys.argv[0] = 'cloudfill'; main()"
    argv = [str(cube) if a == "CUBE" else a for a in args]
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-c", code, *argv],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            timeout=300,
        )
    finally:
        os.close(write)
    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr and "error" not in done.stderr


# --- 6. why a date was not synthesized ---------------------------------------------------------


def _fake_output(plan: pd.DataFrame) -> xr.Dataset:
    """A fill output's provenance (what fill_summary reads), from a pairs() plan."""
    n = len(plan)
    return xr.Dataset(
        {
            "filled": (("time", "y", "x"), np.zeros((n, 2, 2), dtype=bool)),
            "unfilled": ("time", np.zeros(n, dtype=int)),
            "method": ("time", plan["method"].astype(str).to_numpy()),
            "reason": ("time", plan["reason"].astype(str).to_numpy()),
            "s1_date": ("time", pd.DatetimeIndex(plan["s1_date"]).to_numpy()),
            "reference_date": ("time", pd.DatetimeIndex(plan["reference_date"]).to_numpy()),
            "cloud_fraction": ("time", plan["cloud_fraction"].to_numpy()),
        },
        coords={"time": plan.index.to_numpy()},
    )


@pytest.mark.parametrize("variant", ["SOD", "S"])
@pytest.mark.parametrize(
    "rule", [PairingRule(), PairingRule(max_s1_gap=1), PairingRule(max_ref_age=20)]
)
def test_summary_shows_the_plans_reason_with_its_flags(variant: str, rule: PairingRule) -> None:
    ds = cloudfill.simulate_scene((32, 32), dates=6, seed=2)
    plan = pairs(ds, rule, clear_threshold=0.02, needs_reference=variant != "S")
    console = Console(record=True, width=250)
    console.print(fill_summary(_fake_output(plan)))
    text = console.export_text()
    for date, row in plan.iterrows():
        if row["method"] == "synthesize":
            assert f"{date:%Y-%m-%d}   " not in text.split("not synthesized, because")[-1]
            continue
        assert f"{date:%Y-%m-%d}   {reason_with_flags(row['reason'])}" in text


def test_reasons_name_the_flags() -> None:
    assert reason_with_flags("cloud fraction 0.01 <= threshold 0.02") == (
        "cloud fraction 0.01 <= threshold 0.02 (--cloud-threshold)"
    )
    both = reason_with_flags(
        "no S1 date within 3 days; no earlier reference date with <= 5% cloud within 40 days"
    )
    assert both == (
        "no S1 date within 3 days (--max-s1-gap); no earlier reference date with <= 5% cloud "
        "within 40 days (--max-ref-age, --max-ref-cloud)"
    )
    assert reason_with_flags("the cube has no s1") == "the cube has no s1"


def test_fill_series_summary_says_why(cube: Path, tmp_path: Path, capsys) -> None:
    # No S1 within a tenth of a day of any date: every date is interpolated, no model runs.
    model = make_tiny_model(cloudfill.open_cube(cube)).save(tmp_path / "m.safetensors")
    args = fill_series_argv(cube, model, tmp_path / "f.zarr", "--max-s1-gap", "0.1")
    assert run(args) == 0
    text = capsys.readouterr().out
    assert "not synthesized, because" in text
    assert "no S1 date within 0.1 days (--max-s1-gap)" in text
    assert "no unusable pixels to fill" in text  # a clear date
