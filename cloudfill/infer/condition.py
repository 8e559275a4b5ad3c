"""The condition stack: the generator's input channels for one target date.

One function, :func:`assemble_condition`, turns raw arrays (S1 at the paired date, the clear
reference S2, the DEM) into the normalised channel stack of a variant. Training patches and
inference blocks both go through it, so the model sees the same numbers in both. It uses
only NumPy-API calls, so the same code runs on numpy, cupy and dask arrays (dispatch through
``__array_function__``).

Rules, applied per channel with the model's scene-wide :class:`NormStats` (never per tile):

- S1 is brought to the statistics' units (dB <-> linear) first;
- ``x_norm = (x - offset) / scale``, then clipped to the target range (the outlier clip of
  the training scene, applied identically to new scenes);
- NaN (no data, clouds in the reference) becomes 0, the centre of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.cube.schema import BANDS, POLS
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.model.variants import DEM_CHANNEL, REFERENCE_CHANNELS, get_variant
from cloudfill.preprocess.normalise import NormStats

__all__ = [
    "assemble_condition",
    "composite_reference",
    "condition_stack",
    "denormalise_bands",
    "normalise_bands",
    "s1_to_units",
]


def s1_to_units(s1: Any, units: str | None, target: str | None) -> Any:
    """Convert backscatter between ``"dB"`` and ``"linear"`` (no-op if equal or unknown).

    >>> float(s1_to_units(np.float32(10.0), "linear", "dB"))
    10.0
    """
    if units is None or target is None or units == target:
        return s1
    if units == "linear" and target == "dB":
        return (10 * np.log10(np.maximum(s1, 1e-10))).astype("float32")
    if units == "dB" and target == "linear":
        return (10 ** (s1 / 10)).astype("float32")
    raise ParameterError(f"cannot convert S1 from {units!r} to {target!r}")


def _labels(stats: NormStats, name: str) -> tuple[str, ...]:
    if name not in stats.variables:
        raise ModelMismatchError(f"the model has no normalisation statistics for {name!r}")
    return tuple(stats.variables[name].labels)


def normalise_bands(
    x: Any, stats: NormStats, name: str, labels: tuple[str, ...], *, fill: bool = True
) -> Any:
    """Normalise, clip and (if ``fill``) zero-fill a (band, y, x) array of variable ``name``.

    ``labels`` are the bands of ``x`` in order; each must have statistics.
    """
    known = _labels(stats, name)
    offsets, scales = stats.offset(name), stats.scale(name)
    t_low, t_high = stats.target
    out = []
    for i, label in enumerate(labels):
        if label not in known:
            raise ModelMismatchError(f"the model has no statistics for {name} band {label!r}")
        j = known.index(label)
        band = (x[i] - np.float32(offsets[j])) / np.float32(scales[j])
        band = np.clip(band, np.float32(t_low), np.float32(t_high))
        if fill:
            band = np.where(np.isnan(band), np.float32(0), band)
        out.append(band.astype("float32"))
    return np.stack(out)


def denormalise_bands(y: Any, stats: NormStats, name: str = "s2") -> Any:
    """Map normalised (band, ...) values back to the variable's units (bands in stats order)."""
    offsets, scales = stats.offset(name), stats.scale(name)
    return np.stack(
        [
            (y[i] * np.float32(scales[i]) + np.float32(offsets[i])).astype("float32")
            for i in range(len(offsets))
        ]
    )


def composite_reference(images: Sequence[Any], unusable: Sequence[Any]) -> Any:
    """Per pixel, the first usable image in ``images`` (most preferred first), NaN if none.

    The reference of a ``"composite"`` model: ``images`` are (band, y, x) S2 images of the
    candidate dates ordered by distance in time
    (:func:`cloudfill.fill.pairs.reference_candidates`), ``unusable`` their (y, x) masks
    (True = cloud or no data). A pixel is usable when unmasked and finite in every band, so
    each pixel gets its nearest clear observation: the same per-pixel information the
    persistence and interpolation baselines use, where one reference date would leave old
    or cloudy values. NumPy-API only (numpy, cupy and dask alike).

    Examples
    --------
    >>> a = np.array([[[1.0, np.nan]]], "float32")
    >>> b = np.array([[[2.0, 3.0]]], "float32")
    >>> composite_reference([a, b], [np.array([[True, False]]), np.zeros((1, 2), bool)])
    array([[[2., 3.]]], dtype=float32)
    """
    if not images or len(images) != len(unusable):
        raise ParameterError("composite_reference needs one mask per image and >= 1 image")
    out = None
    for image, bad in zip(reversed(images), reversed(unusable), strict=True):
        ok = ~bad & ~np.isnan(image).any(axis=0)
        fallback = np.float32(np.nan) if out is None else out
        out = np.where(ok[None], image, fallback).astype("float32")
    return out


def assemble_condition(
    stats: NormStats,
    variant: str,
    *,
    s1: Any | None = None,
    s1_units: str | None = None,
    reference: Any | None = None,
    dem: Any | None = None,
) -> Any:
    """Stack the normalised input channels of ``variant`` (channels, y, x), float32.

    Parameters
    ----------
    stats
        The model's normalisation statistics.
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    s1
        (2, y, x) VV, VH (despeckled), in ``s1_units``.
    reference
        (4, y, x) B02, B03, B04, B08 reflectance of the reference date, NaN where unusable.
    dem
        (y, x) elevation in metres.

    Examples
    --------
    >>> from cloudfill.preprocess.normalise import VariableRange
    >>> stats = NormStats({"s1": VariableRange(("VV", "VH"), (-25.0, -30.0), (0.0, -5.0))},
    ...                   s1_units="dB")
    >>> x = assemble_condition(stats, "S", s1=np.full((2, 2, 2), -12.5, "float32"),
    ...                        s1_units="dB")
    >>> x.shape, float(x[0, 0, 0])
    ((2, 2, 2), 0.0)
    """
    spec = get_variant(variant)
    parts = []
    if s1 is None:
        raise ModelMismatchError(f"variant {spec.name} needs S1 (VV, VH)")
    s1 = s1_to_units(s1, s1_units, stats.s1_units)
    parts.append(normalise_bands(s1, stats, "s1", POLS))
    if any(c in spec.channels for c in REFERENCE_CHANNELS):
        if reference is None:
            raise ModelMismatchError(f"variant {spec.name} needs a reference S2 image")
        parts.append(normalise_bands(reference, stats, "s2", BANDS))
    if DEM_CHANNEL in spec.channels:
        if dem is None:
            raise ModelMismatchError(f"variant {spec.name} needs a DEM")
        parts.append(normalise_bands(dem[None], stats, "dem", _labels(stats, "dem")[:1]))
    return np.concatenate(parts, axis=0)


def condition_stack(
    ds: xr.Dataset,
    date: Any,
    stats: NormStats,
    variant: str,
    *,
    s1_date: Any,
    reference_date: Any | None,
    reference_mask: xr.DataArray | None = None,
    reference_dates: Sequence[Any] | None = None,
    mask: xr.DataArray | None = None,
) -> xr.DataArray:
    """The lazy condition stack (channel, y, x) of ``variant`` for target ``date``.

    ``ds`` should already be despeckled (the model card says with which window); S1 is taken
    at ``s1_date`` and the reference S2 at ``reference_date`` with ``reference_mask`` (True =
    unusable) set to NaN, hence to 0 after normalisation. With ``reference_dates`` (a
    ``"composite"`` model) the reference is instead :func:`composite_reference` of those
    dates, most preferred first, masked by ``mask`` (time, y, x).
    """
    spec = get_variant(variant)
    s1 = ds["s1"].sel(s1_time=pd.Timestamp(s1_date)).transpose("pol", "y", "x")
    s1 = s1.sel(pol=list(POLS))
    reference = None
    if any(c in spec.channels for c in REFERENCE_CHANNELS):
        if reference_date is None or pd.isna(reference_date):
            raise ModelMismatchError(
                f"variant {spec.name} needs a clear reference S2 date for "
                f"{pd.Timestamp(date):%Y-%m-%d} and there is none"
            )
        if reference_dates:
            if mask is None:
                raise ParameterError("a composite reference needs the cloud mask")
            stamps = [pd.Timestamp(d) for d in reference_dates]
            s2 = ds["s2"].sel(band=list(BANDS)).transpose("time", "band", "y", "x")
            reference = composite_reference(
                [s2.sel(time=d).data for d in stamps],
                [mask.sel(time=d).transpose("y", "x").data for d in stamps],
            )
        else:
            ref = ds["s2"].sel(time=pd.Timestamp(reference_date)).sel(band=list(BANDS))
            if reference_mask is not None:
                ref = ref.where(~reference_mask)
            reference = ref.data
    dem = ds["dem"].data if DEM_CHANNEL in spec.channels else None
    data = assemble_condition(
        stats,
        spec.name,
        s1=s1.data,
        s1_units=ds["s1"].attrs.get("units"),
        reference=reference,
        dem=dem,
    )
    coords = {k: v for k, v in ds["s2"].coords.items() if set(v.dims) <= {"y", "x"}}
    return xr.DataArray(
        data,
        dims=("channel", "y", "x"),
        coords={**coords, "channel": list(spec.channels)},
        name="condition",
        attrs={
            "variant": spec.name,
            "target_date": f"{pd.Timestamp(date):%Y-%m-%d}",
            "s1_date": f"{pd.Timestamp(s1_date):%Y-%m-%d}",
            "reference_date": (
                "" if reference is None else f"{pd.Timestamp(reference_date):%Y-%m-%d}"
            ),
            "reference_dates": (
                ",".join(f"{pd.Timestamp(d):%Y-%m-%d}" for d in reference_dates)
                if reference is not None and reference_dates
                else ""
            ),
        },
    )
