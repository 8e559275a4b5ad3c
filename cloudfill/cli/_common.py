"""What the CLI verbs share: option help, argument parsing, output checks and progress.

The command modules import from here and never from each other.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr
from dask.diagnostics import ProgressBar
from rich import box
from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudfill.errors import ParameterError
from cloudfill.fill.progress import FillProgress


class LazyModule:
    """A stand-in for the module ``name`` that imports it on first attribute access.

    The command modules bind the library modules that import torch this way (lazy top-level
    attributes), so that ``cloudfill --help`` and argument errors answer in about a second
    instead of waiting for torch. It is a plain object, never put in ``sys.modules``: the
    real module is imported the ordinary way, whole, when a command first uses it.

    >>> adjust = LazyModule("cloudfill.fill.adjust")
    >>> adjust.DEFAULT_ADJUST_SIGMA > 0
    True
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"


class StdoutClosed(BrokenPipeError):
    """The reader of stdout went away (``cloudfill info CUBE | head -1``): not an error.

    Raised only for stdout, by the console and by :func:`cloudfill.cli.app.main`'s final
    flush; any other broken pipe (a socket, a subprocess) stays an error. It carries no
    errno, so typer does not turn it into ``SystemExit(1)`` as it does an ``EPIPE``.
    """


class _Console(Console):
    """rich's console, but a closed stdout raises :class:`StdoutClosed` (rich's own answer
    is ``SystemExit(1)``): :func:`cloudfill.cli.app.main` handles it, once, as exit 0."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise StdoutClosed("stdout was closed by its reader")


console = _Console(stderr=False, highlight=False)
if not console.is_terminal:
    # Piped or captured output has no width to fit; tables should not be truncated there.
    console.width = 120

CLUSTER_HELP = (
    "Where to compute: none (threads), local (a LocalCluster), cuda (dask-cuda, one worker "
    "per GPU) or a scheduler address."
)
WORKERS_HELP = "Worker processes of --cluster local (GPUs of --cluster cuda)."
THREADS_HELP = "Threads per worker of --cluster local or cuda."


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
    """Repeated and/or comma-separated ``--dates`` values; None when the option is not given.

    Given, it must hold a date: ``--dates ,`` is an error, not "all dates".

    >>> parse_dates(["2023-01-05,2023-02-04", "2023-03-06"])[-1]
    Timestamp('2023-03-06 00:00:00')
    >>> parse_dates([","])
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: --dates ',' holds no date: give YYYY-MM-DD dates, \
comma-separated, or leave --dates out for the default dates
    """
    if not values:
        return None
    out = []
    for value in values or []:
        for text in value.split(","):
            if not text.strip():
                continue
            try:
                out.append(pd.Timestamp(text.strip()))
            except (ValueError, TypeError) as exc:
                raise ParameterError(f"--dates: {text!r} is not a date") from exc
    if not out:
        given = " ".join(repr(v) for v in values)
        raise ParameterError(
            f"--dates {given} holds no date: give YYYY-MM-DD dates, comma-separated, or leave "
            "--dates out for the default dates"
        )
    return out


@contextlib.contextmanager
def dask_progress(enabled: bool = True) -> Iterator[None]:
    """Show a progress bar for dask computations on the local schedulers."""
    if not enabled:
        yield
        return
    with ProgressBar(minimum=1.0, dt=0.5):
        yield


class RichFillProgress(FillProgress):
    """:func:`~cloudfill.fill.job.fill_to_zarr`'s progress on the console: a line when the
    job resumes or runs on a cluster, and a bar of the dates (hidden unless ``enabled``).
    ``verb`` names the work in the bar (``evaluate`` shows ``scoring``).

    Examples
    --------
    >>> bar = RichFillProgress(enabled=False)
    >>> bar.start(total=6, done=2, where=None)
    resuming: 2 of 6 dates already done
    >>> bar.stop()
    """

    COLUMNS = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} dates"),
        TimeElapsedColumn(),
    )

    def __init__(self, enabled: bool = True, verb: str = "filling") -> None:
        self.enabled = enabled
        self.verb = verb
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def start(self, total: int, done: int, where: str | None) -> None:
        if done:
            console.print(f"resuming: {done} of {total} dates already done")
        self._bar = Progress(*self.COLUMNS, console=console, disable=not self.enabled)
        self._bar.start()
        if where is not None:
            console.print(f"computing on {where}")
        self._task = self._bar.add_task(self.verb, total=total, completed=done)

    def date(self, date: pd.Timestamp, method: str) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, description=f"{self.verb} {date:%Y-%m-%d} ({method})")

    def advance(self) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.stop()


#: The settings behind each of the plan's reasons (:func:`cloudfill.core.pairs.pairs`), so the
#: summary tells a CLI user which flag to change.
REASON_FLAGS: tuple[tuple[str, str], ...] = (
    ("<= threshold", "--cloud-threshold"),
    ("no S1 date within", "--max-s1-gap"),
    ("reference date with", "--max-ref-age, --max-ref-cloud"),
)


def reason_with_flags(reason: str) -> str:
    """The plan's ``reason`` for a date, each cause followed by the flags that set it.

    Examples
    --------
    >>> reason_with_flags("no S1 date within 6 days")
    'no S1 date within 6 days (--max-s1-gap)'
    """
    causes = []
    for cause in reason.split("; "):
        flags = [flag for phrase, flag in REASON_FLAGS if phrase in cause]
        causes.append(f"{cause} ({', '.join(flags)})" if flags else cause)
    return "; ".join(causes)


def fill_summary(result: xr.Dataset) -> Group:
    """The ``fill-series summary`` of a filled output: per date its method, cloud and filled
    shares, pixels left unfilled, and the S1 and reference dates used; then why each date
    that was not synthesized was not (the plan's reason, with the flags behind it)."""
    table = Table(title="fill-series summary", box=box.SIMPLE_HEAD, padding=(0, 1))
    for column in ("date", "method", "cloud%", "filled%", "unfilled", "S1", "reference"):
        numeric = column.endswith("%") or column == "unfilled"
        table.add_column(column, justify="right" if numeric else "left", no_wrap=True)
    why = Table(title="not synthesized, because", box=box.SIMPLE_HEAD, padding=(0, 1))
    why.add_column("date", no_wrap=True)
    why.add_column("reason")
    filled_frac = result["filled"].mean(("y", "x")).compute().values
    unfilled = result["unfilled"].compute().values

    def day(value: object) -> str:
        return "-" if pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"

    for i, date in enumerate(pd.DatetimeIndex(result["time"].values)):
        method = str(result["method"].values[i])
        s1_date, reference_date = result["s1_date"].values[i], result["reference_date"].values[i]
        table.add_row(
            f"{date:%Y-%m-%d}",
            method,
            f"{100 * float(result['cloud_fraction'].values[i]):.1f}",
            f"{100 * float(filled_frac[i]):.1f}",
            str(int(unfilled[i])),
            day(s1_date),
            day(reference_date),
        )
        if method != "synthesize":
            why.add_row(f"{date:%Y-%m-%d}", reason_with_flags(str(result["reason"].values[i])))
    return Group(table, why) if why.row_count else Group(table)
