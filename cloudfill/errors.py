"""Typed exceptions raised by cloudfill.

Every error raised on bad input derives from :class:`CloudfillError` and names the variable,
band, dimension or date at fault, so a user (or the CLI, which prints it on one line and exits
with code 2) can fix the input without reading a traceback.

The tree::

    CloudfillError
    ├── CubeError (also ValueError)          the cube does not follow the contract
    │   ├── MissingVariableError  (also KeyError semantics, but a ValueError)
    │   ├── DimensionError        wrong or missing dims on a variable
    │   ├── BandError             unknown / missing band or polarisation labels
    │   ├── DTypeError            wrong dtype or units
    │   │   └── UnitsError        values that contradict the stated units or scale
    │   ├── GridMismatchError     variables or files not on one pixel grid
    │   ├── CRSError
    │   │   ├── MissingCRSError
    │   │   └── CRSMismatchError
    │   └── TimeAxisError         unsorted / duplicate / non-datetime time axes
    ├── ParameterError (also ValueError)     a bad argument (size, percentile, date ...)
    ├── SourceError (also OSError)           a file, store or STAC item that cannot be read
    ├── ModelError
    │   ├── CheckpointError       unreadable / unsafe / inconsistent checkpoint
    │   └── ModelMismatchError    a model used on a cube it does not fit
    └── OutputError (also OSError)           refusing to overwrite, or an unusable output path
"""

from __future__ import annotations

__all__ = [
    "BandError",
    "CRSError",
    "CRSMismatchError",
    "CheckpointError",
    "CloudfillError",
    "CubeError",
    "DTypeError",
    "DimensionError",
    "GridMismatchError",
    "MissingCRSError",
    "MissingVariableError",
    "ModelError",
    "ModelMismatchError",
    "OutputError",
    "ParameterError",
    "SourceError",
    "TimeAxisError",
    "UnitsError",
]


class CloudfillError(Exception):
    """Base class of every error cloudfill raises on purpose."""


class CubeError(CloudfillError, ValueError):
    """The cube does not follow the contract (see ``docs/contract.md``)."""


class MissingVariableError(CubeError):
    """A required variable (``s1``, ``s2``, ``dem``, a mask ...) is absent."""


class DimensionError(CubeError):
    """A variable has missing, extra or wrongly named dimensions."""


class BandError(CubeError):
    """Band or polarisation labels are unknown, missing or duplicated."""


class DTypeError(CubeError):
    """A variable has the wrong dtype or units."""


class UnitsError(DTypeError):
    """Values contradict the stated units or scale (S2 digital numbers, S1 dB vs linear)."""


class GridMismatchError(CubeError):
    """Variables or input files are not on one regular pixel grid."""


class CRSError(CubeError):
    """Problems with the coordinate reference system."""


class MissingCRSError(CRSError):
    """No CRS could be found where one is required."""


class CRSMismatchError(CRSError):
    """Variables or files carry different CRSs."""


class TimeAxisError(CubeError):
    """A time axis is not sorted, has duplicates, or is not datetime64."""


class ParameterError(CloudfillError, ValueError):
    """A function argument is out of range or inconsistent."""


class SourceError(CloudfillError, OSError):
    """An input file, store or STAC item cannot be read."""


class ModelError(CloudfillError):
    """Base class of model problems."""


class CheckpointError(ModelError, ValueError):
    """A checkpoint is unreadable, unsafe (e.g. pickled) or inconsistent with its card."""


class ModelMismatchError(ModelError, ValueError):
    """A model is used on a cube it does not fit (variant, bands, polarisations)."""


class OutputError(CloudfillError, OSError):
    """An output path cannot be used (would overwrite an input or a different output)."""
