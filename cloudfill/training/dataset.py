"""Training patches as torch tensors: the Dataset of one split.

A training sample is one patch of one target S2 date (see :mod:`cloudfill.training.index`
for which): ``(condition, target, valid)`` with

- ``condition`` (C, h, w) float32: the variant's channel stack built by
  :func:`cloudfill.core.condition.assemble_condition` from S1 at the paired date
  (despeckled), the reference S2 (NaN where cloudy, hence 0) and the DEM, normalised with the
  scene-wide statistics: inference goes through the same function, so both see the same
  numbers;
- ``target`` (4, h, w) float32: the target date's B02, B03, B04, B08, normalised
  (:func:`~cloudfill.core.condition.normalise_bands`), 0 where not valid;
- ``valid`` (1, h, w) bool: the target pixel is clear (cloud mask) and finite in every band.
  Losses count only these pixels. A variant reading the target's own clear pixels
  (``SODCTX``) sees only those :func:`~cloudfill.training.hide.hide_mask` leaves shown, and
  ``valid`` holds only the hidden ones (:mod:`cloudfill.training.hide`). ``SODCTXH``'s
  elevation-band table is its whole date's, as at inference, less those hidden pixels.

**Despeckling** is done per patch: the S1 window is read with a halo of ``despeckle // 2``
pixels (clipped at the scene border), median-filtered with
:func:`cloudfill.preprocess.despeckle.median_filter` and cropped. Inside the scene the halo
holds the true neighbours and at the border the filter reflects at the same edge as a
scene-wide filter, so the patch equals the scene-level :func:`~cloudfill.preprocess.despeckle`
exactly, border included. No despeckled copy of the cube is ever written.

**Reading**: see :mod:`cloudfill.training.reader` (chunks decoded once into a per-process
cache). The order of an epoch (chunk group by chunk group, so the cache hits) and the
augmentation (one of the 8 flips/rotations, from a hash of seed, epoch and sample) are
:mod:`cloudfill.training.sampler`'s.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from cloudfill.core.condition import assemble_condition, normalise_bands, s1_to_units
from cloudfill.core.height import height_sums, without_pixels
from cloudfill.core.illumination import LightGeometry, slope_light
from cloudfill.core.pairs import PairingRule
from cloudfill.core.reference import Side, blend_with_sides, composite_reference
from cloudfill.core.variants import get_variant
from cloudfill.cube.schema import BANDS
from cloudfill.errors import ParameterError
from cloudfill.preprocess.despeckle import median_filter
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.hide import hide_mask, split_context
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.reader import DEFAULT_CACHE_BYTES, CubeReader
from cloudfill.training.sampler import augment, augmentation_code
from cloudfill.training.targets import ReferenceTables

__all__ = ["PatchDataset", "sample_patches"]


_HEIGHT_WINDOW = 512
"""Side of the windows a date's height table is summed over in training (4 MB of S2)."""


class PatchDataset(torch.utils.data.Dataset):
    """Training samples of one split: ``(condition, target, valid)`` tensors per patch.

    Built by :meth:`from_index` or :func:`sample_patches`; see the module docstring for what
    each tensor holds. Picklable (for ``spawn``/``forkserver`` DataLoader workers): only the
    reader's description travels, each worker opens the store itself.

    Attributes
    ----------
    samples
        The split's rows of :attr:`PatchIndex.samples` (index = sample number).
    variant, size, split, augment, epoch
        As given; :meth:`set_epoch` changes the augmentation of the next epoch.
    references
        The dates composite / blended references draw on (empty: single reference dates).
    southern
        The season planes turn by half a year, as inference turns them: a season variant
        (SODCT) on a scene south of the equator (:attr:`PatchIndex.southern`).
    light
        Where the cube lies and its pixel spacing, for the slopes' sunlight (SODCTXHI;
        :attr:`PatchIndex.light`); None for the other variants.
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
        references: ReferenceTables | None = None,
        southern: bool = False,
        light: LightGeometry | None = None,
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
        self.references = references or ReferenceTables()
        self.epoch = 0
        spec = get_variant(variant)
        # Only a season variant's planes turn: for the others the flag changes nothing.
        self.southern = bool(southern) and spec.uses_season
        self._uses_reference = spec.uses_reference
        self._uses_dem = spec.uses_dem
        self._uses_context = spec.uses_context
        self._uses_height = spec.uses_height
        self._uses_light = spec.uses_light
        if self._uses_light and light is None:
            raise ParameterError(
                f"variant {spec.name} reads the slopes' sunlight: build the index for it (this "
                "one has no light geometry: it was built for a variant without light)"
            )
        self.light = light if self._uses_light else None
        if self.light is not None and self.light.suns and reader.scene_width:
            # One geometry serves the whole cube: a mosaic's scenes would each need their own.
            raise ParameterError(
                "a training mosaic (attrs['mosaic_scene_width']) with its own sun angles "
                "(sun_elevation, sun_azimuth): each scene would need its own; drop them"
            )
        self._height_tables: dict[tuple[int, int], np.ndarray] = {}
        width = reader.scene_width
        if self._uses_height and width and len(samples):
            # A patch across two mosaic scenes would read one scene's table for both.
            x0 = samples["x0"].to_numpy(np.int64)
            across = x0 // width != (x0 + self.size - 1) // width
            if across.any():
                raise ParameterError(
                    f"{int(across.sum())} patches of {self.size} px span two of the mosaic's "
                    f"scenes ({width} px wide, attrs['mosaic_scene_width']): choose a patch "
                    "and block size that divide the scene width"
                )
        # Plain arrays: row lookups in __getitem__ stay cheap.
        self._rows = samples[["t", "s1_t", "ref_t", "y0", "x0"]].to_numpy(np.int64)
        # Target dates, for a variant that sees the time of year (SODCT).
        self._dates = pd.DatetimeIndex(samples["date"]) if "date" in samples else None
        self.groups = samples["group"].to_numpy(np.int64)

    @classmethod
    def from_index(
        cls,
        index: PatchIndex,
        split: str = "train",
        *,
        variant: str | None = None,
        augment: bool | None = None,
    ) -> PatchDataset:
        """The dataset of ``split`` (``"train"``, ``"val"``, ``"test"``) of an index.

        ``variant`` defaults to the index's; a variant needing a reference requires an index
        built for one. ``augment`` defaults to True for the training split only.

        Examples
        --------
        >>> import cloudfill
        >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
        >>> index = build_index(ds, "SD", PatchSettings(32, overlap=0, block_size=32), despeckle=3)
        >>> data = PatchDataset.from_index(index, "val")
        >>> data.split, data.augment, len(data) == index.counts()["val"]
        ('val', False, True)
        """
        name, rows = index.split_samples(split, variant)
        uses_reference = get_variant(name).uses_reference
        return cls(
            index.reader,
            index.stats,
            name,
            rows,
            index.size,
            despeckle=index.despeckle,
            augment=split == "train" if augment is None else augment,
            seed=index.seed,
            split=split,
            references=index.references if uses_reference else None,
            southern=index.southern,
            light=index.light,
        )

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

    def _s2(
        self, t: int, y0: int, x0: int, y1: int | None = None, x1: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """S2 window (a patch, or ``[y0:y1, x0:x1]``) with NaN where unusable, and the
        valid-pixel mask."""
        y1 = y0 + self.size if y1 is None else y1
        x1 = x0 + self.size if x1 is None else x1
        image = self.reader.read("s2", t, y0, y1, x0, x1)
        valid = ~self.reader.unusable(t, y0, y1, x0, x1) & np.isfinite(image).all(0)
        return np.where(valid, image, np.float32(np.nan)), valid

    def _reference(
        self, t: int, ref_t: int, y0: int, x0: int, s1_target: np.ndarray
    ) -> tuple[np.ndarray, tuple[Side | None, Side | None] | None]:
        """The reference window: one date, or the composite (or blend) of the target's
        candidates; with a blend, also the two sides it blended (None otherwise)."""
        order = self.references.candidates.get(t)
        if not order:
            return self._s2(ref_t, y0, x0)[0], None
        if t in self.references.blend:
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
        return composite_reference(images, unusable), None

    def _blend(
        self, t: int, order: Sequence[int], y0: int, x0: int, s1_target: np.ndarray
    ) -> tuple[np.ndarray, tuple[Side | None, Side | None]]:
        offsets, s1_index = self.references.blend[t]
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
        return blend_with_sides(images, unusable, days, radar, s1_to_units(s1_target, units, "dB"))

    def _scene_columns(self, x0: int) -> tuple[int, int]:
        """The columns of the scene around column ``x0``: the cube's, or in a training mosaic
        (:attr:`CubeReader.scene_width`) the one scene's."""
        nx, width = self.reader.shape[1], self.reader.scene_width
        if not width:
            return 0, nx
        xs = x0 // width * width
        return xs, min(nx, xs + width)

    def _light(self, date: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The slopes' sunlight (:func:`~cloudfill.core.illumination.slope_light`) of the
        window ``[y0:y1, x0:x1]`` at ``date``, as inference computes it over the whole scene:
        the DEM is read one pixel beyond the window, except at the scene's edge, where the
        edge pixels are repeated (a mosaic's scene does not see its neighbour). The sun is the
        one at :attr:`light`'s latitude, the whole cube's: a mosaic of scenes from far apart
        would need one per scene (the simulated training mosaic's all lie at 28 degrees)."""
        ny = self.reader.shape[0]
        xs, xe = self._scene_columns(x0)
        ya, yb, xa, xb = max(0, y0 - 1), min(ny, y1 + 1), max(xs, x0 - 1), min(xe, x1 + 1)
        light = slope_light(self.reader.read("dem", None, ya, yb, xa, xb), date, self.light)
        return light[y0 - ya : y0 - ya + y1 - y0, x0 - xa : x0 - xa + x1 - x0]

    def _height_table(self, t: int, x0: int, date: Any) -> np.ndarray:
        """The clear pixels by elevation band (:mod:`cloudfill.core.height`) of the scene
        around column ``x0`` at date ``t`` (``date``: its day, for the slopes' sunlight of a
        light variant), as inference sums them over a date: window by
        window, each pixel once. The scene is the whole cube, or, in a training mosaic of
        scenes side by side (:attr:`CubeReader.scene_width`), the one the patch lies in: a
        table over ten scenes is smoother than any one scene's, and a model trained on such
        tables misread a single scene's (RESULTS, "Height context"). Memoised per process:
        with the patch cache once per date and scene, when the cache is built; without it each
        worker reads each date of its samples once per epoch."""
        ny = self.reader.shape[0]
        xs, xe = self._scene_columns(x0)
        if (t, xs) not in self._height_tables:

            def window(ya: int, yb: int, xa: int, xb: int) -> np.ndarray:
                image = self._s2(t, ya, xa, yb, xb)[0]
                shown = normalise_bands(image, self.stats, "s2", BANDS, fill=False)
                light = self._light(date, ya, yb, xa, xb) if self._uses_light else None
                return height_sums(shown, self.reader.read("dem", None, ya, yb, xa, xb), light)

            # Disjoint windows clipped to the scene: each pixel once, memory bounded.
            step = max(self.size, _HEIGHT_WINDOW)
            self._height_tables[t, xs] = sum(
                window(ya, min(ya + step, ny), xa, min(xa + step, xe))
                for ya in range(0, ny, step)
                for xa in range(xs, xe, step)
            )
        return self._height_tables[t, xs]

    def arrays(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sample ``index`` as NumPy arrays, before augmentation."""
        t, s1_t, ref_t, y0, x0 = (int(v) for v in self._rows[index])
        s = self.size
        s1 = self._s1(s1_t, y0, x0)
        reference, sides = (
            self._reference(t, ref_t, y0, x0, s1) if self._uses_reference else (None, None)
        )
        dem = self.reader.read("dem", None, y0, y0 + s, x0, x0 + s) if self._uses_dem else None
        image, valid = self._s2(t, y0, x0)
        context = None
        if self._uses_context:
            context, valid = split_context(image, valid, hide_mask(self.seed, index, s))
        height = light = None
        date = None if self._dates is None else self._dates[index]
        if self._uses_light:
            light = self._light(date, y0, y0 + s, x0, x0 + s)
        if self._uses_height:
            # The date's table less the pixels this sample hides: it reads only what it shows.
            hidden = np.where(valid[None], image, np.float32(np.nan))
            hidden = normalise_bands(hidden, self.stats, "s2", BANDS, fill=False)
            table = self._height_table(t, x0, date)
            height = without_pixels(table, height_sums(hidden, dem, light))
        condition = assemble_condition(
            self.stats,
            self.variant,
            s1=s1,
            s1_units=self.reader.s1_units,
            reference=reference,
            dem=dem,
            sides=sides,
            date=date,
            southern=self.southern,
            context=context,
            height=height,
            light=light,
        )
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


def sample_patches(
    ds: xr.Dataset | str | os.PathLike[str],
    variant: str = "SOD",
    patches: PatchSettings = PatchSettings(),
    split: str = "train",
    *,
    augment: bool | None = None,
    rule: PairingRule = PairingRule(),
    reference: str = "date",
    despeckle: int | None = 5,
    dates: Sequence[Any] | None = None,
    stats: NormStats | None = None,
    seed: int = 0,
    cache_bytes: int = DEFAULT_CACHE_BYTES,
) -> PatchDataset:
    """A torch Dataset of training patches read straight from a cube.

    :func:`~cloudfill.training.index.build_index`, then the dataset of one split.

    Parameters
    ----------
    ds
        A contract cube or the path of a zarr store.
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    patches
        Patch size and overlap, split blocks and fractions, the patch cloud limit.
    split
        ``"train"``, ``"val"`` or ``"test"``.
    augment
        Flips/rotations (default: on for ``"train"`` only).
    rule, reference, despeckle, dates, stats, seed, cache_bytes
        As for :func:`~cloudfill.training.index.build_index`.

    Returns
    -------
    PatchDataset
        Items ``(condition [C, h, w] float32, target [4, h, w] float32, valid [1, h, w]
        bool)``; its ``samples`` DataFrame says where each patch comes from.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> data = sample_patches(ds, "SD", PatchSettings(32, overlap=0, block_size=32), despeckle=3)
    >>> condition, target, valid = data[0]
    >>> tuple(condition.shape), tuple(target.shape), valid.dtype
    ((3, 32, 32), (4, 32, 32), torch.bool)
    """
    index = build_index(
        ds,
        variant,
        patches,
        rule=rule,
        reference=reference,
        despeckle=despeckle,
        dates=dates,
        stats=stats,
        seed=seed,
        cache_bytes=cache_bytes,
    )
    return PatchDataset.from_index(index, split, augment=augment)
