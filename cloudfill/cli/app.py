"""The typer application: its global options, its commands and the exit-code policy.

The command modules define plain functions and import nothing from one another or from
here; this module alone builds the app from them, so the import graph has no cycle.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

import typer

from cloudfill._version import __version__
from cloudfill.cli import cube, demo, evaluate, fill, infer, preprocess, train
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
app.command("info")(cube.info)
app.command("make-cube")(cube.make_cube)
app.command("demo")(demo.demo)
app.command("evaluate")(evaluate.evaluate)
app.command("synthesize")(infer.synthesize)
app.command("fill-series")(fill.fill_series_command)
app.command("preprocess")(preprocess.preprocess_command)
app.command("train")(train.train_command)
app.command("experiment")(train.experiment_command)


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
        typer.echo(f"error: {exc}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
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
        typer.echo(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())
