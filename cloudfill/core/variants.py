"""Model variants and configuration names: input channels, attention types, norms.

The paper trains four variants (S, SD, SO, SOD) that differ only in the condition stack.
cloudfill fixes **one** channel order for all of them, so a sampler, the inference stack and a
checkpoint's card agree without negotiation::

    VV, VH, ref_B02, ref_B03, ref_B04, ref_B08, DEM

A variant keeps the channels it uses in that order (S = ``VV, VH``; SD = ``VV, VH, DEM``;
SO = ``VV, VH, ref_B02 .. ref_B08``; SOD = all seven). ``ref_*`` is the cloud-free reference
S2 image of an earlier date. Every variant predicts :data:`OUTPUT_BANDS` at the target date.

Beyond the paper, the change-aware ``SODC`` (issue 21) appends :data:`SIDE_CHANNELS`: for
each side of the target (``before``, ``after``), the nearest clear S2 value per pixel, the
despeckled S1 at that value's date, its age and a validity flag, so the network sees what
changed in the radar between each reference and the target, where the blend reference
(``ref_*``, kept for the additive skip) has already mixed the two sides::

    VV, VH, ref_B02 .. ref_B08, DEM,
    before_B02 .. before_B08, before_VV, before_VH, before_age, before_valid,
    after_B02 .. after_B08, after_VV, after_VH, after_age, after_valid

``SODCT`` (issue 21) appends :data:`SEASON_CHANNELS` to SODC: the target date's time of
year as ``sin`` and ``cos`` of its day-of-year angle, two constant planes. Without them a
side's age says how long ago its value was seen but not in which season: a 120-day-old
spring reference one-sided before an August target and a 120-day-old summer reference
before a December one look alike, and a model learns one average change for both (the
per-pixel probe of ``benchmarks/probe_season.py``: with the two values the boosting model's
error on held-out demo-design scene 73's one-sided gaps falls from 1.8x the blend's to
0.74x, on five other demo-design scenes by 6-19 %; with only three generic training scenes
it rises on the generic design's January and December gaps). South of the equator the angle
turns by half a year (:mod:`cloudfill.core.season`): the values stand for the season, not
the calendar.

``SODCTX`` (issue 21) appends :data:`CONTEXT_CHANNELS` to SODCT: the target date's own clear
pixels (its S2 bands, NaN hence 0 where unusable) and a validity flag. The other variants see
nothing of the date they synthesize but its S1, so where the clear part of a partly cloudy
date shows what no other date does (a snow line that moved, a field harvested since the last
clear date) only the hand-made same-date adjustment could use it, as a smoothed residual. Here
the network reads the clear pixels next to each gap itself; it is trained on clear pixels it
is not shown (:func:`cloudfill.training.hide.hide_mask`), and a date without any clear pixel
is all flags 0, what SODCT sees.

``SODCTXH`` appends :data:`HEIGHT_CHANNELS` to SODCTX: what the date's clear pixels show at
each pixel's height anywhere on the date (:mod:`cloudfill.core.height`), for the snow line
that the context path's 32 px do not reach.

``SODCTXHI`` appends :data:`LIGHT_CHANNELS` to SODCTXH: the sunlight on each pixel's slope at
the target date, the mean of the clear pixels of its elevation band, and the band's mean S2
scaled by the pixel's light against the band's (:mod:`cloudfill.core.illumination`): a
snow-covered band's mean as each slope would show it. Trained as a fifth stage on the simulated
scenes it did not pass the validation rule (better where a band is all snow, worse where snow
and bare ground mix) and is not the default (benchmarks/RESULTS.md, "Slope light").

The names of the other architecture choices (:data:`ATTENTION_KINDS`, :data:`NORMS`) live here
too, so the model card and the cube side of the package can validate them without importing
torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloudfill.cube.schema import BANDS, POLS
from cloudfill.errors import ParameterError

__all__ = [
    "ALL_CHANNELS",
    "ATTENTION_KINDS",
    "CONTEXT_CHANNELS",
    "DEM_CHANNEL",
    "HEIGHT_CHANNELS",
    "LIGHT_CHANNELS",
    "NORMS",
    "OUTPUT_BANDS",
    "REFERENCE_CHANNELS",
    "S1_CHANNELS",
    "SEASON_CHANNELS",
    "SIDES",
    "SIDE_CHANNELS",
    "SKIPS",
    "VARIANTS",
    "Variant",
    "attention_kind",
    "get_variant",
]

S1_CHANNELS: tuple[str, ...] = POLS
"""SAR channels, first in every stack."""

REFERENCE_CHANNELS: tuple[str, ...] = tuple(f"ref_{band}" for band in BANDS)
"""The reference (earlier, cloud-free) S2 bands."""

DEM_CHANNEL: str = "DEM"
"""The elevation channel, last in the stack."""

ALL_CHANNELS: tuple[str, ...] = (*S1_CHANNELS, *REFERENCE_CHANNELS, DEM_CHANNEL)
"""The paper's channel order; each of its variants is a sub-sequence of it (SODC appends
:data:`SIDE_CHANNELS`)."""

OUTPUT_BANDS: tuple[str, ...] = BANDS
"""Bands every generator predicts, in order."""

SIDES: tuple[str, ...] = ("before", "after")
"""The two sides of a target date, in :data:`SIDE_CHANNELS` order."""

SIDE_CHANNELS: tuple[str, ...] = tuple(
    f"{side}_{name}" for side in SIDES for name in (*BANDS, *POLS, "age", "valid")
)
"""Per side: its nearest clear S2 bands, the S1 at their date, their age and a validity flag
(the change-aware ``SODC`` variant; see :func:`cloudfill.core.condition.side_channels`)."""

SEASON_CHANNELS: tuple[str, ...] = ("season_sin", "season_cos")
"""The target date's time of year, ``sin`` and ``cos`` of ``2 pi day_of_year / 365.25``
(``SODCT``; see :func:`cloudfill.core.season.season_channels`)."""

CONTEXT_CHANNELS: tuple[str, ...] = (*(f"context_{band}" for band in BANDS), "context_valid")
"""The target date's own clear S2 bands and a 0/1 validity flag (``SODCTX``; see
:func:`cloudfill.core.condition.context_channels`)."""

HEIGHT_CHANNELS: tuple[str, ...] = (
    *(f"height_{band}" for band in BANDS),
    "height_spread",
    "height_shown",
)
"""At each pixel, what the date's clear pixels in its 100 m elevation band look like: their
mean S2 bands, their spread (standard deviation, averaged over the bands) and the share of the
band shown (``SODCTXH``; see :mod:`cloudfill.core.height`)."""

LIGHT_CHANNELS: tuple[str, ...] = (
    "light",
    "height_light",
    *(f"height_lit_{band}" for band in BANDS),
)
"""The sunlight on the pixel's slope at the target date relative to flat ground, the mean of
that of the clear pixels in its elevation band, and the band's mean S2 bands scaled (in
reflectance) by the pixel's light against the band's (``SODCTXHI``; see
:mod:`cloudfill.core.illumination` and :func:`cloudfill.core.condition.lit_channels`)."""


@dataclass(frozen=True)
class Variant:
    """One input configuration of the generator.

    Attributes
    ----------
    name
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    channels
        Input channel names in stack order (a sub-sequence of :data:`ALL_CHANNELS`).
    """

    name: str
    channels: tuple[str, ...]

    @property
    def n_inputs(self) -> int:
        """Number of input channels."""
        return len(self.channels)

    @property
    def n_outputs(self) -> int:
        """Number of predicted bands (always 4)."""
        return len(OUTPUT_BANDS)

    @property
    def uses_reference(self) -> bool:
        """True when the stack holds a reference S2 image (SO, SOD)."""
        return REFERENCE_CHANNELS[0] in self.channels

    @property
    def uses_dem(self) -> bool:
        """True when the stack holds the DEM (SD, SOD, SODC)."""
        return DEM_CHANNEL in self.channels

    @property
    def uses_sides(self) -> bool:
        """True when the stack holds each side's reference, S1, age and flag (SODC, SODCT)."""
        return SIDE_CHANNELS[0] in self.channels

    @property
    def uses_season(self) -> bool:
        """True when the stack holds the target's time of year (SODCT)."""
        return SEASON_CHANNELS[0] in self.channels

    @property
    def uses_context(self) -> bool:
        """True when the stack holds the target date's own clear pixels (SODCTX, SODCTXH)."""
        return CONTEXT_CHANNELS[0] in self.channels

    @property
    def uses_height(self) -> bool:
        """True when the stack holds the date's clear pixels by elevation band (SODCTXH)."""
        return HEIGHT_CHANNELS[0] in self.channels

    @property
    def uses_light(self) -> bool:
        """True when the stack holds the slope's sunlight at the date (SODCTXHI)."""
        return LIGHT_CHANNELS[0] in self.channels


VARIANTS: dict[str, Variant] = {
    "S": Variant("S", S1_CHANNELS),
    "SD": Variant("SD", (*S1_CHANNELS, DEM_CHANNEL)),
    "SO": Variant("SO", (*S1_CHANNELS, *REFERENCE_CHANNELS)),
    "SOD": Variant("SOD", ALL_CHANNELS),
    "SODC": Variant("SODC", (*ALL_CHANNELS, *SIDE_CHANNELS)),
    "SODCT": Variant("SODCT", (*ALL_CHANNELS, *SIDE_CHANNELS, *SEASON_CHANNELS)),
    "SODCTX": Variant(
        "SODCTX", (*ALL_CHANNELS, *SIDE_CHANNELS, *SEASON_CHANNELS, *CONTEXT_CHANNELS)
    ),
    "SODCTXH": Variant(
        "SODCTXH",
        (*ALL_CHANNELS, *SIDE_CHANNELS, *SEASON_CHANNELS, *CONTEXT_CHANNELS, *HEIGHT_CHANNELS),
    ),
    "SODCTXHI": Variant(
        "SODCTXHI",
        (
            *ALL_CHANNELS,
            *SIDE_CHANNELS,
            *SEASON_CHANNELS,
            *CONTEXT_CHANNELS,
            *HEIGHT_CHANNELS,
            *LIGHT_CHANNELS,
        ),
    ),
}
"""The four variants of the paper, the change-aware SODC, SODCT (SODC and the target's
time of year), SODCTX (SODCT and the target date's clear pixels) and SODCTXH (SODCTX and
those pixels by elevation band) and SODCTXHI (SODCTXH and the slopes' sunlight), by name."""


def get_variant(name: str | Variant) -> Variant:
    """Look up a variant by name (case-insensitive).

    Parameters
    ----------
    name
        ``"S"``, ``"SD"``, ``"SO"``, ``"SOD"``, ``"SODC"``, ``"SODCT"``, ``"SODCTX"``,
        ``"SODCTXH"``, ``"SODCTXHI"`` or a :class:`Variant` (returned as is).

    Returns
    -------
    Variant

    Raises
    ------
    ParameterError
        For an unknown name; the message lists the valid ones.

    Examples
    --------
    >>> get_variant("sod").channels
    ('VV', 'VH', 'ref_B02', 'ref_B03', 'ref_B04', 'ref_B08', 'DEM')
    >>> get_variant("SD").n_inputs
    3
    """
    if isinstance(name, Variant):
        return name
    key = str(name).strip().upper()
    try:
        return VARIANTS[key]
    except KeyError:
        raise ParameterError(
            f"unknown model variant {name!r}; expected one of {list(VARIANTS)}"
        ) from None


ATTENTION_KINDS: tuple[str, ...] = ("cbam", "self", "none")
"""Attention types of the generator (``True`` means ``"cbam"``, ``False`` means ``"none"``);
see :mod:`cloudfill.model.attention`."""

SKIPS: tuple[str, ...] = ("add", "atanh")
"""How a generator's reference enters its mean: ``reference + head`` or
``tanh(head + atanh(reference))`` (see :mod:`cloudfill.model.generator`)."""

NORMS: tuple[str, ...] = ("batch", "none", "instance")
"""Normalisation layers of the generator; only ``batch`` (eval mode) and ``none`` are
tile-independent (see :mod:`cloudfill.model.generator`)."""


def attention_kind(value: bool | str | None) -> str:
    """Normalise an ``attention`` argument to one of :data:`ATTENTION_KINDS`.

    Parameters
    ----------
    value
        ``True`` (CBAM), ``False``/``None`` (no attention), or a name from
        :data:`ATTENTION_KINDS` (case-insensitive).

    Returns
    -------
    str

    Raises
    ------
    ParameterError
        For an unknown name.

    Examples
    --------
    >>> attention_kind(True), attention_kind(False), attention_kind("SELF")
    ('cbam', 'none', 'self')
    """
    if value is True:
        return "cbam"
    if value is False or value is None:
        return "none"
    key = str(value).strip().lower()
    if key not in ATTENTION_KINDS:
        raise ParameterError(
            f"unknown attention {value!r}; expected True, False or one of {list(ATTENTION_KINDS)}"
        )
    return key
