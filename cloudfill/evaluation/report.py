"""``write_report``: an HTML page with the metrics, quicklooks, land-cover and confidence checks.

The report is a folder::

    out_dir/index.html     the page (inline CSS, no script, no network)
    out_dir/metrics.csv    the tidy table of :func:`cloudfill.evaluation.evaluate.evaluate`
    out_dir/img/*.png      pictures, referenced from the page by relative paths
    out_dir/.cloudfill-report  marks the folder as a report (``evaluate`` may write it again)

so it can be zipped, served or opened from disk. This module runs the evaluation; the
page's sections are written by :mod:`cloudfill.evaluation.sections`, which draws with
:mod:`cloudfill.evaluation.figures`, and the page is rendered from a Jinja2 template by
:mod:`cloudfill.evaluation.page`. Quicklooks are strided to at most ``max_side`` pixels a
side and computed in the same pass as the metrics (the model runs once per date). The
*filled* quicklook is what ``cloudfill fill-series`` writes for the date:
:func:`cloudfill.fill.series.fill_date` itself (interpolation where the model has no value,
same-date adjustment, feathered blend) applied to the evaluated synthesis.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill._outputs import REPORT_MARKER
from cloudfill._version import __version__
from cloudfill.core.pairs import PairingRule
from cloudfill.errors import OutputError, ParameterError
from cloudfill.evaluation import figures, sections
from cloudfill.evaluation.landcover import LandcoverCheck
from cloudfill.evaluation.page import (
    ConfidenceView,
    DateSection,
    LandcoverView,
    Page,
    render_page,
    summary,
    table_view,
)
from cloudfill.evaluation.plan import BASELINES, REGIONS, EvaluationPlan, plan_evaluation
from cloudfill.evaluation.scoring import DateCase, run_evaluation
from cloudfill.fill.adjust import AUTO, DEFAULT_ADJUST, Adjust, check_adjust
from cloudfill.fill.blend import DEFAULT_FEATHER
from cloudfill.fill.progress import FillProgress
from cloudfill.fill.series import fill_date
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.calibration import interval_factor

__all__ = ["Report", "ReportSettings", "filled_image", "write_report"]


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    index
        The HTML page.
    metrics_csv
        The metrics table as CSV.
    metrics
        The metrics table (as :func:`~cloudfill.evaluation.evaluate.evaluate` returns it).
    images
        Every PNG the page shows, in page order.
    spearman
        Spearman correlation between the predicted Laplace scale and the absolute error
        over the scored pixels, or None (no confidence head, too few pixels).
    """

    index: Path
    metrics_csv: Path
    metrics: pd.DataFrame
    images: tuple[Path, ...]
    spearman: float | None


@dataclass(frozen=True)
class ReportSettings:
    """How the report draws its pictures and titles its page (not what is evaluated).

    Each field can also be passed to :func:`write_report` as a keyword of its own.

    Attributes
    ----------
    max_side
        Quicklooks are strided to at most this many pixels a side (at least 16).
    feather
        Blend width in pixels of the filled quicklook (``fill_series``'s ``feather``).
    adjust
        The filled quicklook's same-date adjustment (``fill_series``'s ``adjust``, same
        default: ``"auto"``, a sigma per date chosen on held-out clear pixels; a sigma in
        pixels; 0 turns it off).
    title
        Page title.

    Examples
    --------
    >>> ReportSettings(max_side=256).adjust == DEFAULT_ADJUST
    True
    """

    max_side: int = 512
    feather: int = DEFAULT_FEATHER
    adjust: Adjust = DEFAULT_ADJUST
    title: str = "cloudfill evaluation report"

    def __post_init__(self) -> None:
        # Checked here, before the evaluation runs the model, not when the pictures are drawn.
        if self.max_side < 16:
            raise ParameterError(f"max_side must be at least 16 pixels, got {self.max_side}")
        if self.feather < 0:
            raise ParameterError(f"feather must be >= 0 pixels, got {self.feather}")
        check_adjust(self.adjust)


# --- lazy picture inputs -----------------------------------------------------------------------


def filled_image(
    plan: EvaluationPlan, case: DateCase, feather: int, adjust: Adjust
) -> xr.DataArray:
    """The date as ``fill_series`` fills it with the evaluated synthesis, lazily.

    :func:`cloudfill.fill.series.fill_date` itself (the function ``fill_series`` runs per
    date) with the cube, mask and cloud fractions of the evaluation: unusable pixels take the
    model's image (interpolated where it has none), adjusted to the date's clear pixels and
    blended over ``feather`` pixels.

    Parameters
    ----------
    plan
        The evaluation plan (with a model).
    case
        The date, with the model's prediction.
    feather, adjust
        As ``fill_series``'s.

    Returns
    -------
    xarray.DataArray
        (band, y, x).
    """
    return _filled_part(plan, case, feather, adjust)["s2"].transpose("band", "y", "x")


def _filled_part(plan: EvaluationPlan, case: DateCase, feather: int, adjust: Adjust) -> xr.Dataset:
    """:func:`filled_image`'s whole :func:`~cloudfill.fill.series.fill_date` result: ``s2``,
    ``filled``, ``confidence`` and ``error_scale``."""
    # No S1 or reference date in the plan row: fill_date's synthesis then picks them as the
    # evaluation's did (same cube, fractions, rule and settings), so it is the same image.
    row = pd.Series({"method": "synthesize", "s1_date": None, "reference_date": None})

    def evaluated(date: pd.Timestamp, syn: Any) -> Any:
        # The evaluation's own graph: the model runs once per date for metrics and pictures.
        return replace(syn, mean=case.predictions["model"], scale=case.scale)

    # A context model (SODCTX) fills from the date's clear pixels, which the evaluation's
    # prediction was not shown: the picture is then its own synthesis, as fill_series makes
    # it (only the date's cloudy pixels are scored, which no model sees).
    hook = None if plan.model.variant.uses_context else evaluated
    return fill_date(
        plan.ds,
        case.date,
        row,
        plan.model,
        mask=plan.mask,
        feather=feather,
        adjust=adjust,
        fractions=plan.fractions,
        rule=plan.rule,
        inference=plan.inference,
        synthesis_hook=hook,
        residuals=plan.residuals,
    )


def _quicklook_inputs(
    plan: EvaluationPlan, case: DateCase, step: int, settings: ReportSettings
) -> dict[str, Any]:
    """The lazy, strided images a date's quicklooks are drawn from."""
    strided = {"y": slice(None, None, step), "x": slice(None, None, step)}
    rgb = list(figures.RGB_BANDS)
    synth = case.predictions["model"]
    part = _filled_part(plan, case, settings.feather, settings.adjust)
    filled = part["s2"].transpose("band", "y", "x")
    out: dict[str, Any] = {
        "real": case.real.sel(band=rgb).isel(strided),
        "truth": case.truth.sel(band=rgb).isel(strided),
        "synth": synth.sel(band=rgb).isel(strided),
        "filled": filled.sel(band=rgb).isel(strided),
        "error": abs(synth - case.truth).mean("band", skipna=False).isel(strided),
    }
    for region, where in case.regions.items():
        out[f"scored:{region}"] = where.isel(strided)
    if case.scale is not None:
        out["scale"] = case.scale.mean("band", skipna=False).isel(strided)
        out["confidence"] = part["confidence"].isel(strided)
    if plan.truth_source == "truth variable" and "cloud" in case.regions:
        # The error bars against the truth, at full resolution: counts, summed over dates.
        scale = part["error_scale"]
        ratio = abs(filled - case.truth) / scale.where(scale > 0)  # no 0/0 on real pixels
        counted = part["filled"] & case.regions["cloud"] & ratio.notnull()
        out["coverage:n"] = counted.sum()
        for q in sections.RELIABILITY_QUANTILES:
            out[f"coverage:{q}"] = ((ratio <= interval_factor(q)) & counted).sum()
    return out


# --- the report --------------------------------------------------------------------------------


def write_report(
    ds: xr.Dataset,
    model: Any = None,
    out_dir: str | Path = "report",
    *,
    dates: Any = None,
    split: str = "test",
    baselines: Iterable[str] | None = BASELINES,
    landcover: bool | LandcoverCheck = True,
    mask: str | Sequence[str] = REGIONS,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    settings: ReportSettings = ReportSettings(),
    progress: FillProgress | None = None,
) -> Report:
    """Evaluate ``model`` on ``ds`` and write ``out_dir/index.html`` with ``metrics.csv``.

    The page holds: the setup (truth, split, dates, notes); a metrics table against the
    baselines (mean over dates, best in bold, then per date); per date the quicklooks —
    real (cloudy), synthesized, filled (as :func:`~cloudfill.fill.series.fill_series`
    fills the date: :func:`filled_image`), truth, absolute error, confidence (as
    ``fill_series`` defines it) and the scored pixels; the land-cover check's overall
    accuracies and per-class F1 bar chart; a density scatter of the absolute error against
    the predicted Laplace scale with its Spearman correlation.

    Parameters
    ----------
    ds, model, dates, split, baselines, landcover, mask, rule, inference
        As in :func:`cloudfill.evaluation.evaluate.evaluate` (the model is required).
    out_dir
        Output folder, created if needed; the report's files in it are replaced.
    settings
        Pictures and title (:class:`ReportSettings`; default: its defaults).
    progress
        Told about each date as it is scored (see
        :func:`~cloudfill.evaluation.scoring.run_evaluation`); None: silent.

    Returns
    -------
    Report

    Raises
    ------
    OutputError
        If ``out_dir`` exists and is not a folder.
    ParameterError
        A setting out of range (``max_side`` < 16, negative ``feather`` or ``adjust``),
        raised when the :class:`ReportSettings` is made, before any work.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=1)
    >>> small = ReportSettings(max_side=256)
    >>> report = write_report(ds, model, "report", settings=small)  # doctest: +SKIP
    >>> report.index.name  # doctest: +SKIP
    'index.html'
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    img_dir = out / "img"

    plan = plan_evaluation(
        ds,
        model,
        dates=dates,
        split=split,
        baselines=baselines,
        landcover=landcover,
        mask=mask,
        with_model=True,
        rule=rule,
        inference=inference,
    )
    step = max(1, -(-max(ds.sizes["y"], ds.sizes["x"]) // settings.max_side))
    inputs_used: dict[pd.Timestamp, dict[str, str]] = {}

    def extras(case: DateCase) -> dict[str, Any]:
        attrs = case.predictions["model"].attrs
        inputs_used[case.date] = {
            "s1_date": str(attrs.get("s1_date", "")),
            "reference_date": str(attrs.get("reference_date", "")),
        }
        return _quicklook_inputs(plan, case, step, settings)

    table, looks = run_evaluation(plan, extras, progress)
    # Only now: an evaluation that fails leaves no empty report folder behind.
    img_dir.mkdir(parents=True, exist_ok=True)
    # First: a report cut short is still recognised as one (``evaluate`` writes into it again).
    (out / REPORT_MARKER).write_text(f"cloudfill {__version__} report\n", encoding="utf-8")
    pics = sections.open_pictures(img_dir, looks)
    dated, pixels = sections.date_sections(
        plan, looks, inputs_used, pics, _filled_caption(settings)
    )
    # Confidence check over every date's scored pixels (none without a confidence head).
    confidence, rho = sections.confidence_view(pics, pixels) if pixels.per_date else (None, None)
    reliability = sections.reliability_view(pics, looks)
    lc = table.attrs.get("landcover")
    landcover_view = sections.landcover_view(pics, lc) if lc else None
    page = _page(ds, table, step, settings.title, dated, landcover_view, confidence)
    page = replace(page, reliability=reliability)
    index = out / "index.html"
    index.write_text(render_page(page), encoding="utf-8")
    csv = out / "metrics.csv"
    table.to_csv(csv, index=False)
    return Report(index, csv, table, tuple(pics.paths), rho)


def _filled_caption(settings: ReportSettings) -> str:
    """The filled quicklook's caption: how :func:`filled_image` made it."""
    if settings.adjust == AUTO:
        adjusted = ", same-date adjustment σ chosen per date"
    else:
        adjusted = f", same-date adjustment σ = {settings.adjust:g} px" if settings.adjust else ""
    return f"filled: unusable pixels replaced, {settings.feather} px feather{adjusted}"


def _page(
    ds: xr.Dataset,
    table: pd.DataFrame,
    step: int,
    title: str,
    dated: tuple[DateSection, ...],
    landcover: LandcoverView | None,
    confidence: ConfidenceView | None,
) -> Page:
    """The page's view: the cube's size, the setup and metrics from ``table``, the sections."""
    mean, best = summary(table)
    attrs = table.attrs
    return Page(
        title=title,
        version=__version__,
        generated=f"{datetime.now(UTC):%Y-%m-%d %H:%M}",
        cube_y=ds.sizes["y"],
        cube_x=ds.sizes["x"],
        cube_dates=ds.sizes["time"],
        step=step,
        setup={k: attrs[k] for k in ("truth", "split_note", "model", "dates", "regions")}
        | {"notes": list(attrs.get("notes", []))},
        summary=table_view(mean, best),
        per_date=table_view(table.assign(date=table["date"].dt.strftime("%Y-%m-%d"))),
        # The confidence colour bar is shown when some date has a predicted scale.
        has_scale=confidence is not None,
        dates=dated,
        landcover=landcover,
        confidence=confidence,
    )
