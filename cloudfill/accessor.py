"""``ds.cloudfill``: the cube accessor, a table of contents of the package in pipeline order.

Each method is the function named beside it, called with the conformed cube as its first
argument: its signature and docstring are that function's (one place to read and to change).
The function is imported on first use, so ``import cloudfill`` stays light (no torch).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import xarray as xr

from cloudfill.cube.schema import conform

__all__ = ["CloudfillAccessor"]


class _Bound:
    """A method bound to ``module:function``, which takes the cube as its first argument."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @functools.cached_property
    def function(self) -> Callable[..., Any]:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    @functools.cached_property
    def signature(self) -> inspect.Signature:
        signature = inspect.signature(self.function)
        return signature.replace(parameters=list(signature.parameters.values())[1:])

    def __get__(self, accessor: Any, owner: type | None = None) -> Callable[..., Any]:
        function = self.function
        if accessor is None:
            return function

        def method(*args: Any, **kwargs: Any) -> Any:
            return function(accessor.cube, *args, **kwargs)

        functools.update_wrapper(method, function)
        # Set explicitly: inspect would otherwise follow __wrapped__ and show the cube too.
        method.__signature__ = self.signature  # type: ignore[attr-defined]
        return method


@xr.register_dataset_accessor("cloudfill")
class CloudfillAccessor:
    """Cloud filling for a contract cube (``xarray.Dataset``).

    The Dataset is conformed once (band aliases renamed, dtypes cast, lazily); every method
    then calls the function of the same name with it.

    Examples
    --------
    >>> import inspect
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> ds.cloudfill.validate() is not None
    True
    >>> list(inspect.signature(ds.cloudfill.despeckle).parameters)
    ['size']
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

    # The cube
    validate = _Bound("cloudfill.cube.schema:validate")
    cloud_mask = _Bound("cloudfill.cube.mask:cloud_mask")
    # Preprocessing
    despeckle = _Bound("cloudfill.preprocess.despeckle:despeckle")
    filter_outliers = _Bound("cloudfill.preprocess.outliers:filter_outliers")
    preprocess = _Bound("cloudfill.preprocess.pipeline:preprocess")
    # Which dates fill which
    pairs = _Bound("cloudfill.core.pairs:pairs")
    # Training
    sample_patches = _Bound("cloudfill.training.dataset:sample_patches")
    train = _Bound("cloudfill.training.run:train")
    # Synthesis and fill
    synthesize = _Bound("cloudfill.infer.synthesize:synthesize")
    fill_series = _Bound("cloudfill.fill.series:fill_series")
    # Evaluation
    evaluate = _Bound("cloudfill.evaluation.evaluate:evaluate")
