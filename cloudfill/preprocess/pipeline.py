"""The paper's preprocessing chain: despeckle S1 -> clip outliers -> (normalise)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import xarray as xr

from cloudfill.preprocess.despeckle import despeckle as _despeckle
from cloudfill.preprocess.normalise import NormStats, scene_stats
from cloudfill.preprocess.normalise import normalise as _normalise
from cloudfill.preprocess.outliers import filter_outliers

__all__ = ["preprocess"]


def preprocess(
    ds: xr.Dataset,
    size: int | None = 5,
    lower: float | Mapping[str, float] | None = None,
    upper: float | Mapping[str, float] | None = None,
    *,
    normalise: bool = False,
    stats: NormStats | None = None,
    variables: Iterable[str] | None = None,
) -> xr.Dataset:
    """Despeckle ``s1``, clip outliers scene-wide, optionally normalise.

    Lazy except for the scene-wide thresholds, which need two reductions over the (despeckled)
    cube; with ``stats`` (e.g. the training scene's, from a model card) nothing is computed:
    the cube is clipped to the ranges in ``stats`` and normalised with them.

    Parameters
    ----------
    ds
        A contract cube.
    size
        Despeckle window (3..11, odd); None skips despeckling. Skipped too when the cube has
        no ``s1``.
    lower, upper
        Clipping percentiles (see :func:`~cloudfill.preprocess.outliers.filter_outliers`).
    normalise
        Also map each band onto [-1, 1] with the scene's clip ranges; the statistics are
        recorded in ``attrs["cloudfill_norm_stats"]`` (JSON of :class:`NormStats`).
    stats
        Clip to and normalise with these statistics instead of the scene's (implies
        ``normalise``).
    variables
        Variables to clip / normalise (default ``s1``, ``s2``, ``dem`` where present).

    Returns
    -------
    xarray.Dataset

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> out = preprocess(ds, size=5, normalise=True)
    >>> float(out.s2.max()) <= 1.0
    True
    """
    out = ds
    if size is not None and "s1" in ds.data_vars:
        out = _despeckle(out, size)
    if stats is not None:
        out = filter_outliers(out, variables=variables, stats=stats)
        return _normalise(out, stats, variables)
    out = filter_outliers(out, lower, upper, variables)
    if normalise:
        out = _normalise(out, scene_stats(out, variables))
    return out
