"""The resumable fill job: a cube filled date by date into a zarr store.

:func:`fill_to_zarr` is the job behind ``cloudfill fill-series`` and ``cloudfill demo``. The
fill itself is :func:`~cloudfill.fill.series.fill_series`; the job adds what a long run on a
large scene needs:

- each date is written with a zarr region write and recorded by a marker
  (:class:`~cloudfill.fill.writer.DateWriter`), so a killed run resumes where it stopped and
  ends identical to an uninterrupted run;
- a date is computed in windows (``FillSettings.window``), so memory does not grow with the
  scene; a synthesis that several windows read is stored once first
  (:class:`~cloudfill.fill.scratch.SynthesisStore`), so the model runs once per block;
- a chained fill reads the earlier dates' filled images back from the output instead of
  computing them again for every date;
- the work runs on any Dask scheduler (:func:`cloudfill.cluster.open_cluster`).

The output remembers its job (:class:`JobIdentity`): an existing store made by a different
job, or by a cloudfill that wrote other variables (:data:`OUTPUT_LAYOUT`), is never touched
unless ``overwrite``, and the refusal names what differs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import xarray as xr

from cloudfill._device import place
from cloudfill._outputs import check_output
from cloudfill.cluster import compute, describe, open_cluster
from cloudfill.core.pairs import PairingRule
from cloudfill.cube.corrupt import reading
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import validate
from cloudfill.cube.zarr_io import MARKER_DIR, open_cube, quiet_markers, store_digest
from cloudfill.errors import ParameterError, SourceError
from cloudfill.fill.adjust import AUTO, DEFAULT_ADJUST, Adjust, check_adjust
from cloudfill.fill.blend import DEFAULT_FEATHER
from cloudfill.fill.error_scale import residuals_if_needed
from cloudfill.fill.plan import prepare_fill
from cloudfill.fill.progress import FillProgress
from cloudfill.fill.scratch import SynthesisStore
from cloudfill.fill.series import count_unfilled, fill_series
from cloudfill.fill.writer import DateWriter, fingerprint
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.checkpoint import update_with_state
from cloudfill.model.default import DEFAULT_MODEL_FILE

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["OUTPUT_LAYOUT", "FillSettings", "JobIdentity", "fill_to_zarr", "model_digest"]

OUTPUT_LAYOUT = 2
"""The version of what a fill job writes: its variables, their dims and their meaning.

Part of :class:`JobIdentity`, so a store written by a cloudfill of another layout is refused
up front instead of resumed. Raise it whenever :func:`~cloudfill.fill.series.fill_series`
gains, loses or redefines an output (``tests/test_job_resume.py`` pins the variables).
1: stores written before the layout was recorded; 2: ``error_scale`` and ``adjust_sigma`` added.
"""


@dataclass(frozen=True)
class FillSettings:
    """What a fill job computes, and the window it computes it in.

    Parameters
    ----------
    cloud_threshold
        Dates with at most this cloud fraction are interpolated, not synthesized.
    feather
        Width in pixels of the blend band at mask edges.
    adjust
        The same-date adjustment (:func:`~cloudfill.fill.adjust.adjust_to_date`):
        ``"auto"`` (default) a sigma or none per date, chosen on held-out clear pixels
        (:func:`~cloudfill.fill.adjust.choose_sigma`); a number, a fixed sigma in pixels;
        0 turns it off.
    chain
        Let synthesized dates serve as references for later dates (see
        :func:`~cloudfill.fill.series.fill_series`).
    rule
        Which S1 and reference dates may serve a date
        (:class:`~cloudfill.core.pairs.PairingRule`).
    inference
        Tiling, batching and device of the synthesis
        (:class:`~cloudfill.infer.settings.InferenceSettings`).
    window
        Compute each date in windows of at least this many pixels a side (whole blocks), so
        memory does not grow with the scene; None: whole dates. The output is the same
        either way (:class:`~cloudfill.fill.writer.DateWriter`).

    Examples
    --------
    >>> settings = FillSettings(chain=True, rule=PairingRule(max_ref_age=40))
    >>> settings.rule.max_ref_age, settings.window
    (40.0, 2048)
    >>> FillSettings(window=0)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: window must be positive or None, got 0
    """

    cloud_threshold: float = 0.0
    feather: int = DEFAULT_FEATHER
    adjust: Adjust = DEFAULT_ADJUST
    chain: bool = False
    rule: PairingRule = field(default_factory=PairingRule)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    window: int | None = 2048

    def __post_init__(self) -> None:
        check_adjust(self.adjust)
        if self.window is not None and self.window < 1:
            raise ParameterError(f"window must be positive or None, got {self.window}")


@dataclass(frozen=True)
class JobIdentity:
    """What makes two runs into one output store the same job.

    Everything that changes the written values: the cube (its path and
    :func:`~cloudfill.cube.zarr_io.store_digest`, so a cube rewritten at the same path is a
    different job), the model (:func:`model_digest`), the dates, the
    settings that shape the fill and the output's :data:`OUTPUT_LAYOUT`. Not the window, the
    cluster, the device or the batch size, which change how the same values are computed (a
    job may resume elsewhere). Stored in the output's attrs as :meth:`fingerprint`, a hash
    of the fields by name, and beside it as the fields themselves, so that a refusal names
    the fields that differ.

    Examples
    --------
    >>> key = JobIdentity(
    ...     cube="/data/cube.zarr", cube_content="0f3a", model="default", dates=("2024-03-12",),
    ...     cloud_threshold=0.0, feather=8, adjust=12.0, chain=False, rule=PairingRule(),
    ...     tile=None, overlap=None, fast=False,
    ... )
    >>> len(key.fingerprint())
    16
    >>> from dataclasses import replace
    >>> key.fingerprint() == replace(key, feather=2).fingerprint()
    False
    >>> key.layout == OUTPUT_LAYOUT
    True
    """

    cube: str
    cube_content: str
    model: str
    dates: tuple[str, ...]
    cloud_threshold: float
    feather: int
    adjust: Adjust
    chain: bool
    rule: PairingRule
    tile: int | None
    overlap: int | None
    fast: bool
    layout: int = OUTPUT_LAYOUT

    @classmethod
    def of(
        cls, cube: Path, model: Any, dates: pd.DatetimeIndex, settings: FillSettings
    ) -> JobIdentity:
        """The identity of filling ``dates`` of ``cube`` with ``model`` and ``settings``."""
        return cls(
            cube=str(cube.resolve()),
            cube_content=store_digest(cube),
            model=model_digest(model),
            dates=tuple(f"{d:%Y-%m-%d}" for d in dates),
            cloud_threshold=float(settings.cloud_threshold),
            feather=int(settings.feather),
            adjust=settings.adjust if settings.adjust == AUTO else float(settings.adjust),
            chain=bool(settings.chain),
            rule=settings.rule,
            tile=settings.inference.tile,
            overlap=settings.inference.overlap,
            fast=bool(settings.inference.fast),
        )

    def fingerprint(self) -> str:
        """A short stable hash of the fields, by name (nested values too)."""
        return fingerprint(asdict(self))


def model_digest(model: Any) -> str:
    """A short digest naming ``model``: its checkpoint's bytes, or its weights and card.

    Parameters
    ----------
    model
        A checkpoint path (file or directory), a
        :class:`~cloudfill.model.runtime.CloudfillModel`, or None (the shipped default).

    Returns
    -------
    str
        16 hex digits, prefixed ``default-`` for the shipped default model (its file's
        bytes: a cloudfill shipping another default model fills another job) and
        ``weights-`` for a model in memory.

    Examples
    --------
    >>> model_digest(None).startswith("default-")
    True
    """
    digest = hashlib.sha256()
    if model is None:
        shipped = resources.files("cloudfill") / "data" / DEFAULT_MODEL_FILE
        if not shipped.is_file():
            return "default"  # missing: loading it fails with a CheckpointError
        digest.update(shipped.read_bytes())  # 1.5 MB: about 2 ms
        return f"default-{digest.hexdigest()[:16]}"
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            with file.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
        return digest.hexdigest()[:16]
    digest.update(model.card.to_json().encode())
    update_with_state(digest, model.generator)
    return f"weights-{digest.hexdigest()[:16]}"


@dataclass
class _Job:
    """The opened cube, model and plan of a job, and the lazy fill of its dates."""

    ds: xr.Dataset
    model: Any  # a CloudfillModel, or None for a cube without S1 (interpolation only)
    plan: pd.DataFrame
    settings: FillSettings
    filled: xr.Dataset | None = None
    # Each date's interpolation residual (the error scale's feature), read once for the job
    # rather than once per date written; None when the model's error scale does not use it.
    residuals: pd.DataFrame | None = None

    @property
    def times(self) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(self.filled["time"].values)

    def fill(
        self,
        dates: Iterable[Any] | None,
        chain_from: Callable[[pd.Timestamp], xr.DataArray | None] | None = None,
        synthesis_hook: Callable[[pd.Timestamp, Any], Any] | None = None,
        adjust: Adjust | None = None,
    ) -> xr.Dataset:
        s = self.settings
        return fill_series(
            self.ds,
            self.model,
            dates=dates,
            cloud_threshold=s.cloud_threshold,
            feather=s.feather,
            adjust=s.adjust if adjust is None else adjust,
            rule=s.rule,
            inference=s.inference,
            plan=self.plan,
            chain=s.chain,
            chain_from=chain_from,
            synthesis_hook=synthesis_hook,
            residuals=self.residuals,
        )


def _open_job(cube: Path, model: Any, settings: FillSettings, dates: Any) -> _Job:
    if not cube.exists():
        raise SourceError(f"no such cube: {cube}")
    # The stored chunks (one date, ~1024 px), not dask's "auto" merge of them into ~128 MiB
    # blocks spanning dates: task memory then stays the same whatever the cube's area. Each
    # chunk moves to the device once, as it is read (CuPy chunks for a CUDA device).
    ds = place(open_cube(cube, chunks={}), settings.inference.device)
    # The values too (S2 digital numbers, S1 units) before the plan's pass over the mask.
    check_values(validate(ds, require=("s2",)))
    # Once for the job: each date's fill then reuses the loaded model and the plan.
    cf, plan = prepare_fill(
        ds,
        model,
        cloud_threshold=settings.cloud_threshold,
        rule=settings.rule,
        inference=settings.inference,
        chain=settings.chain,
    )
    job = _Job(ds, cf, plan, settings, residuals=residuals_if_needed(ds, cloud_mask(ds), cf))
    if settings.adjust == AUTO:
        # The job's layout, plan and dates, without choosing each date's sigma here: the
        # choice computes a window of the date's fill (for a synthesized date, the model's
        # blocks there), so it is made when the date is written, from its stored synthesis.
        job.filled = job.fill(dates, adjust=0)
        job.filled.attrs["cloudfill_adjust"] = AUTO
    else:
        job.filled = job.fill(dates)
    return job


class _WrittenDates:
    """The filled images of the dates already written, read back from the output.

    A chained date reads the earlier dates' filled images from here, so each date is
    computed once, killed runs resume mid-chain, and the values are the ones written
    (float32 both ways: identical to an uninterrupted run). They are read onto ``device``
    (:func:`cloudfill._device.place`), where the cube's own chunks are.
    """

    def __init__(self, writer: DateWriter, times: pd.DatetimeIndex, device: str = "cpu") -> None:
        self.writer, self.times, self.device = writer, times, device
        self._s2: xr.DataArray | None = None  # opened once, lazily: reads happen at compute

    def __call__(self, date: pd.Timestamp) -> xr.DataArray | None:
        i = self.times.get_loc(date) if date in self.times else None
        if i is None or i not in self.writer.done():
            return None
        if self._s2 is None:
            with quiet_markers():
                stored = xr.open_zarr(self.writer.path, consolidated=False)["s2"]
                self._s2 = place(stored, self.device)
        return self._s2.isel(time=i, drop=True)


def _write_date(
    job: _Job,
    writer: DateWriter,
    index: int,
    run: Callable[[Any], Any],
    scratch: SynthesisStore,
    written: _WrittenDates,
) -> None:
    date = job.times[index]
    method = str(job.filled["method"].values[index])
    part = job.filled.isel(time=[index])
    # The same fill, built again for this date alone where needed: with the chain's sources
    # read from the output, and with the synthesis stored before the windows are written
    # (the same-date adjustment reads a halo across window edges, which would otherwise run
    # the model on a neighbouring block again for each window).
    chain, adjust = job.settings.chain, job.settings.adjust
    # With "auto" the date's sigma is chosen on a window of its fill: from the stored
    # synthesis, so that the model runs once on each block of the date.
    auto = adjust == AUTO and method != "none"
    windowed = adjust != 0 and len(writer.windows(part)) > 1
    store = method == "synthesize" and (auto or windowed)
    if chain or store or auto:
        part = job.fill(
            [date],
            chain_from=written if chain else None,
            synthesis_hook=partial(scratch.keep, compute=run) if store else None,
        )
    writer.write(part, index, record={"date": f"{date:%Y-%m-%d}", "method": method}, compute=run)
    scratch.clear()


def fill_to_zarr(
    cube: str | os.PathLike[str],
    out: str | os.PathLike[str],
    model: Any = None,
    settings: FillSettings = FillSettings(),
    *,
    dates: Iterable[Any] | None = None,
    cluster: str | Client | None = "none",
    workers: int | None = None,
    threads: int | None = None,
    resume: bool = True,
    overwrite: bool = False,
    progress: FillProgress | None = None,
) -> xr.Dataset:
    """Fill the cloudy pixels of a zarr cube's S2 dates and write them date by date.

    Each date is written with a zarr region write and recorded atomically, so a killed run
    resumes where it stopped (``resume``) and ends identical to an uninterrupted run. The
    output holds what :func:`~cloudfill.fill.series.fill_series` returns: ``s2`` (filled),
    ``filled``, ``confidence`` and per-date provenance.

    Parameters
    ----------
    cube
        Input cube (zarr store); never written to.
    out
        Output zarr store; may not be, or be inside, ``cube``.
    model
        A checkpoint path, a :class:`~cloudfill.model.runtime.CloudfillModel` or None (the
        shipped default model).
    settings
        What to compute (:class:`FillSettings`).
    dates
        S2 dates to fill (default: all).
    cluster, workers, threads
        Where to compute: see :func:`cloudfill.cluster.open_cluster` (a given ``Client`` is
        left running).
    resume
        Keep the dates already written by the same job (:class:`JobIdentity`).
    overwrite
        Replace an output made by a different job (or any output if not ``resume``).
    progress
        Told about each date as it goes (:class:`FillProgress`); None: silent.

    Returns
    -------
    xarray.Dataset
        The written output, opened lazily.

    Raises
    ------
    SourceError
        No cube at ``cube``, or a chunk of it (or of ``out``) that does not decode (the
        message names the store and, with dask's local schedulers, the variable, the chunk
        and its file).
    OutputError
        ``out`` is the input, or an output of a different job and not ``overwrite``.

    Examples
    --------
    >>> settings = FillSettings(rule=PairingRule(max_ref_age=400))
    >>> out = fill_to_zarr("cube.zarr", "filled.zarr", settings=settings)  # doctest: +SKIP
    >>> sorted(out.data_vars)[:3]  # doctest: +SKIP
    ['cloud_fraction', 'confidence', 'filled']
    """
    cube, out = Path(cube), Path(out)
    given = Path(model) if isinstance(model, str | os.PathLike) else None
    inputs = [cube, *([given] if given is not None and given.exists() else [])]
    # Before any work: never into an input, and --overwrite never deletes a user's folder.
    if overwrite:
        check_output(out, inputs, overwrite=True)
    else:
        check_output(out, inputs, exists_ok=True)
    # A chunk of the cube (or of the output, read back by a chained fill) that does not
    # decode is bad input, wherever in the job dask meets it.
    with reading(cube, out):
        job = _open_job(cube, model, settings, dates)
        # The cluster first: a bad --cluster then leaves no output store that looks complete.
        with open_cluster(cluster, workers=workers, threads=threads) as client:
            identity = JobIdentity.of(cube, model, job.times, settings)
            writer = DateWriter(
                out,
                job.filled,
                identity.fingerprint(),
                identity=asdict(identity),
                inputs=inputs,
                overwrite=overwrite,
                resume=resume,
                window=settings.window,
                sums={"unfilled": count_unfilled},
            )
            pending = writer.pending()
            device = settings.inference.device
            scratch = SynthesisStore(writer.path / MARKER_DIR / "work", device=device)
            scratch.clear()  # left over by a run killed between recording a date and clearing it
            written = _WrittenDates(writer, job.times, device=device)
            report = progress if progress is not None else FillProgress()
            run = partial(compute, progress=False, client=client)
            where = describe(client) if client is not None else None
            report.start(len(job.times), len(job.times) - len(pending), where)
            try:
                for i in pending:
                    report.date(job.times[i], str(job.filled["method"].values[i]))
                    _write_date(job, writer, i, run, scratch, written)
                    report.advance()
            finally:
                report.stop()
        writer.finalize()
        return open_cube(out)
