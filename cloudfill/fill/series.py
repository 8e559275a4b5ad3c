"""``fill_series``: every S2 date with its unusable pixels filled, with provenance and confidence.

Per date (the method comes from :func:`cloudfill.core.pairs.pairs`):

- ``clear``: nothing to fill (cloud fraction <= ``cloud_threshold``); any unusable pixel of
  such a date is filled by temporal interpolation.
- ``synthesize``: unusable pixels take the generator's image of that date; pixels where the
  generator has no input (no S1 data, or for SO/SOD models no usable reference value within
  ``rule.max_ref_age``) fall back to temporal interpolation.
- ``interpolate``: no S1 within tolerance or no reference: per-pixel linear interpolation in
  time between the nearest usable dates (nearest value at the ends of the series).
- ``none``: nothing usable anywhere; unusable pixels stay NaN and are counted.

With ``chain=True`` a date filled by synthesis serves as reference for later dates (see
:func:`cloudfill.core.pairs.pairs`), its filled image standing in for its observation; the
``reference_chained`` provenance flags the dates whose reference date is such a filled date.

Before blending, the fill of a date is adjusted to the date's own clear pixels
(:func:`cloudfill.fill.adjust.adjust_to_date`, ``adjust`` = Gaussian sigma in pixels, 0 =
off, or ``"auto"``, the default: a sigma or off chosen per date on held-out clear pixels,
:func:`cloudfill.fill.adjust.choose_sigma`): their smoothed residual corrects what no other
date shows (sun angle, snow line). The sigma applied is recorded per date (``adjust_sigma``).
A model that reads the date's clear pixels itself (``SODCTX``) is not adjusted on the dates
it synthesizes (its output on the pixels it was shown is not a prediction to correct by).
Filled values are blended into the real image across a feathered band of ``feather`` pixels
outside the mask (weight 1 inside the mask, falling linearly to 0), so there is no hard seam.

``error_scale`` (band, y, x) is the Laplace scale ``b`` of each filled value's error, in
reflectance, after the adjustment: ``P(|error| <= b ln(1/(1-q))) = q``. With a calibrated
model (``ModelCard.calibration``, :mod:`cloudfill.model.calibration`) every filled value,
synthesized or interpolated, gets the calibration's scale from what the fill knew about it
(:mod:`cloudfill.fill.error_scale`: the ages and disagreement of the clear observations
around it, its departure from interpolation, its level, the head's scale, how interpolation
did on the date's clear pixels). Uncalibrated, synthesized pixels get the head's raw scale
(NaN without a head) and interpolated ones NaN; so does every filled pixel of a cube without
S1, which is filled without a model. Real pixels get 0, unfilled ones NaN; in the
feathered band the fill's scale times its blend weight. ``confidence`` (y, x) is defined from it:
``1 - exp(-0.01 / b̄)`` (:func:`~cloudfill.model.calibration.confidence_from_error_scale`,
``b̄`` the band mean): the probability that the value is within 0.01 reflectance of the
truth, 1 for real pixels, 0 for unfilled ones; where ``b`` is unknown it is a fixed value:
:data:`INTERPOLATION_CONFIDENCE` for interpolated pixels, :data:`NO_HEAD_CONFIDENCE` for
synthesized ones, blended in the feathered band like the values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill._backend import full_like
from cloudfill._dates import as_dates
from cloudfill._device import place
from cloudfill.core.pairs import PairingRule
from cloudfill.core.temporal import clear_sides, linear_interpolation
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.sanity import check_values
from cloudfill.cube.schema import validate
from cloudfill.errors import ParameterError
from cloudfill.fill.adjust import (
    ADJUST_SIGMA_ATTRS,
    AUTO,
    DEFAULT_ADJUST,
    Adjust,
    adjust_to_date,
    check_adjust,
    resolve_sigma,
)
from cloudfill.fill.assemble import assemble_series, count_unfilled
from cloudfill.fill.blend import DEFAULT_FEATHER, feather_weights
from cloudfill.fill.chain import chained_cube
from cloudfill.fill.error_scale import (
    date_residuals,
    error_features,
    fill_error_scale,
    model_calibration,
    residuals_if_needed,
)
from cloudfill.fill.plan import prepare_fill
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import resolve_model, synthesize_with_scale
from cloudfill.model.calibration import (
    ERROR_FEATURES,
    confidence_from_error_scale,
)

__all__ = [
    "INTERPOLATION_CONFIDENCE",
    "NO_HEAD_CONFIDENCE",
    "count_unfilled",
    "fill_date",
    "fill_series",
]

INTERPOLATION_CONFIDENCE = 0.25
NO_HEAD_CONFIDENCE = 0.5


def _cloud_fraction(
    plan_row: pd.Series, fractions: pd.Series | None, date: pd.Timestamp, unusable: xr.DataArray
) -> float:
    """The date's cloud fraction: the plan's or the cube's, else counted (one reduction of
    the date's mask)."""
    value = plan_row.get("cloud_fraction")
    if (value is None or pd.isna(value)) and fractions is not None and date in fractions.index:
        value = fractions.loc[date]
    return float(unusable.mean()) if value is None or pd.isna(value) else float(value)


def fill_date(
    ds: xr.Dataset,
    date: pd.Timestamp,
    plan_row: pd.Series,
    model: Any,
    *,
    mask: xr.DataArray | None = None,
    feather: int = DEFAULT_FEATHER,
    adjust: Adjust = DEFAULT_ADJUST,
    fractions: pd.Series | None = None,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    sources: Mapping[pd.Timestamp, xr.DataArray] | None = None,
    synthesis_hook: Callable[[pd.Timestamp, Any], Any] | None = None,
    with_features: bool = False,
    residuals: pd.DataFrame | None = None,
) -> xr.Dataset:
    """Fill one date; returns ``s2`` (band, y, x), ``filled`` and ``confidence`` (y, x),
    lazily, and ``adjust_sigma`` (the sigma applied; with ``adjust="auto"`` chosen on one
    computed window of the date, :func:`~cloudfill.fill.adjust.choose_sigma`).
    ``fractions``: the cube's cloud fraction per date, if known (the plan's
    ``cloud_fraction`` column); ``sources``: filled images of earlier dates a chained fill
    reads as references (:func:`chained_cube`); the other parameters: see
    :func:`fill_series`; ``residuals``: the cube's
    :func:`~cloudfill.fill.error_scale.date_residuals` (computed here when the error scale
    needs them and they are not given); ``with_features``: also return ``error_features``.
    The evaluation report draws its "filled" pictures with this function, so they show
    what ``fill_series`` writes."""
    # Resolved once here (None, a path or a model): the calibration and the context check
    # below read its card.
    model = resolve_model(model, device=inference.device, fast=inference.fast)
    full_mask = cloud_mask(ds) if mask is None else mask
    unusable = full_mask.sel(time=date)
    real = ds["s2"].sel(time=date)
    method = plan_row["method"]
    sides = clear_sides(ds, date, full_mask)
    interp = linear_interpolation(ds, date, mask=full_mask, sides=sides)
    interp = interp.drop_vars("time", errors="ignore").transpose("band", "y", "x")
    interp_conf = full_like(unusable, INTERPOLATION_CONFIDENCE, dtype="float32")
    calibration = model_calibration(model)
    blocks = None
    raw = synthesized = None
    if method == "synthesize":
        source = ds
        if sources:
            source = chained_cube(ds, full_mask, date, rule.max_ref_age, sources)
            if fractions is not None:  # filled dates are candidates like clear ones
                fractions = fractions.where(~fractions.index.isin(list(sources)), 0.0)
        syn = synthesize_with_scale(
            source,
            date,
            model,
            s1_date=plan_row["s1_date"],
            reference_date=plan_row["reference_date"]
            if pd.notna(plan_row["reference_date"])
            else None,
            fractions=fractions,
            rule=rule,
            inference=inference,
        )
        if synthesis_hook is not None:
            syn = synthesis_hook(date, syn)
        candidate = syn.mean.drop_vars("time", errors="ignore")
        blocks = {d: candidate.chunksizes[d] for d in ("y", "x")} if candidate.chunks else None
        raw = None if syn.scale is None else syn.scale.drop_vars("time", errors="ignore")
        # The confidence where the error scale is unknown (no head and no calibration).
        conf = full_like(interp_conf, NO_HEAD_CONFIDENCE)
        synthesized = candidate.notnull().all("band")
        candidate = candidate.where(synthesized, interp)
        conf = conf.where(synthesized, interp_conf)
    elif method in ("interpolate", "clear"):
        candidate = interp
        conf = interp_conf
    else:  # "none": nothing to fill with
        candidate = full_like(real, np.nan)
        conf = full_like(interp_conf, 0)
    candidate = candidate.transpose("band", "y", "x")
    sigma = 0.0
    nothing_to_fill = method == "clear" and not plan_row.get("cloud_fraction", 1.0) > 0
    # A context model (SODCTX) read the date's clear pixels itself, and its output there is
    # not a prediction (it was never trained on pixels it was shown): a residual on them
    # would correct the fill by noise.
    reads_date = method == "synthesize" and model.variant.uses_context
    if method != "none" and not nothing_to_fill and not reads_date:  # else nothing to adjust
        sigma = resolve_sigma(adjust, candidate, real, ~unusable)
        candidate = adjust_to_date(candidate, real, ~unusable, sigma)
    elif reads_date:
        # Its pixels the model could not synthesize (no S1 value there, no reference) are
        # interpolated, and adjusted to the date as an interpolated date is: unadjusted they
        # were far worse (e.g. a swath edge of S1). ``sigma`` stays 0: it describes the
        # synthesized pixels to the calibration, which was fitted that way.
        spare = resolve_sigma(adjust, interp, real, ~unusable)
        candidate = candidate.where(synthesized, adjust_to_date(interp, real, ~unusable, spare))
    features = None
    if (calibration is not None or with_features) and method != "none" and not nothing_to_fill:
        if residuals is None:  # fill_series passes them; called alone, computed here
            residuals = date_residuals(ds, full_mask)
        residual = residuals.reindex(columns=[str(b) for b in real["band"].values]).loc[date]
        features = error_features(
            sides=sides,
            interp=interp,
            fill=candidate,
            raw=raw,
            synthesized=synthesized,
            sigma=sigma,
            cloud_fraction=_cloud_fraction(plan_row, fractions, date, unusable),
            residual=residual.to_numpy(dtype="float64"),
        )
    scale = fill_error_scale(calibration, features, raw, synthesized, candidate)
    available = candidate.notnull().all("band")
    conf = conf.where(available, np.float32(0))
    w = feather_weights(unusable, feather)
    # Blend only where both exist; real pixels never become NaN, masked ones use the fill.
    # NumPy scalars, not Python ones: xarray turns a Python scalar into a NumPy array, which
    # CuPy chunks refuse (dask then loses the chunk type).
    zero, one = np.float32(0), np.float32(1)
    blend_w = w.where(available & ~unusable, zero).where(~unusable, one)
    s2 = (blend_w * candidate.fillna(zero) + (1 - blend_w) * real.fillna(zero)).astype("float32")
    s2 = s2.where(~unusable | available)
    # The fill's error scale weighted like its value: 0 on real pixels, NaN where unfilled.
    error_scale = (blend_w * scale).where(blend_w > zero, zero).where(~unusable | available)
    error_scale = error_scale.transpose("band", "y", "x").astype("float32")
    error_scale.attrs["calibrated"] = int(calibration is not None)
    fallback = (blend_w * conf + (1 - blend_w) * one).astype("float32")
    fallback = fallback.where(~unusable | available, zero)
    confidence = confidence_from_error_scale(error_scale).fillna(fallback)
    filled = unusable & available
    drop = [c for c in ("time",) if c in s2.coords]
    out = xr.Dataset(
        {
            "s2": s2.drop_vars(drop).transpose("band", "y", "x"),
            "filled": filled.drop_vars(drop, errors="ignore"),
            "confidence": confidence.drop_vars(drop, errors="ignore"),
            "error_scale": error_scale.drop_vars(drop, errors="ignore"),
        }
    )
    if with_features:
        like = full_like(out["error_scale"], np.nan)
        stack = [like if features is None else features[n] for n in ERROR_FEATURES]
        out["error_features"] = xr.concat(stack, pd.Index(list(ERROR_FEATURES), name="feature"))
    if blocks:
        # Chunked like the inference blocks (the blend above refines them to the input's
        # chunks): a writer cutting between chunks then never splits a block, which would
        # run the model on it once per piece.
        out = out.chunk(blocks)
    # Per-date provenance, in memory (never chunked: the writer writes it with each window).
    out["adjust_sigma"] = xr.DataArray(np.float32(sigma), attrs=ADJUST_SIGMA_ATTRS)
    return out


def fill_series(
    ds: xr.Dataset,
    model: Any = None,
    *,
    dates: Iterable[Any] | None = None,
    cloud_threshold: float = 0.0,
    feather: int = DEFAULT_FEATHER,
    adjust: Adjust = DEFAULT_ADJUST,
    rule: PairingRule = PairingRule(),
    inference: InferenceSettings = InferenceSettings(),
    plan: pd.DataFrame | None = None,
    chain: bool = False,
    chain_from: Callable[[pd.Timestamp], xr.DataArray | None] | None = None,
    synthesis_hook: Callable[[pd.Timestamp, Any], Any] | None = None,
    error_features: bool = False,
    residuals: pd.DataFrame | None = None,
) -> xr.Dataset:
    """Fill the unusable pixels of every S2 date (or of ``dates``), lazily.

    Parameters
    ----------
    ds
        A contract cube with ``s2`` and a mask (``cloud`` or ``scl``); ``s1`` and ``dem`` as
        the model needs (dates without usable S1 fall back to interpolation).
    model
        A :class:`~cloudfill.model.runtime.CloudfillModel`, a checkpoint path or None (the
        shipped default model).
    dates
        S2 dates to fill (default: all). Every date of the cube still serves as a source.
    cloud_threshold
        Dates with at most this cloud fraction are not synthesized (their few unusable pixels
        are interpolated).
    feather
        Width in pixels of the blend band outside the mask.
    adjust
        The same-date adjustment (the fill corrected by the smoothed residual of the date's
        clear pixels, :func:`cloudfill.fill.adjust.adjust_to_date`): ``"auto"`` (default)
        chooses per date a sigma, or none, from held-out clear pixels of the date
        (:func:`cloudfill.fill.adjust.choose_sigma`: a sigma only where it beats no
        adjustment); a number is a fixed sigma in pixels for every date; 0 turns it off.
    rule
        The pairing rule (:class:`~cloudfill.core.pairs.PairingRule`; default the paper's).
    inference
        Tiling, batching and device of the synthesis
        (:class:`~cloudfill.infer.settings.InferenceSettings`).
    plan
        A precomputed :func:`~cloudfill.fill.plan.plan_fill` table (made with the same ``chain``).
    chain
        Let synthesized dates serve as references for later dates (flagged in
        ``reference_chained``): a cloudy spell longer than ``rule.max_ref_age`` is then
        synthesized from its last clear date onwards instead of interpolated. The result for
        a date does not depend on which ``dates`` are asked for: earlier dates a chain needs
        are filled as sources too.
    chain_from
        Where an already filled image of an earlier date can be read (a partly written
        output), or None to fill it here: :func:`~cloudfill.fill.job.fill_to_zarr` reads
        the chain back from its output instead of recomputing it for every date.
    synthesis_hook
        Called with each synthesized date and its lazy
        :class:`~cloudfill.infer.synthesize.Synthesis`, returning the one to use (the same
        values): :func:`~cloudfill.fill.job.fill_to_zarr` stores it first, so that a date
        written in windows (its adjustment reads a halo across them) runs the model once
        per block.
    error_features
        Also return ``error_features`` (time, feature, band, y, x): what the calibration of
        ``error_scale`` reads (:mod:`cloudfill.fill.error_scale`; NaN on dates with nothing
        to fill). For fitting a calibration (:func:`cloudfill.fill.calibrate.calibrate`).
    residuals
        The cube's :func:`~cloudfill.fill.error_scale.date_residuals`, if already at hand
        (computed once here otherwise, when the error scale needs them: one window read).

    Returns
    -------
    xarray.Dataset
        ``s2`` (time, band, y, x) filled; ``filled`` (time, y, x) bool; ``confidence``
        (time, y, x) float32; ``error_scale`` (time, band, y, x) float32, the Laplace scale
        of each value's error (see the module notes); per-date provenance ``method``,
        ``reason`` (why a date was not synthesized, "" if it was), ``s1_date``, ``reference_date``,
        ``reference_chained``, ``cloud_fraction``, ``unfilled`` (pixels left NaN) and
        ``adjust_sigma`` (the same-date adjustment's sigma, 0 = none).
        Coords, CRS and the cube's attrs are kept.

    Raises
    ------
    MissingVariableError
        No ``s2`` or no mask.
    ModelMismatchError
        The model does not fit the cube.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> out = ds.cloudfill.fill_series(model)  # doctest: +SKIP
    >>> sorted(out.data_vars)[:3]  # doctest: +SKIP
    ['cloud_fraction', 'confidence', 'filled']
    """
    check_adjust(adjust)  # before any work
    ds = place(ds, inference.device)  # CuPy chunks for a CUDA device (cloudfill._device)
    # The CLI's checks in Python too (the contract, then values against units and scale);
    # not the CRS, which an in-memory analysis cube may go without.
    check_values(validate(ds, require=("s2",), require_crs=False))
    mask = cloud_mask(ds)  # raises early when there is no mask at all
    cf, plan = prepare_fill(
        ds,
        model,
        cloud_threshold=cloud_threshold,
        rule=rule,
        inference=inference,
        chain=chain,
        plan=plan,
    )
    chosen = _chosen_dates(ds, dates, plan, has_model=cf is not None)
    if residuals is None:  # once for every date: one window read
        residuals = residuals_if_needed(ds, mask, cf, features=error_features)
    # Everything but the date, its plan row and the chain's sources is the same for each date.
    fill_one = partial(
        fill_date,
        ds,
        model=cf,
        mask=mask,
        feather=feather,
        adjust=adjust,
        fractions=plan["cloud_fraction"],
        rule=rule,
        inference=inference,
        synthesis_hook=synthesis_hook,
        with_features=error_features,
        residuals=residuals,
    )
    parts = _fill_dates(ds, chosen, plan, fill_one, chain=chain, chain_from=chain_from)
    attrs = {
        "cloudfill_feather": feather,
        "cloudfill_adjust": adjust if adjust == AUTO else float(adjust),
        "cloudfill_threshold": cloud_threshold,
    }
    if cf is not None:
        attrs["cloudfill_model_variant"] = cf.card.variant
    return assemble_series(ds, chosen, plan, parts, attrs)


def _chosen_dates(
    ds: xr.Dataset, dates: Iterable[Any] | None, plan: pd.DataFrame, has_model: bool
) -> pd.DatetimeIndex:
    """``dates`` (default: all), checked: S2 dates of ``ds``, none to synthesize without a
    model."""
    all_dates = pd.DatetimeIndex(ds["time"].values)
    # Each date once, in time order: repeated or shuffled dates would give a time axis that
    # no verb reads back.
    chosen = all_dates if dates is None else as_dates(dates).unique().sort_values()
    missing = chosen.difference(all_dates)
    if len(missing):
        raise ParameterError(f"date {missing[0]:%Y-%m-%d} is not an S2 date of the cube")
    if not has_model and (plan.loc[chosen, "method"] == "synthesize").any():
        raise ParameterError("a model is needed to synthesize")
    return chosen


def _fill_dates(
    ds: xr.Dataset,
    chosen: pd.DatetimeIndex,
    plan: pd.DataFrame,
    fill_one: Callable[..., xr.Dataset],
    *,
    chain: bool,
    chain_from: Callable[[pd.Timestamp], xr.DataArray | None] | None,
) -> dict[pd.Timestamp, xr.Dataset]:
    """Each ``chosen`` date filled by ``fill_one(date, row, sources=...)``; with ``chain``,
    the earlier dates the chain reads too (as sources only, unless chosen)."""
    all_dates = pd.DatetimeIndex(ds["time"].values)
    # A chain visits every date up to the last one asked for, in time order; the others are
    # filled only as the chain's sources (lazily: nothing is computed that no date reads).
    visit = all_dates[all_dates <= chosen.max()] if chain and len(chosen) else chosen
    parts: dict[pd.Timestamp, xr.Dataset] = {}
    sources: dict[pd.Timestamp, xr.DataArray] = {}
    for date in visit:
        row = plan.loc[date]
        chains = chain and bool(row["chain_source"])  # the plan's rule, see pairs()
        if date not in chosen and not chains:
            continue
        done = chain_from(date) if chains and chain_from is not None else None
        if done is not None and date not in chosen:
            sources[date] = done
            continue
        part = fill_one(date, row, sources=sources if chain else None)
        parts[date] = part
        if chains:
            sources[date] = part["s2"] if done is None else done
    return parts
