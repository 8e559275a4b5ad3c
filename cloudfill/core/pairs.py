"""Which inputs fill which date: the S1 date and the clear reference S2 date for each S2 date.

The rule (:class:`PairingRule`; the training sampler uses it too, so training and inference
see the same pairs):

- **S1**: the S1 acquisition nearest in time to the target date, if within ``max_s1_gap``.
- **reference**: the nearest *earlier* S2 date whose cloud fraction is at most
  ``max_ref_cloud`` and which is at most ``max_ref_age`` older (the paper's setting: an
  earlier cloud-free image); with ``direction="nearest"`` a later date may be used too.
- **method**: ``"clear"`` when the target itself needs no filling, ``"synthesize"`` when both
  inputs exist, ``"interpolate"`` (temporal fallback) when they do not but some other date is
  usable, ``"none"`` when nothing is usable; ``reason`` says why in words.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import ParameterError

__all__ = [
    "PairingRule",
    "cloud_fractions",
    "nearest_s1",
    "pairs",
    "reference_candidates",
    "reference_for",
]

Direction = Literal["earlier", "nearest"]


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


def pairs(
    ds: xr.Dataset,
    rule: PairingRule = PairingRule(),
    *,
    clear_threshold: float = 0.0,
    direction: Direction = "earlier",
    needs_reference: bool = True,
    fractions: pd.Series | None = None,
    chain: bool = False,
) -> pd.DataFrame:
    """For every S2 date: the S1 date and the clear reference date the fill would use.

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
        Whether the model needs a reference date (SO/SOD variants); an S/SD model can
        synthesize a date that has an S1 acquisition but no reference.
    fractions
        Precomputed :func:`cloud_fractions`, to avoid reading the mask again.
    chain
        Let dates filled by synthesis serve as references for later dates (``fill_series(...,
        chain=True)``): a long cloudy spell is then synthesized date after date from its
        last clear date instead of interpolated. Dates are planned in time order, so a
        filled date only ever serves later dates.

    Returns
    -------
    pandas.DataFrame
        Indexed by S2 date, columns ``cloud_fraction``, ``s1_date``, ``s1_gap_days``,
        ``reference_date``, ``reference_age_days``, ``method``, ``reason``,
        ``reference_chained`` (the reference date is itself a filled date) and
        ``chain_source`` (the date's filled image serves later dates as a reference); the
        last two are only ever True with ``chain``.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> table = pairs(ds)
    >>> list(table.columns)[:3]
    ['cloud_fraction', 's1_date', 's1_gap_days']
    """
    if direction not in ("earlier", "nearest"):
        raise ParameterError(f"direction must be 'earlier' or 'nearest', got {direction!r}")
    if not 0.0 <= clear_threshold <= 1.0:
        raise ParameterError(f"clear_threshold must be within [0, 1], got {clear_threshold}")
    s1_gap, ref_age = rule.s1_gap, rule.ref_age
    frac = cloud_fractions(ds) if fractions is None else fractions
    dates = pd.DatetimeIndex(ds["time"].values)
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values) if "s1" in ds.data_vars else None
    usable_ref = frac.to_numpy() <= rule.max_ref_cloud
    synthesized = np.zeros(len(dates), dtype=bool)  # filled dates a chain may reuse
    any_usable = bool((frac.to_numpy() < 1.0).any())

    rows = []
    for i, date in enumerate(dates):
        row: dict[str, object] = {"cloud_fraction": float(frac.iloc[i])}
        s1_date, s1_days = nearest_s1(s1_dates, date, s1_gap)
        ref_date, ref_days = reference_for(dates, usable_ref, date, ref_age, direction)
        row.update(
            s1_date=s1_date,
            s1_gap_days=s1_days,
            reference_date=ref_date,
            reference_age_days=ref_days,
        )
        if row["cloud_fraction"] <= clear_threshold:
            method = "clear"
            reason = (
                f"cloud fraction {row['cloud_fraction']:.3g} <= threshold {clear_threshold:g}"
                if row["cloud_fraction"] > 0
                else "no unusable pixels to fill"
            )
        elif pd.notna(s1_date) and (pd.notna(ref_date) or not needs_reference):
            method, reason = "synthesize", ""
        else:
            missing = []
            if s1_dates is None:
                missing.append("the cube has no s1")
            elif pd.isna(s1_date):
                missing.append(f"no S1 date within {_days(s1_gap)} days")
            if pd.isna(ref_date) and needs_reference:
                missing.append(
                    f"no {'earlier ' if direction == 'earlier' else ''}reference date with "
                    f"<= {100 * rule.max_ref_cloud:g}% cloud within {_days(ref_age)} days"
                )
            others_usable = any_usable and bool((np.delete(frac.to_numpy(), i) < 1.0).any())
            method = "interpolate" if others_usable else "none"
            reason = "; ".join(missing)
            if method == "none":
                reason += "; no other date has a usable pixel"
        chained = (
            method == "synthesize"
            and pd.notna(ref_date)
            and bool(synthesized[dates.get_loc(ref_date)])
        )
        source = chain and method == "synthesize" and not usable_ref[i]
        row.update(method=method, reason=reason, reference_chained=chained, chain_source=source)
        if source:
            usable_ref[i] = synthesized[i] = True
        rows.append(row)
    table = pd.DataFrame(rows, index=pd.DatetimeIndex(dates, name="date"))
    return table
