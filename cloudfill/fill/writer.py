"""Resumable, date-by-date zarr output.

The store is laid out once (coordinates, attrs, empty arrays), then each date is written with a
zarr *region* write and recorded by an atomically renamed marker file. A killed run leaves
dates without markers; the next run rewrites exactly those, so the result equals an
uninterrupted run. A fingerprint of the job (inputs and parameters) is stored in the output's
attrs, with the description it hashes: an existing output made by a different job is never
touched unless ``overwrite``, and the refusal names what differs (the job's fields, and the
variables, which must be the same for a store to be resumed).
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
    count_markers,
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
    identity
        The description ``job`` hashes (JSON-serialisable fields by name); stored in attrs
        beside it, so that refusing an output of a different job names the fields that
        differ.
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
        identity: Mapping[str, Any] | None = None,
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
        self.identity = _plain(identity) if identity is not None else None
        self.chunks = {**DEFAULT_WRITE_CHUNKS, **(chunks or {}), dim: 1}
        self.n = template.sizes[dim]
        check_output(self.path, inputs, exists_ok=True)  # never into (or around) an input
        if self.path.exists():
            stored = self._stored()
            if stored is None:  # a user's folder or file, not a store: say so, whatever the flags
                check_output(self.path, overwrite=True)
            existing = stored.attrs.get("cloudfill_job") if stored is not None else None
            layout = _layout_difference(stored, template) if stored is not None else []
            if existing == job and resume and not layout:
                return
            if not overwrite:
                raise OutputError(self._refusal(stored, job, layout))
            check_output(self.path, overwrite=True)  # a user's own folder is never deleted
            shutil.rmtree(self.path) if self.path.is_dir() else self.path.unlink()
        self._lay_out(template)

    def _stored(self) -> xr.Dataset | None:
        """The existing output, opened lazily (None: not a readable zarr store)."""
        try:
            with quiet_markers():
                return xr.open_zarr(self.path, consolidated=False)
        except Exception:
            return None

    def _refusal(self, stored: xr.Dataset | None, job: str, layout: list[str]) -> str:
        """Why the existing output is not resumed, and what the user can do instead."""
        existing = stored.attrs.get("cloudfill_job") if stored is not None else None
        # Every date the stored job recorded (its dates need not be this job's).
        finished = count_markers(self.path)
        lose = f"discarding its {finished} finished date{'s' * (finished != 1)}"
        if existing == job and not layout:  # the same job, but resume=False
            return (
                f"output {self.path} exists (made by this job, {finished} of {self.n} dates "
                f"finished); pass resume=True to finish it, or overwrite=True to replace it "
                f"({lose})"
            )
        reasons = []
        if stored is None or existing is None:
            reasons.append("it records no cloudfill job")
        elif _stored_identity(stored) is None and self.identity is not None:
            reasons.append(
                f"an earlier cloudfill wrote it (it records its job's fingerprint, {existing}, "
                f"not what the job was; this job's is {job})"
            )
        elif existing != job:
            differs = _identity_difference(stored, self.identity)
            reasons.append(
                f"its job differs in {differs}"
                if differs
                else f"its job's fingerprint is {existing}, this job's {job}"
            )
        if layout:
            reasons.append(f"its variables are not this job's ({'; '.join(layout)})")
        what = "was made by a different job" if existing != job else "has other variables"
        advice = (
            "it cannot be resumed: pass overwrite=True to fill it again"
            if layout or existing is None
            else "rerun with its inputs and settings to resume it, "
            "or pass overwrite=True to replace it"
        )
        return (
            f"output {self.path} {what}: {'; '.join(reasons)}. "
            f"{advice[0].upper()}{advice[1:]} ({lose}), or write to another path"
        )

    def _lay_out(self, template: xr.Dataset) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp-layout")
        if tmp.exists():
            shutil.rmtree(tmp)
        # One zarr chunk per date, so region writes of different dates never share a chunk.
        skeleton = prepare_for_zarr(template, self.chunks)
        skeleton.attrs = {**skeleton.attrs, "cloudfill_job": self.job}
        if self.identity is not None:
            skeleton.attrs[IDENTITY_ATTR] = json.dumps(self.identity, sort_keys=True)
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


IDENTITY_ATTR = "cloudfill_job_identity"
"""The output attr holding the job's description (JSON), beside its fingerprint."""


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples as lists, other objects as text)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _stored_identity(stored: xr.Dataset | None) -> dict[str, Any] | None:
    text = stored.attrs.get(IDENTITY_ATTR) if stored is not None else None
    try:
        return json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _identity_difference(stored: xr.Dataset | None, identity: Mapping[str, Any] | None) -> str:
    """The fields in which two job descriptions differ, each with both values ("" if unknown).

    >>> ds = xr.Dataset(attrs={IDENTITY_ATTR: '{"adjust": 12.0, "rule": {"age": 40}}'})
    >>> _identity_difference(ds, {"adjust": "auto", "rule": {"age": 400}, "layout": 2})
    "adjust (12.0 there, 'auto' here), layout (absent there, 2 here), rule.age (40 there, 400 here)"
    """
    old = _stored_identity(stored)
    if old is None or identity is None:
        return ""
    old, new = _flat(old), _flat(_plain(identity))
    return ", ".join(
        f"{key} ({_show(old, key)} there, {_show(new, key)} here)"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
    )


_ABSENT = object()


def _flat(fields: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _show(fields: Mapping[str, Any], key: str) -> str:
    if key not in fields:
        return "absent"
    value = fields[key]
    if isinstance(value, list) and len(value) > 3:
        return f"{len(value)} values, {value[0]!r} to {value[-1]!r}"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _layout_difference(stored: xr.Dataset, template: xr.Dataset) -> list[str]:
    """How the stored variables differ from the ``template``'s, by name and dims.

    >>> a = xr.Dataset({"s2": (("time", "y"), [[1.0]]), "old": ("time", [1])})
    >>> _layout_difference(a, xr.Dataset({"s2": ("time", [1.0]), "new": ("time", [1])}))
    ["lacks 'new'", "has 'old'", "'s2' has dims (time, y), not (time)"]
    """
    wanted = {str(n): tuple(map(str, v.dims)) for n, v in template.data_vars.items()}
    found = {str(n): tuple(map(str, v.dims)) for n, v in stored.variables.items()}
    extra = [str(n) for n in stored.data_vars if n not in wanted and n not in template.coords]
    out = []
    if missing := [n for n in wanted if n not in found]:
        out.append(f"lacks {', '.join(map(repr, missing))}")
    if extra:
        out.append(f"has {', '.join(map(repr, extra))}")
    out += [
        f"{name!r} has dims ({', '.join(found[name])}), not ({', '.join(dims)})"
        for name, dims in wanted.items()
        if name in found and found[name] != dims
    ]
    return out


def _after_write(_written: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The window's sums, once its write is done (a task that depends on both)."""
    return values


def _compute(obj: Any) -> Any:
    return obj.compute()
