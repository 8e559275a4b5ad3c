"""Resumable, date-by-date zarr output.

The store is laid out once (coordinates, attrs, empty arrays), then each date is written with a
zarr *region* write and recorded by an atomically renamed marker file. A killed run leaves
dates without markers; the next run rewrites exactly those, so the result equals an
uninterrupted run. A fingerprint of the job (inputs and parameters) is stored in the output's
attrs: an existing output made by a different job is never touched unless ``overwrite``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
import zarr

from cloudfill._outputs import check_output
from cloudfill.cube.zarr_io import (
    DEFAULT_WRITE_CHUNKS,
    MARKER_DIR,
    prepare_for_zarr,
    quiet_markers,
)
from cloudfill.errors import OutputError

__all__ = ["DateWriter", "fingerprint"]


def fingerprint(payload: Any) -> str:
    """A stable short hash of a JSON-serialisable description of a job.

    >>> fingerprint({"a": 1}) == fingerprint({"a": 1})
    True
    """
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class DateWriter:
    """Write a lazy Dataset to zarr one ``time`` step at a time, resumably.

    Parameters
    ----------
    path
        Output store.
    template
        The full (lazy) Dataset to write; only its metadata is used at set-up.
    job
        Fingerprint of the job (see :func:`fingerprint`); stored in attrs and compared on
        resume.
    inputs
        Paths the job reads; the output may not be, or be inside, any of them.
    overwrite
        Replace an existing output made by a different job (or any output if ``resume`` is
        False).
    resume
        Keep dates already recorded in an existing output of the same job.
    window
        A date is computed and written in windows at least this many pixels on a side, one
        after another, so that memory does not grow with the scene (None: whole dates).
        Windows end where every variable has a block boundary and a zarr chunk starts, so
        no output block is computed twice (the input chunks that blocks at a window's edge
        read as their halo are).
    sums
        Per-date variables that are sums over the pixels, each given as a function of the
        written variables (of one window): they are summed window by window, computed with
        the window's pixels, instead of computing the whole date once more.
    chunks
        Zarr chunks per dim, over :data:`~cloudfill.cube.zarr_io.DEFAULT_WRITE_CHUNKS`
        (``dim`` always gets 1).

    Examples
    --------
    >>> import cloudfill, tempfile, pathlib
    >>> ds = cloudfill.simulate_scene((32, 32), dates=2, seed=0)[["truth"]]
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.zarr"
    >>> w = DateWriter(out, ds, job="demo")
    >>> for i in w.pending():
    ...     w.write(ds.isel(time=[i]), i)
    >>> w.pending()
    []
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        template: xr.Dataset,
        job: str,
        *,
        inputs: Iterable[str | os.PathLike[str]] = (),
        overwrite: bool = False,
        resume: bool = True,
        dim: str = "time",
        window: int | None = 2048,
        sums: Mapping[str, Callable[[xr.Dataset], Any]] | None = None,
        chunks: Mapping[str, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.dim = dim
        self.window = window
        self.sums = dict(sums or {})
        self.job = job
        self.chunks = {**DEFAULT_WRITE_CHUNKS, **(chunks or {}), dim: 1}
        self.n = template.sizes[dim]
        check_output(self.path, inputs, exists_ok=True)  # never into (or around) an input
        if self.path.exists():
            existing = self._existing_job()
            if existing == job and resume:
                return
            if not overwrite:
                why = "was made by a different job" if existing != job else "exists"
                raise OutputError(
                    f"output {self.path} {why} (its fingerprint {existing}, this job {job}); "
                    "pass overwrite=True to replace it"
                )
            check_output(self.path, overwrite=True)  # a user's own folder is never deleted
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self._lay_out(template)

    def _existing_job(self) -> str | None:
        try:
            with quiet_markers():
                attrs = xr.open_zarr(self.path, consolidated=False).attrs
        except Exception:
            return None
        return attrs.get("cloudfill_job")

    def _lay_out(self, template: xr.Dataset) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp-layout")
        if tmp.exists():
            shutil.rmtree(tmp)
        # One zarr chunk per date, so region writes of different dates never share a chunk.
        skeleton = prepare_for_zarr(template, self.chunks)
        skeleton.attrs = {**skeleton.attrs, "cloudfill_job": self.job}
        # compute=False writes coordinates, attrs and array metadata, no pixel data.
        skeleton.to_zarr(tmp, mode="w", compute=False, consolidated=False, zarr_format=3)
        (tmp / MARKER_DIR).mkdir()
        os.replace(tmp, self.path)

    def _marker(self, index: int) -> Path:
        return self.path / MARKER_DIR / f"{index:06d}.json"

    def done(self) -> list[int]:
        """Indices along ``dim`` already written and recorded."""
        return [i for i in range(self.n) if self._marker(i).exists()]

    def pending(self) -> list[int]:
        """Indices along ``dim`` still to write."""
        return [i for i in range(self.n) if not self._marker(i).exists()]

    def write(
        self,
        part: xr.Dataset,
        index: int,
        record: dict[str, Any] | None = None,
        compute: Callable[[Any], Any] | None = None,
    ) -> None:
        """Write ``part`` (length 1 along ``dim``) at ``index``, then record it atomically.

        Variables without ``dim`` were written at set-up and are skipped here.
        """
        region_vars = [v for v in part.data_vars if self.dim in part[v].dims and v not in self.sums]
        windows = self.windows(part)
        if len(windows) > 1:
            whole = [
                v
                for v in region_vars
                if part[v].chunks is not None and not {"y", "x"} & set(part[v].dims)
            ]
            if whole:
                warnings.warn(
                    f"{whole[0]!r} has no y/x dims: it is computed whole with every window "
                    "(give it in sums=, or window=None)",
                    stacklevel=2,
                )
        # The same layout as the skeleton: dask chunks must tile the zarr chunks.
        part = prepare_for_zarr(part, self.chunks)
        sub = part[region_vars].drop_vars(
            [c for c in part.coords if self.dim not in part[c].dims], errors="ignore"
        )
        run = compute or _compute
        totals: dict[str, Any] = {}
        for window in windows:
            piece = sub.isel(window)
            with quiet_markers(), warnings.catch_warnings():
                # Per-date text provenance is tiny; xarray loads it to pick a string dtype.
                warnings.filterwarnings("ignore", message=".*dtype=object")
                delayed = piece.to_zarr(
                    self.path,
                    region={self.dim: slice(index, index + 1), **window},
                    consolidated=False,
                    compute=False,
                )
            # One computation per window: the sums share the window's tasks with its write.
            partial = {name: fn(piece).data for name, fn in self.sums.items()}
            values = run(dask.delayed(_after_write)(delayed, partial))
            for name, value in values.items():
                totals[name] = totals.get(name, 0) + np.asarray(value)
        if totals:
            sums = xr.Dataset(
                {
                    name: (part[name].dims, np.asarray(total, dtype=part[name].dtype))
                    for name, total in totals.items()
                }
            )
            with quiet_markers():
                sums.to_zarr(
                    self.path, region={self.dim: slice(index, index + 1)}, consolidated=False
                )
        marker = self._marker(index)
        tmp = marker.with_suffix(".tmp")
        payload = {"index": index, **(record or {})}
        tmp.write_text(json.dumps(payload, default=str))
        os.replace(tmp, marker)

    def windows(self, part: xr.Dataset) -> list[dict[str, slice]]:
        """The windows :meth:`write` computes ``part`` in (``[{}]``: all at once).

        Along ``y`` and ``x``, cuts fall where every dask-backed variable has a block
        boundary and a zarr chunk starts, once a window is ``window`` pixels long.

        >>> import dask.array as da, xarray as xr, tempfile, pathlib
        >>> v = xr.DataArray(da.zeros((1, 5000, 8), chunks=(1, 2048, 8)), dims=("time", "y", "x"))
        >>> w = DateWriter(pathlib.Path(tempfile.mkdtemp()) / "o.zarr", v.to_dataset(name="a"), "j")
        >>> w.windows(v.to_dataset(name="a"))
        [{'y': slice(0, 2048, None)}, {'y': slice(2048, 5000, None)}]
        """
        per_dim = [[(dim, cut) for cut in self._cuts(part, dim)] for dim in ("y", "x")]
        return [
            dict(item for item in combo if item[1] is not None)
            for combo in itertools.product(*per_dim)
        ]

    def _cuts(self, part: xr.Dataset, dim: str) -> list[slice | None]:
        if self.window is None or dim not in part.dims:
            return [None]
        common: set[int] | None = None
        for var in part.data_vars.values():
            if dim in var.dims and var.chunks is not None:
                ends = {int(e) for e in np.cumsum(var.chunks[var.dims.index(dim)])}
                common = ends if common is None else common & ends
        if not common:
            return [None]
        n = part.sizes[dim]
        step = self.chunks.get(dim, DEFAULT_WRITE_CHUNKS[dim])
        step = n if step <= 0 else min(step, n)  # <= 0: one zarr chunk along dim
        if step == n:
            return [None]
        cuts = [0]
        for end in sorted(common):
            if end - cuts[-1] >= self.window and end % step == 0:
                cuts.append(end)
        if cuts[-1] != n:
            if len(cuts) > 1:
                cuts[-1] = n  # a short last window joins the one before
            else:
                cuts.append(n)
        if len(cuts) == 2:
            return [None]
        return [slice(a, b) for a, b in itertools.pairwise(cuts)]

    def finalize(self) -> None:
        """Consolidate the store's metadata once every date is written (faster opening)."""
        if not self.pending():
            with quiet_markers(), warnings.catch_warnings():
                # Consolidated metadata is not in the zarr v3 spec yet; zarr-python reads it.
                warnings.filterwarnings("ignore", message="Consolidated metadata")
                zarr.consolidate_metadata(str(self.path))

    def records(self) -> pd.DataFrame:
        """The records written with each date, as a table."""
        rows = [json.loads(self._marker(i).read_text()) for i in self.done()]
        return pd.DataFrame(rows)


def _after_write(_written: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The window's sums, once its write is done (a task that depends on both)."""
    return values


def _compute(obj: Any) -> Any:
    return obj.compute()
