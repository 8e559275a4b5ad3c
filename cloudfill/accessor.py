"""``ds.cloudfill``: the cube accessor.

Thin on purpose: it conforms the Dataset once (band aliases renamed, dtypes cast, lazily) and
binds the pure functions that live in their own modules. Heavy modules (torch) are imported
only when a method that needs them is called, so ``import cloudfill`` stays fast.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import xarray as xr

from cloudfill.cube.mask import cloud_mask
from cloudfill.cube.schema import DEFAULT_UNUSABLE_SCL, REQUIRED_DEFAULT, conform, validate

__all__ = ["CloudfillAccessor"]


@xr.register_dataset_accessor("cloudfill")
class CloudfillAccessor:
    """Cloud filling for a contract cube (``xarray.Dataset``).

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> ds.cloudfill.validate() is not None
    True
    """

    def __init__(self, ds: xr.Dataset) -> None:
        self._raw = ds
        self._cube: xr.Dataset | None = None

    @property
    def cube(self) -> xr.Dataset:
        """The Dataset conformed to the contract (aliases renamed, dtypes cast), lazily."""
        if self._cube is None:
            self._cube = conform(self._raw)
        return self._cube

    def validate(self, require: Iterable[str] = REQUIRED_DEFAULT, **kwargs: Any) -> xr.Dataset:
        """Check the cube against the contract; see :func:`cloudfill.cube.schema.validate`.

        Returns the conformed cube.
        """
        return validate(self.cube, require=require, **kwargs)

    def cloud_mask(self, unusable_scl: Iterable[int] = DEFAULT_UNUSABLE_SCL) -> xr.DataArray:
        """Unusable-pixel mask (time, y, x); see :func:`cloudfill.cube.mask.cloud_mask`."""
        return cloud_mask(self.cube, unusable_scl=unusable_scl)

    def pairs(self, **kwargs: Any) -> Any:
        """For each S2 date, the S1 date and clear reference date a fill would use (a pandas
        DataFrame with the method and the reason); see :func:`cloudfill.fill.pairs.pairs`."""
        from cloudfill.fill.pairs import pairs

        return pairs(self.cube, **kwargs)

    def synthesize(self, date: Any, model: Any = None, **kwargs: Any) -> xr.DataArray:
        """Lazy synthesized S2 image (band, y, x) at ``date``; see
        :func:`cloudfill.infer.synthesize.synthesize`."""
        from cloudfill.infer.synthesize import synthesize

        return synthesize(self.cube, date, model, **kwargs)

    def fill_series(self, model: Any = None, **kwargs: Any) -> xr.Dataset:
        """Every S2 date with unusable pixels filled, plus ``filled``, ``confidence`` and
        provenance; see :func:`cloudfill.fill.series.fill_series`."""
        from cloudfill.fill.series import fill_series

        return fill_series(self.cube, model, **kwargs)

    # --- methods added by later modules go below; keep each one a thin binding ---

    def despeckle(self, size: int = 5) -> xr.Dataset:
        """The cube with ``s1`` median-filtered over (y, x), lazily, exact at any chunking;
        see :func:`cloudfill.preprocess.despeckle.despeckle`."""
        from cloudfill.preprocess.despeckle import despeckle

        return despeckle(self.cube, size=size)

    def filter_outliers(
        self, lower: float | None = None, upper: float | None = None, **kwargs: Any
    ) -> xr.Dataset:
        """The cube clipped to scene-wide percentile thresholds per variable and band; see
        :func:`cloudfill.preprocess.outliers.filter_outliers`."""
        from cloudfill.preprocess.outliers import filter_outliers

        return filter_outliers(self.cube, lower=lower, upper=upper, **kwargs)

    def preprocess(self, **kwargs: Any) -> xr.Dataset:
        """Despeckle, clip outliers and optionally normalise; see
        :func:`cloudfill.preprocess.pipeline.preprocess`."""
        from cloudfill.preprocess.pipeline import preprocess

        return preprocess(self.cube, **kwargs)

    def sample_patches(self, variant: str = "SOD", size: int = 256, **kwargs: Any) -> Any:
        """A torch Dataset of training patches (condition, target, valid mask) read straight
        from the cube; see :func:`cloudfill.training.sampler.sample_patches`."""
        from cloudfill.training.sampler import sample_patches

        return sample_patches(self.cube, variant, size, **kwargs)

    def evaluate(self, model: Any = None, **kwargs: Any) -> Any:
        """Metrics (MAE, RMSE, PSNR, SSIM, SAM) of the model and the baselines on the same
        pixels, one row per (date, method, region), as a pandas DataFrame; the land-cover
        check is in ``attrs["landcover"]``. See :func:`cloudfill.evaluate.evaluate.evaluate`."""
        from cloudfill.evaluate.evaluate import evaluate

        return evaluate(self.cube, model, **kwargs)
