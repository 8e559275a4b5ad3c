"""Fitting a :class:`~cloudfill.model.calibration.Calibration`: the Laplace maximum likelihood
of ``ln b`` in the error features (see :mod:`cloudfill.model.calibration` for the model).

This module does not import torch; scipy is imported when a fit runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cloudfill.errors import ParameterError
from cloudfill.model.calibration import (
    ERROR_CURVES,
    ERROR_FEATURES,
    ERROR_FLAGS,
    Calibration,
    coverage,
)

__all__ = ["MIN_PIXELS", "RIDGE", "fit_calibration"]

MIN_PIXELS = 200
"""Fewest (pixel, band) errors a calibration is fitted from (fewer: a ParameterError)."""

RIDGE = 1e-4
"""Ridge penalty on the weights (not the intercepts) of :func:`fit_calibration`."""


def _hat_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """(n, len(knots) - 1): the piecewise-linear hat functions of knots 1.. at ``x`` (the
    first knot's is left out: the intercept carries it)."""
    out = np.empty((x.size, knots.size - 1))
    for j in range(1, knots.size):
        unit = np.zeros(knots.size)
        unit[j] = 1.0
        out[:, j - 1] = np.interp(x, knots, unit)
    return out


def fit_calibration(
    bands: Sequence[str],
    error: np.ndarray,
    features: Mapping[str, np.ndarray],
    *,
    knots: int = 6,
    ridge: float = RIDGE,
    fitted_on: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit a :class:`Calibration` from filled values whose truth is known.

    Parameters
    ----------
    bands
        Band names, in the order of the last axis of the arrays.
    error
        (n, band) fill minus truth.
    features
        Per name in :data:`ERROR_FEATURES`, (n, band) values (or (n,), the same for every
        band); a feature left out is left out of the model.
    knots
        Knots per curve, at evenly spaced quantiles of the feature (repeated ones merged).
    ridge
        Penalty on the squared weights.
    fitted_on
        Provenance stored with the calibration.

    Examples
    --------
    >>> import xarray as xr
    >>> rng = np.random.default_rng(0)
    >>> level = rng.uniform(0.0, 0.5, (40_000, 1))
    >>> error = rng.laplace(0, 0.002 + 0.05 * level)  # brighter values, larger errors
    >>> cal = fit_calibration(["B02"], error, {"level": level})
    >>> b = cal.scale({"level": xr.DataArray(level.T[:, :, None], dims=("band", "y", "x"))})
    >>> got = coverage(error, b.values[0, :, 0][:, None])
    >>> all(abs(got[q] - q) < 0.02 for q in got)
    True
    """
    from scipy.optimize import minimize

    error = np.asarray(error, dtype="float64")
    n_bands = error.shape[1]
    unknown = set(features) - set(ERROR_FEATURES)
    if unknown:
        raise ParameterError(f"unknown error features {sorted(unknown)}")
    cols = {}
    for name, values in features.items():
        v = np.asarray(values, dtype="float64")
        cols[name] = np.broadcast_to(v if v.ndim == 2 else v[:, None], error.shape).ravel()
    e = np.abs(error.ravel())
    band = np.broadcast_to(np.arange(n_bands), error.shape).ravel()
    ok = np.isfinite(e) & np.all([np.isfinite(c) for c in cols.values()], axis=0)
    if ok.sum() < MIN_PIXELS:
        raise ParameterError(f"too few filled values to calibrate ({int(ok.sum())} < {MIN_PIXELS})")
    e, band = e[ok], band[ok]
    cols = {k: c[ok] for k, c in cols.items()}
    blocks = [(band[:, None] == np.arange(n_bands)).astype("float64")]
    layout: list[tuple[str, int, np.ndarray | None]] = []
    for name in ERROR_FLAGS:
        if name in cols:
            blocks.append(cols[name][:, None])
            layout.append((name, 1, None))
    for name in ERROR_CURVES:
        if name in cols:
            k = np.unique(np.quantile(cols[name], np.linspace(0.0, 1.0, knots)))
            if k.size < 2:  # a constant feature says nothing
                continue
            blocks.append(_hat_basis(cols[name], k))
            layout.append((name, k.size - 1, k))
    design = np.concatenate(blocks, axis=1)
    penalty = np.r_[np.zeros(n_bands), np.full(design.shape[1] - n_bands, ridge)]
    start = np.r_[
        np.full(n_bands, np.log(max(e.mean(), 1e-6))), np.zeros(design.shape[1] - n_bands)
    ]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        eta = design @ w
        r = e * np.exp(-eta)  # |e| / b
        value = float(np.mean(eta + r) + penalty @ (w * w))
        return value, design.T @ (1.0 - r) / e.size + 2 * penalty * w

    w = minimize(loss, start, jac=True, method="L-BFGS-B").x
    flags: dict[str, float] = {}
    curves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    i = n_bands
    for name, width, k in layout:
        if k is None:
            flags[name] = float(w[i])
        else:
            curves[name] = (
                tuple(float(x) for x in k),
                (0.0, *(float(x) for x in w[i : i + width])),
            )
        i += width
    fitted = np.exp(design @ w)
    provenance = {
        "method": "additive log-scale model, Laplace maximum likelihood (ridge "
        f"{ridge:g}, {knots} quantile knots per curve)",
        "values": int(e.size),
        "coverage_on_fit": {str(q): round(c, 4) for q, c in coverage(e, fitted).items()},
        **dict(fitted_on or {}),
    }
    return Calibration(
        tuple(str(b) for b in bands),
        tuple(float(x) for x in w[:n_bands]),
        flags,
        curves,
        provenance,
    )
