"""The unusable-pixel mask from ``cloud`` or ``scl``."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.cube.mask import cloud_mask


def test_mask_from_cloud_variable_and_nan(tiny_cube: xr.Dataset) -> None:
    ds = tiny_cube.copy(deep=True)
    ds["s2"][1, 2, 3, 4] = np.nan
    mask = cloud_mask(ds)
    assert mask.dims == ("time", "y", "x") and mask.dtype == bool
    expected = tiny_cube.cloud.values.copy()
    expected[1, 3, 4] = True
    np.testing.assert_array_equal(mask.values, expected)
    assert mask.attrs["source"] == "cloud"


@pytest.mark.parametrize("lazy", [False, True])
def test_mask_from_scl_classes(tiny_cube: xr.Dataset, lazy: bool) -> None:
    rng = np.random.default_rng(0)
    scl = rng.integers(0, 12, size=tiny_cube.cloud.shape).astype("uint8")
    ds = tiny_cube.drop_vars("cloud").assign(scl=(("time", "y", "x"), scl))
    if lazy:
        ds = ds.chunk({"time": 1, "y": 5})
    mask = ds.cloudfill.cloud_mask()
    assert (mask.chunks is not None) == lazy
    np.testing.assert_array_equal(mask.values, np.isin(scl, [0, 1, 3, 8, 9, 10]))
    custom = cloud_mask(ds, unusable_scl=[8, 9])
    np.testing.assert_array_equal(custom.values, np.isin(scl, [8, 9]))


def test_no_mask_source_is_typed_error(tiny_cube: xr.Dataset) -> None:
    with pytest.raises(errors.MissingVariableError, match="'cloud'.*'scl'"):
        cloud_mask(tiny_cube.drop_vars("cloud"))
