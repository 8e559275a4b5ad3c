"""cloudfill: fill cloudy Sentinel-2 dates in xarray datacubes.

Importing the package registers the ``ds.cloudfill`` accessor.
"""

from cloudfill import errors
from cloudfill._version import __version__
from cloudfill.accessor import CloudfillAccessor
from cloudfill.cube.demo import load_demo
from cloudfill.cube.geotiff import cube_from_geotiffs
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, POLS, conform, validate
from cloudfill.cube.simulate import simulate_scene
from cloudfill.cube.stac import cube_from_stac
from cloudfill.cube.zarr_io import open_cube, write_cube
from cloudfill.preprocess import NormStats, despeckle, filter_outliers, preprocess

__all__ = [
    "BANDS",
    "POLS",
    "CloudfillAccessor",
    "ModelCard",
    "NormStats",
    "__version__",
    "cloud_mask",
    "conform",
    "cube_from_geotiffs",
    "cube_from_stac",
    "default_model",
    "despeckle",
    "errors",
    "filter_outliers",
    "load_demo",
    "load_model",
    "open_cube",
    "preprocess",
    "save_model",
    "simulate_scene",
    "train",
    "validate",
    "write_cube",
]

# Model names resolve lazily: they import torch, which ``import cloudfill`` must not.
_LAZY_MODEL_NAMES = ("ModelCard", "default_model", "load_model", "save_model")


def __getattr__(name: str) -> object:
    if name in _LAZY_MODEL_NAMES:
        import cloudfill.model

        value = getattr(cloudfill.model, name)
        globals()[name] = value
        return value
    if name == "train":
        # The function lives in cloudfill.training (not a "train" subpackage, which would
        # shadow it once imported).
        from cloudfill.training.loop import train

        globals()[name] = train
        return train
    raise AttributeError(f"module 'cloudfill' has no attribute {name!r}")
