"""The training samples of a cube: which patch of which date, its split, and how to read it.

A training sample is one patch of one target S2 date. Dates follow
:func:`cloudfill.core.pairs.pairs` with a :class:`~cloudfill.core.pairs.PairingRule`
(nearest S1 within ``max_s1_gap`` days, nearest earlier reference with at most
``max_ref_cloud`` cloud within ``max_ref_age`` days), the rule inference uses. With
``reference="composite"`` the reference of a patch is instead
:func:`~cloudfill.core.reference.composite_reference` of every other date within
``max_ref_age`` (earlier or later, nearest first), as inference builds it for such models;
with ``reference="blend"`` it is :func:`~cloudfill.core.reference.blend_reference` of the
same dates, each with the despeckled S1 nearest to it (within ``max_s1_gap``): the
:class:`ReferenceTables` of the index list those dates per target.
Target dates are those with an S1 pair (and a reference for SO/SOD: a clear date, or for
composites and blends any date with a usable pixel within ``max_ref_age``) and some clear
pixels;
a patch of a date becomes a sample when its cloud fraction is below ``max_cloud``.

**Patch grid and split**: see :mod:`cloudfill.core.grid` (4-aligned origins, spatial
blocks assigned 80/10/10 by a seeded permutation, patches never straddle blocks). Patches
keep a margin of the despeckling halo (rounded up to 4 px) from internal S1 chunk
boundaries, so reading a patch with its halo touches one chunk.

This module does not import torch: :class:`~cloudfill.training.dataset.PatchDataset` turns an
index into tensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.core.grid import ALIGN, SPLITS, PatchGrid, patch_grid, split_blocks
from cloudfill.core.illumination import LightGeometry, light_geometry
from cloudfill.core.pairs import PER_PIXEL_MODES, PairingRule, pairs
from cloudfill.core.season import southern_hemisphere
from cloudfill.core.variants import get_variant
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.model.card import REFERENCE_DIRECTIONS, REFERENCE_MODES
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.reader import DEFAULT_CACHE_BYTES, CubeReader
from cloudfill.training.targets import (
    ReferenceTables,
    check_despeckle,
    cloud_pass,
    open_checked,
    reference_tables,
    sample_table,
    target_dates,
    training_stats,
    wanted_dates,
)

__all__ = [
    "DEFAULT_MAX_CLOUD",
    "PatchIndex",
    "PatchSettings",
    "ReferenceTables",
    "build_index",
    "training_stats",
]

DEFAULT_MAX_CLOUD = 0.5
"""A patch of a target date is a sample when less than this fraction of it is cloudy."""


@dataclass(frozen=True)
class PatchSettings:
    """The patch grid, its spatial split and which patches become samples.

    Parameters
    ----------
    size
        Patch side in pixels (a multiple of 4, at least 16; checked against the scene by
        :func:`~cloudfill.core.grid.patch_grid`). The paper's 256.
    overlap
        Minimum overlap of neighbouring patches (the paper's 25).
    block_size
        Side of the split blocks (default :func:`~cloudfill.core.grid.default_block_size`).
    fractions
        Train / validation / test fractions of the blocks.
    max_cloud
        A patch of a date is a sample when its cloud fraction is below this.

    Examples
    --------
    >>> PatchSettings(size=32, overlap=8).fractions
    (0.8, 0.1, 0.1)
    >>> PatchSettings(max_cloud=0)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: max_cloud must be within (0, 1], got 0
    """

    size: int = 256
    overlap: int = 25
    block_size: int | None = None
    fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    max_cloud: float = DEFAULT_MAX_CLOUD

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < 1:
            raise ParameterError(f"patch_size must be a positive integer, got {self.size!r}")
        if not 0.0 < self.max_cloud <= 1.0:
            raise ParameterError(f"max_cloud must be within (0, 1], got {self.max_cloud}")
        # A tuple, so the settings hash and compare by value (lists are accepted).
        object.__setattr__(self, "fractions", tuple(self.fractions))


@dataclass
class PatchIndex:
    """Every training sample of a scene, its split, and what is needed to read it.

    Built by :func:`build_index`;
    :meth:`PatchDataset.from_index <cloudfill.training.dataset.PatchDataset.from_index>`
    gives the torch Dataset of one split.

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
    seed
        Seed of the split (and of augmentation and shuffling downstream).
    config
        The settings that built the index (JSON-safe).
    references
        The composite / blend reference dates per target (empty for ``reference="date"``).
    southern
        The scene lies south of the equator (:func:`~cloudfill.core.season.southern_hemisphere`;
        the season channels of SODCT turn by half a year).
    light
        Where the cube lies and how far apart its pixels are
        (:func:`~cloudfill.core.illumination.light_geometry`), for a variant that reads the
        slopes' sunlight (SODCTXHI); None for an index built for another variant.
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
    references: ReferenceTables = field(default_factory=ReferenceTables)
    southern: bool = False
    light: LightGeometry | None = None

    @property
    def size(self) -> int:
        """Patch side in pixels."""
        return self.grid.size

    def counts(self) -> dict[str, int]:
        """Number of samples per split."""
        return {name: int((self.samples["split"] == name).sum()) for name in SPLITS}

    def split_samples(self, split: str, variant: str | None = None) -> tuple[str, pd.DataFrame]:
        """The variant (default the index's) and the sample rows of ``split``.

        Raises
        ------
        ParameterError
            An unknown split.
        ModelMismatchError
            ``variant`` needs a reference and the index was built for a variant that does not.
        """
        if split not in SPLITS:
            raise ParameterError(f"split must be one of {list(SPLITS)}, got {split!r}")
        spec = get_variant(variant or self.variant)
        if spec.uses_reference and not get_variant(self.variant).uses_reference:
            raise ModelMismatchError(
                f"variant {spec.name} needs reference dates but the index was built for "
                f"{self.variant}, whose targets may lack one"
            )
        return spec.name, self.samples[self.samples["split"] == split].reset_index(drop=True)

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


def _grid(reader: CubeReader, patches: PatchSettings, despeckle: int | None) -> PatchGrid:
    # Patches keep the despeckling halo away from S1 chunk boundaries: one chunk per read.
    halo = (despeckle or 1) // 2
    margin = math.ceil(halo / ALIGN) * ALIGN
    s1_bounds = reader.chunk_bounds("s1")
    return patch_grid(
        reader.shape,
        patches.size,
        patches.overlap,
        block_size=patches.block_size,
        chunk_bounds=(s1_bounds[0][1:-1].tolist(), s1_bounds[1][1:-1].tolist()),
        margin=margin,
    )


def build_index(
    ds: xr.Dataset | str | os.PathLike[str],
    variant: str = "SOD",
    patches: PatchSettings = PatchSettings(),
    *,
    rule: PairingRule = PairingRule(),
    reference: str = "date",
    despeckle: int | None = 5,
    dates: Sequence[Any] | None = None,
    stats: NormStats | None = None,
    seed: int = 0,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> PatchIndex:
    """Find every training sample of a cube and split them by spatial blocks.

    Reads coordinates, then the cloud mask once (a pass over ``cloud``/``scl`` and ``s2`` per
    date), then, unless ``stats`` is given, the scene statistics (two passes). Bad input is
    reported before any of that.

    Parameters
    ----------
    ds
        A contract cube, or the path of a zarr store (read chunk by chunk, never loaded).
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``: fixes the inputs and whether a target needs
        a reference date.
    patches
        Patch size and overlap, split blocks and fractions, the patch cloud limit.
    rule
        Which S1 and reference dates pair with a target (:func:`cloudfill.core.pairs.pairs`).
    reference
        ``"date"`` (one clear reference date, earlier only: the paper's rule),
        ``"composite"`` (each pixel's nearest clear observation among the dates within
        ``max_ref_age``, earlier or later; paired by pixel, so any date with a usable pixel
        in range serves, and the reference date column holds the nearest of them, which a
        target still needs) or ``"blend"`` (the nearest clear
        observations on both sides, weighted by time and S1 similarity:
        :func:`~cloudfill.core.reference.blend_reference`).
    despeckle
        Median window for S1 (3..11, odd) or None. Ignored (with a warning) when ``s1``
        records that it is already despeckled.
    dates
        Target dates to use (default: every eligible date).
    stats
        Normalisation statistics (e.g. another run's); default :func:`training_stats`.
    seed
        Seed of the block split (and of augmentation and shuffling downstream).
    cache_bytes
        Chunk cache per process.

    Returns
    -------
    PatchIndex
        The samples, their split, and the reader and statistics to read them with.

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
    >>> index = build_index(ds, "SOD", PatchSettings(32, overlap=0, block_size=32), despeckle=3)
    >>> sorted(index.counts()) == ["test", "train", "val"]
    True
    """
    spec = get_variant(variant)
    if reference not in REFERENCE_MODES:
        raise ParameterError(f"reference must be one of {list(REFERENCE_MODES)}, got {reference!r}")
    despeckle = check_despeckle(despeckle)
    reader = CubeReader(ds, cache_bytes=cache_bytes)
    ds, despeckle = open_checked(ds, spec, despeckle)
    grid = _grid(reader, patches, despeckle)
    codes = split_blocks(grid.n_blocks, patches.fractions, seed)
    wanted = wanted_dates(dates, ds, rule)
    scene_cloud, patch_cloud = cloud_pass(ds, grid, wanted)
    direction = REFERENCE_DIRECTIONS[reference]
    # A composite or blend reference is built per pixel from every candidate date, so its
    # targets need no clear reference date (as its fills, pairs(per_pixel=True)). Only the
    # dates are read: the reference_share pass over the mask is skipped.
    per_pixel = reference in PER_PIXEL_MODES and spec.uses_reference
    table = pairs(
        ds,
        rule,
        fractions=scene_cloud,
        direction=direction,  # type: ignore[arg-type]
        per_pixel=per_pixel,
        shares=False,
    )
    targets = target_dates(table, spec, wanted, rule, per_pixel=per_pixel)
    bounds = reader.chunk_bounds("s2")
    samples = sample_table(ds, table, targets, grid, codes, patch_cloud, bounds, patches.max_cloud)
    if stats is None:
        stats = training_stats(ds, s1_dates=samples["s1_date"].unique(), despeckle=despeckle)
    config = {
        "variant_rule": spec.name,
        "overlap": int(patches.overlap),
        "fractions": [float(f) for f in patches.fractions],
        "max_cloud": float(patches.max_cloud),
        "despeckle": despeckle,
        **rule.to_dict(),
        "reader": reader.mode,
        "reference": reference,
    }
    multi_date = reference in ("composite", "blend") and spec.uses_reference
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
        references=(
            reference_tables(ds, samples, scene_cloud, rule, reference)
            if multi_date
            else ReferenceTables()
        ),
        southern=southern_hemisphere(ds),
        # Only a light variant needs it: an odd CRS must not stop the others' indexes, and a
        # light variant's own errors (bad sun coordinates, no latitude) reach the user as is.
        light=light_geometry(ds) if spec.uses_light else None,
    )
