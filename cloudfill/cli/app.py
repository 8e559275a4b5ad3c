"""The typer application: its global options, its commands and the exit-code policy.

The command modules define plain functions and import nothing from one another or from
here; this module alone builds the app from them, so the import graph has no cycle.
"""

from __future__ import annotations

import os
import re
import select
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

import typer

from cloudfill._version import __version__
from cloudfill.cli import cube, demo, evaluate, fill, infer, preprocess, train
from cloudfill.cli._common import StdoutClosed
from cloudfill.cli._help import HelpCommand
from cloudfill.cli._shutdown import settle_reads
from cloudfill.cube.corrupt import corrupt_chunk_error
from cloudfill.errors import CloudfillError

app = typer.Typer(
    name="cloudfill",
    help=(
        "Fill cloudy Sentinel-2 dates in satellite datacubes by fusing Sentinel-1 SAR, a "
        "near-date cloud-free Sentinel-2 image and a DEM with an attention conditional GAN.\n\n"
        "A cube is a zarr store following the cloudfill contract (variables s2, s1, dem, "
        "optional cloud/scl/lulc). Start with `cloudfill make-cube --simulate OUT.zarr` and "
        "`cloudfill info OUT.zarr`."
    ),
    no_args_is_help=True,
    add_completion=False,
    # click's plain help: full option names and rewrapped paragraphs at any width (_help).
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}

#: The running command's options: its parameter names -> their flags (see :func:`cli_message`).
_command_flags: dict[str, str] = {}


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cloudfill {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    debug: bool = typer.Option(
        False, "--debug", help="Show full tracebacks instead of one-line error messages."
    ),
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version_callback,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    _state["debug"] = debug
    name = ctx.invoked_subcommand
    command = ctx.command.get_command(ctx, name) if name else None  # type: ignore[attr-defined]
    if command is not None:
        _command_flags.update(command_flags(command))


def command_flags(command: Any) -> dict[str, str]:
    """A click command's options: each parameter's Python name -> its first long flag.

    >>> import typer.main
    >>> flags = command_flags(typer.main.get_command(app).commands["fill-series"])
    >>> flags["max_ref_cloud"], flags["feather"]
    ('--max-ref-cloud', '--feather')
    """
    flags = {}
    for param in command.params:
        opts = [o for o in param.opts if o.startswith("--")]
        if param.param_type_name == "option" and param.name and opts:
            flags[param.name] = opts[0]
    return flags


# Named explicitly, in the order `cloudfill --help` lists them.
for _name, _function in (
    ("info", cube.info),
    ("make-cube", cube.make_cube),
    ("demo", demo.demo),
    ("evaluate", evaluate.evaluate),
    ("synthesize", infer.synthesize),
    ("fill-series", fill.fill_series_command),
    ("preprocess", preprocess.preprocess_command),
    ("train", train.train_command),
    ("experiment", train.experiment_command),
):
    app.command(_name, cls=HelpCommand)(_function)


# Library messages name the Python keyword a caller passes ("pass overwrite=True to replace
# it"); under the CLI the user passes a flag instead. Each phrase here is replaced by its flag,
# and so is a "flag (phrase)" or "phrase (flag)" pair that names both.
PYTHON_TO_FLAG: tuple[tuple[str, str], ...] = (
    ("overwrite=True", "--overwrite"),
    ("resume=True", "--resume"),
    ("chain=True", "--chain"),
    ("model=PATH", "--model PATH"),
    ("dates=...", "--dates"),
    ("device='cpu' or 'auto'", "--device cpu or auto"),
    ("the interpolation fallback of fill_series", "the interpolation fallback of fill-series"),
)


def cli_message(message: str, flags: Mapping[str, str] | None = None) -> str:
    """``message`` as a CLI user reads it: Python keyword phrases replaced by their flags.

    First the phrases of :data:`PYTHON_TO_FLAG`; then the running command's own parameters
    (``flags``: name -> flag, :func:`command_flags`): a snake_case name found as a word
    becomes its flag, and so does a one-word name that a check names (``NAME must ...``;
    elsewhere such a word is likely plain English).

    Examples
    --------
    >>> cli_message("output x exists; pass overwrite=True to replace it")
    'output x exists; pass --overwrite to replace it'
    >>> cli_message("pass --overwrite (overwrite=True) to replace it")
    'pass --overwrite to replace it'
    >>> flags = {"max_ref_cloud": "--max-ref-cloud", "feather": "--feather"}
    >>> cli_message("max_ref_cloud must be within [0, 1], got 2.0", flags)
    '--max-ref-cloud must be within [0, 1], got 2.0'
    >>> cli_message("feather must be >= 0 pixels; a 3 px feather", flags)
    '--feather must be >= 0 pixels; a 3 px feather'
    """
    for phrase, flag in PYTHON_TO_FLAG:
        for both in (f"{flag} ({phrase})", f"{phrase} ({flag})"):
            message = message.replace(both, flag)
        message = message.replace(phrase, flag)
    for name, flag in (flags or {}).items():
        # Not inside a longer word, a flag or a path.
        word = rf"(?<![\w./-]){re.escape(name)}(?![\w/-])"
        pattern = word if "_" in name else rf"{word}(?= must\b)"
        message = re.sub(pattern, flag, message)
    return message


def _click_kind(exc: BaseException) -> str | None:
    # typer vendors its own copy of click, so match click's exception classes by name.
    names = {cls.__name__ for cls in type(exc).__mro__}
    for kind in ("ClickException", "Abort"):
        if kind in names:
            return kind
    return None


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``) and return the exit code.

    Errors from bad input (:class:`cloudfill.errors.CloudfillError`) and bad usage print one
    line on stderr and return 2; anything else returns 1. ``--debug`` adds the traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _state["debug"] = "--debug" in args
    _command_flags.clear()
    try:
        result = app(args=args, prog_name="cloudfill", standalone_mode=False)
    except CloudfillError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {cli_message(str(exc), _command_flags)}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except StdoutClosed:
        raise  # the reader went away (`| head`): main() ends quietly, not an internal error
    except SystemExit as exc:
        # typer turns any broken pipe (errno EPIPE) into a silent SystemExit(1): stdout's
        # (click's own writes: --help, --version) ends quietly, any other (a socket, a
        # subprocess) is an internal error, said as one.
        cause = exc.__context__
        if not isinstance(cause, BrokenPipeError) or isinstance(cause, StdoutClosed):
            raise
        if _stdout_gone():
            raise StdoutClosed("stdout was closed by its reader") from cause
        return _internal_error(cause)
    except Exception as exc:
        kind = _click_kind(exc)
        if kind == "ClickException":
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        if kind == "Abort":
            typer.echo("Aborted.", err=True)
            return 1
        corrupt = corrupt_chunk_error(exc)  # a store that does not decode: bad input, any verb
        if corrupt is not None:
            if _state["debug"]:
                traceback.print_exc()
            typer.echo(f"error: {corrupt}", err=True)
            return 2
        return _internal_error(exc)
    return result if isinstance(result, int) else 0


def _stdout_gone() -> bool:
    """Whether stdout is a pipe (or socket) whose reader went away: polling it says so."""
    try:
        poll = select.poll()
        poll.register(sys.__stdout__.fileno(), select.POLLOUT)  # type: ignore[union-attr]
        events = poll.poll(0)
    except (AttributeError, OSError, ValueError):  # no poll (Windows), no real stdout
        return False
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in events)


def _internal_error(exc: BaseException) -> int:
    if _state["debug"]:
        traceback.print_exception(exc)
    typer.echo(
        f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
        err=True,
    )
    return 1


def main() -> None:
    """Console-script entry point.

    A closed stdout (``cloudfill info CUBE | head -1``) is not an error: the rest of the
    output goes to devnull, so the interpreter's final flush cannot fail, and the exit code
    is 0.

    A failed command ends with its one line: when dask stops on an error (a corrupt chunk)
    reads may still be in flight on zarr's event loop, which the interpreter's shutdown would
    report in pages ("Task was destroyed but it is pending!"): they are settled first
    (:func:`cloudfill.cli._shutdown.settle_reads`).
    """
    try:
        code = run()
        if code in (1, 2):  # not after Ctrl-C: the reads in flight would be waited for
            settle_reads()
        try:
            sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's shutdown
        except BrokenPipeError as exc:
            raise StdoutClosed("stdout was closed by its reader") from exc
    except (StdoutClosed, SystemExit) as exc:
        # Only a closed stdout ends quietly; a SystemExit from elsewhere keeps its code.
        if not isinstance(exc, StdoutClosed) and not isinstance(exc.__context__, StdoutClosed):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)
