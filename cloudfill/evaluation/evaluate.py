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

The work is in two steps: :func:`~cloudfill.evaluation.plan.plan_evaluation` decides dates,
truth, pixels and methods (reading only the cloud mask), and
:func:`~cloudfill.evaluation.scoring.run_evaluation` scores them with one
:func:`dask.compute` per date (see :mod:`cloudfill.evaluation.scoring` for the cost).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.core.pairs import PairingRule
from cloudfill.evaluation.landcover import LandcoverCheck
from cloudfill.evaluation.plan import (
    BASELINES,
    REGIONS,
    EvaluationPlan,
    SplitPixels,
    plan_evaluation,
    split_pixels,
)
from cloudfill.evaluation.scoring import (
    COLUMNS,
    DateCase,
    date_case,
    landcover_frame,
    run_evaluation,
)
from cloudfill.infer.settings import InferenceSettings

# The plan's and the scoring's public names are re-exported: this module is the one users
# (and ``cloudfill.evaluate``) import the evaluation from.
__all__ = [
    "BASELINES",
    "COLUMNS",
    "REGIONS",
    "DateCase",
    "EvaluationPlan",
    "LandcoverCheck",
    "SplitPixels",
    "date_case",
    "evaluate",
    "landcover_frame",
    "plan_evaluation",
    "run_evaluation",
    "split_pixels",
]


def evaluate(
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
        The land-cover check (needs ``lulc``) of one date: True runs it with the defaults of
        :class:`~cloudfill.evaluation.landcover.LandcoverCheck`, False skips it, a
        ``LandcoverCheck`` sets its date and forest (``block``, ``n_estimators``,
        ``ignore_label``, ``seed`` ...). Its default date is the cloudiest evaluated date of
        a cube with ``truth``, the clearest otherwise.
    mask
        Region(s) to report: ``"cloud"`` (the date's unusable pixels), ``"all"``, or both.
    with_model
        False evaluates the baselines only (no model is loaded; e.g. a cube without S1).
    max_cloud
        Largest unusable fraction of a default date of a cube without ``truth``.
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
        Unknown dates, baselines, regions or split; no date every method can predict; a
        land-cover date that is not evaluated.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=1)
    >>> table = evaluate(ds, with_model=False, landcover=False)
    >>> sorted(table.method.unique())
    ['interpolation', 'persistence', 'regression']
    >>> int(table.groupby(["date", "region"]).n_pixels.nunique().max())
    1
    >>> check = LandcoverCheck(block=16, n_estimators=10)
    >>> evaluate(ds, with_model=False, landcover=check).attrs["landcover"]["n_test"] > 0
    True
    """
    plan = plan_evaluation(
        ds,
        model,
        dates=dates,
        split=split,
        baselines=baselines,
        landcover=landcover,
        mask=mask,
        with_model=with_model,
        max_cloud=max_cloud,
        rule=rule,
        inference=inference,
    )
    table, _ = run_evaluation(plan)
    return table
