"""``calibrate``: fit a model's error bars on scenes whose truth is known.

The scenes must be ones the model never trained on (for the shipped default model: simulated
scenes with seeds other than its training seed, see ``benchmarks/bench_calibration.py``).
Each scene is filled as :func:`~cloudfill.fill.series.fill_series` fills it (same-date
adjustment and all) twice: with the model, uncalibrated, whose filled pixels with a raw
scale are the *synthesized* sample; and without S1, so that every filled pixel is
*interpolated*, the sample of the interpolation's scale. Only pixels inside the masks
(``filled``) are used, against the scene's ``truth``; the fit is
:func:`cloudfill.model.calibration.fit_calibration`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import xarray as xr

from cloudfill.errors import MissingVariableError
from cloudfill.fill.adjust import AUTO, DEFAULT_ADJUST, Adjust
from cloudfill.fill.plan import resolve_model
from cloudfill.fill.series import fill_series
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.calibration import (
    COVERAGE_QUANTILES,
    Calibration,
    fit_calibration,
)

__all__ = ["MAX_PIXELS_PER_SCENE", "calibrate", "filled_errors", "uncalibrated"]

MAX_PIXELS_PER_SCENE = 200_000
"""Filled pixels drawn (at random, seeded) per scene and kind: memory stays bounded."""


def uncalibrated(model: Any) -> Any:
    """A shallow copy of ``model`` (a CloudfillModel) whose card has no calibration: its fills
    report the confidence head's raw scale. The weights are shared."""
    if model is None or getattr(model.card, "calibration", None) is None:
        return model
    bare = copy.copy(model)
    bare.card = replace(model.card, calibration=None)
    return bare


def filled_errors(
    out: xr.Dataset,
    truth: xr.DataArray,
    *,
    seed: int = 0,
    limit: int = MAX_PIXELS_PER_SCENE,
    synthesized: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(n, band) errors (fill minus truth) and error scales of the filled pixels of a
    computed ``fill_series`` output, at most ``limit`` of them (a seeded random draw); with
    ``synthesized``, only the pixels of dates the plan synthesized."""
    filled = np.asarray(out["filled"].values, bool)
    if synthesized:
        filled &= (np.asarray(out["method"].values) == "synthesize")[:, None, None]
    s2 = np.moveaxis(np.asarray(out["s2"].values, "float64"), 1, -1)[filled]
    scale = np.moveaxis(np.asarray(out["error_scale"].values, "float64"), 1, -1)[filled]
    true = np.moveaxis(np.asarray(truth.transpose(*out["s2"].dims).values, "float64"), 1, -1)
    error = s2 - true[filled]
    if len(error) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(len(error), limit, replace=False))
        error, scale = error[keep], scale[keep]
    return error, scale


def calibrate(
    model: Any,
    scenes: Iterable[xr.Dataset],
    *,
    quantiles: Sequence[float] = COVERAGE_QUANTILES,
    adjust: Adjust = DEFAULT_ADJUST,
    inference: InferenceSettings = InferenceSettings(),
    bins: int = 12,
) -> Calibration:
    """Fit the :class:`~cloudfill.model.calibration.Calibration` of ``model``'s fills.

    Parameters
    ----------
    model
        A :class:`~cloudfill.model.runtime.CloudfillModel`, a checkpoint path or None (the
        shipped default model); a calibration already in its card is ignored.
    scenes
        Cubes with a ``truth`` variable (e.g. :func:`cloudfill.simulate_scene`) that the
        model never trained on.
    quantiles
        The interval shares to match.
    adjust
        The same-date adjustment the fills use (``fill_series``'s default).
    inference
        Tiling, batching and device.
    bins
        Most bins of raw scale per band.

    Returns
    -------
    Calibration
        To store with :func:`cloudfill.model.calibration.write_calibration`.

    Examples
    --------
    >>> import cloudfill
    >>> scenes = [cloudfill.cube.demo.simulate_demo(seed=s, shape=(96, 96)) for s in (81, 82)]
    >>> cal = calibrate(None, scenes)  # doctest: +SKIP
    >>> cal.bands  # doctest: +SKIP
    ('B02', 'B03', 'B04', 'B08')
    """
    cf = uncalibrated(resolve_model(model, device=inference.device, fast=inference.fast))
    errors, raws, kinds, seeds = [], [], [], []
    for i, ds in enumerate(scenes):
        if "truth" not in ds:
            raise MissingVariableError("calibrate needs scenes with a 'truth' variable")
        seeds.append(ds.attrs.get("seed"))
        synth = fill_series(ds, cf, adjust=adjust, inference=inference).compute()
        if cf.card.confidence:
            # A raw scale marks the pixels the model filled (the rest fell back to
            # interpolation, which the second fill below measures).
            error, raw = filled_errors(synth, ds["truth"], seed=i)
            keep = np.isfinite(raw).all(axis=1)
            error, raw = error[keep], raw[keep]
        else:
            # No head, no raw scale: the synthesized dates' filled pixels, which get the
            # calibration's per-band constant.
            error, _ = filled_errors(synth, ds["truth"], seed=i, synthesized=True)
            raw = np.full(error.shape, np.nan)
        errors.append(error)
        raws.append(raw)
        kinds.append(np.full(len(error), "synthesized"))
        interp = fill_series(ds.drop_vars("s1"), None, adjust=adjust).compute()
        error, _ = filled_errors(interp, ds["truth"], seed=i)
        errors.append(error)
        raws.append(np.full(error.shape, np.nan))
        kinds.append(np.full(len(error), "interpolated"))
    bands = [str(b) for b in cf.card.bands]
    return fit_calibration(
        bands,
        np.concatenate(errors),
        np.concatenate(raws),
        np.concatenate(kinds),
        quantiles=quantiles,
        bins=bins,
        fitted_on={"seeds": seeds, "adjust": adjust if adjust == AUTO else float(adjust)},
    )
