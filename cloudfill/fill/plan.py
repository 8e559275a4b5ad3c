"""What a fill will do before it does it: the model that fills a cube and the per-date plan.

Cheap: only the mask is read (the cloud fractions, then in one more pass which unusable
pixels have a reference value: the ``reference_share`` column); nothing is synthesized.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.core.pairs import PER_PIXEL_MODES, PairingRule, cloud_fractions, pairs
from cloudfill.errors import ParameterError
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import resolve_model

__all__ = ["per_pixel_model", "plan_fill", "prepare_fill"]


def plan_fill(
    ds: xr.Dataset,
    *,
    needs_reference: bool = True,
    cloud_threshold: float = 0.0,
    rule: PairingRule = PairingRule(),
    fractions: pd.Series | None = None,
    direction: str = "earlier",
    chain: bool = False,
    per_pixel: bool = False,
) -> pd.DataFrame:
    """The per-date plan: :func:`~cloudfill.core.pairs.pairs` with the fill's settings
    (cheap; reads the mask). ``direction`` is the model's (:attr:`ModelCard.reference_direction
    <cloudfill.model.card.ModelCard.reference_direction>`); ``per_pixel`` pairs by pixel, as
    a model with a ``"composite"`` or ``"blend"`` reference needs (:func:`per_pixel_model`).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), dates=3, seed=0)
    >>> list(plan_fill(ds)["method"])
    ['clear', 'synthesize', 'interpolate']
    >>> list(plan_fill(ds, direction="nearest", per_pixel=True)["method"])
    ['clear', 'synthesize', 'synthesize']
    """
    # Checked here under the fill's own name (pairs() calls it clear_threshold), before the
    # mask is read.
    if not 0.0 <= cloud_threshold <= 1.0:
        raise ParameterError(f"cloud_threshold must be within [0, 1], got {cloud_threshold}")
    return pairs(
        ds,
        rule,
        clear_threshold=cloud_threshold,
        needs_reference=needs_reference,
        direction=direction,  # type: ignore[arg-type]
        fractions=cloud_fractions(ds) if fractions is None else fractions,
        chain=chain,
        per_pixel=per_pixel,
    )


def per_pixel_model(cf: Any) -> bool:
    """Whether the model ``cf`` pairs by pixel: an SO/SOD model whose reference is a
    per-pixel ``"composite"`` or ``"blend"`` (its dates need no single clear reference date).

    Examples
    --------
    >>> from cloudfill.model import CloudfillModel, Generator
    >>> model = CloudfillModel(Generator("SO", base_filters=4, n_blocks=1))
    >>> per_pixel_model(model), per_pixel_model(None)
    (False, False)
    >>> model.card.reference_mode = "blend"
    >>> per_pixel_model(model)
    True
    """
    if cf is None:
        return False
    return bool(cf.variant.uses_reference) and cf.card.reference_mode in PER_PIXEL_MODES


def prepare_fill(
    ds: xr.Dataset,
    model: Any = None,
    *,
    cloud_threshold: float = 0.0,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    chain: bool = False,
    plan: pd.DataFrame | None = None,
) -> tuple[Any, pd.DataFrame]:
    """The model that fills ``ds`` and the per-date plan, as :func:`fill_series` uses them.

    Parameters
    ----------
    ds, model, cloud_threshold, rule, inference, chain
        See :func:`fill_series`.
    plan
        A precomputed :func:`plan_fill` table to check, or None to make it.

    Returns
    -------
    tuple
        The :class:`~cloudfill.model.runtime.CloudfillModel`, checked against ``ds`` (None
        when ``ds`` has no S1: then only interpolation fills), and the plan.

    Raises
    ------
    ModelMismatchError
        The model does not fit the cube.
    ParameterError
        A chained ``plan`` for a fill without ``chain``.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((32, 32), dates=3, seed=0).drop_vars("s1")
    >>> model, plan = prepare_fill(ds)  # no S1: nothing to synthesize from
    >>> model is None, list(plan["method"])
    (True, ['clear', 'interpolate', 'interpolate'])
    """
    cf = None
    if "s1" in ds.data_vars:
        cf = resolve_model(model, device=inference.device, fast=inference.fast)
        cf.check_inputs(ds)
    if plan is None:
        plan = plan_fill(
            ds,
            needs_reference=bool(cf.variant.uses_reference) if cf is not None else True,
            cloud_threshold=cloud_threshold,
            rule=rule,
            direction=cf.card.reference_direction if cf is not None else "earlier",
            chain=chain,
            per_pixel=per_pixel_model(cf),
        )
    if "reference_chained" in plan and plan["reference_chained"].any() and not chain:
        raise ParameterError("the plan was made with chain=True; pass chain=True as well")
    return cf, plan
