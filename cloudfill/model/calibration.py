"""Calibrated error bars: the Laplace scale of each filled value's error, in reflectance.

A fill's error ``e`` (filled value minus truth, one band) is taken to be Laplace with scale
``b``, so ``|e|`` is exponential with mean ``b`` and the interval that holds a share ``q`` of
the errors is::

    |e| <= b * ln(1 / (1 - q))        (q = 0.5: 0.69 b, q = 0.8: 1.61 b, q = 0.95: 3.00 b)

The model's confidence head predicts a scale (``raw``), but on the fill it is far from
calibrated and ranks the errors poorly (Spearman 0.02-0.27 with ``|e|`` on held-out scenes):
the fill is adjusted to the date's clear pixels after the model ran, falls back to temporal
interpolation where the model has no input, and its errors are heavy-tailed (the 95th
percentile of ``|e|`` 15-18 times the median; a Laplace's is 4.3). What ranks them better is
what the fill knew about each value (benchmarks/RESULTS.md, "Calibrated error bars"): how
old and how far apart the clear observations around it are, how much they disagree, how far
the fill departs from interpolation, the reflectance level, and how well interpolation did
on the date's own clear pixels. A :class:`Calibration` is an additive model of ``ln b`` in
these :data:`ERROR_FEATURES` (computed by :func:`cloudfill.fill.error_scale.error_features`,
for synthesized and interpolated values alike)::

    ln b = intercept[band] + sum(flag weight * flag) + sum(curve_f(feature f))

each curve piecewise-linear through knots at quantiles of its feature (constant beyond the
end knots). It is fitted by maximum likelihood, the Laplace negative log-likelihood
``ln b + |e| / b`` with a small ridge, on pixels the model did not train on
(:func:`cloudfill.fill.calibrate.calibrate`, through
:func:`cloudfill.model.calibration_fit.fit_calibration`): ``b`` is then the expected ``|e|``
of values like this one. The calibration travels in the model card
(``ModelCard.calibration``, a JSON dict); :func:`write_calibration` stores one into a
checkpoint without touching its weights.

This module does not import torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from cloudfill._backend import namespace
from cloudfill.errors import CheckpointError, ParameterError

__all__ = [
    "CALIBRATION_FORM",
    "CONFIDENCE_TOLERANCE",
    "COVERAGE_QUANTILES",
    "ERROR_CURVES",
    "ERROR_FEATURES",
    "ERROR_FLAGS",
    "Calibration",
    "confidence_from_error_scale",
    "coverage",
    "interval_factor",
    "per_band",
    "write_calibration",
]

COVERAGE_QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.95)
"""The interval shares the calibration is fitted for and checked on."""

CONFIDENCE_TOLERANCE = 0.01
"""Reflectance: ``confidence`` is the probability that a value is within this of the truth
(:func:`confidence_from_error_scale`)."""

CALIBRATION_FORM = 2
"""The form of :class:`Calibration` this version writes and reads; form 1 (a map of the
confidence head's scale alone, before 0.x of 2026-12-06) is ignored with a warning."""

ERROR_CURVES: tuple[str, ...] = (
    "raw",
    "age_near",
    "age_gap",
    "disagreement",
    "departure",
    "level",
    "cloud_fraction",
    "date_residual",
)
"""The continuous features of the error model, each with a piecewise-linear curve (defined
in :mod:`cloudfill.fill.error_scale`)."""

ERROR_FLAGS: tuple[str, ...] = ("synthesized", "one_side", "adjusted", "no_clear")
"""The 0/1 features of the error model, each with one weight."""

ERROR_FEATURES: tuple[str, ...] = ERROR_CURVES + ERROR_FLAGS
"""Every feature :meth:`Calibration.scale` reads."""


def interval_factor(q: float | np.ndarray) -> float | np.ndarray:
    """``ln(1 / (1 - q))``: the half-width, in scales ``b``, of the Laplace interval around
    the value that holds a share ``q`` of the errors.

    >>> round(interval_factor(0.5), 4), round(interval_factor(0.95), 4)
    (0.6931, 2.9957)
    """
    return -np.log1p(-np.asarray(q, dtype="float64")) if np.ndim(q) else -math.log1p(-q)


def coverage(
    error: np.ndarray, scale: np.ndarray, quantiles: Sequence[float] = COVERAGE_QUANTILES
) -> dict[float, float]:
    """Share of the ``error`` values within ``scale * ln(1 / (1 - q))``, per ``q``.

    Values where either is NaN are left out; NaN shares when none is left.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> e = rng.laplace(0, 0.02, 100_000)
    >>> {q: round(c, 2) for q, c in coverage(e, np.full(e.shape, 0.02)).items()}
    {0.5: 0.5, 0.8: 0.8, 0.95: 0.95}
    """
    e = np.abs(np.asarray(error, dtype="float64")).ravel()
    b = np.asarray(scale, dtype="float64").ravel()
    keep = np.isfinite(e) & np.isfinite(b)
    e, b = e[keep], b[keep]
    if not e.size:
        return {float(q): float("nan") for q in quantiles}
    return {float(q): float(np.mean(e <= b * interval_factor(q))) for q in quantiles}


def confidence_from_error_scale(error_scale: xr.DataArray) -> xr.DataArray:
    """``confidence`` (y, x) from ``error_scale`` (band, y, x): the probability that the value
    is within :data:`CONFIDENCE_TOLERANCE` of the truth under a Laplace error of the bands'
    mean scale ``b``, ``1 - exp(-0.01 / b)``: 1 where ``b`` is 0 (a real observation), NaN
    where ``b`` is; a filled value's is at most the float32 just below 1.

    Examples
    --------
    >>> b = xr.DataArray(np.array([[[0.0, 0.01]]] * 4, "float32"), dims=("band", "y", "x"))
    >>> confidence_from_error_scale(b).values.astype(float).round(3).tolist()
    [[1.0, 0.632]]
    """
    mean = error_scale.mean("band", skipna=False)
    zero, one = np.float32(0), np.float32(1)
    # exp(-tol / b) with b = 0 replaced by a harmless 1 (then overwritten): no 1/0 warnings.
    safe = mean.where(mean > zero, one)
    out = one - np.exp(-np.float32(CONFIDENCE_TOLERANCE) / safe)
    # A filled value stays below 1 (1 means a real observation), however small its b:
    # below b = 0.0006 the float32 result would round to 1.
    out = np.minimum(out, np.nextafter(one, zero)).where(mean > zero, one)
    return out.where(mean.notnull()).astype("float32")


@dataclass(frozen=True)
class Calibration:
    """An additive model of the log error scale of a filled value, from :data:`ERROR_FEATURES`.

    Attributes
    ----------
    bands
        The bands, in the order of :attr:`intercept`.
    intercept
        Per band, the log scale at the first knot of every curve with every flag 0.
    flags
        Per 0/1 feature (:data:`ERROR_FLAGS`), its weight on the log scale.
    curves
        Per continuous feature (:data:`ERROR_CURVES`), ``(knots, values)``: the log-scale
        term at each knot (increasing knots, the first value 0); linear between knots,
        constant beyond the end ones.
    fitted_on
        Provenance: the scenes, the number of values, the coverage reached on the fit.

    Examples
    --------
    >>> cal = Calibration(("B02",), intercept=(np.log(0.01),), flags={"synthesized": 0.0},
    ...                   curves={"level": ((0.0, 0.5), (0.0, np.log(2.0)))})
    >>> f = {"level": xr.DataArray([[[0.0, 0.25, 1.0]]], dims=("band", "y", "x"))}
    >>> f["synthesized"] = xr.zeros_like(f["level"])
    >>> cal.scale(f).values.astype(float).round(4).tolist()
    [[[0.01, 0.0141, 0.02]]]
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    bands: tuple[str, ...]
    intercept: tuple[float, ...]
    flags: Mapping[str, float]
    curves: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]]
    fitted_on: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.intercept) != len(self.bands):
            raise ParameterError(
                f"calibration intercept needs one entry per band ({len(self.bands)})"
            )
        unknown = (set(self.flags) - set(ERROR_FLAGS)) | (set(self.curves) - set(ERROR_CURVES))
        if unknown:
            raise ParameterError(
                f"calibration features {sorted(unknown)} unknown; expected {list(ERROR_FEATURES)}"
            )
        numbers = [*self.intercept, *self.flags.values()]
        for name, (knots, values) in self.curves.items():
            k, v = np.asarray(knots, "float64"), np.asarray(values, "float64")
            if k.shape != v.shape or k.ndim != 1 or not k.size or (np.diff(k) <= 0).any():
                raise ParameterError(
                    f"calibration curve {name!r}: knots must be increasing, one value each"
                )
            numbers += [*k, *v]
        if not np.isfinite(np.asarray(numbers, "float64")).all():
            raise ParameterError("calibration numbers must be finite")

    # --- applying ----------------------------------------------------------------------
    def scale(self, features: Mapping[str, xr.DataArray]) -> xr.DataArray:
        """The error scale ``b`` from ``features`` (each (band, y, x) or broadcastable to it,
        NumPy, CuPy or dask), lazily; bands outside the calibration get NaN."""
        missing = [f for f in (*self.flags, *self.curves) if f not in features]
        if missing:
            raise ParameterError(f"error features {missing} missing")
        like = next(iter(features.values()))
        by_band = dict(zip(self.bands, self.intercept, strict=True))
        log_b: xr.DataArray | None = None
        for name, weight in self.flags.items():
            term = features[name].astype("float32") * np.float32(weight)
            log_b = term if log_b is None else log_b + term
        for name, (knots, values) in self.curves.items():
            term = _curve(features[name], knots, values)
            log_b = term if log_b is None else log_b + term
        if log_b is None:
            log_b = xr.zeros_like(like, dtype="float32")
        if "band" in log_b.coords:
            column = [by_band.get(str(b), np.nan) for b in log_b["band"].values]
        else:  # unlabelled bands: in the calibration's order
            column = list(self.intercept)
        offset = np.asarray(column, "float32")

        def add(block: Any) -> Any:  # bands last; the column made where the block lives
            xp = namespace(block)
            return xp.exp(block + xp.asarray(offset)).astype("float32")

        return per_band(log_b.transpose("band", ...), add)

    # --- card ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, as stored in the model card."""
        return {
            "form": CALIBRATION_FORM,
            "bands": list(self.bands),
            "intercept": [float(v) for v in self.intercept],
            "flags": {k: float(v) for k, v in self.flags.items()},
            "curves": {
                k: [[float(x) for x in knots], [float(x) for x in values]]
                for k, (knots, values) in self.curves.items()
            },
            "fitted_on": json.loads(json.dumps(dict(self.fitted_on))),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Read :meth:`to_dict`'s form, strictly (a ParameterError names what is wrong)."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"calibration must be a JSON object, got {type(data).__name__}")
        keys = {"form", "bands", "intercept", "flags", "curves", "fitted_on"}
        if set(data) != keys:
            raise ParameterError(
                f"calibration keys {sorted(data)} differ from the expected {sorted(keys)}"
            )
        if data["form"] != CALIBRATION_FORM:
            raise ParameterError(
                f"calibration form {data['form']!r}; this version reads {CALIBRATION_FORM}"
            )

        def num(v: Any) -> float:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ParameterError(f"calibration value {v!r} is not a number")
            return float(v)

        try:
            return cls(
                bands=tuple(str(b) for b in data["bands"]),
                intercept=tuple(num(v) for v in data["intercept"]),
                flags={str(k): num(v) for k, v in dict(data["flags"]).items()},
                curves={
                    str(k): (tuple(num(x) for x in kv[0]), tuple(num(x) for x in kv[1]))
                    for k, kv in dict(data["curves"]).items()
                },
                fitted_on=dict(data["fitted_on"]),
            )
        except (TypeError, IndexError, ValueError) as err:
            raise ParameterError(f"malformed calibration: {err}") from None


def per_band(array: xr.DataArray, func: Callable[[Any], Any]) -> xr.DataArray:
    """``func`` over blocks of ``array`` (dims ``band`` first) that hold every band, on the
    last axis, lazily on dask (NumPy or CuPy blocks, the chunk type kept); coords, dims and
    band chunks as ``array``'s.

    A store written elsewhere may chunk bands apart, and a per-band column must meet all of
    them; NumPy values must never meet CuPy chunks, so ``func`` builds them from the block's
    own namespace.

    >>> a = xr.DataArray(np.zeros((2, 1, 3), "float32"), dims=("band", "y", "x"))
    >>> per_band(a, lambda b: b + np.array([1.0, 2.0], "float32"))[:, 0, 0].values.tolist()
    [1.0, 2.0]
    """
    out = xr.apply_ufunc(
        func,
        array,
        input_core_dims=[["band"]],
        output_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=["float32"],
        dask_gufunc_kwargs={"allow_rechunk": True},
        keep_attrs=False,
    )
    if array.chunks is not None:  # back to the input's band chunks, as the other outputs
        out = out.chunk({"band": array.chunksizes["band"]})
    return out.transpose(*array.dims).astype("float32")


def is_older_form(data: Any) -> bool:
    """Whether ``data`` is a calibration of form 1 (a raw-scale map, no ``form`` key)."""
    return isinstance(data, Mapping) and "form" not in data and "raw" in data


def readable_calibration(data: Any) -> Any:
    """``data``, or None with a warning when it is a calibration of the older form 1, which
    this version cannot apply (refit it: :func:`cloudfill.fill.calibrate.calibrate`)."""
    if is_older_form(data):
        warnings.warn(
            "the model card holds a calibration of an older form (1), ignored: error_scale "
            "is uncalibrated until it is refitted (cloudfill.fill.calibrate.calibrate)",
            UserWarning,
            stacklevel=3,
        )
        return None
    return data


def _curve(feature: xr.DataArray, knots: Sequence[float], values: Sequence[float]) -> xr.DataArray:
    """``np.interp`` of ``feature`` through (knots, values), block by block (NumPy or CuPy)."""

    def apply(block: Any) -> Any:
        xp = namespace(block)
        k = xp.asarray(np.asarray(knots, "float32"))
        v = xp.asarray(np.asarray(values, "float32"))
        return xp.interp(block.astype("float32"), k, v).astype("float32")

    return xr.apply_ufunc(
        apply, feature, dask="parallelized", output_dtypes=["float32"], keep_attrs=False
    )


# --- storing ---------------------------------------------------------------------------------
def write_calibration(path: str | os.PathLike[str], calibration: Calibration | None) -> Path:
    """Store ``calibration`` (None removes it) in the card of the checkpoint at ``path``,
    atomically; the weights stay byte-identical (only the safetensors header's metadata, or a
    directory checkpoint's ``card.json``, is rewritten).

    Examples
    --------
    >>> import shutil, tempfile
    >>> from importlib import resources
    >>> from cloudfill.model.checkpoint import read_card
    >>> tmp = Path(tempfile.mkdtemp()) / "m.safetensors"
    >>> _ = shutil.copy(resources.files("cloudfill") / "data" / "default_model.safetensors", tmp)
    >>> _ = write_calibration(tmp, None)
    >>> read_card(tmp).calibration is None
    True
    """
    from dataclasses import replace

    from cloudfill.model.checkpoint import _write_atomic, locate, read_card

    card = read_card(path)
    card = replace(card, calibration=None if calibration is None else calibration.to_dict())
    text = card.to_json()
    weights, card_path = locate(path)
    if card_path is not None:
        _write_atomic(card_path, (text + "\n").encode())
        return Path(path)
    data = weights.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" not in header or "card" not in header["__metadata__"]:
        raise CheckpointError(f"{str(weights)!r} carries no model card in its metadata")
    header["__metadata__"]["card"] = text
    new = json.dumps(header, separators=(",", ":")).encode()
    new += b" " * (-len(new) % 8)  # safetensors pads the header to 8 bytes with spaces
    _write_atomic(weights, struct.pack("<Q", len(new)) + new + data[8 + n :])
    read_card(weights)  # what was written reads back
    return weights
