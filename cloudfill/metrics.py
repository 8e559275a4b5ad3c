"""Image-quality metrics for synthesized Sentinel-2 images: MAE, RMSE, PSNR, SSIM and SAM.

Every metric takes a prediction and a reference image laid out (band, y, x) — numpy arrays,
dask arrays or xarray DataArrays (dims in any order; ``band``, ``y``, ``x`` are transposed into
place) — and an optional boolean ``mask`` (``(y, x)`` or ``(band, y, x)``, True = *evaluate
this pixel*), e.g. the cloud mask of the target date to score only the filled pixels, as the
AllClear benchmark does. A 2-D image is treated as a single band.

Conventions
-----------
- All arithmetic is float64, whatever the input dtype.
- **NaN handling.** A value that is NaN (or infinite) in either image is left out:
  MAE, RMSE and PSNR drop that (band, pixel) value; SAM drops the pixel unless all its bands
  are finite in both images (and inside the mask); SSIM drops every SSIM-map pixel whose
  Gaussian window contains such a value (the NaN spreads through the filters) and averages
  what is left. An empty selection gives NaN.
- **PSNR** is ``10 log10(data_range**2 / MSE)`` with ``data_range = 1`` (MAX = 1 on
  reflectance 0..1, the SEN12MS-CR convention), the MSE pooled over all bands — equal to
  :func:`skimage.metrics.peak_signal_noise_ratio` ``(truth, pred, data_range=1)``. A perfect
  prediction gives ``inf``.
- **SSIM** is computed per band and averaged over bands, with the settings of the SEN12MS-CR
  literature, i.e. :func:`skimage.metrics.structural_similarity` with
  ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1``: Gaussian
  weights (sigma 1.5, truncated at 3.5 sigma, an 11 x 11 window, ``scipy.ndimage`` ``reflect``
  borders), K1 = 0.01, K2 = 0.03, population covariances. As in skimage the map is cropped by
  ``pad = (11 - 1) // 2 = 5`` pixels on each side before averaging, so a border strip of 5
  pixels never counts (also not when a mask selects it); images must be at least 11 x 11.
  With a mask, each band's SSIM is the mean of the cropped map over the masked pixels.
- **SAM** is the spectral angle ``arccos(<p, t> / (|p| |t|))`` between the band vectors of
  each pixel, in degrees, averaged over pixels; pixels where either vector is zero have no
  angle and are left out.

Lazy inputs are reduced chunk by chunk to a few sums and counts (SSIM through
:func:`dask.array.map_overlap` with a halo of the window radius, so its map equals the
whole-image map exactly), and finished with one small :func:`dask.compute`; the cube is never
materialised. :func:`all_metrics` shares that single compute between all five metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
import scipy.ndimage as ndi
import xarray as xr

from cloudfill._backend import is_cupy, to_numpy
from cloudfill.errors import ParameterError

__all__ = [
    "METRICS",
    "SSIM_K1",
    "SSIM_K2",
    "SSIM_SIGMA",
    "SSIM_TRUNCATE",
    "all_metrics",
    "mae",
    "psnr",
    "rmse",
    "sam",
    "ssim",
]

METRICS: tuple[str, ...] = ("mae", "rmse", "psnr", "ssim", "sam")
"""Keys of :func:`all_metrics`, in report order."""

SSIM_SIGMA = 1.5
"""Standard deviation (pixels) of the SSIM Gaussian window."""
SSIM_TRUNCATE = 3.5
"""Truncation of the Gaussian in sigmas, skimage's choice for an 11-tap window."""
SSIM_K1 = 0.01
SSIM_K2 = 0.03
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
"""Window radius (5 px): the halo of the lazy SSIM and the crop at the image border."""

ImageLike = Any  # numpy.ndarray | dask.array.Array | xarray.DataArray (cupy chunks allowed)

Parts = dict[str, Any]


# --- input handling ----------------------------------------------------------------------


def _as_band_first(x: ImageLike, name: str) -> Any:
    if isinstance(x, xr.DataArray):
        order = ("band", "y", "x") if x.ndim == 3 else ("y", "x")
        if set(x.dims) != set(order):
            raise ParameterError(f"{name} has dims {x.dims}, expected {order}")
        x = x.transpose(*order).data
    elif not isinstance(x, da.Array) and not hasattr(x, "__array_function__"):
        x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ParameterError(f"{name} must be (band, y, x) or (y, x), got {x.ndim} dims")
    return x


def _mask_band_first(mask: ImageLike, shape: tuple[int, ...]) -> Any:
    if isinstance(mask, xr.DataArray):
        order = ("band", "y", "x") if mask.ndim == 3 else ("y", "x")
        if set(mask.dims) != set(order):
            raise ParameterError(f"mask has dims {mask.dims}, expected ('y', 'x') or {order}")
        mask = mask.transpose(*order).data
    elif not isinstance(mask, da.Array) and not hasattr(mask, "__array_function__"):
        mask = np.asarray(mask)
    if mask.shape not in (shape, shape[1:]):
        raise ParameterError(f"mask has shape {mask.shape}, expected {shape[1:]} or {shape}")
    # The broadcast is a view (numpy) or a lazy op (dask): no band copies are made.
    return np.broadcast_to(mask.astype(bool), shape)


def _prepare(pred: ImageLike, truth: ImageLike, mask: ImageLike | None) -> tuple[Any, Any, Any]:
    """Float64 (band, y, x) arrays and the boolean array of values that count."""
    labelled = [a for a in (pred, truth, mask) if isinstance(a, xr.DataArray)]
    if len(labelled) > 1:
        try:
            xr.align(*labelled, join="exact")
        except ValueError as exc:
            raise ParameterError(
                f"pred, truth and mask are not on the same coordinates: {exc}"
            ) from exc
    p = _as_band_first(pred, "pred")
    t = _as_band_first(truth, "truth")
    if p.shape != t.shape:
        raise ParameterError(f"pred has shape {p.shape} but truth has shape {t.shape}")
    arrays = [p, t] if mask is None else [p, t, _mask_band_first(mask, p.shape)]
    if any(isinstance(a, da.Array) for a in arrays):
        chunks = next(a for a in arrays if isinstance(a, da.Array)).chunks
        arrays = [a if isinstance(a, da.Array) else da.from_array(a, chunks=chunks) for a in arrays]
    p, t = arrays[0].astype("float64"), arrays[1].astype("float64")
    valid = np.isfinite(p) & np.isfinite(t)
    if mask is not None:
        valid = valid & arrays[2]
    return p, t, valid


# --- per-metric partial sums (lazy for dask inputs) --------------------------------------


def _error_parts(p: Any, t: Any, valid: Any) -> Parts:
    diff = np.where(valid, p - t, 0.0)
    return {"abs": abs(diff).sum(), "sq": (diff * diff).sum(), "n": valid.sum()}


def _sam_parts(p: Any, t: Any, valid: Any) -> Parts:
    pixel_ok = valid.all(axis=0)
    p = np.where(valid, p, 0.0)
    t = np.where(valid, t, 0.0)
    dot = (p * t).sum(axis=0)
    norms = np.sqrt((p * p).sum(axis=0) * (t * t).sum(axis=0))
    ok = pixel_ok & (norms > 0)
    cosine = np.clip(np.where(ok, dot / np.where(ok, norms, 1.0), 1.0), -1.0, 1.0)
    angle = np.degrees(np.arccos(cosine))
    return {"angle": np.where(ok, angle, 0.0).sum(), "n": ok.sum()}


def _ndimage_for(block: Any) -> Any:
    # cupy chunks need cupyx's filters; imported only when such a chunk shows up.
    if is_cupy(block):
        import cupyx.scipy.ndimage as cundi  # optional (the gpu extra): only where chunks are CuPy

        return cundi
    return ndi


def _ssim_map(a: Any, b: Any, data_range: float) -> Any:
    """skimage's SSIM map, per band of (band, y, x) float64 blocks, in the same operations."""
    nd = _ndimage_for(a)

    def blur(x: Any) -> Any:
        # sigma 0 on the band axis: each band is filtered on its own, as skimage does.
        return nd.gaussian_filter(
            x, sigma=(0, SSIM_SIGMA, SSIM_SIGMA), mode="reflect", truncate=SSIM_TRUNCATE
        )

    ux, uy = blur(a), blur(b)
    vx = blur(a * a) - ux * ux
    vy = blur(b * b) - uy * uy
    vxy = blur(a * b) - ux * uy
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    num = (2 * ux * uy + c1) * (2 * vxy + c2)
    den = (ux**2 + uy**2 + c1) * (vx + vy + c2)
    return num / den


def _ssim_parts(p: Any, t: Any, valid: Any, data_range: float) -> Parts:
    _, ny, nx = p.shape
    win = 2 * SSIM_RADIUS + 1
    if ny < win or nx < win:
        raise ParameterError(f"SSIM needs images of at least {win} x {win} pixels, got {ny} x {nx}")
    if isinstance(p, da.Array):
        # A halo of the window radius makes every chunk's map equal the whole-image map;
        # "none" leaves the true image border to scipy's reflect mode, as in skimage.
        smap = da.map_overlap(
            _ssim_map,
            p,
            t,
            depth={0: 0, 1: SSIM_RADIUS, 2: SSIM_RADIUS},
            boundary="none",
            dtype="float64",
            meta=p._meta,
            data_range=data_range,
        )
    else:
        smap = _ssim_map(p, t, data_range)
    crop = (slice(None), slice(SSIM_RADIUS, ny - SSIM_RADIUS), slice(SSIM_RADIUS, nx - SSIM_RADIUS))
    smap, valid = smap[crop], valid[crop]
    ok = valid & np.isfinite(smap)
    return {"sum": np.where(ok, smap, 0.0).sum(axis=(1, 2)), "n": ok.sum(axis=(1, 2))}


# --- finishing ---------------------------------------------------------------------------


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(to_numpy(value), dtype="float64")


def _ratio(total: Any, count: Any) -> float:
    n = float(_to_numpy(count))
    return float(_to_numpy(total)) / n if n > 0 else math.nan


def _finish_mae(parts: Parts, data_range: float) -> float:
    return _ratio(parts["abs"], parts["n"])


def _finish_rmse(parts: Parts, data_range: float) -> float:
    return math.sqrt(_ratio(parts["sq"], parts["n"]))


def _finish_psnr(parts: Parts, data_range: float) -> float:
    mse = _ratio(parts["sq"], parts["n"])
    if math.isnan(mse):
        return math.nan
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _finish_ssim(parts: Parts, data_range: float) -> float:
    total, count = _to_numpy(parts["sum"]), _to_numpy(parts["n"])
    has = count > 0
    # Bands without a single valid map pixel do not enter the band average.
    return float(np.mean(total[has] / count[has])) if has.any() else math.nan


def _finish_sam(parts: Parts, data_range: float) -> float:
    return _ratio(parts["angle"], parts["n"])


_FINISH: dict[str, tuple[str, Callable[[Parts, float], float]]] = {
    "mae": ("error", _finish_mae),
    "rmse": ("error", _finish_rmse),
    "psnr": ("error", _finish_psnr),
    "ssim": ("ssim", _finish_ssim),
    "sam": ("sam", _finish_sam),
}


def _evaluate(
    names: tuple[str, ...],
    pred: ImageLike,
    truth: ImageLike,
    mask: ImageLike | None,
    data_range: float,
) -> dict[str, float]:
    if not data_range > 0:
        raise ParameterError(f"data_range must be positive, got {data_range}")
    p, t, valid = _prepare(pred, truth, mask)
    builders: dict[str, Callable[[], Parts]] = {
        "error": lambda: _error_parts(p, t, valid),
        "ssim": lambda: _ssim_parts(p, t, valid, data_range),
        "sam": lambda: _sam_parts(p, t, valid),
    }
    needed = {_FINISH[name][0] for name in names}
    parts = {key: builders[key]() for key in sorted(needed)}
    # One compute for everything: dask shares the reads of pred and truth between metrics.
    (parts,) = dask.compute(parts)
    return {name: _FINISH[name][1](parts[_FINISH[name][0]], data_range) for name in names}


# --- public metrics ----------------------------------------------------------------------


def mae(pred: ImageLike, truth: ImageLike, mask: ImageLike | None = None) -> float:
    """Mean absolute error over all bands and (masked, finite) pixels.

    Parameters
    ----------
    pred, truth
        Images (band, y, x) or (y, x): numpy, dask or xarray (see the module notes).
    mask
        Boolean (y, x) or (band, y, x); True = pixel counted. None counts every pixel.

    Returns
    -------
    float
        NaN when no value counts.

    Examples
    --------
    >>> import numpy as np
    >>> mae(np.full((4, 16, 16), 0.75), np.full((4, 16, 16), 0.5))
    0.25
    """
    return _evaluate(("mae",), pred, truth, mask, 1.0)["mae"]


def rmse(pred: ImageLike, truth: ImageLike, mask: ImageLike | None = None) -> float:
    """Root mean squared error over all bands and (masked, finite) pixels.

    Parameters are those of :func:`mae`.

    Examples
    --------
    >>> import numpy as np
    >>> rmse(np.full((4, 16, 16), 0.75), np.full((4, 16, 16), 0.5))
    0.25
    """
    return _evaluate(("rmse",), pred, truth, mask, 1.0)["rmse"]


def psnr(
    pred: ImageLike,
    truth: ImageLike,
    mask: ImageLike | None = None,
    *,
    data_range: float = 1.0,
) -> float:
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range**2 / MSE)``.

    Equals ``skimage.metrics.peak_signal_noise_ratio(truth, pred, data_range=data_range)``
    (the MSE pooled over all bands); ``inf`` for a perfect prediction.

    Parameters
    ----------
    pred, truth, mask
        As in :func:`mae`.
    data_range
        MAX, the signal range: 1 for reflectance 0..1 (the SEN12MS-CR convention).

    Examples
    --------
    >>> import numpy as np
    >>> round(psnr(np.full((4, 16, 16), 0.11), np.full((4, 16, 16), 0.1)), 6)
    40.0
    """
    return _evaluate(("psnr",), pred, truth, mask, data_range)["psnr"]


def ssim(
    pred: ImageLike,
    truth: ImageLike,
    mask: ImageLike | None = None,
    *,
    data_range: float = 1.0,
) -> float:
    """Structural similarity, per band then averaged over bands.

    Without a mask or NaNs this equals ``skimage.metrics.structural_similarity(pred, truth,
    channel_axis=0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    data_range=data_range)``: the mean of the SSIM map cropped by 5 pixels at each border.
    With a mask, each band's map (still cropped) is averaged over the masked pixels only.

    Parameters
    ----------
    pred, truth, mask
        As in :func:`mae`; images must be at least 11 x 11 pixels.
    data_range
        The signal range L in the SSIM constants ``(K L)**2``: 1 for reflectance 0..1.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.random.default_rng(0).random((4, 32, 32))
    >>> ssim(truth, truth)
    1.0
    """
    return _evaluate(("ssim",), pred, truth, mask, data_range)["ssim"]


def sam(pred: ImageLike, truth: ImageLike, mask: ImageLike | None = None) -> float:
    """Spectral angle mapper: mean angle (degrees) between per-pixel band vectors.

    Parameters are those of :func:`mae`; a pixel counts only if all its bands are finite
    in both images and it is inside the mask.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.ones((2, 16, 16))
    >>> pred = np.stack([np.ones((16, 16)), np.zeros((16, 16))])
    >>> round(sam(pred, truth), 6)
    45.0
    """
    return _evaluate(("sam",), pred, truth, mask, 1.0)["sam"]


def all_metrics(
    pred: ImageLike,
    truth: ImageLike,
    mask: ImageLike | None = None,
    *,
    data_range: float = 1.0,
) -> dict[str, float]:
    """MAE, RMSE, PSNR, SSIM and SAM in one pass (a single compute for lazy inputs).

    Parameters
    ----------
    pred, truth, mask
        As in :func:`mae`.
    data_range
        As in :func:`psnr` and :func:`ssim`.

    Returns
    -------
    dict
        Keys ``"mae", "rmse", "psnr", "ssim", "sam"`` (:data:`METRICS`), float values.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.random.default_rng(0).random((4, 32, 32))
    >>> scores = all_metrics(truth + 0.01, truth)
    >>> list(scores), round(scores["psnr"], 3)
    (['mae', 'rmse', 'psnr', 'ssim', 'sam'], 40.0)
    """
    return _evaluate(METRICS, pred, truth, mask, data_range)
