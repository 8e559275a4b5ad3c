"""The condition stack's composite reference: each pixel's nearest usable observation."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from cloudfill.errors import ParameterError
from cloudfill.infer.condition import composite_reference


def _brute_force(images: list[np.ndarray], unusable: list[np.ndarray]) -> np.ndarray:
    out = np.full(images[0].shape, np.nan, dtype="float64")
    _, ny, nx = images[0].shape
    for y in range(ny):
        for x in range(nx):
            for image, bad in zip(images, unusable, strict=True):
                if not bad[y, x] and np.isfinite(image[:, y, x]).all():
                    out[:, y, x] = image[:, y, x]
                    break
    return out


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_composite_takes_the_first_usable_image_per_pixel(backend: str) -> None:
    rng = np.random.default_rng(4)
    images = [rng.random((4, 9, 11)).astype("float32") for _ in range(4)]
    images[1][2, 3, 4] = np.nan  # one bad band makes the whole pixel unusable there
    unusable = [rng.random((9, 11)) < p for p in (0.6, 0.5, 0.4, 0.3)]
    expected = _brute_force(images, unusable)
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    if backend == "dask":
        got = composite_reference(
            [da.from_array(a, chunks=(4, 5, 6)) for a in images],
            [da.from_array(m, chunks=(5, 6)) for m in unusable],
        )
        assert isinstance(got, da.Array)
        got = got.compute()
    else:
        got = composite_reference(images, unusable)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected.astype("float32"))


def test_composite_needs_matching_masks() -> None:
    with pytest.raises(ParameterError, match="one mask per image"):
        composite_reference([np.zeros((4, 2, 2), "float32")], [])
