"""The patch cache's key: what a cache's samples are made from, as 16 hex digits.

**The key** is a digest of what the samples are made from: the cube's content
(:func:`cube_digest`), the cloudfill version and cache format, and every sample's
description (variant, patch size, despeckling window, normalisation statistics, the rows of
each split: target, S1 and reference dates, origin; the reference tables). Any setting that
changes a sample (patch size or overlap, split seed or fractions, cloud limit, pairing rule,
reference mode, dates, despeckling, statistics) therefore changes the key, and one that does
not (learning rate, batch size, epochs, network) does not. A changed cube or setting finds
no folder of its key and builds one: a cache is never reused for other samples.

The folder of a key holds the samples (:mod:`cloudfill.training.cache`, which writes and
opens it).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from dask.base import tokenize

from cloudfill._version import __version__
from cloudfill.core.height import HEIGHT_VERSION
from cloudfill.core.illumination import LIGHT_VERSION
from cloudfill.core.variants import get_variant
from cloudfill.cube.zarr_io import store_digest
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.hide import HIDE_VERSION
from cloudfill.training.reader import CubeReader

__all__ = ["FORMAT", "VERSION", "cache_key", "cube_digest"]

FORMAT = "cloudfill-patch-cache"
"""The ``format`` of a cache's manifest."""
VERSION = 1
"""The cache format's version (part of the key)."""


def cube_digest(reader: CubeReader) -> str:
    """A digest of the cube a reader reads: what the cache's samples are made from.

    A zarr store (the reader reads it directly) is named by
    :func:`~cloudfill.cube.zarr_io.store_digest` (its metadata and its chunk files' names and
    sizes; no chunk is read); an in-memory cube by a hash of its arrays and its dates; a
    dask-backed one by its graph's name (the same file opened the same way, the same
    operations: the same name) and its dates.

    Examples
    --------
    >>> import cloudfill
    >>> a = cube_digest(CubeReader(cloudfill.simulate_scene((32, 32), seed=0)))
    >>> b = cube_digest(CubeReader(cloudfill.simulate_scene((32, 32), seed=1)))
    >>> len(a), a == b
    (16, False)
    """
    if reader.mode == "zarr" and reader.path is not None:
        return store_digest(reader.path)
    parts = [reader.mode, reader.shape, reader.s1_units, reader.mask_var, reader.times_token]
    for name in reader.names:
        var = reader.vars[name]
        parts += [name, var.order, tokenize(var.data)]
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def _sample_description(data: PatchDataset) -> dict[str, Any]:
    """What makes the samples of one split (JSON-safe, rows as a digest)."""
    refs = data.references
    rows = data.samples[["t", "s1_t", "ref_t", "y0", "x0"]].to_numpy()
    return {
        "split": data.split,
        "variant": data.variant,
        "size": data.size,
        "despeckle": data.despeckle,
        "samples": len(data),
        "rows": hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest(),
        "references": repr((sorted(refs.candidates.items()), sorted(refs.blend.items()))),
        # Only where it changes the samples (a season variant south of the equator), so that
        # every other cache keeps the key it had before the flag existed.
        **({"southern": True} if data.southern else {}),
        # A context variant's samples also depend on the pixels they hide (seeded).
        **({"hide": [HIDE_VERSION, data.seed]} if get_variant(data.variant).uses_context else {}),
        # A height variant's samples depend on how the table is built.
        **({"height": HEIGHT_VERSION} if get_variant(data.variant).uses_height else {}),
        # A light variant's on the formula, on where the cube lies and on each sample's date
        # (the sun's).
        **(
            {"light": [LIGHT_VERSION, repr(data.light), _dates_digest(data)]}
            if get_variant(data.variant).uses_light
            else {}
        ),
        # A mosaic's height tables are per scene (an in-memory cube's digest does not cover
        # its attrs; a zarr store's does).
        **(
            {"scene_width": data.reader.scene_width}
            if get_variant(data.variant).uses_height and data.reader.scene_width
            else {}
        ),
    }


def _dates_digest(data: PatchDataset) -> str:
    dates = data.samples["date"] if "date" in data.samples else pd.Series([], dtype="str")
    text = ",".join(str(pd.Timestamp(d)) for d in dates)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_key(splits: Sequence[PatchDataset]) -> tuple[str, dict[str, Any]]:
    """The cache key of ``splits`` (datasets of one index) and the description it hashes.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.training.index import PatchSettings, build_index
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> def key(size):
    ...     index = build_index(ds, "S", PatchSettings(size, overlap=0, block_size=48),
    ...                         despeckle=3)
    ...     return cache_key([PatchDataset.from_index(index, s) for s in ("train", "val")])[0]
    >>> key(32) == key(32), key(32) == key(48)
    (True, False)
    """
    if not splits:
        raise ValueError("no datasets to cache")
    first = splits[0]
    description = {
        "format": FORMAT,
        "version": VERSION,
        "cloudfill": __version__,
        "cube": cube_digest(first.reader),
        "s1_units": first.reader.s1_units,
        "stats": first.stats.to_dict(),
        "dtype": {"condition": "float32", "target": "float32", "valid": "bool"},
        "splits": [_sample_description(d) for d in splits],
    }
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16], description
