"""cloudfill: fill cloudy Sentinel-2 dates in xarray datacubes.

Importing the package registers the ``ds.cloudfill`` accessor. The names below are the public
surface: reading and writing cubes, the functional form of every accessor method (each takes
the cube first), the models and the settings values. Names that need torch resolve on first
use, so ``import cloudfill`` stays light.
"""

from __future__ import annotations

import importlib

from cloudfill import errors
from cloudfill._version import __version__
from cloudfill.accessor import CloudfillAccessor
from cloudfill.core.pairs import PairingRule, pairs
from cloudfill.cube.demo import load_demo
from cloudfill.cube.geotiff import cube_from_geotiffs
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, POLS, conform, validate
from cloudfill.cube.simulate import simulate_scene
from cloudfill.cube.stac import cube_from_stac
from cloudfill.cube.zarr_io import fill_progress, open_cube, write_cube
from cloudfill.infer.settings import InferenceSettings
from cloudfill.preprocess import NormStats, despeckle, filter_outliers, preprocess

# Resolved on first access (PEP 562): the models and most of the pipeline import torch, which
# ``import cloudfill`` must not (the settings values ride along, to keep one list).
_LAZY: dict[str, str] = {
    "CloudfillModel": "cloudfill.model.runtime",
    "ModelCard": "cloudfill.model.card",
    "default_model": "cloudfill.model.default",
    "load_model": "cloudfill.model.runtime",
    "save_model": "cloudfill.model.checkpoint",
    "PatchSettings": "cloudfill.training.index",
    "TrainConfig": "cloudfill.training.config",
    "sample_patches": "cloudfill.training.dataset",
    "train": "cloudfill.training.run",
    "synthesize": "cloudfill.infer.synthesize",
    "fill_series": "cloudfill.fill.series",
    "evaluate": "cloudfill.evaluation.evaluate",
    "write_report": "cloudfill.evaluation.report",
}

__all__ = [
    "BANDS",
    "POLS",
    "CloudfillAccessor",
    "CloudfillModel",
    "InferenceSettings",
    "ModelCard",
    "NormStats",
    "PairingRule",
    "PatchSettings",
    "TrainConfig",
    "__version__",
    "cloud_mask",
    "conform",
    "cube_from_geotiffs",
    "cube_from_stac",
    "default_model",
    "despeckle",
    "errors",
    "evaluate",
    "fill_progress",
    "fill_series",
    "filter_outliers",
    "load_demo",
    "load_model",
    "open_cube",
    "pairs",
    "preprocess",
    "sample_patches",
    "save_model",
    "simulate_scene",
    "synthesize",
    "train",
    "validate",
    "write_cube",
    "write_report",
]


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudfill' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
