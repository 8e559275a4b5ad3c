"""Where an output may go: never into an input, and ``overwrite`` never deletes a user's files.

Every verb that writes asks :func:`check_output` before any work. An existing path is
replaced only with ``overwrite`` and only when nothing of the user's can be lost there: an
empty folder, a zarr store (what cloudfill writes), or for a raster output a single GeoTIFF
file. A folder a verb writes its files into (a report, a training run) is written into only
when it is new, empty or the verb's own previous output, or with ``overwrite``. Anything
else is refused with :class:`~cloudfill.errors.OutputError`, untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from cloudfill.errors import OutputError

__all__ = [
    "REPORT_MARKER",
    "ZARR_MARKERS",
    "check_output",
    "check_writable",
    "is_report",
    "is_zarr_store",
    "nested",
]

ZARR_MARKERS: tuple[str, ...] = ("zarr.json", ".zgroup", ".zattrs", ".zmetadata")
"""Files whose presence makes a folder a zarr store (v3, v2 group, v2 attrs, consolidated)."""

REPORT_MARKER = ".cloudfill-report"
"""The file :func:`~cloudfill.evaluation.report.write_report` writes first into a report
folder: a folder holding it is a previous report, which ``evaluate`` may write into again."""

_RASTER_SUFFIXES = (".tif", ".tiff")
_LISTED = 3  # a user's files a message names


def is_zarr_store(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a zarr store's metadata.

    >>> is_zarr_store("/nonexistent.zarr")
    False
    """
    p = Path(path)
    return p.is_dir() and any((p / marker).exists() for marker in ZARR_MARKERS)


def is_report(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder holding a report (its :data:`REPORT_MARKER`).

    >>> is_report("/nonexistent")
    False
    """
    return (Path(path) / REPORT_MARKER).is_file()


def nested(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` are the same path or one lies inside the other (resolved).

    >>> nested("cube.zarr/report", "cube.zarr"), nested("a.zarr", "b.zarr")
    (True, False)
    """
    ra, rb = Path(a).expanduser().resolve(), Path(b).expanduser().resolve()
    return ra == rb or rb in ra.parents or ra in rb.parents


def _relation(out: Path, source: Path) -> str:
    if out == source:
        return "the same path"
    return "it lies inside the input" if source in out.parents else "the input lies inside it"


def _replaceable(path: Path) -> bool:
    if path.is_dir():
        return is_zarr_store(path) or not any(path.iterdir())
    return path.suffix.lower() in _RASTER_SUFFIXES


def check_writable(out: str | os.PathLike[str], *, into: bool = False) -> None:
    """Refuse an output whose folder cannot be written, before any work.

    The folder checked is the nearest one that exists: ``out`` itself for an output written
    into (``into``, a report folder), else the folder holding ``out``. Folders missing on the
    way are created by the writer; but one that is a file, or a read-only folder, would fail
    only once the work is done.

    >>> check_writable("/dev/null/out.zarr")
    Traceback (most recent call last):
    ...
    cloudfill.errors.OutputError: cannot write output /dev/null/out.zarr: /dev/null is a file, \
not a folder
    """
    path = Path(out).expanduser().absolute()
    folder = path if into and path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"cannot write output {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(
            f"cannot write output {out}: the folder {folder} is read-only (no write "
            "permission); choose another output path"
        )


def check_output(
    out: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]] = (),
    *,
    overwrite: bool = False,
    exists_ok: bool = False,
    ours: Callable[[Path], bool] | None = None,
    kind: str = "output",
) -> None:
    """Refuse an output that would write into an input or lose a user's files.

    Parameters
    ----------
    out
        The output path (a zarr store, a GeoTIFF, or a folder of outputs).
    inputs
        Paths the job reads: ``out`` may be none of them, lie inside none, and hold none.
    overwrite
        Allow replacing an existing ``out``, if it is an empty folder, a zarr store or (for
        a ``.tif`` output) a file.
    exists_ok
        ``out`` is a folder the verb writes into without deleting anything (a fill job's
        store, which checks its own fingerprint): it may exist whatever ``overwrite`` says,
        but must be a folder.
    ours
        ``out`` is a folder the verb writes its files into (a report, a training run), and
        ``ours(out)`` recognises the verb's own previous output there (``kind`` names it in
        the message). An existing folder must be empty or recognised; any other (a user's
        folder, whose files of the same names would be replaced) needs ``overwrite``, which
        writes into it and deletes nothing else.

    Raises
    ------
    OutputError
        Naming the path and what to do instead.

    Examples
    --------
    >>> check_output("cube.zarr/report", ["cube.zarr"])
    Traceback (most recent call last):
    ...
    cloudfill.errors.OutputError: output cube.zarr/report would overwrite the input cube.zarr \
(it lies inside the input): write outside the input; inputs are never written
    """
    for source in inputs:
        if nested(out, source):
            where = _relation(Path(out).resolve(), Path(source).resolve())
            raise OutputError(
                f"output {out} would overwrite the input {source} ({where}): write outside "
                "the input; inputs are never written"
            )
    path = Path(out)
    check_writable(path, into=exists_ok or ours is not None)
    if not path.exists():
        return
    if ours is not None:
        _check_ours(path, ours, kind, overwrite)
        return
    if exists_ok:
        if not path.is_dir():
            raise OutputError(f"output {out} exists and is not a folder")
        return
    if not overwrite:
        raise OutputError(f"output {out} exists; pass --overwrite (overwrite=True) to replace it")
    if not _replaceable(path):
        what = "a folder that is not a zarr store" if path.is_dir() else "a file"
        raise OutputError(
            f"refusing to replace {out}: it is {what} and not empty, so it may hold your own "
            "files; choose another output path or remove it yourself"
        )


def _check_ours(path: Path, ours: Callable[[Path], bool], kind: str, overwrite: bool) -> None:
    """Refuse writing into ``path`` unless it is empty, the verb's own (``ours``) or
    ``overwrite`` says so."""
    if not path.is_dir():
        raise OutputError(f"output {path} exists and is not a folder")
    if overwrite or ours(path):
        return
    names = sorted(p.name for p in path.iterdir())
    if not names:
        return
    shown = ", ".join(names[:_LISTED]) + (
        f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    )
    raise OutputError(
        f"output {path} is a folder that is not empty ({shown}) and holds no previous {kind}: "
        f"writing the {kind} would replace your files of the same names; choose a new or "
        "empty folder, or pass --overwrite (overwrite=True) to write into it anyway"
    )
