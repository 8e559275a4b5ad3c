"""The land-cover check: spatial block split and random-forest accuracies."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import cloudfill
from cloudfill.errors import ParameterError
from cloudfill.evaluation.landcover import LandcoverCheck, block_split, landcover_check


@pytest.mark.parametrize(("shape", "block"), [((64, 64), 16), ((70, 45), 16), ((33, 97), 8)])
def test_block_split_keeps_blocks_whole(shape: tuple[int, int], block: int) -> None:
    test = block_split(shape, block=block, seed=1)
    assert test.shape == shape and test.dtype == bool
    assert test.any() and (~test).any()
    ny, nx = shape
    for y0 in range(0, ny, block):
        for x0 in range(0, nx, block):
            tile = test[y0 : y0 + block, x0 : x0 + block]
            assert tile.all() or not tile.any(), f"block at {(y0, x0)} is split"
    n_blocks = -(-ny // block) * -(-nx // block)
    n_test_blocks = sum(
        bool(test[y0, x0]) for y0 in range(0, ny, block) for x0 in range(0, nx, block)
    )
    assert n_test_blocks == round(0.5 * n_blocks)
    np.testing.assert_array_equal(test, block_split(shape, block=block, seed=1))
    assert not np.array_equal(test, block_split(shape, block=block, seed=2))


def test_block_split_rejects_single_block() -> None:
    with pytest.raises(ParameterError, match="single"):
        block_split((20, 20), block=32)


def make_scene(seed: int = 0) -> tuple[xr.DataArray, xr.DataArray]:
    """Four classes in 6 x 6 px patches (so each class shows up in every block) with
    well-separated spectra, and a 'no data' label 0 on a stripe."""
    rng = np.random.default_rng(seed)
    ny, nx = 96, 96
    patches = rng.integers(1, 5, (ny // 6, nx // 6))
    labels = np.kron(patches, np.ones((6, 6), dtype=int))
    labels[:, :3] = 0
    spectra = np.array(
        [[0.0, 0.0, 0.0, 0.0], [0.05, 0.08, 0.05, 0.40], [0.10, 0.12, 0.15, 0.25],
         [0.20, 0.20, 0.22, 0.24], [0.04, 0.05, 0.03, 0.02]]
    )  # fmt: skip
    image = spectra[labels].transpose(2, 0, 1) + rng.normal(0, 0.01, (4, ny, nx))
    coords = {
        "band": list(cloudfill.BANDS),
        "y": 4000000.0 - 10.0 * (np.arange(ny) + 0.5),
        "x": 500000.0 + 10.0 * (np.arange(nx) + 0.5),
    }
    real = xr.DataArray(image.astype("float32"), dims=("band", "y", "x"), coords=coords)
    lulc = xr.DataArray(labels, dims=("y", "x"), coords={"y": coords["y"], "x": coords["x"]})
    return real, lulc


def test_separable_classes_score_high_and_noise_scores_lower() -> None:
    real, lulc = make_scene()
    noise = np.random.default_rng(9).normal(0, 0.06, real.shape).astype("float32")
    synth = real + noise
    synth[:, 40, 40] = np.nan  # a hole in the synthesized image: not scored for either
    result = landcover_check(
        real, synth, lulc, LandcoverCheck(block=16, n_estimators=30, ignore_label=0)
    )
    assert result["overall_accuracy_real"] > 0.97
    assert result["overall_accuracy_synth"] < result["overall_accuracy_real"] - 0.1
    f1 = result["f1"]
    assert list(f1.columns) == ["real", "synth", "support"]
    assert list(f1.index) == [1, 2, 3, 4] and f1.index.name == "class"
    assert (f1["real"] > f1["synth"]).all()
    assert f1["support"].sum() == result["n_test"]
    test = block_split((96, 96), block=16, seed=0)
    labelled = lulc.values != 0
    assert result["n_test"] == (test & labelled).sum() - int(test[40, 40] and labelled[40, 40])
    assert result["n_train"] == (~test & labelled).sum()


def test_identical_images_agree_and_label_zero_counts_without_ignore() -> None:
    real, lulc = make_scene(seed=1)
    result = landcover_check(real, real.copy(), lulc, LandcoverCheck(n_estimators=10, seed=3))
    assert result["overall_accuracy_real"] == result["overall_accuracy_synth"]
    assert 0 in result["f1"].index
    capped = landcover_check(real, real, lulc, LandcoverCheck(n_estimators=5, max_train_pixels=100))
    assert capped["n_train"] == 100


def test_grid_and_dims_are_checked() -> None:
    real, lulc = make_scene()
    with pytest.raises(ParameterError, match="one grid"):
        landcover_check(real, real.assign_coords(x=real.x + 5), lulc, LandcoverCheck(block=16))
    with pytest.raises(ParameterError, match="synth"):
        landcover_check(real, real.values, lulc, LandcoverCheck(block=16))
    with pytest.raises(ParameterError, match="n_estimators"):
        LandcoverCheck(n_estimators=0)  # refused when made, before any evaluation work
