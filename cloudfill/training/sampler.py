"""Training patches read straight from a cube: index, split, dataset and chunk-wise sampler.

A training sample is one patch of one target S2 date: ``(condition, target, valid)`` with

- ``condition`` (C, h, w) float32: the variant's channel stack built by
  :func:`cloudfill.core.condition.assemble_condition` from S1 at the paired date
  (despeckled), the reference S2 (NaN where cloudy, hence 0) and the DEM, normalised with the
  scene-wide statistics: inference goes through the same function, so both see the same
  numbers;
- ``target`` (4, h, w) float32: the target date's B02, B03, B04, B08, normalised
  (:func:`~cloudfill.core.condition.normalise_bands`), 0 where not valid;
- ``valid`` (1, h, w) bool: the target pixel is clear (cloud mask) and finite in every band.
  Losses count only these pixels.

Dates follow :func:`cloudfill.core.pairs.pairs` (nearest S1 within ``max_s1_gap`` days,
nearest earlier reference with at most ``max_ref_cloud`` cloud within ``max_ref_age`` days),
the rule inference uses. With ``reference="composite"`` the reference of a patch is instead
:func:`~cloudfill.core.condition.composite_reference` of every other date within
``max_ref_age`` (earlier or later, nearest first), as inference builds it for such models;
with ``reference="blend"`` it is :func:`~cloudfill.core.condition.blend_reference` of the
same dates, each with the despeckled S1 nearest to it (within ``max_s1_gap``).
Target dates are those with an S1 pair (and a reference for SO/SOD) and some clear pixels;
a patch of a date becomes a sample when its cloud fraction is below ``max_cloud``.

**Despeckling** is done per patch: the S1 window is read with a halo of ``despeckle // 2``
pixels (clipped at the scene border), median-filtered with
:func:`cloudfill.preprocess.despeckle.median_filter` and cropped. Inside the scene the halo
holds the true neighbours and at the border the filter reflects at the same edge as a
scene-wide filter, so the patch equals the scene-level :func:`~cloudfill.preprocess.despeckle`
exactly, border included. No despeckled copy of the cube is ever written.

**Patch grid and split**: see :mod:`cloudfill.core.grid` (4-aligned origins, spatial
blocks assigned 80/10/10 by a seeded permutation, patches never straddle blocks).

**Reading**: see :mod:`cloudfill.training.reader` (chunks decoded once into a per-process
cache). :class:`ChunkSampler` orders an epoch chunk group by chunk group (a group = the
patches of one target date inside one chunk), interleaving a few groups at a time, so the
cache hits; groups and members are shuffled with a seed per epoch.

**Augmentation** (training split only): one of the 8 flips/rotations of the square, chosen
from a hash of (seed, epoch, sample), applied alike to condition, target and mask, so it is
reproducible and independent of worker processes.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from cloudfill._dates import as_dates
from cloudfill.core.condition import (
    assemble_condition,
    blend_reference,
    composite_reference,
    normalise_bands,
    s1_to_units,
)
from cloudfill.core.grid import ALIGN, SPLITS, PatchGrid, patch_grid, split_blocks
from cloudfill.core.pairs import PairingRule, nearest_s1, pairs, reference_candidates
from cloudfill.core.variants import get_variant
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, conform, validate
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.model.card import REFERENCE_DIRECTIONS, REFERENCE_MODES
from cloudfill.preprocess.despeckle import SIZES, median_filter
from cloudfill.preprocess.normalise import NormStats, scene_stats
from cloudfill.training.reader import DEFAULT_CACHE_BYTES, CubeReader

__all__ = [
    "ChunkSampler",
    "PatchDataset",
    "PatchIndex",
    "build_index",
    "sample_patches",
    "training_stats",
]

DEFAULT_MAX_CLOUD = 0.5
"""A patch of a target date is a sample when less than this fraction of it is cloudy."""


def _mix64(value: int) -> int:
    # splitmix64 finaliser: a cheap, well-mixed integer hash (no RNG state to carry).
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)


def augmentation_code(seed: int, epoch: int, index: int) -> int:
    """Which of the 8 dihedral transforms sample ``index`` gets in ``epoch`` (0 = none).

    Examples
    --------
    >>> augmentation_code(0, 0, 0) == augmentation_code(0, 0, 0)
    True
    """
    return _mix64(_mix64(_mix64(int(seed)) ^ int(epoch)) ^ int(index)) % 8


def augment(array: np.ndarray, code: int) -> np.ndarray:
    """Rotate by ``code % 4`` quarter turns, then flip left-right if ``code >= 4``.

    Examples
    --------
    >>> augment(np.arange(4).reshape(1, 2, 2), 1).tolist()
    [[[1, 3], [0, 2]]]
    """
    out = np.rot90(array, code % 4, axes=(-2, -1))
    if code >= 4:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)


def training_stats(
    ds: xr.Dataset, *, s1_dates: Sequence[Any] | None = None, despeckle: int | None = 5
) -> NormStats:
    """Scene-wide normalisation statistics as training uses them.

    Percentile clip ranges (:func:`cloudfill.preprocess.normalise.scene_stats`) of ``s1``
    (despeckled with ``despeckle``, over ``s1_dates`` only when given: the dates training
    pairs with its targets), ``s2`` (clear pixels of all dates) and ``dem``.

    Examples
    --------
    >>> import cloudfill
    >>> stats = training_stats(cloudfill.simulate_scene((64, 64), seed=0), despeckle=3)
    >>> sorted(stats.variables)
    ['dem', 's1', 's2']
    """
    from cloudfill.preprocess.despeckle import despeckle as despeckle_cube

    ds = conform(ds)
    keep = [n for n in ("s1", "s2", "dem", "cloud", "scl") if n in ds.data_vars]
    sub = ds[keep]
    if s1_dates is not None and "s1" in sub.data_vars:
        sub = sub.sel(s1_time=pd.DatetimeIndex(list(s1_dates)).unique().sort_values())
    if despeckle and "s1" in sub.data_vars:
        sub = despeckle_cube(sub, despeckle)
    return scene_stats(sub, [n for n in ("s1", "s2", "dem") if n in sub.data_vars])


@dataclass
class PatchIndex:
    """Every training sample of a scene, its split, and what is needed to read it.

    Built by :func:`build_index`; :meth:`dataset` gives the torch Dataset of one split.

    Attributes
    ----------
    reader
        The :class:`~cloudfill.training.reader.CubeReader` of the cube.
    variant
        The variant whose date rule selected the targets (SO/SOD need a reference); datasets
        of variants needing no more inputs can share the index.
    stats
        Scene-wide normalisation statistics.
    grid
        The patch grid.
    split_codes
        (rows, cols) split code per block (index into ``SPLITS``).
    samples
        One row per sample: ``split``, ``date``, ``s1_date``, ``reference_date``, indices
        ``t``, ``s1_t``, ``ref_t`` (-1 = none), ``y0``, ``x0``, ``block_row``, ``block_col``,
        ``cloud_fraction`` (of the patch) and ``group`` (chunk group).
    despeckle
        Median window applied to S1 patches (None: none).
    config
        The settings that built the index (JSON-safe).
    candidates
        For ``reference="composite"`` or ``"blend"``: per target date index ``t``, the date
        indices the reference draws on, nearest first (empty for single-date references).
    blend
        For ``reference="blend"``: per target date index ``t``, each candidate's offset in
        days from the target and the index of its S1 date (-1: none within ``max_s1_gap``).
    """

    reader: CubeReader
    variant: str
    stats: NormStats
    grid: PatchGrid
    split_codes: np.ndarray
    samples: pd.DataFrame
    despeckle: int | None
    seed: int
    config: dict[str, Any] = field(default_factory=dict)
    candidates: dict[int, tuple[int, ...]] = field(default_factory=dict)
    blend: dict[int, tuple[tuple[float, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Patch side in pixels."""
        return self.grid.size

    def counts(self) -> dict[str, int]:
        """Number of samples per split."""
        return {name: int((self.samples["split"] == name).sum()) for name in SPLITS}

    def dataset(
        self, split: str = "train", *, variant: str | None = None, augment: bool | None = None
    ) -> PatchDataset:
        """The :class:`PatchDataset` of ``split`` (``"train"``, ``"val"``, ``"test"``).

        ``variant`` defaults to the index's; a variant needing a reference requires an index
        built for one. ``augment`` defaults to True for the training split only.
        """
        if split not in SPLITS:
            raise ParameterError(f"split must be one of {list(SPLITS)}, got {split!r}")
        spec = get_variant(variant or self.variant)
        if spec.uses_reference and not get_variant(self.variant).uses_reference:
            raise ModelMismatchError(
                f"variant {spec.name} needs reference dates but the index was built for "
                f"{self.variant}, whose targets may lack one"
            )
        rows = self.samples[self.samples["split"] == split].reset_index(drop=True)
        return PatchDataset(
            self.reader,
            self.stats,
            spec.name,
            rows,
            self.size,
            despeckle=self.despeckle,
            augment=split == "train" if augment is None else augment,
            seed=self.seed,
            split=split,
            candidates=self.candidates if spec.uses_reference else None,
            blend=self.blend if spec.uses_reference else None,
        )

    def split_record(self) -> dict[str, Any]:
        """The split as the model card's ``split`` field records it (JSON-safe)."""
        codes = self.split_codes
        grid_codes = self.grid_codes()
        patches = {name: int((grid_codes == k).sum()) for k, name in enumerate(SPLITS)}
        return {
            "method": "spatial blocks",
            "block_size": self.grid.block_size,
            "n_blocks": list(self.grid.n_blocks),
            "seed": self.seed,
            "fractions": list(self.config.get("fractions", (0.8, 0.1, 0.1))),
            "codes": {str(k): name for k, name in enumerate(SPLITS)},
            "assignment": codes.astype(int).tolist(),
            "patch_size": self.grid.size,
            "step": self.grid.step,
            "origin_alignment": ALIGN,
            "patches": patches,
            "samples": self.counts(),
            "dates": sorted({f"{d:%Y-%m-%d}" for d in self.samples["date"]}),
        }

    def grid_codes(self) -> np.ndarray:
        """Split code of every grid patch (whatever the date)."""
        return self.split_codes[self.grid.blocks[:, 0], self.grid.blocks[:, 1]]


def _check_despeckle(size: int | None) -> int | None:
    if size is None or size == 0:
        return None
    if isinstance(size, bool) or int(size) not in SIZES:
        raise ParameterError(f"despeckle must be None or an odd window in 3..11, got {size!r}")
    return int(size)


def _patch_cloud(mask: np.ndarray, origins: np.ndarray, size: int) -> np.ndarray:
    # A loop of small sums: memory stays O(scene) even for 10980^2 tiles, and it is fast.
    return np.array([mask[y : y + size, x : x + size].mean() for y, x in origins], dtype=np.float64)


def _chunk_ids(bounds: tuple[np.ndarray, np.ndarray], origins: np.ndarray) -> np.ndarray:
    by, bx = bounds
    cy = np.searchsorted(by, origins[:, 0], "right") - 1
    cx = np.searchsorted(bx, origins[:, 1], "right") - 1
    return cy * (len(bx) - 1) + cx


def _eligible(table: pd.DataFrame, uses_reference: bool) -> tuple[pd.Series, pd.Series]:
    """Which dates can be targets, and in words why the others cannot."""
    reasons = pd.Series("", index=table.index, dtype=object)
    reasons[table["cloud_fraction"] >= 1.0] = "no clear pixel"
    reasons[(reasons == "") & table["s1_date"].isna()] = "no S1 date close enough"
    if uses_reference:
        reasons[(reasons == "") & table["reference_date"].isna()] = "no usable reference date"
    return reasons == "", reasons


def build_index(
    ds: xr.Dataset | str | os.PathLike[str],
    variant: str = "SOD",
    size: int = 256,
    overlap: int = 25,
    *,
    stats: NormStats | None = None,
    block_size: int | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    max_cloud: float = DEFAULT_MAX_CLOUD,
    dates: Sequence[Any] | None = None,
    despeckle: int | None = 5,
    max_s1_gap: float = 6,
    max_ref_age: float = 120,
    max_ref_cloud: float = 0.05,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
    reference: str = "date",
) -> PatchIndex:
    """Find every training sample of a cube and split them by spatial blocks.

    Reads coordinates, then the cloud mask once (one pass over ``cloud``/``scl`` and ``s2``
    per date), then, unless ``stats`` is given, the scene statistics (two passes). Bad input
    is reported before any of that.

    Parameters
    ----------
    ds
        A contract cube, or the path of a zarr store (read chunk by chunk, never
        materialised).
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``: fixes the inputs and whether a target needs
        a reference date.
    size, overlap
        Patch side (multiple of 4, >= 16) and minimum overlap of neighbouring patches.
    stats
        Normalisation statistics to use (e.g. from another run); default
        :func:`training_stats` of this scene.
    block_size
        Side of the split blocks (default :func:`~cloudfill.core.grid.default_block_size`).
    fractions
        Train / validation / test fractions of the blocks.
    seed
        Seed of the block split (and of augmentation and shuffling downstream).
    max_cloud
        A patch of a date is a sample when its cloud fraction is below this.
    dates
        Target dates to use (default: every eligible date).
    despeckle
        Median window for S1 (3..11, odd) or None. Ignored (with a warning) when ``s1``
        records that it is already despeckled.
    max_s1_gap, max_ref_age, max_ref_cloud
        The pairing rule (:func:`cloudfill.core.pairs.pairs`).
    cache_bytes
        Chunk cache per process.
    reference
        ``"date"`` (one clear reference date, earlier only: the paper's rule) or
        ``"composite"`` (each pixel's nearest clear observation among the dates within
        ``max_ref_age``, earlier or later; the reference date column then holds the
        nearest clear date, which a target still needs) or ``"blend"`` (the nearest clear
        observations on both sides, weighted by time and S1 similarity:
        :func:`~cloudfill.core.condition.blend_reference`).

    Returns
    -------
    PatchIndex

    Raises
    ------
    ModelMismatchError
        The cube lacks an input of ``variant`` (S1, DEM, any reference date).
    ParameterError
        Bad sizes, fractions or dates, or no target date with clear pixels.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> index = build_index(ds, "SOD", size=32, overlap=0, block_size=32, despeckle=3)
    >>> sorted(index.counts()) == ["test", "train", "val"]
    True
    """
    spec = get_variant(variant)
    if not 0.0 < max_cloud <= 1.0:
        raise ParameterError(f"max_cloud must be within (0, 1], got {max_cloud}")
    if reference not in REFERENCE_MODES:
        raise ParameterError(f"reference must be one of {list(REFERENCE_MODES)}, got {reference!r}")
    direction = REFERENCE_DIRECTIONS[reference]
    despeckle = _check_despeckle(despeckle)
    reader = CubeReader(ds, cache_bytes=cache_bytes)
    if not isinstance(ds, xr.Dataset):
        from cloudfill.cube.zarr_io import open_cube

        ds = open_cube(ds)
    ds = conform(ds)
    if "s1" not in ds.data_vars:
        raise ModelMismatchError(f"variant {spec.name} needs S1 SAR but the cube has no 's1'")
    if spec.uses_dem and "dem" not in ds.data_vars:
        raise ModelMismatchError(f"variant {spec.name} uses the DEM but the cube has no 'dem'")
    validate(ds, require=("s2", "s1"), require_crs=False)
    if despeckle and "despeckle" in ds["s1"].attrs:
        warnings.warn(
            f"s1 is already despeckled ({ds['s1'].attrs['despeckle']}); not despeckling again",
            UserWarning,
            stacklevel=2,
        )
        despeckle = None

    halo = (despeckle or 1) // 2
    margin = math.ceil(halo / ALIGN) * ALIGN
    s1_bounds = reader.chunk_bounds("s1")
    grid = patch_grid(
        reader.shape,
        size,
        overlap,
        block_size=block_size,
        chunk_bounds=(s1_bounds[0][1:-1].tolist(), s1_bounds[1][1:-1].tolist()),
        margin=margin,
    )
    codes = split_blocks(grid.n_blocks, fractions, seed)
    wanted = None if dates is None else as_dates(dates)
    s2_dates = pd.DatetimeIndex(ds["time"].values)
    if wanted is not None:
        missing = wanted.difference(s2_dates)
        if len(missing):
            raise ParameterError(f"dates: {missing[0]:%Y-%m-%d} is not an S2 date of the cube")
    s1_dates = pd.DatetimeIndex(ds["s1_time"].values)
    gap = pd.Timedelta(days=max_s1_gap)
    if not any(
        (abs(s1_dates - d) <= gap).any() for d in (wanted if wanted is not None else s2_dates)
    ):
        raise ModelMismatchError(
            f"no S2 date has an S1 date within {max_s1_gap:g} days: nothing to train on"
        )

    # One pass over the mask: scene fractions (for the pairing rule) and per-patch fractions.
    mask = cloud_mask(ds)
    fractions_by_date, patch_cloud = [], {}
    for t in range(len(s2_dates)):
        plane = np.asarray(mask.isel(time=t).values, dtype=bool)
        fractions_by_date.append(float(plane.mean()))
        if wanted is None or s2_dates[t] in wanted:
            patch_cloud[t] = _patch_cloud(plane, grid.origins, grid.size)
    scene_fractions = pd.Series(
        fractions_by_date, index=pd.DatetimeIndex(s2_dates, name="date"), name="cloud_fraction"
    )
    table = pairs(
        ds,
        PairingRule(max_s1_gap, max_ref_age, max_ref_cloud),
        fractions=scene_fractions,
        direction=direction,  # type: ignore[arg-type]
    )
    ok, reasons = _eligible(table, spec.uses_reference)
    if wanted is not None:
        bad = [d for d in wanted if not ok[d]]
        if bad:
            raise ParameterError(f"date {bad[0]:%Y-%m-%d} cannot be a target: {reasons[bad[0]]}")
        ok = ok & table.index.isin(wanted)
    if not ok.any():
        if spec.uses_reference and table["reference_date"].isna().all():
            raise ModelMismatchError(
                f"variant {spec.name} needs a clear reference S2 date (<= "
                f"{100 * max_ref_cloud:g}% cloud, at most {max_ref_age:g} days earlier) and "
                "the cube has none; train an S or SD model"
            )
        detail = "; ".join(f"{d:%Y-%m-%d}: {r}" for d, r in reasons.items())
        raise ParameterError(f"no S2 date can be a training target ({detail})")

    grid_codes = codes[grid.blocks[:, 0], grid.blocks[:, 1]]
    group_of_origin = _chunk_ids(reader.chunk_bounds("s2"), grid.origins)
    n_chunks = (len(reader.chunk_bounds("s2")[0]) - 1) * (len(reader.chunk_bounds("s2")[1]) - 1)
    frames = []
    for t, date in enumerate(s2_dates):
        if not ok[date]:
            continue
        keep = np.flatnonzero(patch_cloud[t] < max_cloud)
        row = table.loc[date]
        ref = row["reference_date"]
        frames.append(
            pd.DataFrame(
                {
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
            )
        )
    samples = pd.concat(frames, ignore_index=True)
    if samples.empty:
        raise ParameterError(
            f"no patch of the target dates is less than {100 * max_cloud:g}% cloudy; "
            "raise max_cloud or use smaller patches"
        )
    if stats is None:
        stats = training_stats(ds, s1_dates=samples["s1_date"].unique(), despeckle=despeckle)
    config = {
        "variant_rule": spec.name,
        "overlap": int(overlap),
        "fractions": [float(f) for f in fractions],
        "max_cloud": float(max_cloud),
        "despeckle": despeckle,
        "max_s1_gap": float(max_s1_gap),
        "max_ref_age": float(max_ref_age),
        "max_ref_cloud": float(max_ref_cloud),
        "reader": reader.mode,
        "reference": reference,
    }
    candidates: dict[int, tuple[int, ...]] = {}
    blend: dict[int, tuple[tuple[float, ...], tuple[int, ...]]] = {}
    if reference in ("composite", "blend") and spec.uses_reference:
        frac = scene_fractions.to_numpy()
        for t in sorted(set(samples["t"].tolist())):
            chosen = reference_candidates(
                s2_dates, frac, s2_dates[t], pd.Timedelta(days=max_ref_age), direction
            )
            candidates[t] = tuple(int(s2_dates.get_loc(d)) for d in chosen)
            if reference == "blend":
                near = [nearest_s1(s1_dates, d, gap)[0] for d in chosen]
                blend[t] = (
                    tuple((d - s2_dates[t]) / pd.Timedelta(days=1) for d in chosen),
                    tuple(-1 if pd.isna(d) else int(s1_dates.get_loc(d)) for d in near),
                )
    return PatchIndex(
        reader=reader,
        variant=spec.name,
        stats=stats,
        grid=grid,
        split_codes=codes,
        samples=samples,
        despeckle=despeckle,
        seed=int(seed),
        config=config,
        candidates=candidates,
        blend=blend,
    )


class PatchDataset(torch.utils.data.Dataset):
    """Training samples of one split: ``(condition, target, valid)`` tensors per patch.

    Built by :meth:`PatchIndex.dataset` or :func:`sample_patches`; see the module docstring
    for what each tensor holds. Picklable (for ``spawn``/``forkserver`` DataLoader workers):
    only the reader's description travels, each worker opens the store itself.

    Attributes
    ----------
    samples
        The split's rows of :attr:`PatchIndex.samples` (index = sample number).
    variant, size, split, augment, epoch
        As given; :meth:`set_epoch` changes the augmentation of the next epoch.
    """

    def __init__(
        self,
        reader: CubeReader,
        stats: NormStats,
        variant: str,
        samples: pd.DataFrame,
        size: int,
        *,
        despeckle: int | None = 5,
        augment: bool = False,
        seed: int = 0,
        split: str = "train",
        candidates: dict[int, tuple[int, ...]] | None = None,
        blend: dict[int, tuple[tuple[float, ...], tuple[int, ...]]] | None = None,
    ) -> None:
        self.reader = reader
        self.stats = stats
        self.variant = get_variant(variant).name
        self.samples = samples
        self.size = int(size)
        self.despeckle = despeckle
        self.augment = bool(augment)
        self.seed = int(seed)
        self.split = split
        self.candidates = dict(candidates or {})
        self.blend = dict(blend or {})
        self.epoch = 0
        spec = get_variant(variant)
        self._uses_reference = spec.uses_reference
        self._uses_dem = spec.uses_dem
        # Plain arrays: row lookups in __getitem__ stay cheap.
        self._rows = samples[["t", "s1_t", "ref_t", "y0", "x0"]].to_numpy(np.int64)
        self.groups = samples["group"].to_numpy(np.int64)

    @property
    def n_channels(self) -> int:
        """Condition channels of the variant."""
        return get_variant(self.variant).n_inputs

    def __len__(self) -> int:
        return len(self._rows)

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation of ``epoch`` (call before iterating)."""
        self.epoch = int(epoch)

    def _s1(self, s1_t: int, y0: int, x0: int) -> np.ndarray:
        s = self.size
        if not self.despeckle:
            return self.reader.read("s1", s1_t, y0, y0 + s, x0, x0 + s)
        h = self.despeckle // 2
        ny, nx = self.reader.shape
        ya, yb, xa, xb = max(0, y0 - h), min(ny, y0 + s + h), max(0, x0 - h), min(nx, x0 + s + h)
        window = np.ascontiguousarray(self.reader.read("s1", s1_t, ya, yb, xa, xb))
        filtered = median_filter(window, self.despeckle)
        return filtered[:, y0 - ya : y0 - ya + s, x0 - xa : x0 - xa + s]

    def _s2(self, t: int, y0: int, x0: int) -> tuple[np.ndarray, np.ndarray]:
        """S2 window with NaN where unusable, and the valid-pixel mask."""
        s = self.size
        image = self.reader.read("s2", t, y0, y0 + s, x0, x0 + s)
        valid = ~self.reader.unusable(t, y0, y0 + s, x0, x0 + s) & np.isfinite(image).all(0)
        return np.where(valid, image, np.float32(np.nan)), valid

    def _reference(self, t: int, ref_t: int, y0: int, x0: int, s1_target: np.ndarray) -> np.ndarray:
        """The reference window: one date, or the composite (or blend) of the target's
        candidates."""
        order = self.candidates.get(t)
        if not order:
            return self._s2(ref_t, y0, x0)[0]
        if t in self.blend:
            return self._blend(t, order, y0, x0, s1_target)
        images, unusable = [], []
        covered = np.zeros((self.size, self.size), dtype=bool)
        for k in order:
            image, valid = self._s2(k, y0, x0)
            images.append(image)
            unusable.append(~valid)
            covered |= valid
            if covered.all():
                break  # every pixel has its nearest clear value: farther dates add nothing
        return composite_reference(images, unusable)

    def _blend(
        self, t: int, order: Sequence[int], y0: int, x0: int, s1_target: np.ndarray
    ) -> np.ndarray:
        offsets, s1_index = self.blend[t]
        images, unusable, days, radar = [], [], [], []
        units = self.reader.s1_units
        for sign in (-1, 1):
            # Each side's nearest clear value is all the blend reads: stop once covered.
            covered = np.zeros((self.size, self.size), dtype=bool)
            for rank, k in enumerate(order):
                if np.sign(offsets[rank]) != sign or covered.all():
                    continue
                image, valid = self._s2(k, y0, x0)
                images.append(image)
                unusable.append(~valid)
                days.append(offsets[rank])
                j = s1_index[rank]
                radar.append(None if j < 0 else s1_to_units(self._s1(j, y0, x0), units, "dB"))
                covered |= valid
        return blend_reference(images, unusable, days, radar, s1_to_units(s1_target, units, "dB"))

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` as NumPy arrays, before augmentation."""
        t, s1_t, ref_t, y0, x0 = (int(v) for v in self._rows[index])
        s = self.size
        s1 = self._s1(s1_t, y0, x0)
        reference = self._reference(t, ref_t, y0, x0, s1) if self._uses_reference else None
        dem = self.reader.read("dem", None, y0, y0 + s, x0, x0 + s) if self._uses_dem else None
        condition = assemble_condition(
            self.stats,
            self.variant,
            s1=s1,
            s1_units=self.reader.s1_units,
            reference=reference,
            dem=dem,
        )
        image, valid = self._s2(t, y0, x0)
        target = normalise_bands(image, self.stats, "s2", BANDS, fill=True)
        return condition.astype(np.float32, copy=False), target, valid[None]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        condition, target, valid = self.arrays(index)
        if self.augment:
            code = augmentation_code(self.seed, self.epoch, index)
            condition, target, valid = (augment(a, code) for a in (condition, target, valid))
        return torch.from_numpy(condition), torch.from_numpy(target), torch.from_numpy(valid)

    def __repr__(self) -> str:
        return (
            f"PatchDataset(variant={self.variant!r}, split={self.split!r}, samples={len(self)}, "
            f"size={self.size}, reader={self.reader.mode!r}, augment={self.augment})"
        )


class ChunkSampler(torch.utils.data.Sampler[int]):
    """Sample order that visits the cube chunk group by chunk group.

    Groups (one target date inside one chunk) are shuffled; ``mix`` consecutive groups are
    interleaved and their members shuffled, so a batch mixes places and dates while the chunk
    cache only needs ``mix`` groups at a time. The order depends on ``seed`` and the epoch
    only. ``start`` skips the first samples of the epoch (to resume mid-epoch).

    Examples
    --------
    >>> sampler = ChunkSampler(np.array([0, 0, 1, 1, 2]), seed=0)
    >>> sorted(sampler) == [0, 1, 2, 3, 4]
    True
    """

    def __init__(
        self, groups: np.ndarray, *, shuffle: bool = True, seed: int = 0, mix: int = 4
    ) -> None:
        self.groups = np.asarray(groups, dtype=np.int64)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.mix = max(1, int(mix))
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Order of ``epoch``, skipping its first ``start`` samples."""
        self.epoch, self.start = int(epoch), int(start)

    def order(self) -> np.ndarray:
        """The full order of the current epoch."""
        if not self.shuffle:
            return np.argsort(self.groups, kind="stable")
        rng = np.random.default_rng([self.seed, self.epoch, 0x5A3])
        ids = np.unique(self.groups)
        ids = ids[rng.permutation(len(ids))]
        members = {int(g): np.flatnonzero(self.groups == g) for g in ids}
        parts = []
        for i in range(0, len(ids), self.mix):
            chosen = np.concatenate([members[int(g)] for g in ids[i : i + self.mix]])
            parts.append(chosen[rng.permutation(len(chosen))])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(int(i) for i in self.order()[self.start :])

    def __len__(self) -> int:
        return max(0, len(self.groups) - self.start)


def sample_patches(
    ds: xr.Dataset | str | os.PathLike[str],
    variant: str = "SOD",
    size: int = 256,
    overlap: int = 25,
    split: str = "train",
    *,
    augment: bool | None = None,
    **kwargs: Any,
) -> PatchDataset:
    """A torch Dataset of training patches read straight from a cube.

    Parameters
    ----------
    ds
        A contract cube or the path of a zarr store.
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    size, overlap
        Patch side (multiple of 4) and minimum overlap between neighbours.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    augment
        Flips/rotations (default: on for ``"train"`` only).
    **kwargs
        Passed to :func:`build_index` (``stats``, ``block_size``, ``fractions``, ``seed``,
        ``max_cloud``, ``dates``, ``despeckle``, pairing rule, ``cache_bytes``).

    Returns
    -------
    PatchDataset
        Items ``(condition [C, h, w] float32, target [4, h, w] float32, valid [1, h, w]
        bool)``; its ``samples`` DataFrame says where each patch comes from.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> data = sample_patches(ds, "SD", size=32, overlap=0, block_size=32, despeckle=3)
    >>> condition, target, valid = data[0]
    >>> tuple(condition.shape), tuple(target.shape), valid.dtype
    ((3, 32, 32), (4, 32, 32), torch.bool)
    """
    index = build_index(ds, variant, size, overlap, **kwargs)
    return index.dataset(split, augment=augment)
