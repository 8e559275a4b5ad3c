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

The references themselves (composite, blend and its two sides) are built in
:mod:`cloudfill.core.reference`; their names are importable from here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.core.height import height_channels, height_light, height_sums
from cloudfill.core.illumination import MAX_RATIO, MIN_BAND_LIGHT, light_geometry, slope_light
from cloudfill.core.reference import (
    BLEND_TAU_DB,
    Side,
    blend_reference,
    blend_with_sides,
    composite_reference,
    reference_sides,
)
from cloudfill.core.season import season_channels, southern_hemisphere
from cloudfill.core.variants import DEM_CHANNEL, REFERENCE_CHANNELS, SIDES, get_variant
from cloudfill.cube.schema import BANDS, POLS
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.preprocess.normalise import NormStats

__all__ = [
    "AGE_SCALE_DAYS",
    "BLEND_TAU_DB",
    "Side",
    "assemble_condition",
    "blend_reference",
    "blend_with_sides",
    "composite_reference",
    "condition_stack",
    "context_channels",
    "denormalise_bands",
    "lit_channels",
    "normalise_bands",
    "reference_sides",
    "s1_to_units",
    "side_channels",
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
        j = _index(known, name, label)
        band = (x[i] - np.float32(offsets[j])) / np.float32(scales[j])
        band = np.clip(band, np.float32(t_low), np.float32(t_high))
        if fill:
            band = np.where(np.isnan(band), np.float32(0), band)
        out.append(band.astype("float32"))
    return np.stack(out)


def denormalise_bands(
    y: Any, stats: NormStats, name: str = "s2", labels: tuple[str, ...] | None = None
) -> Any:
    """Map normalised (band, ...) values back to the variable's units: bands in stats order,
    or ``labels`` in order (each must have statistics, as for :func:`normalise_bands`)."""
    known = _labels(stats, name)
    offsets, scales = stats.offset(name), stats.scale(name)
    order = range(len(offsets)) if labels is None else [_index(known, name, b) for b in labels]
    return np.stack(
        [
            (y[i] * np.float32(scales[j]) + np.float32(offsets[j])).astype("float32")
            for i, j in enumerate(order)
        ]
    )


def _index(known: tuple[str, ...], name: str, label: str) -> int:
    if label not in known:
        raise ModelMismatchError(f"the model has no statistics for {name} band {label!r}")
    return known.index(label)


def lit_channels(height: Any, light: Any, band_light: Any, stats: NormStats) -> Any:
    """The ``height_lit_*`` channels of :data:`~cloudfill.core.variants.LIGHT_CHANNELS`
    (4, y, x), float32: the band means of ``height`` (the first four
    :data:`~cloudfill.core.variants.HEIGHT_CHANNELS`, normalised) brought back to reflectance,
    scaled by the pixel's ``light`` against its band's ``band_light`` (the ratio clipped to
    ``[0, MAX_RATIO]``, the band's light taken as at least ``MIN_BAND_LIGHT``) and normalised
    again; 0 where the band shows nothing (``height``'s share, its last channel, is 0).

    Examples
    --------
    >>> from cloudfill.preprocess.normalise import VariableRange
    >>> stats = NormStats({"s2": VariableRange(("B02", "B03", "B04", "B08"), (0.0,) * 4,
    ...                                        (1.0,) * 4)})
    >>> height = np.zeros((6, 1, 2), "float32")
    >>> height[:4] = -0.4  # reflectance 0.3
    >>> height[5, 0, 0] = 0.5  # the first pixel's band is shown, the second's not
    >>> lit = lit_channels(height, np.array([[1.5, 1.5]]), np.array([[1.0, 1.0]]), stats)
    >>> lit[:, 0].astype(float).round(3).tolist()  # reflectance 0.45; nothing where not shown
    [[-0.1, 0.0], [-0.1, 0.0], [-0.1, 0.0], [-0.1, 0.0]]
    """
    ratio = np.clip(light / np.maximum(band_light, np.float32(MIN_BAND_LIGHT)), 0, MAX_RATIO)
    reflectance = denormalise_bands(height[:4], stats, "s2", BANDS) * ratio.astype("float32")
    lit = normalise_bands(reflectance, stats, "s2", BANDS)
    return np.where((height[5] > 0)[None], lit, np.float32(0)).astype("float32")


AGE_SCALE_DAYS = 120.0
"""Days that map to 1 in a side's ``age`` channel (the default reference age limit)."""


def side_channels(sides: tuple[Side | None, Side | None], stats: NormStats, like: Any) -> Any:
    """The :data:`~cloudfill.core.variants.SIDE_CHANNELS` of both sides (16, y, x), float32:
    per side its S2 bands and S1 normalised as the model's ``s2`` and ``s1``, its age in
    units of :data:`AGE_SCALE_DAYS` and a 0/1 validity flag; all 0 where the side has no
    clear value. ``like``: a (y, x) array giving the shape and array type.

    >>> from cloudfill.preprocess.normalise import VariableRange
    >>> stats = NormStats({"s2": VariableRange(("B02", "B03", "B04", "B08"), (0.0,) * 4,
    ...                                        (1.0,) * 4),
    ...                    "s1": VariableRange(("VV", "VH"), (-25.0, -30.0), (0.0, -5.0))},
    ...                   s1_units="dB")
    >>> side = Side(np.full((4, 1, 2), 0.5, "float32"), np.array([[60.0, np.nan]], "float32"),
    ...             np.full((2, 1, 2), -12.5, "float32"))
    >>> x = side_channels((side, None), stats, np.zeros((1, 2), "float32"))
    >>> x.shape, x[6:8, 0].tolist(), float(x[8:].sum())
    ((16, 1, 2), [[0.5, 0.0], [1.0, 0.0]], 0.0)
    """
    # Zeros of like's shape and array type; not like * 0, which is NaN wherever S1 is missing
    # (swath edges), a NaN the convolutions then spread over the whole tile.
    zero = np.zeros_like(like, dtype="float32")
    parts = []
    for side in sides:
        if side is None:
            parts.append(np.stack([zero] * 8))
            continue
        valid = ~np.isnan(side.age)
        radar = s1_to_units(side.radar, "dB", stats.s1_units)
        parts += [
            normalise_bands(side.value, stats, "s2", BANDS),
            normalise_bands(radar, stats, "s1", POLS),
            np.where(valid, side.age / np.float32(AGE_SCALE_DAYS), np.float32(0))[None],
            valid.astype("float32")[None],
        ]
    return np.concatenate(parts, axis=0).astype("float32")


def context_channels(context: Any, stats: NormStats) -> Any:
    """The :data:`~cloudfill.core.variants.CONTEXT_CHANNELS` (5, y, x), float32: the target
    date's (4, y, x) S2 bands normalised as the model's ``s2`` where usable in every band, 0
    elsewhere, and the 0/1 flag of where they are usable (NaN or infinite in ``context`` =
    unusable, as training's samples and the height table count them).

    >>> from cloudfill.preprocess.normalise import VariableRange
    >>> stats = NormStats({"s2": VariableRange(("B02", "B03", "B04", "B08"), (0.0,) * 4,
    ...                                        (1.0,) * 4)})
    >>> x = context_channels(np.array([[[0.5, np.nan]]] * 4, "float32"), stats)
    >>> x.shape, x[:, 0, 0].tolist(), x[:, 0, 1].tolist()
    ((5, 1, 2), [0.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0])
    """
    valid = np.isfinite(context).all(axis=0)
    bands = normalise_bands(np.where(valid[None], context, np.float32(np.nan)), stats, "s2", BANDS)
    return np.concatenate([bands, valid.astype("float32")[None]], axis=0)


def assemble_condition(
    stats: NormStats,
    variant: str,
    *,
    s1: Any | None = None,
    s1_units: str | None = None,
    reference: Any | None = None,
    dem: Any | None = None,
    sides: tuple[Side | None, Side | None] | None = None,
    date: Any | None = None,
    southern: bool = False,
    context: Any | None = None,
    height: np.ndarray | None = None,
    light: Any | None = None,
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
    sides
        The two sides the blend reference came from (:func:`blend_with_sides`); the
        change-aware variants (SODC, SODCT) only.
    date
        The target date (SODCT only: its time of year,
        :func:`~cloudfill.core.season.season_channels`).
    southern
        The scene lies south of the equator (SODCT only: its seasons are half a year later,
        :func:`~cloudfill.core.season.southern_hemisphere`).
    context
        (4, y, x) the target date's own S2 bands, NaN where unusable (SODCTX and later;
        :func:`context_channels`).
    height
        (HEIGHT_BINS, 11) the date's clear pixels by elevation band
        (:func:`~cloudfill.core.height.height_sums` of their normalised S2 bands; SODCTXH,
        SODCTXHI), looked up at ``dem``.
    light
        (y, x) the sunlight on each pixel's slope at the date
        (:func:`~cloudfill.core.illumination.slope_light`; SODCTXHI only; ``height`` then
        holds the clear pixels' summed light too).

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
    heights = None
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
    if spec.uses_sides:
        if sides is None or len(sides) != len(SIDES):
            raise ModelMismatchError(
                f"variant {spec.name} needs both sides of the target (a blend-reference model)"
            )
        parts.append(side_channels(sides, stats, s1[0]))
    if spec.uses_season:
        if date is None or pd.isna(date):
            raise ModelMismatchError(f"variant {spec.name} needs the target date")
        parts.append(season_channels(date, s1[0], southern=southern))
    if spec.uses_context:
        if context is None:
            raise ModelMismatchError(f"variant {spec.name} needs the target date's S2 image")
        parts.append(context_channels(context, stats))
    if spec.uses_height:
        if height is None:
            raise ModelMismatchError(
                f"variant {spec.name} needs the target date's clear pixels by elevation band"
            )
        heights = height_channels(height, dem)
        parts.append(heights)
    if spec.uses_light:
        if light is None:
            raise ModelMismatchError(f"variant {spec.name} needs the slopes' sunlight at the date")
        if heights is None:
            raise ModelMismatchError(f"variant {spec.name} reads light without heights")
        band_light = height_light(height, dem)
        lit = lit_channels(heights, light, band_light, stats)
        parts += [light[None].astype("float32"), band_light[None], lit]
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
    reference_s1_dates: Sequence[Any] | None = None,
    target_mask: xr.DataArray | None = None,
) -> xr.DataArray:
    """The lazy condition stack (channel, y, x) of ``variant`` for target ``date``.

    ``ds`` should already be despeckled (the model card says with which window); S1 is taken
    at ``s1_date`` and the reference S2 at ``reference_date`` with ``reference_mask`` (True =
    unusable) set to NaN, hence to 0 after normalisation. With ``reference_dates`` (a
    ``"composite"`` model) the reference is instead :func:`composite_reference` of those
    dates, most preferred first, masked by ``mask`` (time, y, x). With
    ``reference_s1_dates`` too (a ``"blend"`` model: per reference date, its S1 date in
    ``ds`` or None) it is :func:`blend_reference` of those dates, and the change-aware
    variants (SODC, SODCT) also get both sides it blended (:func:`side_channels`). SODCT's
    season planes turn by half a year where the centre of ``ds``'s grid lies south of the
    equator (:func:`~cloudfill.core.season.southern_hemisphere`, from its CRS). SODCTX also
    reads ``ds``'s S2 at ``date`` itself, where ``target_mask`` (y, x; True = unusable,
    required for an S2 date) is False (:func:`context_channels`); a date without S2 shows
    nothing. SODCTXH also sums those pixels by elevation band across the whole date
    (:mod:`cloudfill.core.height`): that table is computed here, one streaming pass over the
    date's S2, mask and DEM, and each block looks it up. SODCTXHI also reads the sunlight on
    each pixel's slope at ``date`` (:mod:`cloudfill.core.illumination`, from the DEM, the
    grid's latitude, spacing and north, and the date's sun as ``ds`` states it or as computed),
    and the table sums it over the clear pixels.
    """
    spec = get_variant(variant)
    context = None
    if spec.uses_context:
        s2 = ds["s2"].sel(band=list(BANDS))
        if pd.Timestamp(date) in s2.indexes["time"]:
            if target_mask is None:
                raise ModelMismatchError(f"variant {spec.name} needs the target date's cloud mask")
            own = s2.sel(time=pd.Timestamp(date)).transpose("band", "y", "x")
            context = own.where(~target_mask.transpose("y", "x")).data
            # A pixel with an infinite band is not shown, as training's samples count it: NaN
            # here, so the height table leaves it out too (normalising would clip it).
            shown = np.isfinite(context).all(axis=0)[None]
            context = np.where(shown, context, np.float32(np.nan))
        else:  # a date with S1 only: nothing shown, as on a fully cloudy date
            blank = s2.isel(time=0).transpose("band", "y", "x")
            context = xr.full_like(blank, np.nan, dtype="float32").data
    if spec.uses_sides and reference_s1_dates is None:
        raise ModelMismatchError(
            f"variant {spec.name} needs the blend reference's dates and their S1 "
            "(reference_dates and reference_s1_dates)"
        )
    s1 = ds["s1"].sel(s1_time=pd.Timestamp(s1_date)).transpose("pol", "y", "x")
    s1 = s1.sel(pol=list(POLS))
    reference = sides = None
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
            images = [s2.sel(time=d).data for d in stamps]
            unusable = [mask.sel(time=d).transpose("y", "x").data for d in stamps]
            if reference_s1_dates is None:
                reference = composite_reference(images, unusable)
            else:
                units = ds["s1"].attrs.get("units")

                def radar(when: Any) -> Any:
                    one = ds["s1"].sel(s1_time=pd.Timestamp(when), pol=list(POLS))
                    return s1_to_units(one.transpose("pol", "y", "x").data, units, "dB")

                reference, sides = blend_with_sides(
                    images,
                    unusable,
                    [(d - pd.Timestamp(date)) / pd.Timedelta(days=1) for d in stamps],
                    [None if w is None or pd.isna(w) else radar(w) for w in reference_s1_dates],
                    radar(s1_date),
                )
        else:
            ref = ds["s2"].sel(time=pd.Timestamp(reference_date)).sel(band=list(BANDS))
            if reference_mask is not None:
                ref = ref.where(~reference_mask)
            reference = ref.data
    dem = ds["dem"].data if DEM_CHANNEL in spec.channels else None
    height = light = None
    if spec.uses_light:
        light = slope_light(dem, date, light_geometry(ds))
    if spec.uses_height:
        shown = normalise_bands(context, stats, "s2", BANDS, fill=False)
        height = height_sums(shown, dem, light)
    data = assemble_condition(
        stats,
        spec.name,
        s1=s1.data,
        s1_units=ds["s1"].attrs.get("units"),
        reference=reference,
        dem=dem,
        sides=sides,
        date=date,
        southern=spec.uses_season and southern_hemisphere(ds),
        context=context,
        height=height,
        light=light,
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
