"""cloudfill: fill cloudy Sentinel-2 dates in xarray datacubes.

Importing the package registers the ``ds.cloudfill`` accessor.
"""

from cloudfill import errors
from cloudfill._version import __version__
from cloudfill.accessor import CloudfillAccessor
from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import BANDS, POLS, conform, validate

__all__ = [
    "BANDS",
    "POLS",
    "CloudfillAccessor",
    "__version__",
    "cloud_mask",
    "conform",
    "errors",
    "validate",
]
