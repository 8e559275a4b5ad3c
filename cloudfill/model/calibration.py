"""Calibrated error bars: the Laplace scale of each filled value's error, in reflectance.

A fill's error ``e`` (filled value minus truth, one band) is taken to be Laplace with scale
``b``, so ``|e|`` is exponential with mean ``b`` and the interval that holds a share ``q`` of
the errors is::

    |e| <= b * ln(1 / (1 - q))        (q = 0.5: 0.69 b, q = 0.8: 1.61 b, q = 0.95: 3.00 b)

The model's confidence head predicts a scale (``raw`` here), but on the fill it is far from
calibrated: the fill is adjusted to the date's clear pixels after the model ran, and the head
was trained on a few thousand steps of one scene (on held-out scenes the raw 50 % interval
held 93 % of the errors). A :class:`Calibration` maps what is known of a filled pixel to the
scale of its error, per band:

- synthesized pixels with a raw scale: a non-decreasing piecewise-linear map of ``log raw``
  to ``log b`` through per-band knots (constant beyond the end knots);
- synthesized pixels without one (a model without a confidence head): one scale per band;
- interpolated pixels (a date, or pixels, the model could not synthesize): one scale per band.

Each scale is fitted on pixels the model did not train on (see
:func:`cloudfill.fill.calibrate.calibrate`) by quantile matching: in each bin of raw scales,
the scale whose intervals hold the closest shares to ``quantiles`` (smallest largest miss), then the
bins made non-decreasing (pool-adjacent-violators). A kind with too few pixels to fit gets
NaN (its error scale is then unknown). The calibration travels in the model card
(``ModelCard.calibration``, a JSON dict); :func:`write_calibration` stores one into a
checkpoint without touching its weights.

This module does not import torch.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from cloudfill._backend import namespace
from cloudfill.errors import CheckpointError, ParameterError

__all__ = [
    "CONFIDENCE_TOLERANCE",
    "COVERAGE_QUANTILES",
    "Calibration",
    "confidence_from_error_scale",
    "coverage",
    "fit_calibration",
    "interval_factor",
    "write_calibration",
]

COVERAGE_QUANTILES: tuple[float, ...] = (0.5, 0.8, 0.95)
"""The interval shares the calibration is fitted for and checked on."""

CONFIDENCE_TOLERANCE = 0.01
"""Reflectance: ``confidence`` is the probability that a value is within this of the truth
(:func:`confidence_from_error_scale`)."""

MIN_PIXELS = 200
"""Fewest (pixel, band) errors a scale is fitted from; a kind with fewer gets NaN."""

_KINDS = ("synthesized", "interpolated")


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
    where ``b`` is.

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
    out = (one - np.exp(-np.float32(CONFIDENCE_TOLERANCE) / safe)).where(mean > zero, one)
    return out.where(mean.notnull()).astype("float32")


@dataclass(frozen=True)
class Calibration:
    """How the error scale of a filled value follows from what is known of it, per band.

    Attributes
    ----------
    bands
        The bands, in the order of the per-band fields.
    raw
        Per band, the knots' raw scales (the confidence head's Laplace scale), increasing.
    scale
        Per band, the calibrated scale at each knot (non-decreasing); between knots the map
        is linear in log-log, beyond the end knots constant.
    synthesized
        Per band, the scale of a synthesized value without a raw scale (a model without a
        confidence head); NaN if not fitted.
    interpolated
        Per band, the scale of a temporally interpolated value; NaN if not fitted.
    fitted_on
        Provenance: the scenes (seeds), pixel counts, the quantiles fitted, the coverage
        reached.

    Examples
    --------
    >>> cal = Calibration(("B02",), raw=((0.01, 0.1),), scale=((0.002, 0.01),),
    ...                   synthesized=(0.005,), interpolated=(0.02,))
    >>> float(cal.map_raw(np.array([[0.01, 0.1, 1.0]]), band_axis=0).round(4)[0, 2])
    0.01
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    bands: tuple[str, ...]
    raw: tuple[tuple[float, ...], ...]
    scale: tuple[tuple[float, ...], ...]
    synthesized: tuple[float, ...]
    interpolated: tuple[float, ...]
    fitted_on: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.bands)
        for name in ("raw", "scale", "synthesized", "interpolated"):
            if len(getattr(self, name)) != n:
                raise ParameterError(f"calibration {name} needs one entry per band ({n})")
        for band, raw, scale in zip(self.bands, self.raw, self.scale, strict=True):
            r, s = np.asarray(raw, "float64"), np.asarray(scale, "float64")
            if r.shape != s.shape:
                raise ParameterError(f"calibration of {band}: raw and scale knots differ")
            if r.size and (
                not (np.isfinite(r).all() and np.isfinite(s).all())
                or (r <= 0).any()
                or (s <= 0).any()
                or (np.diff(r) <= 0).any()
                or (np.diff(s) < 0).any()
            ):
                raise ParameterError(
                    f"calibration of {band}: knots must be positive, finite, raw increasing "
                    "and scale non-decreasing"
                )
        for name in ("synthesized", "interpolated"):
            values = np.asarray(getattr(self, name), "float64")
            if (values[np.isfinite(values)] <= 0).any() or np.isinf(values).any():
                raise ParameterError(f"calibration {name} scales must be positive or NaN")

    # --- applying ----------------------------------------------------------------------
    def map_raw(self, raw: Any, band_axis: int) -> Any:
        """Calibrated scales of an array of raw scales (NumPy or CuPy), bands along
        ``band_axis``; NaN stays NaN, as does a band without knots."""
        xp = namespace(raw)
        out = xp.full(raw.shape, xp.nan, dtype=raw.dtype)
        for i, (knots, values) in enumerate(zip(self.raw, self.scale, strict=True)):
            index = [slice(None)] * raw.ndim
            index[band_axis] = i
            if not knots:
                continue
            x = xp.log(xp.maximum(raw[tuple(index)], raw.dtype.type(1e-12)))
            log_knots = xp.asarray(np.log(knots), dtype=raw.dtype)
            log_values = xp.asarray(np.log(values), dtype=raw.dtype)
            mapped = xp.exp(xp.interp(x, log_knots, log_values))
            out[tuple(index)] = xp.where(xp.isnan(raw[tuple(index)]), xp.nan, mapped)
        return out

    def synthesized_scale(self, raw: xr.DataArray | None, like: xr.DataArray) -> xr.DataArray:
        """The error scale (band, y, x) of synthesized values: ``raw`` mapped, or, without a
        raw scale, the per-band :attr:`synthesized` scale; shaped and chunked like ``like``."""
        if raw is None:
            return self._per_band(like, self.synthesized)
        return _apply_per_band(raw, lambda block: self.map_raw(block, band_axis=-1))

    def interpolated_scale(self, like: xr.DataArray) -> xr.DataArray:
        """The error scale (band, y, x) of interpolated values, shaped and chunked like
        ``like``."""
        return self._per_band(like, self.interpolated)

    def _per_band(self, like: xr.DataArray, values: Sequence[float]) -> xr.DataArray:
        by_band = dict(zip(self.bands, values, strict=True))
        column = np.array([by_band.get(str(b), np.nan) for b in like["band"].values], "float32")

        def fill(block: Any) -> Any:
            xp = namespace(block)
            return xp.broadcast_to(xp.asarray(column), block.shape).astype("float32")

        return _apply_per_band(like.astype("float32"), fill)

    # --- card ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (NaN as null), as stored in the model card."""

        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {
            "bands": list(self.bands),
            "raw": [[float(v) for v in k] for k in self.raw],
            "scale": [[float(v) for v in k] for k in self.scale],
            "synthesized": [num(v) for v in self.synthesized],
            "interpolated": [num(v) for v in self.interpolated],
            "fitted_on": json.loads(json.dumps(dict(self.fitted_on))),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Read :meth:`to_dict`'s form, strictly (a ParameterError names what is wrong)."""
        if not isinstance(data, Mapping):
            raise ParameterError(f"calibration must be a JSON object, got {type(data).__name__}")
        keys = {"bands", "raw", "scale", "synthesized", "interpolated", "fitted_on"}
        if set(data) != keys:
            raise ParameterError(
                f"calibration keys {sorted(data)} differ from the expected {sorted(keys)}"
            )

        def num(v: Any) -> float:
            if v is None:
                return float("nan")
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ParameterError(f"calibration value {v!r} is not a number")
            return float(v)

        try:
            return cls(
                bands=tuple(str(b) for b in data["bands"]),
                raw=tuple(tuple(num(v) for v in k) for k in data["raw"]),
                scale=tuple(tuple(num(v) for v in k) for k in data["scale"]),
                synthesized=tuple(num(v) for v in data["synthesized"]),
                interpolated=tuple(num(v) for v in data["interpolated"]),
                fitted_on=dict(data["fitted_on"]),
            )
        except TypeError as err:
            raise ParameterError(f"malformed calibration: {err}") from None


def _apply_per_band(array: xr.DataArray, func: Callable[[Any], Any]) -> xr.DataArray:
    """``func`` over blocks of ``array`` holding every band (bands on the last axis), lazily
    on dask, coords and chunks kept."""
    out = xr.apply_ufunc(
        func,
        array,
        input_core_dims=[["band"]],
        output_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=["float32"],
        # A store written elsewhere may chunk bands apart; each block needs all of them.
        dask_gufunc_kwargs={"allow_rechunk": True},
        keep_attrs=False,
    )
    if array.chunks is not None:  # back to the input's band chunks, as the other outputs
        out = out.chunk({"band": array.chunksizes["band"]})
    return out.transpose(*array.dims).astype("float32")


# --- fitting -------------------------------------------------------------------------------
def _matched_scale(error: np.ndarray, quantiles: Sequence[float]) -> float:
    """The scale whose intervals hold shares of ``|error|`` closest to ``quantiles`` (the
    smallest largest miss, on a fine grid around the Laplace maximum-likelihood scale, the
    mean ``|error|``): errors with heavier tails than a Laplace's cannot match every share,
    and this spreads the misses evenly."""
    e = np.sort(np.abs(error))
    mle = max(float(e.mean()), 1e-6)
    grid = mle * np.exp(np.linspace(-3.0, 3.0, 1201))
    q = np.asarray(quantiles, dtype="float64")
    widths = grid[:, None] * interval_factor(q)[None, :]
    shares = np.searchsorted(e, widths, side="right") / e.size
    # The largest miss first (minimax), then the sum of squares among equal ones.
    miss = np.abs(shares - q)
    score = miss.max(axis=1) + 1e-3 * (miss**2).sum(axis=1)
    return float(grid[np.argmin(score)])


def _pool_adjacent(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares non-decreasing fit to ``values`` (pool-adjacent-violators)."""
    blocks: list[list[float]] = []  # [mean, weight, count]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            m2, w2, c2 = blocks.pop()
            m1, w1, c1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, c1 + c2])
    return np.concatenate([np.full(int(c), m) for m, _, c in blocks])


def _fit_map(
    raw: np.ndarray, error: np.ndarray, quantiles: Sequence[float], bins: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots (raw, scale) of one band's map from raw scales to matched scales."""
    order = np.argsort(raw, kind="stable")
    raw, error = raw[order], error[order]
    n_bins = int(max(1, min(bins, raw.size // MIN_PIXELS)))
    parts = np.array_split(np.arange(raw.size), n_bins)
    knots = np.array([np.median(raw[p]) for p in parts])
    log_scale = np.log([_matched_scale(error[p], quantiles) for p in parts])
    # Non-decreasing in the raw scale (log space: geometric pooling), weighted by pixels.
    log_scale = _pool_adjacent(log_scale, np.array([p.size for p in parts], "float64"))
    # Repeated knots (many equal raw scales) merge into one.
    keep = np.concatenate([[True], np.diff(knots) > 0])
    return tuple(float(k) for k in knots[keep]), tuple(float(s) for s in np.exp(log_scale[keep]))


def fit_calibration(
    bands: Sequence[str],
    error: np.ndarray,
    raw: np.ndarray,
    kind: np.ndarray,
    *,
    quantiles: Sequence[float] = COVERAGE_QUANTILES,
    bins: int = 12,
    fitted_on: Mapping[str, Any] | None = None,
) -> Calibration:
    """Fit a :class:`Calibration` from filled pixels whose truth is known.

    Parameters
    ----------
    bands
        Band names, in the order of the last axis of the arrays.
    error
        (n, band) fill minus truth.
    raw
        (n, band) raw scales of synthesized pixels (NaN where none, e.g. interpolated).
    kind
        (n,) ``"synthesized"`` or ``"interpolated"``.
    quantiles
        The interval shares to match (:data:`COVERAGE_QUANTILES`).
    bins
        Most bins of raw scale per band (each with at least :data:`MIN_PIXELS` pixels).
    fitted_on
        Provenance stored with the calibration.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> raw = rng.uniform(0.01, 0.1, (20_000, 1))
    >>> error = rng.laplace(0, raw / 4)  # the raw scale is 4 times too wide
    >>> cal = fit_calibration(["B02"], error, raw, np.full(20_000, "synthesized"))
    >>> got = coverage(error, cal.map_raw(raw, band_axis=1))
    >>> all(abs(got[q] - q) < 0.02 for q in got)
    True
    """
    error = np.asarray(error, dtype="float64")
    raw = np.asarray(raw, dtype="float64")
    kind = np.asarray(kind).astype(str)
    unknown = set(np.unique(kind)) - set(_KINDS)
    if unknown:
        raise ParameterError(f"unknown fill kind(s) {sorted(unknown)}; expected {_KINDS}")
    knots, values, synthesized, interpolated = [], [], [], []
    counts: dict[str, list[int]] = {"synthesized": [], "interpolated": [], "raw": []}
    for i, _band in enumerate(bands):
        e = error[:, i]
        ok = np.isfinite(e)
        syn = ok & (kind == "synthesized")
        with_raw = syn & np.isfinite(raw[:, i]) & (raw[:, i] > 0)
        interp = ok & (kind == "interpolated")
        counts["synthesized"].append(int(syn.sum()))
        counts["interpolated"].append(int(interp.sum()))
        counts["raw"].append(int(with_raw.sum()))
        k, v = ((), ())
        if with_raw.sum() >= MIN_PIXELS:
            k, v = _fit_map(raw[with_raw, i], e[with_raw], quantiles, bins)
        knots.append(k)
        values.append(v)
        synthesized.append(
            _matched_scale(e[syn], quantiles) if syn.sum() >= MIN_PIXELS else float("nan")
        )
        interpolated.append(
            _matched_scale(e[interp], quantiles) if interp.sum() >= MIN_PIXELS else float("nan")
        )
    provenance = {
        "method": "quantile matching per bin of raw scale, non-decreasing (log-log knots)",
        "quantiles": [float(q) for q in quantiles],
        "pixels": counts,
        **dict(fitted_on or {}),
    }
    return Calibration(
        tuple(str(b) for b in bands),
        tuple(knots),
        tuple(values),
        tuple(synthesized),
        tuple(interpolated),
        provenance,
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
