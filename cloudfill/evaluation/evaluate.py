"""``evaluate``: the model against the baselines, on exactly the same pixels, date by date.

What is scored
--------------
For each evaluated S2 date, every method predicts the whole image without reading the date's
own S2 values: the model (:func:`~cloudfill.infer.synthesize.synthesize_with_scale`) and the
baselines of :mod:`cloudfill.evaluation.baselines` (``persistence``, ``interpolation``,
``regression``). The ground truth is

- the cube's ``truth`` variable when it has one (simulated cubes,
  :func:`cloudfill.simulate_scene`): the cloud-free image under the clouds is known, so the
  default dates are the cloudy ones the model would fill;
- otherwise the date's own **clear** pixels: the date is *hidden* (the model synthesizes it
  as if it were cloudy, the baselines interpolate around it), and only its clear pixels are
  scored. The default dates are then the nearly clear ones (at most ``max_cloud`` unusable).
  A hidden date has no cloud region to score, so only the ``all`` region is reported.

A pixel is scored only where the truth and *every* method have a value, so the methods are
compared on identical pixels (``n_pixels`` is equal across methods for a date and region),
and then only in the requested regions: ``cloud`` (the date's unusable pixels, what a fill
replaces) and ``all``. With ``split="test"`` both are further restricted to the spatial test
blocks recorded in the model card's ``split`` (the blocks the model never trained on).

Cost
----
Everything is lazy until one :func:`dask.compute` per date, which runs the model once and
reduces every (method, region) metric to a few sums per chunk (the reductions of
:mod:`cloudfill.metrics`); the cube is never loaded whole. Two extra reads per date: the
regression baseline's fit (sampled training pixels) and, for the land-cover date only, the
full-resolution images the random forest needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from cloudfill import metrics as _metrics
from cloudfill._dates import as_dates
from cloudfill.core.pairs import PairingRule, cloud_fractions, pairs
from cloudfill.core.temporal import linear_interpolation, persistence
from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import MissingVariableError, ParameterError
from cloudfill.evaluation.baselines import fit_regression_baseline, predict_regression_baseline
from cloudfill.evaluation.landcover import landcover_check
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import resolve_model, synthesize_with_scale

__all__ = [
    "BASELINES",
    "COLUMNS",
    "REGIONS",
    "DateCase",
    "EvaluationPlan",
    "SplitPixels",
    "evaluate",
    "landcover_frame",
    "split_pixels",
]

BASELINES: tuple[str, ...] = ("persistence", "interpolation", "regression")
"""Baseline method names, in report order."""

REGIONS: tuple[str, ...] = ("cloud", "all")
"""Region names: the date's unusable (cloud-masked) pixels, and all pixels."""

COLUMNS: tuple[str, ...] = ("date", "method", "region", "split", *_metrics.METRICS, "n_pixels")
"""Columns of the table :func:`evaluate` returns."""

_DEFAULT_CODES = {"0": "train", "1": "val", "2": "test"}
"""The training split's code convention, used when a split record omits ``codes``."""


# --- the spatial split recorded in a model card ----------------------------------------------


@dataclass(frozen=True)
class SplitPixels:
    """Which pixels are scored and which may train the regression baseline.

    Attributes
    ----------
    used
        ``"test"`` when the scores are restricted to test blocks, else ``"all"``.
    test
        Boolean (y, x), True = scored pixel; None = every pixel.
    train
        Boolean (y, x), True = a pixel the regression baseline may learn from; None = every
        pixel.
    note
        Why the split is what it is (e.g. why a requested test split fell back to all pixels).
    """

    used: str
    test: np.ndarray | None
    train: np.ndarray | None
    note: str


def _block_index(n: int, block: int, n_cells: int) -> np.ndarray | None:
    """Block index of each pixel along one axis, or None if ``n_cells`` cannot tile ``n``.

    Blocks start at multiples of ``block`` from pixel 0; a remainder narrower than a patch is
    merged into the last block, so ``n_cells`` is ``ceil(n / block)`` or one less.
    """
    full = -(-n // block)
    if n_cells not in (full, full - 1) or n_cells < 1:
        return None
    return np.minimum(np.arange(n) // block, n_cells - 1)


def split_pixels(
    card_split: Mapping[str, Any] | None, shape: tuple[int, int], split: str = "test"
) -> SplitPixels:
    """Test and training pixels from a model card's ``split`` record, read defensively.

    The record (written by the training loop) describes square blocks of ``block_size``
    pixels on a grid from pixel (0, 0), a remainder merged into the last block, and an
    ``assignment`` (rows x cols) of split codes named by ``codes`` (default ``0`` train,
    ``1`` val, ``2`` test). Anything missing, malformed or not matching ``shape`` (a model
    evaluated on another scene) falls back to all pixels, with the reason in ``note``.

    Parameters
    ----------
    card_split
        ``model.card.split``, or None.
    shape
        ``(ny, nx)`` of the evaluated cube.
    split
        ``"test"`` to restrict to the test blocks, ``"all"`` for every pixel.

    Returns
    -------
    SplitPixels

    Examples
    --------
    >>> record = {"block_size": 32, "assignment": [[0, 2], [1, 0]]}
    >>> sp = split_pixels(record, (64, 64))
    >>> sp.used, int(sp.test.sum()), int(sp.train.sum())
    ('test', 1024, 2048)
    >>> split_pixels({}, (64, 64)).used
    'all'
    """
    if split not in ("test", "all"):
        raise ParameterError(f"split must be 'test' or 'all', got {split!r}")
    if split == "all":
        return SplitPixels("all", None, None, "all pixels scored (split='all')")

    def fallback(reason: str) -> SplitPixels:
        return SplitPixels("all", None, None, f"all pixels scored: {reason}")

    if not card_split:
        return fallback("the model card records no spatial split")
    try:
        block = int(card_split["block_size"])
        assignment = np.asarray(card_split["assignment"], dtype=np.int64)
        codes = {str(k): str(v) for k, v in dict(card_split.get("codes", _DEFAULT_CODES)).items()}
    except (KeyError, TypeError, ValueError) as exc:
        return fallback(f"the model card's split has no usable block description ({exc!r})")
    if block < 1 or assignment.ndim != 2 or assignment.size == 0:
        return fallback("the model card's split has no usable block description")
    n_blocks = card_split.get("n_blocks")
    if n_blocks is not None and list(n_blocks) != list(assignment.shape):
        return fallback(f"split n_blocks {list(n_blocks)} != assignment {list(assignment.shape)}")
    rows = _block_index(shape[0], block, assignment.shape[0])
    cols = _block_index(shape[1], block, assignment.shape[1])
    if rows is None or cols is None:
        return fallback(
            f"the split's {assignment.shape[0]} x {assignment.shape[1]} blocks of {block} px "
            f"do not tile this {shape[0]} x {shape[1]} cube (trained on another scene?)"
        )
    by_name = {name: int(code) for code, name in codes.items()}
    if "test" not in by_name:
        return fallback(f"the split's codes {codes} name no 'test' split")
    per_pixel = assignment[rows[:, None], cols[None, :]]
    test = per_pixel == by_name["test"]
    if not test.any():
        return fallback("the split has no test block")
    train = per_pixel == by_name["train"] if "train" in by_name else ~test
    n_test = int((assignment == by_name["test"]).sum())
    note = f"test blocks of the model card's split: {n_test} of {assignment.size} {block} px blocks"
    return SplitPixels("test", test, train, note)


# --- the plan: which dates, which truth, which methods ----------------------------------------


@dataclass
class EvaluationPlan:
    """Everything :func:`evaluate` decided before reading pixels (see :func:`plan_evaluation`).

    Attributes
    ----------
    ds
        The cube.
    model
        The resolved model, or None when only baselines are evaluated.
    dates
        The evaluated S2 dates.
    truth_source
        ``"truth variable"`` or ``"hidden clear dates"``.
    split
        The scored / training pixels.
    methods
        Method names in table order.
    regions
        Region names (``cloud`` is dropped for hidden clear dates).
    mask
        The cube's unusable mask (time, y, x), lazy.
    fractions
        Cloud fraction per S2 date.
    landcover_date
        The date of the land-cover check, or None.
    notes
        Decisions worth telling the reader (fallbacks, skipped parts).
    rule, inference
        The pairing rule and inference settings of the model's synthesis.
    """

    ds: xr.Dataset
    model: Any
    dates: pd.DatetimeIndex
    truth_source: str
    split: SplitPixels
    methods: tuple[str, ...]
    regions: tuple[str, ...]
    mask: xr.DataArray
    fractions: pd.Series
    landcover_date: pd.Timestamp | None
    notes: list[str] = field(default_factory=list)
    rule: PairingRule = field(default_factory=PairingRule)
    inference: InferenceSettings = field(default_factory=InferenceSettings)

    def describe(self) -> dict[str, Any]:
        """JSON-safe summary of the plan (the attrs of the metrics table)."""
        card = getattr(self.model, "card", None)
        return {
            "truth": self.truth_source,
            "split": self.split.used,
            "split_note": self.split.note,
            "dates": [f"{d:%Y-%m-%d}" for d in self.dates],
            "methods": list(self.methods),
            "regions": list(self.regions),
            "model": (
                f"{card.variant} (attention {card.attention}, confidence {card.confidence})"
                if card is not None
                else "none"
            ),
            "notes": list(self.notes),
        }


def _regions(mask: str | Sequence[str]) -> tuple[str, ...]:
    wanted = (mask,) if isinstance(mask, str) else tuple(mask)
    unknown = [r for r in wanted if r not in REGIONS]
    if unknown or not wanted:
        raise ParameterError(f"mask must be 'cloud', 'all' or both, got {mask!r}")
    return tuple(r for r in REGIONS if r in wanted)


def _baselines(baselines: Iterable[str] | None) -> tuple[str, ...]:
    wanted = tuple(baselines or ())
    unknown = [b for b in wanted if b not in BASELINES]
    if unknown:
        raise ParameterError(f"unknown baseline(s) {unknown}; expected some of {list(BASELINES)}")
    return tuple(b for b in BASELINES if b in wanted)


def _default_dates(
    ds: xr.Dataset,
    model: Any,
    has_truth: bool,
    fractions: pd.Series,
    max_cloud: float,
    rule: PairingRule,
) -> pd.DatetimeIndex:
    """Dates every method can predict: truth cubes their cloudy dates, others clear ones."""
    needs_reference = bool(model.variant.uses_reference) if model is not None else True
    direction = model.card.reference_direction if model is not None else "earlier"
    table = pairs(
        ds, rule, needs_reference=needs_reference, fractions=fractions, direction=direction
    )
    frac = fractions.to_numpy()
    # Persistence needs an earlier date with some clear pixel.
    earlier_usable = np.maximum.accumulate(np.r_[False, frac[:-1] < 1.0])
    ok = earlier_usable & ((frac > 0) if has_truth else (frac <= max_cloud))
    if model is not None:
        ok &= table["s1_date"].notna().to_numpy()
        if needs_reference:
            ok &= table["reference_date"].notna().to_numpy()
    chosen = pd.DatetimeIndex(fractions.index[ok])
    if not len(chosen):
        what = "cloudy" if has_truth else f"clear (<= {100 * max_cloud:g}% unusable)"
        raise ParameterError(
            f"no {what} S2 date that every method can predict (an earlier usable date"
            + (", an S1 date and a reference" if model is not None else "")
            + " is needed); pass dates=... explicitly"
        )
    return chosen


def plan_evaluation(
    ds: xr.Dataset,
    model: Any = None,
    *,
    dates: Any = None,
    split: str = "test",
    baselines: Iterable[str] | None = BASELINES,
    landcover: bool = True,
    landcover_date: Any = None,
    mask: str | Sequence[str] = REGIONS,
    with_model: bool = True,
    max_cloud: float = 0.05,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
) -> EvaluationPlan:
    """Decide dates, truth, split and methods; parameters as in :func:`evaluate`.

    Reads only the cloud mask (for the cloud fractions).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> plan = plan_evaluation(ds, with_model=False)
    >>> plan.truth_source, plan.methods
    ('truth variable', ('persistence', 'interpolation', 'regression'))
    """
    if "s2" not in ds.data_vars:
        raise MissingVariableError("evaluate needs an 's2' variable")
    notes: list[str] = []
    cf = None
    if with_model:
        cf = resolve_model(model, device=inference.device, fast=inference.fast)
        cf.check_cube(ds)
    methods = (("model",) if cf is not None else ()) + _baselines(baselines)
    if not methods:
        raise ParameterError("nothing to evaluate: no model and no baseline")
    if not 0.0 <= max_cloud < 1.0:
        raise ParameterError(f"max_cloud must be within [0, 1), got {max_cloud}")

    has_truth = "truth" in ds.data_vars
    unusable = cloud_mask(ds)
    fractions = cloud_fractions(ds)
    if dates is None:
        when = _default_dates(ds, cf, has_truth, fractions, max_cloud, rule)
    else:
        when = as_dates(dates)
        missing = when.difference(pd.DatetimeIndex(ds["time"].values))
        if len(missing):
            raise ParameterError(f"date {missing[0]:%Y-%m-%d} is not an S2 date of the cube")

    regions = _regions(mask)
    if not has_truth:
        notes.append(
            "no 'truth' variable: each evaluated date is hidden and its clear pixels are the "
            "truth (every method predicts the date as if it were cloudy)"
        )
        if "cloud" in regions:
            notes.append("a hidden clear date has no cloud region: only 'all' is scored")
            regions = tuple(r for r in regions if r != "cloud") or ("all",)

    card_split = getattr(getattr(cf, "card", None), "split", None) if cf is not None else None
    if cf is None and split == "test":
        sp = SplitPixels("all", None, None, "all pixels scored: no model, so no recorded split")
    else:
        sp = split_pixels(card_split, (ds.sizes["y"], ds.sizes["x"]), split)
    if split == "test" and sp.used == "all":
        notes.append(sp.note)

    lc_date = None
    if landcover:
        if "lulc" not in ds.data_vars:
            notes.append("no 'lulc' variable: land-cover check skipped")
        elif landcover_date is not None:
            lc_date = pd.Timestamp(landcover_date)
            if lc_date not in when:
                raise ParameterError(f"landcover_date {lc_date:%Y-%m-%d} is not an evaluated date")
        else:
            # The paper's case: the cloudiest date when the truth is known, else the
            # clearest (most real pixels to compare against).
            frac = fractions.loc[when]
            lc_date = pd.Timestamp(frac.idxmax() if has_truth else frac.idxmin())

    return EvaluationPlan(
        ds=ds,
        model=cf,
        dates=when,
        truth_source="truth variable" if has_truth else "hidden clear dates",
        split=sp,
        methods=methods,
        regions=regions,
        mask=unusable,
        fractions=fractions,
        landcover_date=lc_date,
        notes=notes,
        rule=rule,
        inference=inference,
    )


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


def date_case(plan: EvaluationPlan, date: Any) -> DateCase:
    """Build the lazy :class:`DateCase` of ``date`` (reads only the regression's samples).

    Examples
    --------
    >>> import cloudfill
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

    predictions: dict[str, xr.DataArray] = {}
    scale = None
    for method in plan.methods:
        if method == "model":
            syn = synthesize_with_scale(
                ds,
                date,
                plan.model,
                rule=plan.rule,
                settings=plan.inference,
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

    available = truth.notnull().all("band")
    for pred in predictions.values():
        available = available & pred.notnull().all("band")
    scored = available
    if plan.split.test is not None:
        scored = scored & xr.DataArray(plan.split.test, dims=("y", "x"))
    regions = {
        region: (scored & unusable) if region == "cloud" else scored for region in plan.regions
    }
    return DateCase(date, real, truth, unusable, predictions, scale, available, regions)


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
    scored = case.available
    if plan.split.test is not None:
        scored = scored & xr.DataArray(plan.split.test, dims=("y", "x"))
    out = {"landcover:truth": case.truth.where(case.available)}
    for method, pred in case.predictions.items():
        out[f"landcover:{method}"] = pred.where(scored)
    return out


def _run_landcover(
    plan: EvaluationPlan, computed: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any] | None:
    """The land-cover check of every method, as one JSON-safe dict (see :func:`evaluate`)."""
    lulc = plan.ds["lulc"].compute()
    real = computed["landcover:truth"]
    result: dict[str, Any] = {
        "date": f"{plan.landcover_date:%Y-%m-%d}",
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
            check = landcover_check(real, synth, lulc, **options)
        except ParameterError as exc:
            plan.notes.append(f"land-cover check of {method} skipped ({exc})")
            continue
        f1 = check["f1"]
        classes = [str(c) for c in f1.index]
        # The forest, its training pixels and its test pixels are the same for every method,
        # so the real image's scores are too; keep the first.
        result["overall_accuracy"].setdefault("real", check["overall_accuracy_real"])
        result["f1"].setdefault("real", dict(zip(classes, f1["real"].astype(float), strict=True)))
        result["overall_accuracy"][method] = check["overall_accuracy_synth"]
        result["f1"][method] = dict(zip(classes, f1["synth"].astype(float), strict=True))
        result["support"] = dict(zip(classes, (int(s) for s in f1["support"]), strict=True))
        result["classes"] = {c: names.get(c, c) for c in classes}
        result["n_train"], result["n_test"] = check["n_train"], check["n_test"]
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
    """The land-cover result of :func:`evaluate` (``df.attrs["landcover"]``) as a table.

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
    landcover_kwargs: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[pd.Timestamp, dict[str, Any]]]:
    """Score every date of ``plan`` (one compute per date) and run the land-cover check.

    Parameters
    ----------
    plan
        From :func:`plan_evaluation`.
    extras
        Called with each :class:`DateCase`; the lazy objects it returns are computed in the
        same pass and returned per date (used by the report for its pictures).
    landcover_kwargs
        Passed to :func:`~cloudfill.evaluation.landcover.landcover_check`.

    Returns
    -------
    table, computed_extras
        The metrics table (as :func:`evaluate`) and, per date, the computed extras.
    """
    rows: list[dict[str, Any]] = []
    per_date: dict[pd.Timestamp, dict[str, Any]] = {}
    landcover = None
    for date in plan.dates:
        case = date_case(plan, date)
        wanted = dict(extras(case)) if extras is not None else {}
        if date == plan.landcover_date:
            wanted.update(_landcover_inputs(case, plan))
        date_rows, computed = score_case(case, wanted)
        rows.extend(date_rows)
        if date == plan.landcover_date:
            landcover = _run_landcover(plan, computed, dict(landcover_kwargs or {}))
        per_date[date] = {k: v for k, v in computed.items() if not k.startswith("landcover:")}
    table = pd.DataFrame(rows)
    table.insert(3, "split", plan.split.used)
    table = table[list(COLUMNS)]
    table["date"] = pd.to_datetime(table["date"])
    table.attrs.update(plan.describe())
    table.attrs["landcover"] = landcover
    return table, per_date


def evaluate(
    ds: xr.Dataset,
    model: Any = None,
    *,
    dates: Any = None,
    split: str = "test",
    baselines: Iterable[str] | None = BASELINES,
    landcover: bool = True,
    mask: str | Sequence[str] = REGIONS,
    with_model: bool = True,
    max_cloud: float = 0.05,
    landcover_date: Any = None,
    landcover_kwargs: Mapping[str, Any] | None = None,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
) -> pd.DataFrame:
    """Score the model and the baselines on the same pixels of each evaluated date.

    See the module notes for what is taken as truth and which pixels count.

    Parameters
    ----------
    ds
        A contract cube; with a ``truth`` variable (simulated) or without (real data).
    model
        A :class:`~cloudfill.model.runtime.CloudfillModel`, a checkpoint path or None (the
        default model).
    dates
        S2 dates to evaluate; default: those every method can predict — the cloudy dates of
        a cube with ``truth``, the clear ones (at most ``max_cloud`` unusable) otherwise.
    split
        ``"test"``: score only the test blocks of the model card's ``split`` (falls back to
        all pixels, with a note, when the card has no usable split); ``"all"``: every pixel.
        The regression baseline is fitted on the split's training pixels of the other dates.
    baselines
        Any of ``"persistence"``, ``"interpolation"``, ``"regression"``.
    landcover
        Run the land-cover check (needs ``lulc``) on one date: ``landcover_date``, or the
        cloudiest evaluated date of a cube with ``truth`` / the clearest otherwise.
    mask
        Region(s) to report: ``"cloud"`` (the date's unusable pixels), ``"all"``, or both.
    with_model
        False evaluates the baselines only (no model is loaded; e.g. a cube without S1).
    max_cloud
        Largest unusable fraction of a default date of a cube without ``truth``.
    landcover_date
        The date of the land-cover check (an evaluated date).
    landcover_kwargs
        Passed to :func:`~cloudfill.evaluation.landcover.landcover_check` (``block``,
        ``n_estimators``, ``ignore_label``, ``seed`` ...).
    rule
        The pairing rule of the model's synthesis (:class:`~cloudfill.core.pairs.PairingRule`).
    inference
        Tiling, batching and device (:class:`~cloudfill.infer.settings.InferenceSettings`).

    Returns
    -------
    pandas.DataFrame
        Tidy: one row per (date, method, region), columns :data:`COLUMNS` — ``date``,
        ``method`` (``model``, ``persistence``, ``interpolation``, ``regression``),
        ``region`` (``cloud`` / ``all``), ``split`` (``test`` / ``all``, what was actually
        used), ``mae``, ``rmse``, ``psnr`` (dB, MAX = 1), ``ssim``, ``sam`` (degrees),
        ``n_pixels`` (scored (y, x) pixels, equal across methods). ``attrs`` holds the plan
        (``truth``, ``split``, ``split_note``, ``dates``, ``methods``, ``model``, ``notes``)
        and ``landcover``: None, or a JSON-safe dict with ``date``, ``overall_accuracy``
        (``{"real": ..., "model": ..., "persistence": ...}``), ``f1`` (per method and
        ``real``: ``{class: F1}``), ``support``, ``classes`` (names), ``n_train``,
        ``n_test``; :func:`landcover_frame` turns it into a table.

    Raises
    ------
    ParameterError
        Unknown dates, baselines, regions or split; no date every method can predict.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> table = evaluate(ds, with_model=False, landcover=False)
    >>> sorted(table.method.unique())
    ['interpolation', 'persistence', 'regression']
    >>> int(table.groupby(["date", "region"]).n_pixels.nunique().max())
    1
    """
    plan = plan_evaluation(
        ds,
        model,
        dates=dates,
        split=split,
        baselines=baselines,
        landcover=landcover,
        landcover_date=landcover_date,
        mask=mask,
        with_model=with_model,
        max_cloud=max_cloud,
        rule=rule,
        inference=inference,
    )
    table, _ = run_evaluation(plan, landcover_kwargs=landcover_kwargs)
    return table
