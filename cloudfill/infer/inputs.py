"""What the generator sees for one target date: the paired dates and the condition stack.

:func:`synthesis_inputs` picks the S1 date and the reference date(s) by the pairing rule (unless
given), despeckles each S1 date it needs once, and builds the normalised condition stack with a
last ``valid`` channel (1 where a pixel has its inputs). :func:`cloudfill.infer.synthesize`
then only cuts that stack into blocks and runs the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.core.condition import condition_stack
from cloudfill.core.pairs import (
    PER_PIXEL_MODES,
    PairingRule,
    cloud_fractions,
    nearest_s1,
    reference_candidates,
    reference_for,
    required_s1,
)
from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import ParameterError
from cloudfill.preprocess.despeckle import despeckle
from cloudfill.preprocess.normalise import NormStats

__all__ = ["DEFAULT_DESPECKLE", "VALID_CHANNEL", "SynthesisInputs", "synthesis_inputs"]

DEFAULT_DESPECKLE = 5
#: Last channel of the blocks fed to the generator: 1 where a pixel has its inputs (S1 data
#: and, for SO/SOD, a usable reference value), else 0 and the output is NaN there.
VALID_CHANNEL = "valid"


@dataclass(frozen=True)
class SynthesisInputs:
    """The condition stack (with its ``valid`` channel) and the dates it was built from."""

    condition: xr.DataArray
    stats: NormStats
    s1_date: pd.Timestamp
    reference_date: pd.Timestamp | None


def _pick_inputs(
    ds: xr.Dataset,
    date: pd.Timestamp,
    needs_reference: bool,
    rule: PairingRule,
    fractions: pd.Series,
    direction: str = "earlier",
    per_pixel: bool = False,
) -> tuple[pd.Timestamp, pd.Timestamp | None]:
    """The S1 date and reference date of ``date`` as :func:`~cloudfill.core.pairs.pairs`
    pairs them; ``per_pixel`` (a composite or blend model) takes the nearest date with any
    usable pixel, where a single reference date must be clear (``max_ref_cloud``)."""
    s1_date = required_s1(pd.DatetimeIndex(ds["s1_time"].values), date, rule)
    if not needs_reference:
        return s1_date, None
    # By pixel, the reference_date column of pairs(): the nearest candidate of the composite
    # or blend (the other candidates join in _composite_dates). Whether the date's clouds
    # are covered is not asked: synthesize() also predicts clear dates (evaluation), and
    # pixels no candidate covers come out NaN (the ``valid`` channel), never invented.
    frac = fractions.to_numpy()
    ref, _ = reference_for(
        pd.DatetimeIndex(ds["time"].values),
        frac < 1.0 if per_pixel else frac <= rule.max_ref_cloud,
        date,
        rule.ref_age,
        direction,  # type: ignore[arg-type]
    )
    if pd.isna(ref):
        side = "earlier " if direction == "earlier" else ""
        if per_pixel:
            raise ParameterError(
                f"no {side}S2 date with a usable pixel within {rule.max_ref_age:g} days of "
                f"{date:%Y-%m-%d} to build the reference from"
            )
        raise ParameterError(
            f"no {side}S2 date with <= {100 * rule.max_ref_cloud:g}% cloud within "
            f"{rule.max_ref_age:g} days of {date:%Y-%m-%d} to use as reference"
        )
    return s1_date, ref


def _composite_dates(
    ds: xr.Dataset,
    date: pd.Timestamp,
    reference_date: Any,
    rule: PairingRule,
    fractions: pd.Series,
) -> list[pd.Timestamp]:
    """Candidate dates of a composite reference, nearest first; an explicitly given
    ``reference_date`` always takes part."""
    times = pd.DatetimeIndex(ds["time"].values)
    wanted = reference_candidates(
        times, fractions.reindex(times).to_numpy(), date, rule.ref_age, "nearest"
    )
    reference_date = pd.Timestamp(reference_date)
    if reference_date not in wanted:
        wanted.append(reference_date)
        wanted.sort(key=lambda d: (abs(d - date), d))
    return wanted


def _despeckled_s1(ds: xr.Dataset, card: Any, s1_wanted: list[pd.Timestamp]) -> xr.Dataset:
    """The cube with ``s1`` reduced to the wanted dates, despeckled as training did."""
    # The median window training used (``train`` records it as "despeckle"; None: none), and,
    # as in training, none on S1 that is already despeckled (``ds.cloudfill.preprocess()``).
    size = int((card.training or {}).get("despeckle", DEFAULT_DESPECKLE) or 0)
    if "despeckle" in ds["s1"].attrs:
        size = 0
    # One despeckle per S1 date: the same graph keys whichever target asks for it, so a
    # fill_series computing many dates despeckles each S1 date once.
    one_by_one = [ds[["s1"]].sel(s1_time=[t]) for t in s1_wanted]
    if size:
        one_by_one = [despeckle(one, size=size) for one in one_by_one]
    s1_ds = xr.concat(one_by_one, "s1_time") if len(one_by_one) > 1 else one_by_one[0]
    # Drop the full S1 time axis too, or the selected S1 would be re-aligned onto it.
    return ds.drop_vars(["s1", "s1_time"], errors="ignore").assign(s1=s1_ds["s1"])


def _with_valid(
    condition: xr.DataArray, cube: xr.Dataset, s1_date: pd.Timestamp, has_reference: Any
) -> xr.DataArray:
    # No data in S1 (or, for SO/SOD, no usable reference value: the generator was never
    # trained without one) means nothing to condition on: those pixels stay empty, never
    # invented; fill_series interpolates them. The mask rides along as a last channel so
    # each block task consumes it with its inputs: as a separate branch joined at the end,
    # dask ran it for every block up front, and memory grew with the area.
    valid = ~np.isnan(cube["s1"].sel(s1_time=s1_date)).any("pol")
    if has_reference is not None:
        valid = valid & has_reference
    valid = valid.drop_vars([c for c in valid.coords if c not in ("y", "x")])
    valid = valid.astype("float32").expand_dims(channel=[VALID_CHANNEL])
    return xr.concat([condition, valid], "channel", coords="minimal", compat="override")


def synthesis_inputs(
    ds: xr.Dataset,
    date: pd.Timestamp,
    cf: Any,
    rule: PairingRule,
    s1_date: Any = None,
    reference_date: Any = None,
    fractions: pd.Series | None = None,
) -> SynthesisInputs:
    """The generator's condition for ``date`` and the dates it uses.

    Parameters
    ----------
    ds
        A contract cube.
    date
        The target date.
    cf
        The :class:`~cloudfill.model.runtime.CloudfillModel` (its card gives the variant,
        the reference mode and direction, the normalisation and the despeckle window).
    rule
        The pairing rule.
    s1_date, reference_date
        Force the inputs instead of pairing them.
    fractions
        Precomputed :func:`~cloudfill.core.pairs.cloud_fractions`.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.model import CloudfillModel, Generator
    >>> from cloudfill.preprocess.normalise import scene_stats
    >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
    >>> model = CloudfillModel(Generator("S", base_filters=4, n_blocks=1))
    >>> model.card.normalisation = scene_stats(ds).to_dict()
    >>> inputs = synthesis_inputs(ds, ds.indexes["time"][2], model, PairingRule())
    >>> list(inputs.condition.channel.values)
    ['VV', 'VH', 'valid']
    """
    card = cf.card
    if card.normalisation is None:
        raise ParameterError("the model card has no normalisation statistics; retrain or re-save")
    stats = NormStats.from_dict(card.normalisation)
    composite = cf.variant.uses_reference and card.reference_mode in PER_PIXEL_MODES
    blend = composite and card.reference_mode == "blend"
    if fractions is None and (s1_date is None or composite):
        fractions = cloud_fractions(ds)  # one pass over the mask serves every use below
    if s1_date is None:
        s1_date, picked_ref = _pick_inputs(
            ds,
            date,
            cf.variant.uses_reference,
            rule,
            fractions,
            card.reference_direction,
            per_pixel=composite,
        )
        reference_date = picked_ref if reference_date is None else reference_date
    s1_date = pd.Timestamp(s1_date)
    ref_dates, ref_s1_dates, mask, has_reference = None, None, None, None
    s1_wanted = [s1_date]
    if reference_date is not None and cf.variant.uses_reference:
        used = [pd.Timestamp(reference_date)]
        if composite:
            ref_dates = used = _composite_dates(ds, date, reference_date, rule, fractions)
        if blend:
            s1_times = pd.DatetimeIndex(ds["s1_time"].values)
            ref_s1_dates = [nearest_s1(s1_times, d, rule.s1_gap)[0] for d in ref_dates]
            s1_wanted += sorted({d for d in ref_s1_dates if not pd.isna(d)} - {s1_date})
        # The mask of the source dates serves the condition stack and ``has_reference``:
        # where no source date has a usable value the generator would see only S1 (and the
        # DEM), which it was never trained on, so those pixels are left NaN.
        mask = cloud_mask(ds.sel(time=used))
        usable = ~mask & ds["s2"].sel(time=used).notnull().all("band")
        has_reference = usable.any("time").drop_vars("spatial_ref", errors="ignore")
    cube = _despeckled_s1(ds, card, s1_wanted)
    # A context variant reads the date's own clear pixels: unusable by the same mask rule as
    # the reference dates' (the cube's cloud mask).
    target_mask = (
        cloud_mask(ds.sel(time=[pd.Timestamp(date)])).isel(time=0)
        if cf.variant.uses_context and pd.Timestamp(date) in ds.indexes["time"]
        else None
    )
    condition = condition_stack(
        cube,
        date,
        stats,
        cf.variant.name,
        s1_date=s1_date,
        reference_date=reference_date,
        reference_mask=None if mask is None or composite else mask.isel(time=0),
        reference_dates=ref_dates,
        mask=mask,
        reference_s1_dates=ref_s1_dates,
        target_mask=target_mask,
    )
    condition = _with_valid(condition, cube, s1_date, has_reference)
    reference = None if reference_date is None else pd.Timestamp(reference_date)
    return SynthesisInputs(condition, stats, s1_date, reference)
