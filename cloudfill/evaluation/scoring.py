"""Scoring an :class:`~cloudfill.evaluation.plan.EvaluationPlan`: predictions, metrics, land cover.

For each evaluated S2 date, every method predicts the whole image without reading the date's
own S2 values (:func:`date_case`): the model
(:func:`~cloudfill.infer.synthesize.synthesize_with_scale`) and the baselines (``persistence``,
``interpolation``, ``regression``). A pixel is scored only where the truth and *every* method
have a value, so the methods are compared on identical pixels (``n_pixels`` is equal across
methods for a date and region), and only in the plan's regions and split test pixels.

Everything is lazy until one :func:`dask.compute` per date (:func:`score_case`), which runs
the model once and reduces every (method, region) metric to a few sums per chunk (the
reductions of :mod:`cloudfill.metrics`); the cube is never loaded whole. Two extra reads per
date: the regression baseline's fit (sampled training pixels) and, for the land-cover date
only, the full-resolution images the random forest needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from cloudfill import metrics as _metrics
from cloudfill.core.temporal import linear_interpolation, persistence
from cloudfill.errors import ParameterError
from cloudfill.evaluation.baselines import fit_regression_baseline, predict_regression_baseline
from cloudfill.evaluation.landcover import landcover_check
from cloudfill.evaluation.plan import EvaluationPlan
from cloudfill.fill.progress import FillProgress
from cloudfill.infer.synthesize import synthesize_with_scale

__all__ = [
    "COLUMNS",
    "DateCase",
    "date_case",
    "landcover_frame",
    "run_evaluation",
    "score_case",
]

COLUMNS: tuple[str, ...] = ("date", "method", "region", "split", *_metrics.METRICS, "n_pixels")
"""Columns of the metrics table (:func:`run_evaluation`, :func:`~cloudfill.evaluate`)."""


# --- one date ------------------------------------------------------------------------------


@dataclass
class DateCase:
    """The lazy images of one evaluated date.

    Attributes
    ----------
    date
        The S2 date.
    real
        The observed S2 image (band, y, x), clouds included.
    truth
        The ground truth (band, y, x); NaN where unknown (cloudy pixels of a hidden date).
    unusable
        The date's unusable mask (y, x).
    predictions
        Method name -> predicted image (band, y, x), as the method made it.
    scale
        The model's Laplace scale (band, y, x) (expected absolute error), or None.
    available
        (y, x) True where the truth and every prediction have all bands.
    regions
        Region name -> (y, x) scored pixels: the region, inside the split's test pixels and
        ``available``.
    """

    date: pd.Timestamp
    real: xr.DataArray
    truth: xr.DataArray
    unusable: xr.DataArray
    predictions: dict[str, xr.DataArray]
    scale: xr.DataArray | None
    available: xr.DataArray
    regions: dict[str, xr.DataArray]


def _drop_time(a: xr.DataArray) -> xr.DataArray:
    return a.drop_vars(["time", "s1_time"], errors="ignore").transpose("band", "y", "x")


def _regression(plan: EvaluationPlan, date: pd.Timestamp) -> xr.DataArray | None:
    """The regression baseline, fitted on the training pixels of every *other* date."""
    others = [d for d in pd.DatetimeIndex(plan.ds["time"].values) if d != date]
    try:
        fitted = fit_regression_baseline(plan.ds, others, plan.split.train, mask=plan.mask)
    except ParameterError as exc:
        plan.notes.append(f"{date:%Y-%m-%d}: regression baseline skipped ({exc})")
        return None
    return predict_regression_baseline(fitted, plan.ds, date, plan.mask)


def _date_hidden(ds: xr.Dataset, mask: xr.DataArray, date: pd.Timestamp) -> xr.Dataset:
    """``ds`` with every pixel of ``date`` unusable: no method reads a scored date's own S2,
    so a model reading the date's clear pixels (SODCTX) sees it as fully cloudy here, its
    weakest case (``benchmarks/bench_learned_gain.py`` scores what those pixels add)."""
    hidden = xr.where(mask["time"] == np.datetime64(date), True, mask).transpose(*mask.dims)
    return ds.drop_vars("scl", errors="ignore").assign(cloud=hidden)


def _predictions(
    plan: EvaluationPlan, date: pd.Timestamp
) -> tuple[dict[str, xr.DataArray], xr.DataArray | None]:
    """Every method's lazy prediction of ``date`` (a skipped regression is left out), and the
    model's scale."""
    ds = plan.ds
    predictions: dict[str, xr.DataArray] = {}
    scale = None
    for method in plan.methods:
        if method == "model":
            syn = synthesize_with_scale(
                _date_hidden(ds, plan.mask, date) if plan.model.variant.uses_context else ds,
                date,
                plan.model,
                rule=plan.rule,
                inference=plan.inference,
                fractions=plan.fractions,
            )
            predictions["model"] = _drop_time(syn.mean)
            scale = None if syn.scale is None else _drop_time(syn.scale)
        elif method == "persistence":
            predictions[method] = _drop_time(persistence(ds, date, plan.mask))
        elif method == "interpolation":
            predictions[method] = _drop_time(linear_interpolation(ds, date, plan.mask))
        else:
            fitted = _regression(plan, date)
            if fitted is not None:
                predictions[method] = _drop_time(fitted)
    return predictions, scale


def _test_pixels(plan: EvaluationPlan, where: xr.DataArray) -> xr.DataArray:
    """``where`` inside the split's test pixels (unchanged without a test split)."""
    if plan.split.test is None:
        return where
    return where & xr.DataArray(plan.split.test, dims=("y", "x"))


def date_case(plan: EvaluationPlan, date: Any) -> DateCase:
    """Build the lazy :class:`DateCase` of ``date`` (reads only the regression's samples).

    Parameters
    ----------
    plan
        From :func:`~cloudfill.evaluation.plan.plan_evaluation`.
    date
        One of ``plan.dates``.

    Returns
    -------
    DateCase

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.evaluation.plan import plan_evaluation
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> plan = plan_evaluation(ds, with_model=False, landcover=False)
    >>> sorted(date_case(plan, plan.dates[0]).predictions)
    ['interpolation', 'persistence', 'regression']
    """
    ds, date = plan.ds, pd.Timestamp(date)
    unusable = plan.mask.sel(time=date).drop_vars("time")
    real = _drop_time(ds["s2"].sel(time=date))
    if plan.truth_source == "truth variable":
        truth = _drop_time(ds["truth"].sel(time=date))
    else:
        truth = real.where(~unusable)
    predictions, scale = _predictions(plan, date)

    available = truth.notnull().all("band")
    for pred in predictions.values():
        available = available & pred.notnull().all("band")
    scored = _test_pixels(plan, available)
    regions = {
        region: (scored & unusable) if region == "cloud" else scored for region in plan.regions
    }
    return DateCase(date, real, truth, unusable, predictions, scale, available, regions)


# --- the metrics of one date -----------------------------------------------------------------


def _metric_parts(pred: xr.DataArray, truth: xr.DataArray, where: xr.DataArray) -> dict[str, Any]:
    """The lazy partial sums of every metric, as :func:`cloudfill.metrics.all_metrics` builds
    them (so one compute can serve many methods and regions)."""
    p, t, valid = _metrics._prepare(pred, truth, where)
    return {
        "error": _metrics._error_parts(p, t, valid),
        "ssim": _metrics._ssim_parts(p, t, valid, 1.0),
        "sam": _metrics._sam_parts(p, t, valid),
    }


def _finish_metrics(parts: dict[str, Any]) -> dict[str, float]:
    out = {}
    for name in _metrics.METRICS:
        group, finish = _metrics._FINISH[name]
        out[name] = finish(parts[group], 1.0)
    return out


def score_case(
    case: DateCase, extras: Mapping[str, Any] | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Metrics of every method in every region of one date, plus ``extras``, in one compute.

    Every image is NaN outside ``case.available`` before scoring, so all methods share the
    same valid pixels (also inside SSIM windows).

    Parameters
    ----------
    case
        From :func:`date_case`.
    extras
        More lazy objects to compute in the same pass (e.g. report quicklooks).

    Returns
    -------
    rows, extras
        One dict per (method, region) with the :data:`COLUMNS` (except ``split``), and the
        computed ``extras``.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.evaluation.plan import plan_evaluation
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> plan = plan_evaluation(ds, with_model=False, baselines=["persistence"], landcover=False)
    >>> rows, _ = score_case(date_case(plan, plan.dates[0]))
    >>> [(row["method"], row["region"]) for row in rows]
    [('persistence', 'cloud'), ('persistence', 'all')]
    """
    truth = case.truth.where(case.available)
    parts: dict[str, Any] = {}
    for region, where in case.regions.items():
        parts[f"n|{region}"] = where.sum().data
        for method, pred in case.predictions.items():
            parts[f"{method}|{region}"] = _metric_parts(pred.where(case.available), truth, where)
    parts, computed = dask.compute(parts, dict(extras or {}))
    rows = []
    for method in case.predictions:
        for region in case.regions:
            scores = _finish_metrics(parts[f"{method}|{region}"])
            n = int(np.asarray(parts[f"n|{region}"]))
            rows.append(
                {"date": case.date, "method": method, "region": region, **scores, "n_pixels": n}
            )
    return rows, computed


# --- land cover ----------------------------------------------------------------------------


def _landcover_inputs(case: DateCase, plan: EvaluationPlan) -> dict[str, xr.DataArray]:
    """Full-resolution images for the forest: the truth, and each prediction on the scored
    pixels only (so every method is tested on the same pixels, inside the test blocks)."""
    scored = _test_pixels(plan, case.available)
    out = {"landcover:truth": case.truth.where(case.available)}
    for method, pred in case.predictions.items():
        out[f"landcover:{method}"] = pred.where(scored)
    return out


def _run_landcover(plan: EvaluationPlan, computed: Mapping[str, Any]) -> dict[str, Any] | None:
    """The land-cover check of every method, as one JSON-safe dict (the ``landcover`` attr of
    :func:`run_evaluation`'s table)."""
    check = plan.landcover
    if check is None:
        return None
    lulc = plan.ds["lulc"].compute()
    real = computed["landcover:truth"]
    result: dict[str, Any] = {
        "date": f"{check.date:%Y-%m-%d}",
        "overall_accuracy": {},
        "f1": {},
        "support": {},
        "classes": {},
        "n_train": 0,
        "n_test": 0,
    }
    names = _class_names(plan.ds["lulc"])
    for key, synth in computed.items():
        if not key.startswith("landcover:") or key == "landcover:truth":
            continue
        method = key.split(":", 1)[1]
        try:
            outcome = landcover_check(real, synth, lulc, check)
        except ParameterError as exc:
            plan.notes.append(f"land-cover check of {method} skipped ({exc})")
            continue
        f1 = outcome["f1"]
        classes = [str(c) for c in f1.index]
        # The forest, its training pixels and its test pixels are the same for every method,
        # so the real image's scores are too; keep the first.
        result["overall_accuracy"].setdefault("real", outcome["overall_accuracy_real"])
        result["f1"].setdefault("real", dict(zip(classes, f1["real"].astype(float), strict=True)))
        result["overall_accuracy"][method] = outcome["overall_accuracy_synth"]
        result["f1"][method] = dict(zip(classes, f1["synth"].astype(float), strict=True))
        result["support"] = dict(zip(classes, (int(s) for s in f1["support"]), strict=True))
        result["classes"] = {c: names.get(c, c) for c in classes}
        result["n_train"], result["n_test"] = outcome["n_train"], outcome["n_test"]
    return result if result["f1"] else None


def _class_names(lulc: xr.DataArray) -> dict[str, str]:
    """Class names from ``attrs["classes"]`` written as ``"0=water,1=forest,..."``."""
    text = str(lulc.attrs.get("classes", ""))
    names = {}
    for item in text.split(","):
        code, sep, name = item.partition("=")
        if sep and code.strip() and name.strip():
            names[code.strip()] = name.strip()
    return names


def landcover_frame(landcover: Mapping[str, Any] | None) -> pd.DataFrame:
    """The land-cover result of :func:`~cloudfill.evaluate` (``df.attrs["landcover"]``) as a
    table.

    Parameters
    ----------
    landcover
        The dict stored in ``attrs["landcover"]``, or None.

    Returns
    -------
    pandas.DataFrame
        Indexed by class code, columns ``name``, ``real``, one F1 column per method and
        ``support``; the overall accuracies in ``attrs["overall_accuracy"]``. Empty when
        ``landcover`` is None.

    Examples
    --------
    >>> lc = {"f1": {"real": {"1": 0.9}, "model": {"1": 0.8}}, "support": {"1": 10},
    ...       "classes": {"1": "forest"}, "overall_accuracy": {"real": 0.9, "model": 0.8}}
    >>> float(landcover_frame(lc).loc["1", "model"])
    0.8
    """
    if not landcover:
        return pd.DataFrame()
    frame = pd.DataFrame(landcover["f1"])
    frame.index.name = "class"
    frame.insert(0, "name", [landcover.get("classes", {}).get(c, c) for c in frame.index])
    frame["support"] = pd.Series(landcover.get("support", {}))
    frame.attrs["overall_accuracy"] = dict(landcover.get("overall_accuracy", {}))
    return frame


# --- the table -------------------------------------------------------------------------------


def run_evaluation(
    plan: EvaluationPlan,
    extras: Callable[[DateCase], Mapping[str, Any]] | None = None,
    progress: FillProgress | None = None,
) -> tuple[pd.DataFrame, dict[pd.Timestamp, dict[str, Any]]]:
    """Score every date of ``plan`` (one compute per date) and run its land-cover check.

    Parameters
    ----------
    plan
        From :func:`~cloudfill.evaluation.plan.plan_evaluation`; ``plan.landcover`` holds the
        land-cover check's date and settings.
    extras
        Called with each :class:`DateCase`; the lazy objects it returns are computed in the
        same pass and returned per date (used by the report for its pictures).
    progress
        Told about each date as it is scored (:class:`~cloudfill.fill.progress.FillProgress`;
        its ``method`` is ``"N methods"``); None: silent.

    Returns
    -------
    table, computed_extras
        The metrics table (as :func:`~cloudfill.evaluate` returns it) and, per date, the
        computed extras.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.evaluation.plan import plan_evaluation
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> plan = plan_evaluation(ds, with_model=False, baselines=["persistence"], landcover=False)
    >>> table, _ = run_evaluation(plan)
    >>> tuple(table.columns) == COLUMNS
    True
    """
    rows: list[dict[str, Any]] = []
    per_date: dict[pd.Timestamp, dict[str, Any]] = {}
    landcover = None
    report = progress if progress is not None else FillProgress()
    report.start(len(plan.dates), 0, None)
    try:
        for date in plan.dates:
            report.date(date, f"{len(plan.methods)} methods")
            case = date_case(plan, date)
            wanted = dict(extras(case)) if extras is not None else {}
            if date == plan.landcover_date:
                wanted.update(_landcover_inputs(case, plan))
            date_rows, computed = score_case(case, wanted)
            rows.extend(date_rows)
            if date == plan.landcover_date:
                landcover = _run_landcover(plan, computed)
            per_date[date] = {k: v for k, v in computed.items() if not k.startswith("landcover:")}
            report.advance()
    finally:
        report.stop()
    table = pd.DataFrame(rows)
    table.insert(3, "split", plan.split.used)
    table = table[list(COLUMNS)]
    table["date"] = pd.to_datetime(table["date"])
    table.attrs.update(plan.describe())
    table.attrs["landcover"] = landcover
    return table, per_date
