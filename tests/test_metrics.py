"""Metrics against skimage and float64 numpy references, on numpy and dask, with masks."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.callbacks import Callback
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cloudfill import metrics
from cloudfill.errors import ParameterError

SK_SSIM = {
    "gaussian_weights": True,
    "sigma": 1.5,
    "use_sample_covariance": False,
    "data_range": 1,
}
PAD = 5  # skimage's crop: (win_size - 1) // 2 for the 11-tap Gaussian window


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    """A smooth 'truth' (4, 40, 36) in 0..0.6 and a noisy, biased prediction, float32."""
    rng = np.random.default_rng(1)
    truth = ndi.gaussian_filter(rng.random((4, 40, 36)), (0, 3, 3)) * 0.6
    pred = truth + rng.normal(0.01, 0.03, truth.shape)
    return pred.astype("float32"), truth.astype("float32")


@pytest.fixture(scope="module")
def cloud() -> np.ndarray:
    """A (y, x) mask: True = evaluate (a blob of 'cloudy' pixels)."""
    rng = np.random.default_rng(2)
    return ndi.gaussian_filter(rng.random((40, 36)), 4) > 0.5


def on(backend: str, array: np.ndarray, chunks: tuple[int, ...] = (2, 17, 15)) -> object:
    if backend == "dask":
        return da.from_array(array, chunks=chunks[-array.ndim :])
    return array


def ssim_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """skimage's full SSIM map, per band (the reference for masked SSIM)."""
    return np.stack(
        [
            structural_similarity(p, t, full=True, **SK_SSIM)[1]
            for p, t in zip(pred, truth, strict=True)
        ]
    )


def sam_reference(pred: np.ndarray, truth: np.ndarray, pixels: np.ndarray) -> float:
    p, t = pred[:, pixels].astype("float64"), truth[:, pixels].astype("float64")
    cos = (p * t).sum(0) / (np.linalg.norm(p, axis=0) * np.linalg.norm(t, axis=0))
    return float(np.degrees(np.arccos(np.clip(cos, -1, 1))).mean())


def test_unmasked_equals_skimage_and_float64(images, backend: str) -> None:
    pred, truth = images
    p64, t64 = pred.astype("float64"), truth.astype("float64")
    got = metrics.all_metrics(on(backend, pred), on(backend, truth))
    assert list(got) == list(metrics.METRICS)
    assert got["psnr"] == pytest.approx(peak_signal_noise_ratio(t64, p64, data_range=1), abs=1e-6)
    # skimage on the float32 arrays (computed in float32) agrees to 1e-6 as well.
    assert got["psnr"] == pytest.approx(
        peak_signal_noise_ratio(truth, pred, data_range=1), abs=1e-6
    )
    for p, t in ((p64, t64), (pred, truth)):
        want = structural_similarity(p, t, channel_axis=0, **SK_SSIM)
        assert got["ssim"] == pytest.approx(want, abs=1e-6)
    assert got["mae"] == pytest.approx(np.abs(p64 - t64).mean(), rel=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(((p64 - t64) ** 2).mean()), rel=1e-12)
    full = np.ones(truth.shape[1:], dtype=bool)
    assert got["sam"] == pytest.approx(sam_reference(pred, truth, full), rel=1e-10)
    # The single-metric functions give the same numbers.
    assert metrics.ssim(on(backend, pred), on(backend, truth)) == pytest.approx(got["ssim"])
    assert metrics.sam(pred, truth) == pytest.approx(got["sam"])


def test_masked_equals_references(images, cloud, backend: str) -> None:
    pred, truth = images
    p64, t64 = pred.astype("float64"), truth.astype("float64")
    got = metrics.all_metrics(on(backend, pred), on(backend, truth), on(backend, cloud))
    sel = np.broadcast_to(cloud, pred.shape)
    assert got["psnr"] == pytest.approx(
        peak_signal_noise_ratio(t64[sel], p64[sel], data_range=1), abs=1e-6
    )
    assert got["mae"] == pytest.approx(np.abs(p64 - t64)[sel].mean(), rel=1e-12)
    assert got["rmse"] == pytest.approx(np.sqrt(((p64 - t64)[sel] ** 2).mean()), rel=1e-12)
    assert got["sam"] == pytest.approx(sam_reference(pred, truth, cloud), rel=1e-10)
    inner = np.zeros_like(cloud)
    inner[PAD:-PAD, PAD:-PAD] = True
    want_ssim = ssim_map(p64, t64)[:, cloud & inner].mean(axis=1).mean()
    assert got["ssim"] == pytest.approx(want_ssim, abs=1e-6)
    assert got["ssim"] != pytest.approx(metrics.ssim(pred, truth), abs=1e-4)


def test_masked_out_pixels_do_not_count(images, cloud, backend: str) -> None:
    pred, truth = images
    before = metrics.all_metrics(on(backend, pred), on(backend, truth), on(backend, cloud))
    # Far from every masked pixel (beyond the SSIM window), corruption changes nothing at all.
    far = ~ndi.binary_dilation(cloud, np.ones((2 * PAD + 1,) * 2, dtype=bool))
    assert far.sum() > 40
    corrupt = pred.copy()
    corrupt[:, far] = np.where(np.arange(far.sum()) % 2, np.nan, 50.0).astype("float32")
    after = metrics.all_metrics(on(backend, corrupt), on(backend, truth), on(backend, cloud))
    assert after == pytest.approx(before, abs=1e-12)
    # The pixel-wise metrics ignore every masked-out pixel, however close.
    corrupt = pred.copy()
    corrupt[:, ~cloud] = 9.0
    after = metrics.all_metrics(on(backend, corrupt), on(backend, truth), on(backend, cloud))
    for name in ("mae", "rmse", "psnr", "sam"):
        assert after[name] == pytest.approx(before[name], abs=1e-12)
    # ... and without the mask the corruption shows.
    assert metrics.mae(corrupt, truth) > 10 * before["mae"]


def test_nan_values_are_ignored(images, backend: str) -> None:
    pred, truth = images
    holes = np.zeros(truth.shape[1:], dtype=bool)
    holes[20:23, 10:14] = True
    holes[3, 30] = True
    with_nan = pred.copy()
    with_nan[:, holes] = np.nan
    with_nan[1, 0, 0] = np.nan  # one band only
    got = metrics.all_metrics(on(backend, with_nan), on(backend, truth))
    ok = np.isfinite(with_nan)
    p64, t64 = pred.astype("float64"), truth.astype("float64")
    assert got["mae"] == pytest.approx(np.abs(p64 - t64)[ok].mean(), rel=1e-12)
    assert got["psnr"] == pytest.approx(
        peak_signal_noise_ratio(t64[ok], p64[ok], data_range=1), abs=1e-6
    )
    assert got["sam"] == pytest.approx(sam_reference(pred, truth, ok.all(0)), rel=1e-10)
    # SSIM: map pixels whose 11 x 11 window touches a NaN are dropped, the rest are exact.
    window = np.ones((1, 2 * PAD + 1, 2 * PAD + 1), dtype=bool)
    touched = ndi.binary_dilation(~ok, window)
    keep = ~touched
    keep[:, :PAD] = keep[:, -PAD:] = False
    keep[:, :, :PAD] = keep[:, :, -PAD:] = False
    smap = ssim_map(p64, t64)
    want = np.mean([smap[b][keep[b]].mean() for b in range(4)])
    assert got["ssim"] == pytest.approx(want, abs=1e-6)


@pytest.mark.parametrize("chunks", [(4, 40, 36), (2, 7, 9), (4, 13, 20), (3, 40, 4)])
def test_ssim_over_dask_chunkings_equals_numpy(images, cloud, chunks) -> None:
    pred, truth = images
    for mask in (None, cloud):
        want = metrics.ssim(pred, truth, mask)
        lazy_mask = None if mask is None else da.from_array(mask, chunks=chunks[1:])
        got = metrics.ssim(
            da.from_array(pred, chunks=chunks), da.from_array(truth, chunks=chunks), lazy_mask
        )
        assert got == pytest.approx(want, abs=1e-12)


class CountComputes(Callback):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def _start(self, dsk) -> None:
        self.count += 1


def test_lazy_xarray_input_computes_once(images, cloud) -> None:
    pred, truth = images
    coords = {"band": ["B02", "B03", "B04", "B08"], "y": np.arange(40.0), "x": np.arange(36.0)}
    dims = ("band", "y", "x")
    p = xr.DataArray(pred, dims=dims, coords=coords).chunk({"y": 20, "x": 18})
    t = xr.DataArray(truth, dims=dims, coords=coords).chunk({"y": 20, "x": 18})
    m = xr.DataArray(cloud, dims=("y", "x"), coords={"y": coords["y"], "x": coords["x"]})
    with CountComputes() as counter:
        got = metrics.all_metrics(p.transpose("y", "x", "band"), t, m)
    assert counter.count == 1
    assert got == pytest.approx(metrics.all_metrics(pred, truth, cloud), abs=1e-12)
    with pytest.raises(ParameterError, match="same coordinates"):
        metrics.mae(p, t.assign_coords(x=t.x + 1))
    with pytest.raises(ParameterError, match="same coordinates"):
        metrics.mae(p, t, m.assign_coords(y=m.y + 1))


def test_perfect_prediction_and_bad_inputs(images) -> None:
    _, truth = images
    got = metrics.all_metrics(truth, truth)
    assert got["mae"] == 0 and got["rmse"] == 0 and got["psnr"] == np.inf
    assert got["ssim"] == pytest.approx(1.0) and got["sam"] == pytest.approx(0.0, abs=1e-5)
    assert np.isnan(metrics.mae(truth, truth, np.zeros(truth.shape[1:], bool)))
    with pytest.raises(ParameterError, match="shape"):
        metrics.mae(truth, truth[:, :-1])
    with pytest.raises(ParameterError, match="mask"):
        metrics.mae(truth, truth, np.ones((3, 3), bool))
    with pytest.raises(ParameterError, match="11 x 11"):
        metrics.ssim(truth[:, :8], truth[:, :8])
