"""The typer application: its global options, its commands and the exit-code policy.

The command modules define plain functions and import nothing from one another or from
here; this module alone builds the app from them, so the import graph has no cycle.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import typer

from cloudfill._version import __version__
from cloudfill.cli import cube, demo, evaluate, fill, infer, preprocess, train
from cloudfill.cli._help import HelpCommand
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


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"cloudfill {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
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
)


def cli_message(message: str) -> str:
    """``message`` as a CLI user reads it: Python keyword phrases replaced by their flags.

    Examples
    --------
    >>> cli_message("output x exists; pass overwrite=True to replace it")
    'output x exists; pass --overwrite to replace it'
    >>> cli_message("pass --overwrite (overwrite=True) to replace it")
    'pass --overwrite to replace it'
    """
    for phrase, flag in PYTHON_TO_FLAG:
        for both in (f"{flag} ({phrase})", f"{phrase} ({flag})"):
            message = message.replace(both, flag)
        message = message.replace(phrase, flag)
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
    try:
        result = app(args=args, prog_name="cloudfill", standalone_mode=False)
    except CloudfillError as exc:
        if _state["debug"]:
            traceback.print_exc()
        typer.echo(f"error: {cli_message(str(exc))}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except BrokenPipeError:
        raise  # the reader went away (`| head`): main() ends quietly, not an internal error
    except Exception as exc:
        kind = _click_kind(exc)
        if kind == "ClickException":
            exc.show()  # type: ignore[attr-defined]
            return int(getattr(exc, "exit_code", 2))
        if kind == "Abort":
            typer.echo("Aborted.", err=True)
            return 1
        if _state["debug"]:
            traceback.print_exc()
        corrupt = corrupt_chunk_error(exc)  # a store that does not decode: bad input, any verb
        if corrupt is not None:
            typer.echo(f"error: {corrupt}", err=True)
            return 2
        typer.echo(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point.

    A closed stdout (``cloudfill info CUBE | head -1``) is not an error: the rest of the
    output goes to devnull, so the interpreter's final flush cannot fail, and the exit code
    is 0.
    """
    try:
        code = run()
        sys.stdout.flush()  # a broken pipe shows here, not in the interpreter's shutdown
    except (BrokenPipeError, SystemExit) as exc:
        # click turns a broken pipe inside a command into SystemExit(1), the pipe's error
        # kept as its context.
        if not isinstance(exc, BrokenPipeError) and not isinstance(
            exc.__context__, BrokenPipeError
        ):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)
