"""Which inputs fill which date: the S1 date and the clear reference S2 date for each S2 date.

The rule (:class:`PairingRule`; the training sampler uses it too, so training and inference
see the same pairs):

- **S1**: the S1 acquisition nearest in time to the target date, if within ``max_s1_gap``.
- **reference**: the nearest *earlier* S2 date whose cloud fraction is at most
  ``max_ref_cloud`` and which is at most ``max_ref_age`` older (the paper's setting: an
  earlier cloud-free image); with ``direction="nearest"`` a later date may be used too.
  Paired by pixel (``pairs(..., per_pixel=True)``, for models whose reference is a per-pixel
  composite or blend) no such date is needed: a date qualifies when some of its unusable
  pixels are clear on some date within ``max_ref_age`` (``reference_share`` says how many).
- **method**: ``"clear"`` when the target itself needs no filling, ``"synthesize"`` when both
  inputs exist, ``"interpolate"`` (temporal fallback) when they do not but some other date is
  usable, ``"none"`` when nothing is usable; ``reason`` says why in words.
"""

from __future__ import annotations

import functools
import numbers
import operator
from dataclasses import asdict, dataclass
from typing import Literal

import dask
import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import ParameterError

__all__ = [
    "PER_PIXEL_MODES",
    "PairingRule",
    "cloud_fractions",
    "nearest_s1",
    "pairs",
    "reference_candidates",
    "reference_for",
    "required_s1",
]

Direction = Literal["earlier", "nearest"]

PER_PIXEL_MODES: tuple[str, ...] = ("composite", "blend")
"""Reference modes built pixel by pixel from every candidate date
(:attr:`ModelCard.reference_mode <cloudfill.model.card.ModelCard.reference_mode>`): their
dates are paired by pixel (``pairs(..., per_pixel=True)``), needing no clear reference date."""


def _as_days(value: str | pd.Timedelta | float | int, name: str) -> float:
    # Plain numbers are days ("max_s1_gap=6" reads naturally); strings and Timedeltas are
    # converted, so a rule compares and prints the same however it was written.
    if isinstance(value, bool | np.bool_):
        raise ParameterError(f"{name} must be a number of days or a Timedelta, got {value!r}")
    try:
        # numbers.Real covers NumPy scalars too: pd.Timedelta(np.int64(6)) would be 6 ns.
        number = isinstance(value, numbers.Real)
        delta = pd.Timedelta(days=float(value)) if number else pd.Timedelta(value)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{name}: cannot read {value!r} as a duration") from exc
    if pd.isna(delta) or delta < pd.Timedelta(0):
        raise ParameterError(f"{name} must not be negative, got {value!r}")
    return float(delta / pd.Timedelta(days=1))


@dataclass(frozen=True)
class PairingRule:
    """Which dates may serve a target date: one value shared by fill, inference and training.

    Parameters
    ----------
    max_s1_gap
        Largest allowed |S1 date - target date| in days (a number, a pandas Timedelta or a
        string such as ``"6D"``; stored as float days). Default 6.
    max_ref_age
        Largest allowed |reference date - target date| in days. Default 120.
    max_ref_cloud
        A date can serve as reference when its cloud fraction is at most this (default
        0.05, the paper's 5 % limit).

    Examples
    --------
    >>> rule = PairingRule(max_s1_gap="36h")
    >>> rule.max_s1_gap, rule.s1_gap
    (1.5, Timedelta('1 days 12:00:00'))
    >>> PairingRule(max_ref_cloud=2.0)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: max_ref_cloud must be within [0, 1], got 2.0
    """

    max_s1_gap: float = 6.0
    max_ref_age: float = 120.0
    max_ref_cloud: float = 0.05

    def __post_init__(self) -> None:
        for name in ("max_s1_gap", "max_ref_age"):
            object.__setattr__(self, name, _as_days(getattr(self, name), name))
        cloud = float(self.max_ref_cloud)
        if not 0.0 <= cloud <= 1.0:
            raise ParameterError(f"max_ref_cloud must be within [0, 1], got {self.max_ref_cloud}")
        object.__setattr__(self, "max_ref_cloud", cloud)

    @property
    def s1_gap(self) -> pd.Timedelta:
        """:attr:`max_s1_gap` as a Timedelta."""
        return pd.Timedelta(days=self.max_s1_gap)

    @property
    def ref_age(self) -> pd.Timedelta:
        """:attr:`max_ref_age` as a Timedelta."""
        return pd.Timedelta(days=self.max_ref_age)

    def to_dict(self) -> dict[str, float]:
        """The three numbers by name (for model cards, provenance and fingerprints)."""
        return asdict(self)


def cloud_fractions(ds: xr.Dataset) -> pd.Series:
    """Fraction of unusable pixels per S2 date (one small reduction over the mask).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> float(cloud_fractions(ds).iloc[0])
    0.0
    """
    frac = cloud_mask(ds).mean(("y", "x")).compute()
    return pd.Series(
        np.asarray(frac.to_numpy(), dtype="float64"),  # to_numpy: CuPy-backed too
        index=pd.DatetimeIndex(ds["time"].values, name="date"),
        name="cloud_fraction",
    )


def nearest_s1(
    s1_dates: pd.DatetimeIndex | None, date: pd.Timestamp, max_gap: pd.Timedelta
) -> tuple[pd.Timestamp, float]:
    """The S1 date nearest to ``date`` within ``max_gap`` and the signed gap in days
    (S1 minus target), or (NaT, NaN)."""
    if s1_dates is None or not len(s1_dates):
        return pd.NaT, np.nan
    gaps = np.abs(s1_dates - date)
    j = int(np.argmin(gaps))
    if gaps[j] > max_gap:
        return pd.NaT, np.nan
    return s1_dates[j], (s1_dates[j] - date) / pd.Timedelta(days=1)


def required_s1(
    s1_dates: pd.DatetimeIndex | None, date: pd.Timestamp, rule: PairingRule
) -> pd.Timestamp:
    """The S1 date of ``date`` (:func:`nearest_s1` within ``rule.max_s1_gap``), or a
    :class:`~cloudfill.errors.ParameterError` saying there is none and what to do.

    >>> dates = pd.DatetimeIndex(["2024-03-10"])
    >>> required_s1(dates, pd.Timestamp("2024-03-12"), PairingRule())
    Timestamp('2024-03-10 00:00:00')
    >>> required_s1(dates, pd.Timestamp("2024-04-12"), PairingRule())  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: no S1 acquisition within 6 days of 2024-04-12 ...
    """
    s1_date, _ = nearest_s1(s1_dates, date, rule.s1_gap)
    if pd.isna(s1_date):
        raise ParameterError(
            f"no S1 acquisition within {rule.max_s1_gap:g} days of {date:%Y-%m-%d} "
            "(raise max_s1_gap, or use the interpolation fallback of fill_series)"
        )
    return s1_date


def reference_for(
    dates: pd.DatetimeIndex,
    usable: np.ndarray,
    date: pd.Timestamp,
    max_age: pd.Timedelta,
    direction: Direction = "earlier",
) -> tuple[pd.Timestamp, float]:
    """The usable S2 date nearest to ``date`` (earlier only unless ``direction="nearest"``),
    at most ``max_age`` away and never ``date`` itself, with its age in days; or (NaT, NaN).
    On a tie the earlier date wins."""
    candidates = _by_distance(dates, usable, date, max_age, direction)
    if not candidates:
        return pd.NaT, np.nan
    k = candidates[0]
    return dates[k], (date - dates[k]) / pd.Timedelta(days=1)


def _by_distance(
    dates: pd.DatetimeIndex,
    keep: np.ndarray,
    date: pd.Timestamp,
    max_age: pd.Timedelta,
    direction: Direction,
) -> list[int]:
    """Indices of the ``keep`` dates other than ``date``, at most ``max_age`` away (earlier
    only unless ``direction="nearest"``), nearest first, the earlier first on a tie."""
    chosen = [
        k
        for k in range(len(dates))
        if keep[k]
        and dates[k] != date
        and (direction == "nearest" or dates[k] < date)
        and abs(dates[k] - date) <= max_age
    ]
    return sorted(chosen, key=lambda k: (abs(dates[k] - date), dates[k]))


def reference_candidates(
    dates: pd.DatetimeIndex,
    fractions: np.ndarray,
    date: pd.Timestamp,
    max_age: pd.Timedelta,
    direction: Direction = "nearest",
) -> list[pd.Timestamp]:
    """The S2 dates a composite reference draws on, most preferred first.

    Every date other than ``date`` with at least one usable pixel (cloud fraction < 1), at
    most ``max_age`` away (earlier only with ``direction="earlier"``), ordered by distance
    in time; on a tie the earlier date comes first (the rule of :func:`reference_for`).

    Examples
    --------
    >>> dates = pd.DatetimeIndex(["2024-01-01", "2024-01-11", "2024-01-21", "2024-01-31"])
    >>> got = reference_candidates(dates, np.array([0.0, 0.3, 1.0, 0.2]),
    ...                            pd.Timestamp("2024-01-11"), pd.Timedelta(days=25))
    >>> [f"{d:%m-%d}" for d in got]
    ['01-01', '01-31']
    """
    keep = np.asarray(fractions, dtype="float64") < 1.0
    return [dates[k] for k in _by_distance(dates, keep, date, max_age, direction)]


def _days(delta: pd.Timedelta) -> str:
    return f"{delta / pd.Timedelta(days=1):g}"


def _covered_counts(ds: xr.Dataset, jobs: dict[int, list[int]]) -> dict[int, tuple[int, int]]:
    """Per target date index ``i`` of ``jobs``: how many of its pixels are unusable, and how
    many of those are usable on at least one of the dates ``jobs[i]`` (indices).

    Lazy up to one compute for every date: a dask-backed mask is read chunk by chunk, each
    date's plane once however many targets it serves.
    """
    if not jobs:
        return {}
    mask = cloud_mask(ds).data
    usable: dict[int, object] = {}  # one "usable" plane per date, shared by every target
    parts = []
    for i, sources in jobs.items():
        for k in sources:
            if k not in usable:
                usable[k] = ~mask[k]
        cover = functools.reduce(operator.or_, (usable[k] for k in sources))
        bad = mask[i]
        parts += [bad.sum(), (bad & cover).sum()]
    if any(dask.is_dask_collection(p) for p in parts):
        parts = list(dask.compute(*parts))
    counts = [int(p) for p in parts]  # int() also brings a CuPy scalar to the host
    return {i: (counts[2 * j], counts[2 * j + 1]) for j, i in enumerate(jobs)}


def pairs(
    ds: xr.Dataset,
    rule: PairingRule = PairingRule(),
    *,
    clear_threshold: float = 0.0,
    direction: Direction = "earlier",
    needs_reference: bool = True,
    fractions: pd.Series | None = None,
    chain: bool = False,
    per_pixel: bool = False,
    shares: bool = True,
) -> pd.DataFrame:
    """For every S2 date: the S1 date and the reference date(s) the fill would use.

    Parameters
    ----------
    ds
        A contract cube with ``s2`` and a mask (``cloud`` or ``scl``); ``s1`` optional.
    rule
        The pairing rule (:class:`PairingRule`: largest S1 gap, oldest reference, cloudiest
        reference); the default is the paper's.
    clear_threshold
        A target date whose cloud fraction is at most this needs no filling (``"clear"``).
    direction
        ``"earlier"`` (default) takes only earlier references; ``"nearest"`` also later ones.
    needs_reference
        Whether the model needs a reference (SO/SOD variants); an S/SD model can
        synthesize a date that has an S1 acquisition but no reference.
    fractions
        Precomputed :func:`cloud_fractions`, to avoid reading the mask again.
    chain
        Let dates filled by synthesis serve as references for later dates (``fill_series(...,
        chain=True)``): a long cloudy spell is then synthesized date after date from its
        last clear date instead of interpolated. Dates are planned in time order, so a
        filled date only ever serves later dates; a filled date counts as usable everywhere.
    per_pixel
        Pair by pixel, as models whose reference is a per-pixel ``"composite"`` or
        ``"blend"`` (:attr:`ModelCard.reference_mode
        <cloudfill.model.card.ModelCard.reference_mode>`) do: a date needs no clear
        reference *date*; it is synthesized when some of its unusable pixels are usable on
        one of its :func:`reference_candidates` (every date with a usable pixel within
        ``max_ref_age``, in ``direction``), and ``reference_date`` is the nearest of them.
        Default False: the paper's single reference date with at most ``max_ref_cloud``.
    shares
        Compute ``reference_share`` (one more pass over the mask, computed once for every
        date, skipped when the cube has no S1). False leaves it NaN and, with
        ``per_pixel``, takes any candidate date as enough: for callers that only read the
        dates (training's target selection).

    Returns
    -------
    pandas.DataFrame
        Indexed by S2 date, columns ``cloud_fraction``, ``s1_date``, ``s1_gap_days``,
        ``reference_date``, ``reference_age_days``, ``method``, ``reason``,
        ``reference_chained`` (the reference date is itself a filled date),
        ``chain_source`` (the date's filled image serves later dates as a reference; these
        two are only ever True with ``chain``) and ``reference_share``: the share of the
        date's unusable pixels with a reference value (usable on ``reference_date``; with
        ``per_pixel``, on any candidate date). ``reference_share`` is NaN where the date has
        no unusable pixel, no reference or no S1 date (nothing would be synthesized).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> table = pairs(ds)
    >>> list(table.columns)[:3]
    ['cloud_fraction', 's1_date', 's1_gap_days']

    Pairing by pixel synthesizes every date whose clouds are clear on some neighbour:

    >>> by_date = pairs(ds, direction="nearest")["method"]
    >>> by_pixel = pairs(ds, direction="nearest", per_pixel=True)["method"]
    >>> int((by_date == "synthesize").sum()) <= int((by_pixel == "synthesize").sum())
    True
    """
    if direction not in ("earlier", "nearest"):
        raise ParameterError(f"direction must be 'earlier' or 'nearest', got {direction!r}")
    if not 0.0 <= clear_threshold <= 1.0:
        raise ParameterError(f"clear_threshold must be within [0, 1], got {clear_threshold}")
    s1_gap, ref_age = rule.s1_gap, rule.ref_age
    frac = cloud_fractions(ds) if fractions is None else fractions
    fraction = frac.to_numpy()
    dates = pd.DatetimeIndex(ds["time"].values)
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values) if "s1" in ds.data_vars else None
    # A reference date: clear enough (<= max_ref_cloud) for one date to serve, or, by pixel,
    # any date with a usable pixel (the candidates a composite or blend draws on).
    usable_ref = fraction < 1.0 if per_pixel else fraction <= rule.max_ref_cloud
    s1_of = [nearest_s1(s1_dates, date, s1_gap) for date in dates]

    def sources(i: int) -> list[int]:
        """The dates serving date ``i`` as reference, nearest first."""
        order = _by_distance(dates, usable_ref, dates[i], ref_age, direction)
        return order if per_pixel else order[:1]

    # Which of each date's unusable pixels have a reference value: one pass over the mask
    # for every date at once, and only for dates that could be synthesized (S1 and a
    # reference; never for a cube without S1).
    jobs = {}
    for i in range(len(dates)):
        if shares and fraction[i] > 0 and pd.notna(s1_of[i][0]):
            jobs[i] = sources(i)
    counts = _covered_counts(ds, {i: k for i, k in jobs.items() if k})
    synthesized = np.zeros(len(dates), dtype=bool)  # filled dates a chain may reuse
    any_usable = bool((fraction < 1.0).any())
    side = " before" if direction == "earlier" else ""

    rows = []
    for i, date in enumerate(dates):
        row: dict[str, object] = {"cloud_fraction": float(fraction[i])}
        s1_date, s1_days = s1_of[i]
        ref_date, ref_days = reference_for(dates, usable_ref, date, ref_age, direction)
        row.update(
            s1_date=s1_date,
            s1_gap_days=s1_days,
            reference_date=ref_date,
            reference_age_days=ref_days,
        )
        share = np.nan
        if pd.notna(ref_date) and fraction[i] > 0:
            # A filled date of the chain among the sources: every pixel has a reference.
            if chain and any(synthesized[k] for k in sources(i)):
                share = 1.0
            elif i in counts and counts[i][0] > 0:
                share = counts[i][1] / counts[i][0]
        has_reference = pd.notna(ref_date) and (
            not per_pixel or not shares or pd.isna(s1_date) or share > 0
        )
        if row["cloud_fraction"] <= clear_threshold:
            method = "clear"
            reason = (
                f"cloud fraction {row['cloud_fraction']:.3g} <= threshold {clear_threshold:g}"
                if row["cloud_fraction"] > 0
                else "no unusable pixels to fill"
            )
        elif pd.notna(s1_date) and (has_reference or not needs_reference):
            method, reason = "synthesize", ""
        else:
            missing = []
            if s1_dates is None:
                missing.append("the cube has no s1")
            elif pd.isna(s1_date):
                missing.append(f"no S1 date within {_days(s1_gap)} days")
            if not has_reference and needs_reference:
                missing.append(
                    f"no unusable pixel has a clear observation within {_days(ref_age)} days{side}"
                    if per_pixel
                    else f"no {'earlier ' if direction == 'earlier' else ''}reference date "
                    f"with <= {100 * rule.max_ref_cloud:g}% cloud within {_days(ref_age)} days"
                )
            others_usable = any_usable and bool((np.delete(fraction, i) < 1.0).any())
            method = "interpolate" if others_usable else "none"
            reason = "; ".join(missing)
            if method == "none":
                reason += "; no other date has a usable pixel"
        chained = (
            method == "synthesize"
            and pd.notna(ref_date)
            and bool(synthesized[dates.get_loc(ref_date)])
        )
        # By pixel every synthesized date serves on as its filled image (it was already a
        # candidate, but its clouds now have values); by date, only dates too cloudy to
        # serve as they are.
        source = chain and method == "synthesize" and (per_pixel or not usable_ref[i])
        row.update(
            method=method,
            reason=reason,
            reference_chained=chained,
            chain_source=source,
            reference_share=share,
        )
        if source:
            usable_ref[i] = synthesized[i] = True
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.DatetimeIndex(dates, name="date"))
    return table
