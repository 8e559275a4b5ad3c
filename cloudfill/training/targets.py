"""Which patches of which dates are training samples: the scan behind
:func:`~cloudfill.training.index.build_index`.

Target dates are those with an S1 pair (and a reference for SO/SOD, by the
:class:`~cloudfill.core.pairs.PairingRule`; for composite and blended references paired by
pixel, any date with a usable pixel in range) and some clear pixels; a patch of a date becomes a
sample when its cloud fraction is below ``max_cloud``. For composite and blended references,
:class:`ReferenceTables` lists the dates each target's reference draws on. Also the scene-wide
normalisation statistics training uses (:func:`training_stats`).

The functions are the steps of :func:`~cloudfill.training.index.build_index`, in its order.
No torch here: the index is built and inspected without it.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill._dates import as_dates
from cloudfill.core.grid import SPLITS, PatchGrid
from cloudfill.core.pairs import PairingRule, nearest_s1, reference_candidates
from cloudfill.core.variants import Variant
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.sanity import check_dem, check_values
from cloudfill.cube.schema import BANDS, conform, validate
from cloudfill.cube.zarr_io import open_cube
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.model.card import REFERENCE_DIRECTIONS
from cloudfill.preprocess.despeckle import SIZES
from cloudfill.preprocess.despeckle import despeckle as despeckle_cube
from cloudfill.preprocess.normalise import NormStats, VariableRange, scene_stats

__all__ = [
    "ReferenceTables",
    "check_despeckle",
    "cloud_pass",
    "open_checked",
    "reference_tables",
    "sample_table",
    "target_dates",
    "training_stats",
    "wanted_dates",
]


@dataclass(frozen=True)
class ReferenceTables:
    """Which dates the composite or blended reference of each target date draws on.

    Built by :func:`reference_tables`; empty for single-date references.

    Attributes
    ----------
    candidates
        Per target date index ``t``: the date indices the reference draws on, nearest first
        (empty for single-date references).
    blend
        For ``reference="blend"``: per target date index ``t``, each candidate's offset in
        days from the target and the index of its S1 date (-1: none within ``max_s1_gap``).
    """

    candidates: dict[int, tuple[int, ...]] = field(default_factory=dict)
    blend: dict[int, tuple[tuple[float, ...], tuple[int, ...]]] = field(default_factory=dict)


def training_stats(
    ds: xr.Dataset, *, s1_dates: Sequence[Any] | None = None, despeckle: int | None = 5
) -> NormStats:
    """Scene-wide normalisation statistics as training uses them.

    Percentile clip ranges (:func:`cloudfill.preprocess.normalise.scene_stats`) of ``s1``
    (despeckled with ``despeckle``, over ``s1_dates`` only when given: the dates training
    pairs with its targets) and ``dem``; ``s2`` gets the physical reflectance range
    :data:`S2_RANGE` instead of the scene's percentiles. The training scene's 0.1 and 99.9
    percentiles clipped 10-18 % of other scenes' values (dark water, bright snow), which the
    model could then neither see nor predict (``benchmarks/probe_learning.py``).

    Examples
    --------
    >>> import cloudfill
    >>> stats = training_stats(cloudfill.simulate_scene((64, 64), seed=0), despeckle=3)
    >>> sorted(stats.variables)
    ['dem', 's1', 's2']
    """
    ds = conform(ds)
    keep = [n for n in ("s1", "s2", "dem", "cloud", "scl") if n in ds.data_vars]
    sub = ds[keep]
    if s1_dates is not None and "s1" in sub.data_vars:
        sub = sub.sel(s1_time=pd.DatetimeIndex(list(s1_dates)).unique().sort_values())
    if despeckle and "s1" in sub.data_vars:
        sub = despeckle_cube(sub, despeckle)
    stats = scene_stats(sub, [n for n in ("s1", "dem") if n in sub.data_vars])
    low, high = S2_RANGE
    bands = VariableRange(BANDS, (low,) * len(BANDS), (high,) * len(BANDS))
    return dataclasses.replace(stats, variables={**stats.variables, "s2": bands})


S2_RANGE: tuple[float, float] = (0.0, 1.0)
"""The S2 reflectance range a training run normalises to the target range (fixed, not
the scene's)."""


def check_despeckle(size: int | None) -> int | None:
    """A despeckling window as training uses it: None for none (0 too), else 3..11, odd.

    Examples
    --------
    >>> check_despeckle(0), check_despeckle(5)
    (None, 5)
    """
    if size is None or size == 0:
        return None
    if isinstance(size, bool) or int(size) not in SIZES:
        raise ParameterError(f"despeckle must be None or an odd window in 3..11, got {size!r}")
    return int(size)


def open_checked(
    ds: xr.Dataset | str | os.PathLike[str], spec: Variant, despeckle: int | None
) -> tuple[xr.Dataset, int | None]:
    """The conformed cube with the variant's inputs, and the despeckling still to do.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.core.variants import get_variant
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> open_checked(ds.drop_vars("dem"), get_variant("SD"), 5)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ModelMismatchError: variant SD uses the DEM but the cube has no 'dem'
    """
    if isinstance(ds, (str, os.PathLike)):
        ds = open_cube(ds)
    ds = conform(ds)  # anything but a Dataset is refused here, before any work
    if "s1" not in ds.data_vars:
        raise ModelMismatchError(f"variant {spec.name} needs S1 SAR but the cube has no 's1'")
    if spec.uses_dem and "dem" not in ds.data_vars:
        raise ModelMismatchError(f"variant {spec.name} uses the DEM but the cube has no 'dem'")
    check_values(validate(ds, require=("s2", "s1"), require_crs=False))
    if spec.uses_dem:
        check_dem(ds)
    if despeckle and "despeckle" in ds["s1"].attrs:
        warnings.warn(
            f"s1 is already despeckled ({ds['s1'].attrs['despeckle']}); not despeckling again",
            UserWarning,
            stacklevel=3,
        )
        despeckle = None
    return ds, despeckle


def wanted_dates(
    dates: Sequence[Any] | None, ds: xr.Dataset, rule: PairingRule
) -> pd.DatetimeIndex | None:
    """The requested target dates (None: all), checked against the cube's S2 and S1 dates.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> wanted_dates(None, ds, PairingRule()) is None
    True
    >>> list(wanted_dates([ds.time.values[1]], ds, PairingRule())) == [ds.time.values[1]]
    True
    """
    wanted = None if dates is None else as_dates(dates)
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    if wanted is not None:
        missing = wanted.difference(s2_dates)
        if len(missing):
            raise ParameterError(f"dates: {missing[0]:%Y-%m-%d} is not an S2 date of the cube")
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values)
    candidates = wanted if wanted is not None else s2_dates
    if not any((abs(s1_dates - d) <= rule.s1_gap).any() for d in candidates):
        raise ModelMismatchError(
            f"no S2 date has an S1 date within {rule.max_s1_gap:g} days: nothing to train on"
        )
    return wanted


def cloud_pass(
    ds: xr.Dataset, grid: PatchGrid, wanted: pd.DatetimeIndex | None
) -> tuple[pd.Series, dict[int, np.ndarray]]:
    """One pass over the mask: scene cloud fraction per date (for the pairing rule) and the
    cloud fraction of every grid patch of each wanted date.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.core.grid import patch_grid
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> scene, patches = cloud_pass(ds, patch_grid((64, 64), 32, 0, block_size=32), None)
    >>> len(scene) == ds.sizes["time"] == len(patches), patches[0].shape
    (True, (4,))
    """
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    mask = cloud_mask(ds)
    by_date, patch_cloud = [], {}
    for t in range(len(s2_dates)):
        plane = np.asarray(mask.isel(time=t).values, dtype=bool)
        by_date.append(float(plane.mean()))
        if wanted is None or s2_dates[t] in wanted:
            # A loop of small sums: memory stays O(scene) even for 10980^2 tiles, and fast.
            patch_cloud[t] = np.array(
                [plane[y : y + grid.size, x : x + grid.size].mean() for y, x in grid.origins],
                dtype=np.float64,
            )
    scene = pd.Series(by_date, index=pd.DatetimeIndex(s2_dates, name="date"))
    return scene.rename("cloud_fraction"), patch_cloud


def _eligible(table: pd.DataFrame, uses_reference: bool) -> tuple[pd.Series, pd.Series]:
    """Which dates can be targets, and in words why the others cannot."""
    reasons = pd.Series("", index=table.index, dtype=object)
    reasons[table["cloud_fraction"] >= 1.0] = "no clear pixel"
    reasons[(reasons == "") & table["s1_date"].isna()] = "no S1 date close enough"
    if uses_reference:
        reasons[(reasons == "") & table["reference_date"].isna()] = "no usable reference date"
    return reasons == "", reasons


def target_dates(
    table: pd.DataFrame,
    spec: Variant,
    wanted: pd.DatetimeIndex | None,
    rule: PairingRule,
    *,
    per_pixel: bool = False,
) -> pd.Series:
    """The target dates (a boolean Series over the pairing table); errors say why none.

    ``per_pixel``: the table pairs by pixel (``pairs(..., per_pixel=True)``, a composite or
    blend reference), so a reference is any date with a usable pixel, not a clear date.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.core.pairs import pairs
    >>> from cloudfill.core.variants import get_variant
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> targets = target_dates(pairs(ds), get_variant("S"), None, PairingRule())
    >>> bool(targets.any())
    True
    """
    ok, reasons = _eligible(table, spec.uses_reference)
    if wanted is not None:
        bad = [d for d in wanted if not ok[d]]
        if bad:
            raise ParameterError(f"date {bad[0]:%Y-%m-%d} cannot be a target: {reasons[bad[0]]}")
        ok = ok & table.index.isin(wanted)
    if not ok.any():
        if spec.uses_reference and table["reference_date"].isna().all():
            if per_pixel:
                raise ModelMismatchError(
                    f"variant {spec.name} needs a reference and no S2 date has another "
                    f"date with a usable pixel within {rule.max_ref_age:g} days; train an "
                    "S or SD model"
                )
            raise ModelMismatchError(
                f"variant {spec.name} needs a clear reference S2 date (<= "
                f"{100 * rule.max_ref_cloud:g}% cloud, at most {rule.max_ref_age:g} days "
                "earlier) and the cube has none; train an S or SD model"
            )
        detail = "; ".join(f"{d:%Y-%m-%d}: {r}" for d, r in reasons.items())
        raise ParameterError(f"no S2 date can be a training target ({detail})")
    return ok


def _chunk_ids(bounds: tuple[np.ndarray, np.ndarray], origins: np.ndarray) -> np.ndarray:
    by, bx = bounds
    cy = np.searchsorted(by, origins[:, 0], "right") - 1
    cx = np.searchsorted(bx, origins[:, 1], "right") - 1
    return cy * (len(bx) - 1) + cx


def sample_table(
    ds: xr.Dataset,
    table: pd.DataFrame,
    targets: pd.Series,
    grid: PatchGrid,
    split_codes: np.ndarray,
    patch_cloud: dict[int, np.ndarray],
    bounds: tuple[np.ndarray, np.ndarray],
    max_cloud: float,
) -> pd.DataFrame:
    """One row per sample: the grid patches of each target date below ``max_cloud``.

    ``split_codes`` are the blocks' split codes; ``bounds`` the S2 chunk bounds (a sample's
    ``group`` is its date and chunk).

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.core.grid import patch_grid, split_blocks
    >>> from cloudfill.core.pairs import pairs
    >>> from cloudfill.core.variants import get_variant
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> grid = patch_grid((64, 64), 32, 0, block_size=32)
    >>> table = pairs(ds)
    >>> targets = target_dates(table, get_variant("S"), None, PairingRule())
    >>> bounds = (np.array([0, 64]), np.array([0, 64]))
    >>> samples = sample_table(ds, table, targets, grid, split_blocks(grid.n_blocks),
    ...                        cloud_pass(ds, grid, None)[1], bounds, 0.5)
    >>> sorted(set(samples["split"])) == ["test", "train", "val"]
    True
    """
    grid_codes = split_codes[grid.blocks[:, 0], grid.blocks[:, 1]]
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values)
    group_of_origin = _chunk_ids(bounds, grid.origins)
    n_chunks = (len(bounds[0]) - 1) * (len(bounds[1]) - 1)
    frames = []
    for t, date in enumerate(s2_dates):
        if not targets[date]:
            continue
        keep = np.flatnonzero(patch_cloud[t] < max_cloud)
        row = table.loc[date]
        ref = row["reference_date"]
        columns = {
            "split": [SPLITS[c] for c in grid_codes[keep]],
            "date": date,
            "s1_date": row["s1_date"],
            "reference_date": ref,
            "t": t,
            "s1_t": int(s1_dates.get_loc(row["s1_date"])),
            "ref_t": -1 if pd.isna(ref) else int(s2_dates.get_loc(ref)),
            "y0": grid.origins[keep, 0],
            "x0": grid.origins[keep, 1],
            "block_row": grid.blocks[keep, 0],
            "block_col": grid.blocks[keep, 1],
            "cloud_fraction": patch_cloud[t][keep],
            "group": t * n_chunks + group_of_origin[keep],
        }
        frames.append(pd.DataFrame(columns))
    samples = pd.concat(frames, ignore_index=True)
    if samples.empty:
        raise ParameterError(
            f"no patch of the target dates is less than {100 * max_cloud:g}% cloudy; "
            "raise max_cloud or use smaller patches"
        )
    return samples


def reference_tables(
    ds: xr.Dataset,
    samples: pd.DataFrame,
    fractions: pd.Series,
    rule: PairingRule,
    reference: str,
) -> ReferenceTables:
    """The dates each target's composite or blended reference draws on, nearest first.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.core.pairs import cloud_fractions
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> samples = pd.DataFrame({"t": [2]})
    >>> tables = reference_tables(ds, samples, cloud_fractions(ds), PairingRule(), "blend")
    >>> list(tables.candidates) == list(tables.blend) == [2]
    True
    """
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values)
    direction = REFERENCE_DIRECTIONS[reference]
    fraction = fractions.to_numpy()
    tables = ReferenceTables()
    for t in sorted(set(samples["t"].tolist())):
        chosen = reference_candidates(s2_dates, fraction, s2_dates[t], rule.ref_age, direction)
        tables.candidates[t] = tuple(int(s2_dates.get_loc(d)) for d in chosen)
        if reference == "blend":
            near = [nearest_s1(s1_dates, d, rule.s1_gap)[0] for d in chosen]
            tables.blend[t] = (
                tuple((d - s2_dates[t]) / pd.Timedelta(days=1) for d in chosen),
                tuple(-1 if pd.isna(d) else int(s1_dates.get_loc(d)) for d in near),
            )
    return tables
