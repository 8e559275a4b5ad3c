"""Normalisation to the model range with scene-wide statistics that travel with the model.

:class:`NormStats` holds, per variable and band, the value range ``[low, high]`` that maps onto
the target range (default ``[-1, 1]``, the generator's tanh range). The ranges are the outlier
clipping thresholds of the training scene (:mod:`cloudfill.preprocess.outliers`), computed once
over the whole scene, never per tile (per-tile statistics cause seams). The model card stores
``NormStats.to_dict()``; inference normalises new scenes with those same statistics and maps
the generator's output back with :func:`denormalise_s2`.

The affine map per band is ``x_norm = (x - offset) / scale`` with
``scale = (high - low) / (t_high - t_low)`` and ``offset`` putting the centre of ``[low, high]``
on the centre of the target range. A constant band (``low == high``) gets ``scale = 1`` (its
value maps to the target centre); a band without data (range ``None``) gets the identity.
Values outside ``[low, high]`` are not clipped here (:func:`filter_outliers` does that).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from cloudfill.errors import BandError, DTypeError, MissingVariableError, ParameterError
from cloudfill.preprocess.outliers import (
    BAND_DIMS,
    ClipRanges,
    _labels,
    _like,
    _select_variables,
    outlier_thresholds,
)

__all__ = ["NormStats", "VariableRange", "denormalise_s2", "normalise", "scene_stats"]

_FORMAT = "cloudfill.NormStats"
_VERSION = 1
ATTR = "cloudfill_norm_stats"
"""Dataset attribute where :func:`normalise` records the statistics (a JSON string)."""


@dataclass(frozen=True)
class VariableRange:
    """Value ranges of one variable, band by band, in an explicit band order.

    Attributes
    ----------
    labels
        Band / polarisation labels in order (``("dem",)`` for the band-less DEM).
    low, high
        Range per band; ``None`` for a band that had no data.
    """

    labels: tuple[str, ...]
    low: tuple[float | None, ...]
    high: tuple[float | None, ...]

    def __post_init__(self) -> None:
        if not (len(self.labels) == len(self.low) == len(self.high)):
            raise ParameterError("labels, low and high must have one entry per band")
        if len(set(self.labels)) != len(self.labels):
            raise ParameterError(f"duplicate band labels {list(self.labels)}")
        for label, lo, hi in zip(self.labels, self.low, self.high, strict=True):
            if (lo is None) != (hi is None):
                raise ParameterError(f"band {label!r}: low and high must both be set or None")
            if lo is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ParameterError(f"band {label!r}: need finite low <= high, got {lo}, {hi}")


@dataclass(frozen=True)
class NormStats:
    """Scene-wide normalisation statistics: per variable and band, ``[low, high]`` -> target.

    Attributes
    ----------
    variables
        ``{variable: VariableRange}``.
    target
        The normalised range (default ``(-1.0, 1.0)``).
    s1_units
        Units of ``s1`` the ranges refer to (``"dB"`` / ``"linear"``), checked on use.

    Examples
    --------
    >>> stats = NormStats({"dem": VariableRange(("dem",), (0.0,), (4000.0,))})
    >>> stats.offset("dem"), stats.scale("dem")
    ((2000.0,), (2000.0,))
    >>> NormStats.from_dict(stats.to_dict()) == stats
    True
    """

    variables: Mapping[str, VariableRange]
    target: tuple[float, float] = (-1.0, 1.0)
    s1_units: str | None = field(default=None)

    def __post_init__(self) -> None:
        t_low, t_high = self.target
        if not (math.isfinite(t_low) and math.isfinite(t_high) and t_low < t_high):
            raise ParameterError(f"target range must be increasing, got {self.target}")

    def _affine(self, name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
        if name not in self.variables:
            raise MissingVariableError(f"no normalisation statistics for variable {name!r}")
        t_low, t_high = self.target
        offsets, scales = [], []
        for low, high in zip(self.variables[name].low, self.variables[name].high, strict=True):
            if low is None:
                offsets.append(0.0)
                scales.append(1.0)
                continue
            scale = (high - low) / (t_high - t_low) if high > low else 1.0
            offsets.append((low + high) / 2 - (t_low + t_high) / 2 * scale)
            scales.append(scale)
        return tuple(offsets), tuple(scales)

    def offset(self, name: str) -> tuple[float, ...]:
        """Per-band offsets of ``name`` (``x_norm = (x - offset) / scale``), in band order."""
        return self._affine(name)[0]

    def scale(self, name: str) -> tuple[float, ...]:
        """Per-band scales of ``name``, in band order."""
        return self._affine(name)[1]

    def clip_ranges(self) -> ClipRanges:
        """The ranges as :func:`filter_outliers` ``stats`` (to clip a new scene alike)."""
        return {
            name: {
                label: None if lo is None else (lo, hi)
                for label, lo, hi in zip(v.labels, v.low, v.high, strict=True)
            }
            for name, v in self.variables.items()
        }

    @classmethod
    def from_clip_ranges(
        cls,
        ranges: ClipRanges,
        target: tuple[float, float] = (-1.0, 1.0),
        s1_units: str | None = None,
    ) -> NormStats:
        """Build from ``{variable: {label: (low, high) or None}}`` (band order kept)."""
        variables = {}
        for name, per_band in ranges.items():
            labels = tuple(str(b) for b in per_band)
            pairs = [per_band[b] for b in per_band]
            variables[name] = VariableRange(
                labels=labels,
                low=tuple(None if p is None else float(p[0]) for p in pairs),
                high=tuple(None if p is None else float(p[1]) for p in pairs),
            )
        return cls(variables, tuple(float(t) for t in target), s1_units)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (lists, floats, strings, None) that :meth:`from_dict` inverts."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "target": [float(t) for t in self.target],
            "s1_units": self.s1_units,
            "variables": {
                name: {
                    "dim": BAND_DIMS.get(name),
                    "labels": list(v.labels),
                    "low": [None if x is None else float(x) for x in v.low],
                    "high": [None if x is None else float(x) for x in v.high],
                }
                for name, v in self.variables.items()
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NormStats:
        """Inverse of :meth:`to_dict`; raises ParameterError on anything else."""
        if data.get("format") != _FORMAT or data.get("version") != _VERSION:
            raise ParameterError(
                f"not {_FORMAT} version {_VERSION} data "
                f"(format={data.get('format')!r}, version={data.get('version')!r})"
            )
        try:
            variables = {
                str(name): VariableRange(
                    labels=tuple(str(b) for b in v["labels"]),
                    low=tuple(None if x is None else float(x) for x in v["low"]),
                    high=tuple(None if x is None else float(x) for x in v["high"]),
                )
                for name, v in data["variables"].items()
            }
            target = tuple(float(t) for t in data["target"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ParameterError(f"malformed {_FORMAT} data: {exc}") from exc
        return cls(variables, target, data.get("s1_units"))

    def to_json(self) -> str:
        """:meth:`to_dict` as a JSON string (floats round-trip exactly)."""
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> NormStats:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def scene_stats(
    ds: xr.Dataset,
    variables: Iterable[str] | None = None,
    lower: float | Mapping[str, float] | None = None,
    upper: float | Mapping[str, float] | None = None,
    *,
    target: tuple[float, float] = (-1.0, 1.0),
) -> NormStats:
    """Normalisation statistics of a whole scene.

    A variable already clipped by :func:`filter_outliers` (``attrs["clip_range"]``) uses its
    recorded thresholds (no pass over the data); the others get scene-wide percentile
    thresholds from :func:`outlier_thresholds` (``lower``/``upper``, two passes).

    Parameters
    ----------
    ds
        A contract cube.
    variables
        Default: ``s1``, ``s2``, ``dem`` where present.
    lower, upper
        Percentiles for variables without recorded thresholds.
    target
        The normalised range.

    Returns
    -------
    NormStats

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"dem": (("y", "x"), np.arange(100.0, dtype="float32").reshape(10, 10))})
    >>> scene_stats(ds, lower=0, upper=100).variables["dem"].high
    (99.0,)
    """
    names = _select_variables(ds, variables)
    ranges: ClipRanges = {}
    to_compute = []
    for name in names:
        recorded = ds[name].attrs.get("clip_range")
        labels = _labels(ds[name], name)
        if recorded is not None and len(recorded) == len(labels):
            ranges[name] = {
                b: None if r is None else (float(r[0]), float(r[1]))
                for b, r in zip(labels, recorded, strict=True)
            }
        else:
            to_compute.append(name)
    if to_compute:
        ranges.update(outlier_thresholds(ds, lower, upper, to_compute))
    for name, per_band in ranges.items():
        for label, pair in per_band.items():
            if pair is None:
                warnings.warn(
                    f"variable {name!r} band {label!r} has no data: normalised with the identity",
                    UserWarning,
                    stacklevel=2,
                )
    ordered = {name: ranges[name] for name in names}
    units = ds["s1"].attrs.get("units") if "s1" in ordered else None
    return NormStats.from_clip_ranges(ordered, target=target, s1_units=units)


def _per_band(
    var: xr.DataArray, name: str, values: Sequence[float], stats: NormStats
) -> xr.DataArray | np.floating:
    """``values`` (in the stats' band order) as an array aligned on ``var``'s bands by label."""
    labels = stats.variables[name].labels
    dim = BAND_DIMS.get(name)
    dtype = np.dtype(np.float64)  # arithmetic in float64: the range ends land on exactly +-1
    if dim is None or dim not in var.dims:
        if len(values) != 1:
            raise BandError(f"variable {name!r} has no {dim!r} dim but stats have {list(labels)}")
        return dtype.type(values[0])
    if dim in var.coords:
        present = [str(b) for b in var[dim].values]
        missing = [b for b in present if b not in labels]
        if missing:
            raise BandError(
                f"variable {name!r}: {dim} {missing[0]!r} has no normalisation statistics "
                f"(stats cover {list(labels)})"
            )
        order = [labels.index(b) for b in present]
        coords = {dim: var[dim].values}
    else:
        if var.sizes[dim] != len(labels):
            raise BandError(
                f"variable {name!r} has {var.sizes[dim]} {dim} entries without labels; "
                f"stats have {list(labels)}"
            )
        order = list(range(len(labels)))
        coords = {}
    per_band = np.asarray([values[i] for i in order], dtype=dtype)
    return xr.DataArray(_like(per_band, var.data), dims=dim, coords=coords)


def _check_units(ds: xr.Dataset, stats: NormStats) -> None:
    if "s1" in stats.variables and "s1" in ds.data_vars and stats.s1_units is not None:
        units = ds["s1"].attrs.get("units")
        if units != stats.s1_units:
            raise DTypeError(
                f"variable 's1' is in {units!r} but the statistics are for {stats.s1_units!r}"
            )


def normalise(
    ds: xr.Dataset, stats: NormStats, variables: Iterable[str] | None = None
) -> xr.Dataset:
    """Map each variable's bands onto the target range with ``stats``, lazily.

    Parameters
    ----------
    ds
        A contract cube (usually clipped by :func:`filter_outliers`).
    stats
        Scene-wide statistics (:func:`scene_stats`, or the model card's at inference).
    variables
        Default: the variables of ``stats`` present in ``ds``.

    Returns
    -------
    xarray.Dataset
        Normalised variables keep their dtype (float32) and gain
        ``attrs["normalised_to"]``; ``ds.attrs["cloudfill_norm_stats"]`` holds
        ``stats.to_json()``.

    Raises
    ------
    BandError
        A band of ``ds`` has no statistics.
    DTypeError
        ``s1`` units differ from the statistics'.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"dem": (("y", "x"), np.array([[0.0, 4000.0]], dtype="float32"))})
    >>> stats = NormStats({"dem": VariableRange(("dem",), (0.0,), (4000.0,))})
    >>> normalise(ds, stats).dem.values.tolist()
    [[-1.0, 1.0]]
    """
    names = (
        [n for n in stats.variables if n in ds.data_vars] if variables is None else list(variables)
    )
    _check_units(ds, stats)
    updates = {}
    for name in names:
        if name not in ds.data_vars:
            raise MissingVariableError(f"cannot normalise variable {name!r}: not in the cube")
        var = ds[name]
        offset = _per_band(var, name, stats.offset(name), stats)
        scale = _per_band(var, name, stats.scale(name), stats)
        dtype = var.dtype if np.issubdtype(var.dtype, np.floating) else np.dtype(np.float32)
        out = ((var - offset) / scale).astype(dtype, copy=False)
        out.attrs = {**var.attrs, "normalised_to": list(stats.target)}
        out.encoding = dict(var.encoding)
        updates[name] = out
    result = ds.assign(updates)
    result.attrs = {**ds.attrs, ATTR: stats.to_json()}
    return result


def denormalise_s2(array: xr.DataArray, stats: NormStats) -> xr.DataArray:
    """Map normalised S2 values (e.g. the generator's output) back to reflectance.

    Bands are matched by the ``band`` coordinate when present, else taken in the stats' band
    order. Lazy for dask-backed input.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> stats = NormStats({"s2": VariableRange(("B02",), (0.0,), (0.5,))})
    >>> out = denormalise_s2(xr.DataArray(np.zeros((1, 2, 2), "float32"), dims=("band", "y", "x"),
    ...                                   coords={"band": ["B02"]}), stats)
    >>> out.values[0, 0, 0].item()
    0.25
    """
    offset = _per_band(array, "s2", stats.offset("s2"), stats)
    scale = _per_band(array, "s2", stats.scale("s2"), stats)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.dtype(np.float32)
    out = (array * scale + offset).astype(dtype, copy=False)
    out.attrs = {k: v for k, v in array.attrs.items() if k != "normalised_to"}
    return out
