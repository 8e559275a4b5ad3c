"""A zarr chunk whose stored bytes do not decode, reported as bad input.

A truncated or overwritten chunk file surfaces while a cube is computed, deep in dask, as
whatever its codec raises (``RuntimeError`` from zstd or blosc, ``zlib.error``, a
``ValueError`` from zarr for a buffer of the wrong size). :func:`reading` turns such an
exception into a :class:`~cloudfill.errors.SourceError` naming the store and, where the
traceback still holds zarr's frames (dask's local schedulers keep them), the variable, the
chunk and its file.

Why not at the read itself: a custom dask getter around the zarr read (an earlier attempt)
stops dask from fusing a window's slice into the read, so every window read loaded whole
blocks. The exception is translated where a computation is started instead; the reads stay
dask's own.

An exception is taken for a corrupt chunk by *where* it was raised, not by its type alone: a
``RuntimeError`` or ``ValueError`` elsewhere is a bug and stays one.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from cloudfill.errors import CloudfillError, SourceError

__all__ = ["corrupt_chunk_error", "reading"]

#: Packages whose decoding functions raise on bytes that are not what the codec wrote.
_CODEC_PACKAGES = frozenset(("zarr", "numcodecs"))

#: How many chunks of a batch a message names when the failing one is not known.
_NAMED_CHUNKS = 4


@contextlib.contextmanager
def reading(*stores: str | os.PathLike[str] | None) -> Iterator[None]:
    """Run a computation that reads zarr ``stores``; a chunk that does not decode becomes a
    :class:`~cloudfill.errors.SourceError` (see :func:`corrupt_chunk_error`).

    Parameters
    ----------
    *stores
        The stores the computation reads (None entries are skipped), named in the message
        when the traceback does not tell which store the chunk is in.

    Raises
    ------
    SourceError
        A chunk of a store does not decode.

    Examples
    --------
    >>> with reading("cube.zarr"):
    ...     1 + 1
    2
    """
    try:
        yield
    except CloudfillError:
        raise
    except Exception as exc:
        error = corrupt_chunk_error(exc, [s for s in stores if s is not None])
        if error is None:
            raise
        raise error from exc


def corrupt_chunk_error(
    exc: BaseException, stores: Iterable[str | os.PathLike[str]] = ()
) -> SourceError | None:
    """The :class:`~cloudfill.errors.SourceError` for ``exc`` when it was raised decoding a
    zarr chunk, else None.

    Parameters
    ----------
    exc
        An exception raised while computing a cube.
    stores
        The stores being read: named when the traceback does not tell which one (a
        distributed worker's traceback carries no frame variables).

    Returns
    -------
    SourceError or None
        Naming the store and, where the traceback allows, the variable, the chunk index and
        the chunk's file.
    """
    if isinstance(exc, CloudfillError | MemoryError) or not isinstance(exc, Exception):
        return None
    frames = _frames(exc.__traceback__)
    if not any(_is_decoding(frame) for frame in frames):
        return None
    where = _locate(frames)
    if where is None:
        named = ", ".join(str(s) for s in stores) or "the cube"
        where = f"a chunk of {named}"
    return SourceError(
        f"corrupt zarr data: {where} does not decode ({type(exc).__name__}: {exc}); "
        "rewrite the store, or restore the file from a copy"
    )


def _frames(tb: TracebackType | None) -> list[FrameType]:
    """The traceback's frames, outermost first."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _is_decoding(frame: FrameType) -> bool:
    """Whether ``frame`` is a decoding function of zarr or numcodecs (their code file names
    survive a distributed worker's pickled traceback, frame variables do not)."""
    code = frame.f_code
    name = code.co_name.lower()
    if "decode" not in name and "decompress" not in name:
        return False
    return bool(_CODEC_PACKAGES.intersection(Path(code.co_filename).parts))


def _locals(frames: list[FrameType], function: str, *names: str) -> tuple[Any, ...] | None:
    """``names`` from the innermost frame of ``function`` that holds them all, or None."""
    for frame in reversed(frames):
        if frame.f_code.co_name == function:
            values = frame.f_locals
            if all(n in values for n in names):
                return tuple(values[n] for n in names)
    return None


def _locate(frames: list[FrameType]) -> str | None:
    """Name the failing chunk, "store S, variable V, chunk (i, j, ...) (file F)", from zarr's
    frames (zarr 3's read path: the batch of chunk keys in ``read_batch``, the buffer being
    decoded in the codec wrapper ``wrap``, the array's path in ``_get_selection``); None when
    they are not there.

    Everything here reads another library's internals, so any surprise gives None and the
    caller's plainer message.
    """
    try:
        batch = _locals(frames, "read_batch", "batch_info", "chunk_bytes_batch")
        if batch is not None:
            getters = [info[0] for info in batch[0]]
            failing = _locals(frames, "wrap", "chunk")
            if failing is not None:
                same = [g for g, b in zip(getters, batch[1], strict=False) if b is failing[0]]
                getters = same or getters
            return _describe(getters)
        array = _locals(frames, "_get_selection", "store_path")
        if array is not None:
            store_path = array[0]
            return f"a chunk of variable {store_path.path!r} in {_root(store_path.store)}"
    except Exception:  # a message without the chunk is still a right one
        return None
    return None


def _describe(getters: list[Any]) -> str | None:
    """Name the chunk(s) behind zarr ``StorePath`` objects: the store, variable, index, file."""
    if not getters:
        return None
    root = _root(getters[0].store)
    variable, _ = _split_key(str(getters[0].path))
    chunks = [_split_key(str(g.path))[1] for g in getters[:_NAMED_CHUNKS]]
    files = [Path(root) / str(g.path) if root else str(g.path) for g in getters]
    if len(getters) == 1:
        return f"store {root}, variable {variable!r}, chunk {chunks[0]} (file {files[0]})"
    more = f" and {len(getters) - _NAMED_CHUNKS} more" if len(getters) > _NAMED_CHUNKS else ""
    listed = ", ".join(str(c) for c in chunks)
    return f"store {root}, variable {variable!r}, one of chunks {listed}{more}"


def _root(store: Any) -> str:
    """A local store's folder (``LocalStore.root``), else the store's own description."""
    root = getattr(store, "root", None)
    return str(root) if root is not None else str(store)


def _split_key(key: str) -> tuple[str, tuple[int, ...] | str]:
    """``"s2/c/1/0/0/0"`` (zarr 3) or ``"s2/1.0.0.0"`` (zarr 2) as ``("s2", (1, 0, 0, 0))``;
    the key itself for the index when it is neither."""
    match = re.fullmatch(r"(?:(.*)/)?c[/.](\d+(?:[/.]\d+)*)", key) or re.fullmatch(
        r"(?:(.*)/)?(\d+(?:\.\d+)*)", key
    )
    if match is None:
        return key.rsplit("/", 1)[0], key
    return match.group(1) or "", tuple(int(i) for i in re.split(r"[/.]", match.group(2)))
