"""The ``cloudfill`` command line (typer). One module per group of verbs; each is a thin
wrapper over the Python API.

Exit codes (contract): 0 success, 2 bad usage or bad input (one line naming the problem, no
traceback unless ``--debug``), 1 internal error.
"""

from __future__ import annotations

from cloudfill.cli.app import app, main, run

__all__ = ["app", "main", "run"]
