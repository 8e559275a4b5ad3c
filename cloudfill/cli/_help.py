"""How ``cloudfill COMMAND --help`` looks: click's plain layout with conventional metavars.

The app sets ``rich_markup_mode=None``, so help is click's plain formatter: option names are
never cut (a long name pushes its help to the next line), help paragraphs are rewrapped to
the terminal (hard line breaks in docstrings do not show) and a line is at most 80 columns
at any terminal width. :class:`HelpCommand` adds what typer's plain help lacks: values shown
as ``PATH``/``FLOAT``/``TEXT`` instead of ``<path>``/``<float>``/``<list[str]>``, and
arguments in the usage line as ``CUBE`` instead of ``{cube}``.
"""

from __future__ import annotations

from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperOption

__all__ = ["HelpCommand", "value_metavar"]

# typer's type labels (what it shows as <label>) as click names them.
_CLICK_NAMES = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "bool": "BOOLEAN",
    "datetime": "DATE",
}


def value_metavar(label: str) -> str:
    """The metavar of an option whose typer type label is ``label`` (``<float range>``...).

    Examples
    --------
    >>> [value_metavar(x) for x in ("<path>", "<float range>", "<list[str]>", "<a|b>")]
    ['PATH', 'FLOAT', 'TEXT', '[a|b]']
    """
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]  # a repeatable option: one value per use
    label = label.removesuffix(" range")  # the range is shown in the help: [x>=0]
    if "|" in label:
        return f"[{label}]"
    return _CLICK_NAMES.get(label, label.upper())


def _argument_metavar(param: TyperArgument) -> str:
    return param.metavar if param.metavar is not None else (param.name or "ARG").upper()


class HelpCommand(TyperCommand):
    """A typer command whose plain help shows conventional metavars (see the module notes).

    Options with a value get ``PATH``, ``FLOAT``... unless they set ``metavar=``; flags show
    none. Arguments are named in capitals (``CUBE``), without typer's ``{cube}`` braces.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.metavar = _argument_metavar(param)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = _argument_metavar(param)
                name = name if param.required else f"[{name}]"
                pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces

    def format_help(self, ctx: Any, formatter: Any) -> None:
        for param in self.get_params(ctx):
            if isinstance(param, TyperOption) and param.metavar is None and not param.is_flag:
                param.metavar = value_metavar(param.display_type(ctx))
        super().format_help(ctx, formatter)

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments, options = [], []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if isinstance(param, TyperArgument):  # its name alone, not "CUBE <path>"
                arguments.append((_argument_metavar(param), record[1]))
            else:
                options.append(record)
        for title, records in (("Arguments", arguments), ("Options", options)):
            if records:
                with formatter.section(title):
                    formatter.write_dl(records)
