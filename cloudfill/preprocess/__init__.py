"""Preprocessing: median despeckling of S1, scene-wide outlier clipping, normalisation.

``despeckle`` equals ``scipy.ndimage.median_filter(mode="reflect")`` at any chunking (CPU
kernels in ``_median_cpu``, a CUDA kernel in ``_median_gpu`` for CuPy chunks); thresholds and
normalisation statistics come from the whole scene, never from a chunk.
"""

from cloudfill.preprocess.despeckle import SIZES, despeckle, median_filter
from cloudfill.preprocess.normalise import (
    NormStats,
    VariableRange,
    denormalise_s2,
    normalise,
    scene_stats,
)
from cloudfill.preprocess.outliers import (
    DEFAULT_PERCENTILES,
    N_BINS,
    ClipRanges,
    filter_outliers,
    outlier_thresholds,
)
from cloudfill.preprocess.pipeline import preprocess

__all__ = [
    "DEFAULT_PERCENTILES",
    "N_BINS",
    "SIZES",
    "ClipRanges",
    "NormStats",
    "VariableRange",
    "denormalise_s2",
    "despeckle",
    "filter_outliers",
    "median_filter",
    "normalise",
    "outlier_thresholds",
    "preprocess",
    "scene_stats",
]
