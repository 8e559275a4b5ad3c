"""``calibrate``: fit a model's error bars on scenes whose truth is known.

The scenes must be ones the model never trained on (for the shipped default model: simulated
scenes with seeds other than its training seed, see ``benchmarks/bench_calibration.py``).
Each scene is filled as :func:`~cloudfill.fill.series.fill_series` fills it (same-date
adjustment and all) twice: with the model, uncalibrated, and without S1, so that every
filled pixel is interpolated; both kinds of value are then well sampled. Only pixels inside
the masks (``filled``) are used, against the scene's ``truth``, with the features the fill
reports (``error_features=True``, :mod:`cloudfill.fill.error_scale`); the fit is
:func:`cloudfill.model.calibration_fit.fit_calibration`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.errors import MissingVariableError, ParameterError
from cloudfill.fill.adjust import AUTO, DEFAULT_ADJUST, Adjust
from cloudfill.fill.plan import resolve_model
from cloudfill.fill.series import fill_series
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.calibration import Calibration
from cloudfill.model.calibration_fit import fit_calibration

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
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(n, band) errors (fill minus truth) and error scales of the filled pixels of a
    computed ``fill_series`` output, at most ``limit`` of them (a seeded random draw), and,
    when the output has ``error_features``, their (n, band) values per feature; with
    ``synthesized``, only the pixels of dates the plan synthesized."""
    filled = np.asarray(out["filled"].values, bool)
    if synthesized:
        filled &= (np.asarray(out["method"].values) == "synthesize")[:, None, None]
    keep = np.flatnonzero(filled.ravel())
    if len(keep) > limit:
        keep = np.sort(np.random.default_rng(seed).choice(keep, limit, replace=False))

    def pixels(array: xr.DataArray) -> np.ndarray:  # (time, band, y, x) -> (n, band)
        values = np.moveaxis(np.asarray(array.transpose("time", "band", "y", "x").values), 1, -1)
        return values.reshape(-1, values.shape[-1])[keep].astype("float64")

    error = pixels(out["s2"]) - pixels(truth)
    scale = pixels(out["error_scale"])
    features = {}
    if "error_features" in out:
        for name in out["feature"].values:
            features[str(name)] = pixels(out["error_features"].sel(feature=name))
    return error, scale, features


def calibrate(
    model: Any,
    scenes: Iterable[xr.Dataset],
    *,
    adjust: Adjust = DEFAULT_ADJUST,
    inference: InferenceSettings = InferenceSettings(),
    knots: int = 6,
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
    adjust
        The same-date adjustment the fills use (``fill_series``'s default).
    inference
        Tiling, batching and device.
    knots
        Knots per feature curve (:func:`~cloudfill.model.calibration_fit.fit_calibration`).

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
    errors: list[np.ndarray] = []
    features: dict[str, list[np.ndarray]] = {}
    fitted: list[dict[str, Any]] = []
    bands: list[str] | None = None
    for i, ds in enumerate(scenes):
        if "truth" not in ds:
            raise MissingVariableError("calibrate needs scenes with a 'truth' variable")
        # The errors come in the cube's band order, which names the calibration's bands.
        names = [str(b) for b in ds["s2"]["band"].values]
        if bands is not None and names != bands:
            raise ParameterError(f"scene {i} has bands {names}, the first scene {bands}")
        bands = names
        # Seed, dates and size tell the designs apart (both simulators share seeds).
        first = pd.Timestamp(ds["time"].values[0])
        fitted.append(
            {
                "seed": ds.attrs.get("seed"),
                "dates": int(ds.sizes["time"]),
                "first_date": f"{first:%Y-%m-%d}",
                "shape": [int(ds.sizes["y"]), int(ds.sizes["x"])],
            }
        )
        # The model's fill (synthesized values, and interpolated ones where it had no input)
        # and the fill without S1, every value interpolated: both kinds well sampled.
        for cube, m in ((ds, cf), (ds.drop_vars("s1"), None)):
            out = fill_series(cube, m, adjust=adjust, inference=inference, error_features=True)
            error, _, feats = filled_errors(out.compute(), ds["truth"], seed=i)
            errors.append(error)
            for name, values in feats.items():
                features.setdefault(name, []).append(values)
    if bands is None:
        raise ParameterError("calibrate needs at least one scene")
    return fit_calibration(
        bands,
        np.concatenate(errors),
        {name: np.concatenate(parts) for name, parts in features.items()},
        knots=knots,
        fitted_on={"scenes": fitted, "adjust": adjust if adjust == AUTO else float(adjust)},
    )
