"""The evaluation plan: which dates, which truth, which pixels and which methods are scored.

:func:`plan_evaluation` decides everything :func:`~cloudfill.evaluation.evaluate.evaluate`
needs before reading pixels (it reads only the cloud mask, for the cloud fractions); the
scoring itself is :mod:`cloudfill.evaluation.scoring`.

- **Truth.** The cube's ``truth`` variable when it has one (the default dates are then the
  cloudy ones the model would fill), otherwise each evaluated date is *hidden* and its clear
  pixels are the truth (the default dates are the nearly clear ones).
- **Pixels.** With ``split="test"`` only the test blocks of the model card's recorded spatial
  split are scored (:func:`split_pixels`, on the training grid of :mod:`cloudfill.core.grid`),
  and the regression baseline learns from its training blocks only.
- **Land cover.** The date of the land-cover check
  (:class:`~cloudfill.evaluation.landcover.LandcoverCheck`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill._dates import as_dates
from cloudfill.core.grid import SPLITS, pixel_splits
from cloudfill.core.pairs import PairingRule, cloud_fractions, pairs
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import validate
from cloudfill.errors import ParameterError
from cloudfill.evaluation.landcover import LandcoverCheck
from cloudfill.fill.error_scale import residuals_if_needed
from cloudfill.fill.plan import per_pixel_model
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import resolve_model

__all__ = [
    "BASELINES",
    "REGIONS",
    "EvaluationPlan",
    "SplitPixels",
    "plan_evaluation",
    "split_pixels",
]

BASELINES: tuple[str, ...] = ("persistence", "interpolation", "regression")
"""Baseline method names, in report order."""

REGIONS: tuple[str, ...] = ("cloud", "all")
"""Region names: the date's unusable (cloud-masked) pixels, and all pixels."""

_DEFAULT_CODES = {str(code): name for code, name in enumerate(SPLITS)}
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


def split_pixels(
    card_split: Mapping[str, Any] | None, shape: tuple[int, int], split: str = "test"
) -> SplitPixels:
    """Test and training pixels from a model card's ``split`` record, read defensively.

    The record (written by the training loop) describes the split blocks of
    :func:`cloudfill.core.grid.patch_grid` — square blocks of ``block_size`` pixels from
    pixel (0, 0), a remainder merged into the last block — and an ``assignment`` (rows x
    cols) of split codes named by ``codes`` (default :data:`cloudfill.core.grid.SPLITS`:
    ``0`` train, ``1`` val, ``2`` test); :func:`cloudfill.core.grid.pixel_splits` maps it to
    pixels. Anything missing, malformed or not matching ``shape`` (a model evaluated on
    another scene) falls back to all pixels, with the reason in ``note``.

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

    Raises
    ------
    ParameterError
        If ``split`` is neither ``"test"`` nor ``"all"``.

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
    per_pixel = pixel_splits(shape, block, assignment)
    if per_pixel is None:
        return fallback(
            f"the split's {assignment.shape[0]} x {assignment.shape[1]} blocks of {block} px "
            f"do not tile this {shape[0]} x {shape[1]} cube (trained on another scene?)"
        )
    by_name = {name: int(code) for code, name in codes.items()}
    if "test" not in by_name:
        return fallback(f"the split's codes {codes} name no 'test' split")
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
    """Everything :func:`~cloudfill.evaluation.evaluate.evaluate` decided before reading pixels
    (see :func:`plan_evaluation`).

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
    landcover
        The land-cover check with its ``date`` chosen, or None when it is not run.
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
    landcover: LandcoverCheck | None
    notes: list[str] = field(default_factory=list)
    rule: PairingRule = field(default_factory=PairingRule)
    inference: InferenceSettings = field(default_factory=InferenceSettings)

    @cached_property
    def residuals(self) -> pd.DataFrame | None:
        """The cube's :func:`~cloudfill.fill.error_scale.date_residuals` when the model's
        error scale needs them (a calibrated model), computed once for every date's fill."""
        return residuals_if_needed(self.ds, self.mask, self.model)

    @property
    def landcover_date(self) -> pd.Timestamp | None:
        """The date of the land-cover check, or None."""
        return None if self.landcover is None else self.landcover.date

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
    # A composite or blend model pairs by pixel, as its fills do: any date with a usable
    # pixel in range serves, not only <= max_ref_cloud ones. Only the dates are read here,
    # so the reference_share pass over the mask is skipped.
    table = pairs(
        ds,
        rule,
        needs_reference=needs_reference,
        fractions=fractions,
        direction=direction,
        per_pixel=per_pixel_model(model),
        shares=False,
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


def _scored_split(ds: xr.Dataset, model: Any, split: str) -> SplitPixels:
    """The split of ``model``'s card on this cube (all pixels without a model)."""
    if model is None and split == "test":
        return SplitPixels("all", None, None, "all pixels scored: no model, so no recorded split")
    card_split = getattr(getattr(model, "card", None), "split", None) if model is not None else None
    return split_pixels(card_split, (ds.sizes["y"], ds.sizes["x"]), split)


def _landcover(
    ds: xr.Dataset,
    landcover: bool | LandcoverCheck | None,
    when: pd.DatetimeIndex,
    fractions: pd.Series,
    notes: list[str],
) -> LandcoverCheck | None:
    """The land-cover check with its date chosen, or None (with a note when lulc is missing)."""
    if not landcover:
        return None
    check = landcover if isinstance(landcover, LandcoverCheck) else LandcoverCheck()
    if "lulc" not in ds.data_vars:
        notes.append("no 'lulc' variable: land-cover check skipped")
        return None
    if check.date is not None:
        if check.date not in when:
            raise ParameterError(f"landcover_date {check.date:%Y-%m-%d} is not an evaluated date")
        return check
    # The paper's case: the cloudiest date when the truth is known, else the clearest (most
    # real pixels to compare against).
    frac = fractions.loc[when]
    has_truth = "truth" in ds.data_vars
    return replace(check, date=pd.Timestamp(frac.idxmax() if has_truth else frac.idxmin()))


def plan_evaluation(
    ds: xr.Dataset,
    model: Any = None,
    *,
    dates: Any = None,
    split: str = "test",
    baselines: Iterable[str] | None = BASELINES,
    landcover: bool | LandcoverCheck = True,
    mask: str | Sequence[str] = REGIONS,
    with_model: bool = True,
    max_cloud: float = 0.05,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
) -> EvaluationPlan:
    """Decide dates, truth, split, methods and the land-cover date, reading only the cloud mask.

    Parameters
    ----------
    ds, model, dates, split, baselines, landcover, mask, with_model, max_cloud, rule, inference
        As in :func:`cloudfill.evaluation.evaluate.evaluate`.

    Returns
    -------
    EvaluationPlan
        For :func:`cloudfill.evaluation.scoring.run_evaluation`.

    Raises
    ------
    MissingVariableError
        If the cube has no ``s2`` variable.
    ParameterError
        Unknown dates, baselines, regions or split; no date every method can predict.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> plan = plan_evaluation(ds, with_model=False)
    >>> plan.truth_source, plan.methods
    ('truth variable', ('persistence', 'interpolation', 'regression'))
    """
    # The contract (not the CRS, which an in-memory cube may go without), then the values.
    check_values(validate(ds, require=("s2",), require_crs=False))
    notes: list[str] = []
    cf = None
    if with_model:
        cf = resolve_model(model, device=inference.device, fast=inference.fast)
        cf.check_inputs(ds)
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
        when = as_dates(dates).unique().sort_values()  # as fill: each date scored once
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

    sp = _scored_split(ds, cf, split)
    if split == "test" and sp.used == "all":
        notes.append(sp.note)

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
        landcover=_landcover(ds, landcover, when, fractions, notes),
        notes=notes,
        rule=rule,
        inference=inference,
    )
