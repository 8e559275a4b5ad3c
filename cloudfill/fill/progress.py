"""How a long fill job reports progress, without importing the job (or torch).

A front end (the CLI's progress bar) subclasses :class:`FillProgress`; keeping the base class
here lets it do so without loading the fill job and the model stack it imports. The
evaluation (:func:`~cloudfill.evaluation.scoring.run_evaluation`) reports its dates the same
way.
"""

from __future__ import annotations

import pandas as pd

__all__ = ["FillProgress"]


class FillProgress:
    """What :func:`fill_to_zarr` reports as it goes; this base class shows nothing.

    Subclass it to show progress (``cloudfill fill-series`` draws a progress bar). The job
    calls :meth:`start` once, then :meth:`date` and :meth:`advance` for each date it writes,
    then :meth:`stop` (also when it stops on an error).

    Examples
    --------
    >>> class Log(FillProgress):
    ...     def date(self, date, method):
    ...         print(f"{date:%Y-%m-%d}: {method}")
    >>> Log().date(pd.Timestamp("2024-03-12"), "synthesize")
    2024-03-12: synthesize
    """

    def start(self, total: int, done: int, where: str | None) -> None:
        """Before the first date: ``total`` dates in the job, ``done`` of them written by an
        earlier run, ``where`` the Dask cluster (None: the local threaded scheduler)."""

    def date(self, date: pd.Timestamp, method: str) -> None:
        """``date`` is about to be computed and written by ``method`` (``synthesize`` ...)."""

    def advance(self) -> None:
        """The date announced last is written and recorded."""

    def stop(self) -> None:
        """The job is over (finished, or stopped by an error)."""
