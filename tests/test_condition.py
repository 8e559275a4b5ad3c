"""The condition stack's multi-date references: the composite (each pixel's nearest usable
observation) and the blend (nearest on each side, weighted by time and S1 similarity)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from cloudfill.core.condition import blend_reference, composite_reference
from cloudfill.errors import ParameterError


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


def blend_brute_force(
    images: list[np.ndarray],
    unusable: list[np.ndarray],
    offsets: list[float],
    s1: list[np.ndarray | None],
    s1_target: np.ndarray,
    tau: float = 3.0,
) -> np.ndarray:
    """Pixel by pixel in float64, straight from the formula in the docstring."""
    out = np.full(images[0].shape, np.nan, dtype="float64")
    _, ny, nx = images[0].shape
    for y in range(ny):
        for x in range(nx):
            found = {}
            for sign in (-1, 1):
                ks = sorted((k for k in range(len(images)) if np.sign(offsets[k]) == sign),
                            key=lambda k: abs(offsets[k]))  # fmt: skip
                for k in ks:
                    if not unusable[k][y, x] and np.isfinite(images[k][:, y, x]).all():
                        radar = None if s1[k] is None else s1[k][:, y, x].astype("float64")
                        found[sign] = (images[k][:, y, x].astype("float64"), abs(offsets[k]), radar)
                        break
            if len(found) == 1:
                out[:, y, x] = next(iter(found.values()))[0]
            elif len(found) == 2:
                (b, db, sb), (a, dA, sa) = found[-1], found[1]
                lb, la = dA / (db + dA), db / (db + dA)
                target = s1_target[:, y, x].astype("float64")
                if sb is not None and sa is not None and np.isfinite([*sb, *sa, *target]).all():
                    lb *= np.exp(-((target - sb) ** 2).sum() / (2 * tau**2))
                    la *= np.exp(-((target - sa) ** 2).sum() / (2 * tau**2))
                out[:, y, x] = (lb * b + la * a) / (lb + la)
    return out


def _blend_inputs(seed: int = 5):
    rng = np.random.default_rng(seed)
    offsets = [-12.0, 7.0, -30.0, 25.0, -44.0]
    images = [rng.random((4, 9, 11)).astype("float32") for _ in offsets]
    images[1][0, 2, 2] = np.nan
    unusable = [rng.random((9, 11)) < p for p in (0.5, 0.5, 0.4, 0.6, 0.3)]
    s1 = [(-15 + 3 * rng.standard_normal((2, 9, 11))).astype("float32") for _ in offsets]
    s1[2] = None  # no S1 acquisition near that date
    s1[0][1, 4, 5] = np.nan  # a no-data S1 pixel
    target = (-15 + 3 * rng.standard_normal((2, 9, 11))).astype("float32")
    return images, unusable, offsets, s1, target


@pytest.mark.parametrize("backend", ["numpy", "dask"])
def test_blend_matches_the_formula_pixel_by_pixel(backend: str) -> None:
    images, unusable, offsets, s1, target = _blend_inputs()
    expected = blend_brute_force(images, unusable, offsets, s1, target)
    # Every case occurs: both sides, one side only, none.
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    if backend == "dask":
        lazy = [da.from_array(a, chunks=(4, 5, 6)) for a in images]
        radar = [None if r is None else da.from_array(r, chunks=(2, 5, 6)) for r in s1]
        got = blend_reference(
            lazy,
            [da.from_array(m, chunks=(5, 6)) for m in unusable],
            offsets,
            radar,
            da.from_array(target, chunks=(2, 5, 6)),
        )
        assert isinstance(got, da.Array)
        got = got.compute()
    else:
        got = blend_reference(images, unusable, offsets, s1, target)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_blend_follows_the_radar() -> None:
    # Before and after equally far; the radar decides: a target whose S1 matches one side's
    # takes (almost) that side's value, whatever the time weight.
    before, after = np.full((4, 1, 1), 0.1, "float32"), np.full((4, 1, 1), 0.4, "float32")
    clear = np.zeros((1, 1), bool)
    grown, bare = np.full((2, 1, 1), -12.0, "float32"), np.full((2, 1, 1), -25.0, "float32")
    near_after = blend_reference([before, after], [clear, clear], [-40, 10], [bare, grown], grown)
    near_before = blend_reference([before, after], [clear, clear], [-40, 10], [bare, grown], bare)
    assert abs(float(near_after[0, 0, 0]) - 0.4) < 1e-4
    assert abs(float(near_before[0, 0, 0]) - 0.1) < 1e-4
    # With the same radar on both sides it is linear interpolation in time.
    same = blend_reference([before, after], [clear, clear], [-40, 10], [bare, bare], bare)
    assert float(same[0, 0, 0]) == pytest.approx(0.1 + 0.3 * 40 / 50)


def test_blend_rejects_bad_input() -> None:
    image, clear = np.zeros((4, 2, 2), "float32"), np.zeros((2, 2), bool)
    radar = np.zeros((2, 2, 2), "float32")
    with pytest.raises(ParameterError, match="one mask, offset and S1"):
        blend_reference([image], [clear], [], [radar], radar)
    with pytest.raises(ParameterError, match="on the target date"):
        blend_reference([image], [clear], [0], [radar], radar)
    with pytest.raises(ParameterError, match="tau"):
        blend_reference([image], [clear], [3], [radar], radar, tau=0)
