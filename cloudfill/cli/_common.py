"""Small pieces shared by the CLI verbs: argument parsing and progress display."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from rich.console import Console

from cloudfill.errors import ParameterError

console = Console(stderr=False, highlight=False)
if not console.is_terminal:
    # Piped or captured output has no width to fit; tables should not be truncated there.
    console.width = 120
err_console = Console(stderr=True, highlight=False)


def parse_dated_paths(values: Sequence[str] | None, option: str) -> dict[pd.Timestamp, list[Path]]:
    """Parse repeated ``DATE=PATH[,PATH...]`` options into {date: [paths]}.

    >>> parse_dated_paths(["2023-01-05=a.tif,b.tif"], "--s2")
    {Timestamp('2023-01-05 00:00:00'): [PosixPath('a.tif'), PosixPath('b.tif')]}
    """
    out: dict[pd.Timestamp, list[Path]] = {}
    for value in values or []:
        date_text, sep, paths_text = value.partition("=")
        if not sep or not paths_text:
            raise ParameterError(f"{option} expects DATE=PATH[,PATH...], got {value!r}")
        try:
            date = pd.Timestamp(date_text)
        except (ValueError, TypeError) as exc:
            raise ParameterError(f"{option}: {date_text!r} is not a date") from exc
        if date in out:
            raise ParameterError(f"{option}: date {date:%Y-%m-%d} given twice")
        out[date] = [Path(p) for p in paths_text.split(",") if p]
    return out


def parse_dates(values: Sequence[str] | None) -> list[pd.Timestamp] | None:
    """Repeated and/or comma-separated ``--dates`` values; None when none are given.

    >>> parse_dates(["2023-01-05,2023-02-04", "2023-03-06"])[-1]
    Timestamp('2023-03-06 00:00:00')
    """
    out = []
    for value in values or []:
        for text in value.split(","):
            if not text.strip():
                continue
            try:
                out.append(pd.Timestamp(text.strip()))
            except (ValueError, TypeError) as exc:
                raise ParameterError(f"--dates: {text!r} is not a date") from exc
    return out or None


@contextlib.contextmanager
def dask_progress(enabled: bool = True) -> Iterator[None]:
    """Show a progress bar for dask computations on the local schedulers."""
    if not enabled:
        yield
        return
    from dask.diagnostics import ProgressBar

    with ProgressBar(minimum=1.0, dt=0.5):
        yield
