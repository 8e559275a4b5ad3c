"""Baselines that a synthesized image must beat, predicted on the same pixels as the model.

Three predictions of the S2 image at a target ``date`` (a DataArray (band, y, x) on the cube's
grid, with its coords and CRS):

- :func:`~cloudfill.core.temporal.persistence` — per pixel, the nearest earlier clear
  observation (or, with ``direction="nearest"``, the nearest in time on either side);
- :func:`~cloudfill.core.temporal.linear_interpolation` — per pixel, linear in time between
  the clear observations before and after (both below the fill, whose fallback they are);
- :func:`fit_regression_baseline` / :func:`predict_regression_baseline` — a per-pixel linear
  regression from the model's condition channels (S1 VV/VH, the reference S2 bands, the DEM)
  to the four bands.

None of them reads the target date's own S2 values, so like ``ds.cloudfill.synthesize(date)``
each predicts the whole image and can be scored on any pixel. "Clear" means not flagged by
the unusable mask (``cloud_mask(ds)`` unless a ``mask`` is given). Everything stays lazy on a
dask-backed cube, except the fit, which reads the sampled training pixels.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
from sklearn.linear_model import Ridge
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from cloudfill.core.temporal import as_prediction, clear_s2, persistence, target_date
from cloudfill.errors import MissingVariableError, ModelMismatchError, ParameterError

__all__ = [
    "REGRESSION_INPUTS",
    "RegressionBaseline",
    "fit_regression_baseline",
    "predict_regression_baseline",
    "regression_features",
]

REGRESSION_INPUTS: tuple[str, ...] = ("s1", "reference", "dem")
"""Condition inputs of the regression baseline, as in the model variant ``SOD``."""


# --- per-pixel linear regression -----------------------------------------------------


@dataclass(frozen=True)
class RegressionBaseline:
    """A fitted per-pixel regression from condition channels to the S2 bands.

    Attributes
    ----------
    estimator
        The fitted scikit-learn pipeline (``StandardScaler`` then ``Ridge``).
    inputs
        The condition inputs used, a subset of :data:`REGRESSION_INPUTS`.
    features
        Feature names in column order, e.g. ``("VV", "VH", "ref_B02", ..., "dem")``.
    bands
        Predicted bands, in output order.
    n_samples
        Training pixels the estimator saw.
    """

    estimator: Pipeline
    inputs: tuple[str, ...]
    features: tuple[str, ...]
    bands: tuple[str, ...]
    n_samples: int


def _available_inputs(ds: xr.Dataset, inputs: Iterable[str] | None) -> tuple[str, ...]:
    if inputs is None:
        wanted = [
            name
            for name in REGRESSION_INPUTS
            if name == "reference" or name in ds.data_vars  # the reference comes from s2
        ]
        return tuple(wanted)
    wanted = list(inputs)
    unknown = [name for name in wanted if name not in REGRESSION_INPUTS]
    if unknown or not wanted:
        raise ParameterError(
            f"inputs must be a non-empty subset of {list(REGRESSION_INPUTS)}, got {wanted}"
        )
    for name in wanted:
        if name != "reference" and name not in ds.data_vars:
            raise MissingVariableError(f"regression input {name!r} is not in the cube")
    return tuple(name for name in REGRESSION_INPUTS if name in wanted)


def regression_features(
    ds: xr.Dataset,
    date: Any,
    inputs: Iterable[str] | None = None,
    mask: xr.DataArray | None = None,
) -> xr.DataArray:
    """The regression baseline's per-pixel inputs at ``date``, a lazy (feature, y, x) array.

    - ``s1``: VV and VH of the S1 date nearest to ``date`` (either side), in dB (linear
      backscatter is converted, ``10 log10``);
    - ``reference``: the four S2 bands of each pixel's nearest earlier clear date
      (:func:`persistence`; NaN where there is none);
    - ``dem``: the elevation.

    Parameters
    ----------
    ds, date, mask
        As in :func:`persistence`.
    inputs
        Subset of :data:`REGRESSION_INPUTS`; default all those the cube has.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> list(regression_features(ds, ds.time[2]).feature.values)[:3]
    ['VV', 'VH', 'ref_B02']
    """
    target = target_date(ds, date)
    parts = []
    for name in _available_inputs(ds, inputs):
        if name == "s1":
            s1 = ds["s1"].sel(s1_time=target, method="nearest")
            if s1.attrs.get("units") == "linear":
                s1 = 10 * np.log10(s1.clip(min=1e-10))
            part = s1.rename(pol="feature")
        elif name == "reference":
            ref = persistence(ds, target, mask)
            part = ref.rename(band="feature").assign_coords(
                feature=[f"ref_{b}" for b in ref["band"].values]
            )
        else:
            part = ds["dem"].expand_dims(feature=["dem"])
        part = part.drop_vars(["time", "s1_time"], errors="ignore")
        parts.append(part.transpose("feature", "y", "x").astype("float32"))
    out = xr.concat(parts, dim="feature", coords="minimal", compat="override", join="exact")
    out.name = "features"
    return out


def _training_pixels(
    ds: xr.Dataset,
    dates: Sequence[pd.Timestamp],
    pixel_mask: Any,
    inputs: tuple[str, ...],
    mask: xr.DataArray | None,
) -> tuple[list[xr.DataArray], list[xr.DataArray], list[np.ndarray]]:
    """Lazy features and targets per date, and the (computed) boolean training mask of each."""
    clear = clear_s2(ds, mask)
    allowed: Any = True
    if pixel_mask is not None:
        allowed = (
            pixel_mask.transpose("y", "x")
            if isinstance(pixel_mask, xr.DataArray)
            else xr.DataArray(np.asarray(pixel_mask, dtype=bool), dims=("y", "x"))
        )
        if allowed.shape != (ds.sizes["y"], ds.sizes["x"]):
            raise ParameterError(
                f"pixel_mask has shape {allowed.shape}, expected {(ds.sizes['y'], ds.sizes['x'])}"
            )
    features, targets, usable = [], [], []
    for date in dates:
        x = regression_features(ds, date, inputs, mask)
        y = clear.sel(time=date).transpose("band", "y", "x")
        ok = x.notnull().all("feature") & y.notnull().all("band") & allowed
        features.append(x)
        targets.append(y)
        usable.append(ok.data)
    (computed,) = dask.compute(usable)
    return features, targets, [np.asarray(m, dtype=bool) for m in computed]


def fit_regression_baseline(
    ds: xr.Dataset,
    dates: Iterable[Any],
    pixel_mask: Any = None,
    *,
    mask: xr.DataArray | None = None,
    inputs: Iterable[str] | None = None,
    alpha: float = 1.0,
    max_samples: int | None = 200_000,
    seed: int = 0,
) -> RegressionBaseline:
    """Fit the per-pixel linear regression baseline on the training pixels of ``dates``.

    A sample is one pixel at one date: inputs :func:`regression_features`, target the four
    S2 bands observed there. Only pixels that are clear at that date (the target is never
    taken from a ``truth`` variable), inside ``pixel_mask`` and with every input finite are
    used. The estimator standardises the features and fits a ``Ridge`` (one linear model for
    all pixels).

    Parameters
    ----------
    ds
        A contract cube.
    dates
        S2 dates to learn from (the training split's dates).
    pixel_mask
        Boolean (y, x), True = a training pixel (e.g. the training blocks of a spatial split);
        None = all pixels.
    mask
        Unusable mask, as in :func:`persistence`.
    inputs
        Subset of :data:`REGRESSION_INPUTS`; default all the cube has (a cube without S1,
        such as an optical-only series, uses the reference and the DEM).
    alpha
        Ridge penalty on the standardised features (negligible for many pixels; it only
        keeps collinear inputs stable).
    max_samples
        At most this many samples, drawn at random (``seed``) before any pixel value is
        read; None uses all.
    seed
        Seed of that draw.

    Returns
    -------
    RegressionBaseline

    Raises
    ------
    ParameterError
        If a date is not in the cube, or no training pixel is usable.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> model = fit_regression_baseline(ds, ds.time[1:4])
    >>> model.bands
    ('B02', 'B03', 'B04', 'B08')
    """
    targets_dates = [target_date(ds, date) for date in np.atleast_1d(np.asarray(dates))]
    if not targets_dates:
        raise ParameterError("dates is empty: give at least one S2 date to fit on")
    if max_samples is not None and max_samples < 1:
        raise ParameterError(f"max_samples must be positive or None, got {max_samples}")
    used = _available_inputs(ds, inputs)
    features, targets, usable = _training_pixels(ds, targets_dates, pixel_mask, used, mask)

    pixel = np.concatenate([np.flatnonzero(m) for m in usable])
    date_of = np.repeat(np.arange(len(usable)), [int(m.sum()) for m in usable])
    if pixel.size == 0:
        raise ParameterError(
            "no training pixels: none is clear, inside pixel_mask and with all inputs "
            "(a pixel needs an earlier clear date for its reference bands)"
        )
    if max_samples is not None and pixel.size > max_samples:
        keep = np.sort(np.random.default_rng(seed).choice(pixel.size, max_samples, replace=False))
        pixel, date_of = pixel[keep], date_of[keep]
    picks = [pixel[date_of == i] for i in range(len(usable))]

    nx = ds.sizes["x"]
    samples = []
    for x, y, flat in zip(features, targets, picks, strict=True):
        # Pointwise (vectorised) indexing reads only the chunks holding chosen pixels.
        where = {
            "y": xr.DataArray(flat // nx, dims="sample"),
            "x": xr.DataArray(flat % nx, dims="sample"),
        }
        samples.append(
            (
                x.isel(where).transpose("sample", "feature").data,
                y.isel(where).transpose("sample", "band").data,
            )
        )
    (samples,) = dask.compute(samples)
    x_train = np.concatenate([np.asarray(s[0], dtype="float64") for s in samples])
    y_train = np.concatenate([np.asarray(s[1], dtype="float64") for s in samples])

    estimator = make_pipeline(StandardScaler(), Ridge(alpha=alpha))
    estimator.fit(x_train, y_train)
    return RegressionBaseline(
        estimator=estimator,
        inputs=used,
        features=tuple(str(f) for f in features[0]["feature"].values),
        bands=tuple(str(b) for b in ds["s2"]["band"].values),
        n_samples=len(x_train),
    )


def _predict_block(x: np.ndarray, estimator: Pipeline, n_out: int) -> np.ndarray:
    """Predict (..., feature) -> (..., band); rows with a NaN input give NaN."""
    rows = x.reshape(-1, x.shape[-1])
    out = np.full((rows.shape[0], n_out), np.nan, dtype="float32")
    ok = np.isfinite(rows).all(axis=1)
    if ok.any():
        out[ok] = estimator.predict(rows[ok].astype("float64"))
    return out.reshape((*x.shape[:-1], n_out))


def predict_regression_baseline(
    model: RegressionBaseline,
    ds: xr.Dataset,
    date: Any,
    mask: xr.DataArray | None = None,
) -> xr.DataArray:
    """The regression baseline's prediction of the S2 image at ``date``, lazily.

    Parameters
    ----------
    model
        From :func:`fit_regression_baseline`.
    ds, date, mask
        As in :func:`persistence`; ``ds`` must offer the model's inputs.

    Returns
    -------
    xarray.DataArray
        (band, y, x), ``attrs["baseline"] = "linear_regression"``; NaN where an input is
        missing (e.g. a pixel with no earlier clear date).

    Raises
    ------
    ModelMismatchError
        If the cube's features differ from those the model was fitted on.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((64, 64), seed=0)
    >>> model = fit_regression_baseline(ds, ds.time[1:4])
    >>> predict_regression_baseline(model, ds, ds.time[-1]).dims
    ('band', 'y', 'x')
    """
    target = target_date(ds, date)
    x = regression_features(ds, target, model.inputs, mask)
    found = tuple(str(f) for f in x["feature"].values)
    if found != model.features:
        raise ModelMismatchError(
            f"the regression baseline was fitted on features {list(model.features)}, "
            f"but the cube gives {list(found)}"
        )
    if x.chunks is not None:
        x = x.chunk({"feature": -1})
    out = xr.apply_ufunc(
        _predict_block,
        x,
        input_core_dims=[["feature"]],
        output_core_dims=[["band"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"band": len(model.bands)}},
        kwargs={"estimator": model.estimator, "n_out": len(model.bands)},
    )
    out = out.assign_coords(band=list(model.bands))
    return as_prediction(out, ds, target, "linear_regression")
