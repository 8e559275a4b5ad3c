"""The references a target date's gap is filled from: per pixel, the nearest clear values.

A ``"composite"`` model's reference is each pixel's nearest clear observation
(:func:`composite_reference`); a ``"blend"`` model's mixes the nearest clear value before and
after the target, weighted by time and by how much their S1 resembles the target's
(:func:`blend_reference`), and the change-aware variants also see both sides
(:func:`blend_with_sides`, :class:`Side`). NumPy-API only: the same code runs on numpy, cupy
and dask arrays. :mod:`cloudfill.core.condition` builds the channels from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloudfill.errors import ParameterError

__all__ = [
    "BLEND_TAU_DB",
    "Side",
    "blend_reference",
    "blend_with_sides",
    "composite_reference",
    "reference_sides",
]


def composite_reference(images: Sequence[Any], unusable: Sequence[Any]) -> Any:
    """Per pixel, the first usable image in ``images`` (most preferred first), NaN if none.

    The reference of a ``"composite"`` model: ``images`` are (band, y, x) S2 images of the
    candidate dates ordered by distance in time
    (:func:`cloudfill.core.pairs.reference_candidates`), ``unusable`` their (y, x) masks
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


BLEND_TAU_DB = 3.0
"""Scale (dB) of the S1 distance in :func:`blend_reference`: a side whose despeckled VV/VH
differ from the target's by ``tau`` (Euclidean, dB) loses a factor ``exp(-1/2)`` of weight.
Chosen on the default model's training cube (benchmarks/RESULTS.md, "Blend reference and
same-date adjustment"): the lowest MAE there, 4 dB within 1e-5 of it, 2 dB worse."""


def _nearest_side(
    images: Sequence[Any],
    unusable: Sequence[Any],
    s1: Sequence[Any],
    days: Sequence[float],
    order: Sequence[int],
) -> tuple[Any, Any, Any] | None:
    """Per pixel, the first usable image of ``order`` (nearest first), how many days away it
    is and the S1 at its date; None without candidates."""
    value = age = radar = None
    nan = np.float32(np.nan)
    for k in reversed(order):
        ok = ~unusable[k] & ~np.isnan(images[k]).any(axis=0)
        value = np.where(ok[None], images[k], nan if value is None else value)
        age = np.where(ok, np.float32(days[k]), nan if age is None else age)
        radar = np.where(ok[None], s1[k], nan if radar is None else radar)
    return None if value is None else (value, age, radar)


def blend_reference(
    images: Sequence[Any],
    unusable: Sequence[Any],
    offsets: Sequence[float],
    s1: Sequence[Any | None],
    s1_target: Any,
    *,
    tau: float = BLEND_TAU_DB,
) -> Any:
    """Per pixel, the nearest clear observations before and after the target, weighted by
    time and by how much their S1 resembles the target's.

    The reference of a ``"blend"`` model. With ``b``/``a`` the nearest usable values before
    and after (``db``/``da`` days away) and ``sb``/``sa`` the despeckled VV/VH (dB) at their
    dates, the weight of ``b`` is the posterior of a two-state choice::

        w = da / (db + da) * exp(-|s - sb|^2 / (2 tau^2))   (normalised against the same for a)

    so with similar radar it is linear temporal interpolation, and where the radar shows the
    target looking like one side (a harvest, a green-up) that side wins. A pixel with a
    value on one side only takes it; where either side lacks S1 the weight is the time
    weight alone; with no usable value on either side the pixel is NaN. NumPy-API only
    (numpy, cupy and dask alike).

    Parameters
    ----------
    images
        (band, y, x) S2 images of the candidate dates, NaN where missing.
    unusable
        (y, x) masks of the candidates (True = cloud or no data).
    offsets
        Days from the target to each candidate, negative before it; none may be 0.
    s1
        (pol, y, x) despeckled S1 in dB at each candidate's date, or None where there is no
        S1 acquisition near it.
    s1_target
        (pol, y, x) despeckled S1 in dB at the target's S1 date.
    tau
        S1 distance scale in dB (:data:`BLEND_TAU_DB`).

    Examples
    --------
    >>> before = np.full((1, 1, 2), 0.1, "float32")
    >>> after = np.full((1, 1, 2), 0.3, "float32")
    >>> radar = [np.array([[[-10.0, -10.0]]], "float32"), np.array([[[-10.0, -20.0]]], "float32")]
    >>> clear = np.zeros((1, 2), bool)
    >>> out = blend_reference([before, after], [clear, clear], [-10, 10], radar, radar[0])
    >>> out.astype(float).round(2).tolist()  # left: same radar, an even mix; right: looks "before"
    [[[0.2, 0.1]]]
    """
    return blend_with_sides(images, unusable, offsets, s1, s1_target, tau=tau)[0]


@dataclass(frozen=True)
class Side:
    """One side of a target date, per pixel: the nearest clear S2 ``value`` (band, y, x), its
    ``age`` in days (y, x) and the despeckled S1 in dB at its date, ``radar`` (pol, y, x); NaN
    where the side has no clear value (or no S1 near it)."""

    value: Any
    age: Any
    radar: Any


def reference_sides(
    images: Sequence[Any],
    unusable: Sequence[Any],
    offsets: Sequence[float],
    s1: Sequence[Any | None],
    like: Any,
) -> tuple[Side | None, Side | None]:
    """The sides before and after the target (:class:`Side`), None for a side without
    candidates; arguments as :func:`blend_reference` (``like``: a (pol, y, x) array to take
    the shape and array type of missing S1 from)."""
    nan_radar = like * np.float32(np.nan)
    radar = [nan_radar if r is None else r for r in s1]
    sides: list[Side | None] = []
    for sign in (-1, 1):
        order = sorted((k for k in range(len(images)) if np.sign(offsets[k]) == sign),
                       key=lambda k: abs(offsets[k]))  # fmt: skip
        side = _nearest_side(images, unusable, radar, [abs(o) for o in offsets], order)
        sides.append(None if side is None else Side(*side))
    return sides[0], sides[1]


def blend_with_sides(
    images: Sequence[Any],
    unusable: Sequence[Any],
    offsets: Sequence[float],
    s1: Sequence[Any | None],
    s1_target: Any,
    *,
    tau: float = BLEND_TAU_DB,
) -> tuple[Any, tuple[Side | None, Side | None]]:
    """:func:`blend_reference` and the two sides it blended (:func:`reference_sides`), for
    the change-aware variant, which sees both."""
    n = len(images)
    if n == 0 or not (len(unusable) == len(offsets) == len(s1) == n):
        raise ParameterError("blend_reference needs one mask, offset and S1 per image (>= 1)")
    if any(o == 0 for o in offsets):
        raise ParameterError("blend_reference: a candidate lies on the target date")
    if not tau > 0:
        raise ParameterError(f"blend_reference: tau must be positive, got {tau}")
    pair = reference_sides(images, unusable, offsets, s1, s1_target)
    present = [side for side in pair if side is not None]
    if len(present) == 1:
        return present[0].value.astype("float32"), pair
    (before, days_b, s1_b), (after, days_a, s1_a) = (
        (side.value, side.age, side.radar) for side in present
    )
    dist_b = ((s1_target - s1_b) ** 2).sum(axis=0)
    dist_a = ((s1_target - s1_a) ** 2).sum(axis=0)
    # Log-odds of "before": time prior plus the S1 likelihood ratio (0 where S1 is missing).
    radar_term = (dist_a - dist_b) / np.float32(2 * tau * tau)
    radar_term = np.where(np.isnan(radar_term), np.float32(0), radar_term)
    logit = np.log(days_a) - np.log(days_b) + radar_term
    weight = 1 / (1 + np.exp(-np.clip(logit, -30, 30)))
    mixed = after + (before - after) * weight[None]
    out = np.where(np.isnan(before), after, np.where(np.isnan(after), before, mixed))
    return out.astype("float32"), pair
