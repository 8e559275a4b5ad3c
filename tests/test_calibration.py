"""Calibrated error bars: the fit, the card, and ``error_scale`` in ``fill_series``."""

from __future__ import annotations

import copy
import shutil
from dataclasses import replace
from importlib import resources

import numpy as np
import pytest
import xarray as xr
from safetensors import safe_open

from cloudfill import errors
from cloudfill.fill.blend import DEFAULT_FEATHER, feather_weights
from cloudfill.fill.series import INTERPOLATION_CONFIDENCE, fill_series
from cloudfill.infer.settings import InferenceSettings
from cloudfill.model.calibration import (
    Calibration,
    confidence_from_error_scale,
    coverage,
    write_calibration,
)
from cloudfill.model.calibration_fit import fit_calibration
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import read_card

BANDS = ("B02", "B03", "B04", "B08")


def _synthetic(seed: int, n: int = 40_000) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """Laplace errors whose scale grows with the level and the gap, smaller where synthesized;
    returns the errors, the features and the true scales (n, band)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.0, 0.5, (n, 4))
    gap = rng.uniform(np.log1p(10), np.log1p(200), (n, 1))
    synthesized = (np.arange(n) % 2 == 0).astype(float)[:, None]
    true = (0.002 + 0.04 * level) * np.exp(0.5 * (gap - 3.0)) * np.where(synthesized, 0.6, 1.0)
    features = {"level": level, "age_gap": gap, "synthesized": synthesized}
    return rng.laplace(0.0, true), features, true


def _scale(cal: Calibration, features: dict[str, np.ndarray]) -> np.ndarray:
    """The calibration's scale of (n, band) features, as (n, band)."""
    arrays = {
        k: xr.DataArray(np.broadcast_to(v, (len(v), 4)).T[:, :, None], dims=("band", "y", "x"))
        for k, v in features.items()
    }
    return cal.scale(arrays).values[:, :, 0].T


def test_fitted_intervals_cover_a_new_laplace_sample() -> None:
    error, features, _ = _synthetic(0)
    cal = fit_calibration(BANDS, error, features)
    error, features, true = _synthetic(1)  # a fresh sample: no value of the fit
    scale = _scale(cal, features)
    got = coverage(error, scale)
    assert all(abs(got[q] - q) < 0.02 for q in got), got
    synth = features["synthesized"][:, 0] == 1
    for pick in (synth, ~synth):  # per kind too
        assert all(abs(c - q) < 0.03 for q, c in coverage(error[pick], scale[pick]).items())
    # The fitted scale follows the true one (float64 reference), not just its mean.
    ratio = scale / true
    assert (
        0.9 < np.median(ratio) < 1.1 and np.quantile(ratio, 0.95) / np.quantile(ratio, 0.05) < 1.6
    )
    # One scale for every value would miss: the features carry the ranking.
    flat = coverage(error, np.full(error.shape, np.abs(error).mean()))
    assert abs(flat[0.5] - 0.5) > 0.05


def test_calibration_round_trips_through_the_card(tmp_path) -> None:
    error, features, _ = _synthetic(0, 5_000)
    cal = fit_calibration(BANDS, error, features, fitted_on={"seeds": [81]})
    card = ModelCard("S", base_filters=4, n_blocks=1, calibration=cal.to_dict())
    back = ModelCard.from_json(card.to_json())
    assert back == card and Calibration.from_dict(back.calibration) == cal
    assert Calibration.from_dict(back.calibration).fitted_on["seeds"] == [81]
    # Cards written before the field existed still read (uncalibrated).
    assert ModelCard.from_json('{"format_version": 1, "variant": "S"}').calibration is None
    data = cal.to_dict()
    bad = {
        **data,
        "curves": {
            "level": [list(reversed(data["curves"]["level"][0])), data["curves"]["level"][1]]
        },
    }
    with pytest.raises(errors.CheckpointError, match="increasing"):
        ModelCard.from_dict({**card.to_dict(), "calibration": bad})
    unknown = {**data, "flags": {"snow": 1.0}}
    with pytest.raises(errors.CheckpointError, match="snow"):
        ModelCard.from_dict({**card.to_dict(), "calibration": unknown})
    # A calibration of the older form (a map of the raw scale) is ignored, with a warning.
    older = {"bands": list(BANDS), "raw": [[0.01]] * 4, "scale": [[0.02]] * 4}
    older |= {"synthesized": [0.01] * 4, "interpolated": [0.02] * 4, "fitted_on": {}}
    with pytest.warns(UserWarning, match="older form"):
        assert ModelCard.from_dict({**card.to_dict(), "calibration": older}).calibration is None


def test_write_calibration_keeps_the_weights_byte_identical(tmp_path) -> None:
    src = resources.files("cloudfill") / "data" / "default_model.safetensors"
    path = tmp_path / "m.safetensors"
    shutil.copy(src, path)
    error, features, _ = _synthetic(0, 5_000)
    cal = fit_calibration(BANDS, error, features)
    write_calibration(path, cal)
    assert Calibration.from_dict(read_card(path).calibration) == cal
    with safe_open(str(src), "np") as a, safe_open(str(path), "np") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for name in a.keys():
            assert a.get_tensor(name).tobytes() == b.get_tensor(name).tobytes()
    old, new = src.read_bytes(), path.read_bytes()
    # The tensors' bytes follow the header unchanged.
    assert (
        old[8 + int.from_bytes(old[:8], "little") :] == new[8 + int.from_bytes(new[:8], "little") :]
    )


def test_confidence_from_error_scale() -> None:
    b = xr.DataArray(
        np.array([0.0, 0.005, 0.05, np.nan], "float32")[None, None, :].repeat(4, 0),
        dims=("band", "y", "x"),
    )
    conf = confidence_from_error_scale(b).values[0]
    assert conf[0] == 1 and 0 < conf[2] < conf[1] < 1 and np.isnan(conf[3])


@pytest.fixture(scope="module")
def calibrated(tiny_model):
    """The tiny model with a calibration: interpolated values 0.02, 0.02, 0.03, 0.04 per
    band, synthesized ones half that (the per-band features are read, and weigh nothing)."""
    cal = Calibration(
        BANDS,
        intercept=tuple(np.log([0.02, 0.02, 0.03, 0.04])),
        flags={"synthesized": float(np.log(0.5)), "no_clear": 0.0},
        curves={"date_residual": ((-7.0, 0.0), (0.0, 0.0))},
    )
    model = copy.copy(tiny_model)
    model.card = replace(tiny_model.card, calibration=cal.to_dict())
    return model


@pytest.mark.slow  # two fills of the scene, 8 s
def test_error_scale_in_fill_series(scene: xr.Dataset, tiny_model, calibrated) -> None:
    settings = InferenceSettings(tile=32)
    lazy = fill_series(scene.chunk({"time": 1, "y": 48, "x": 48}), calibrated, inference=settings)
    es = lazy["error_scale"]
    assert es.dims == ("time", "band", "y", "x") and es.dtype == np.float32
    assert es.chunks is not None and es.chunksizes["y"] == lazy["s2"].chunksizes["y"]
    assert list(es.band.values) == list(scene.band.values)
    np.testing.assert_array_equal(es.x.values, scene.x.values)
    assert es.attrs["units"] == "reflectance" and es.attrs["calibrated"] == 1
    out = lazy.compute()
    raw = fill_series(scene, tiny_model, inference=settings).compute()
    assert raw["error_scale"].attrs["calibrated"] == 0
    filled = out["filled"].values
    es, es_raw = out["error_scale"].values, raw["error_scale"].values
    far = (feather_weights(scene.cloudfill.cloud_mask(), DEFAULT_FEATHER) == 0).values
    assert (np.moveaxis(es, 1, -1)[far] == 0).all()  # real pixels: 0
    synth = np.isfinite(es_raw).all(axis=1) & filled  # uncalibrated: raw b where synthesized
    interp = filled & ~synth
    assert synth.any() and interp.any()
    per_band = np.array([0.02, 0.02, 0.03, 0.04])
    np.testing.assert_allclose(
        np.moveaxis(es, 1, -1)[synth], [per_band / 2] * int(synth.sum()), rtol=1e-5
    )
    # Interpolated pixels: the calibration's per-band scale; uncalibrated: NaN.
    np.testing.assert_allclose(
        np.moveaxis(es, 1, -1)[interp], [per_band] * int(interp.sum()), rtol=1e-5
    )
    assert np.isnan(np.moveaxis(es_raw, 1, -1)[interp]).all()
    assert (raw["confidence"].values[interp] == INTERPOLATION_CONFIDENCE).all()
    conf = out["confidence"].values
    np.testing.assert_allclose(conf[interp], 1 - np.exp(-0.01 / per_band.mean()), rtol=1e-5)
    # The values do not depend on the calibration.
    np.testing.assert_array_equal(out["s2"].values, raw["s2"].values)


def test_unfilled_pixels_have_no_error_scale(scene: xr.Dataset, calibrated) -> None:
    ds = scene.copy(deep=True)
    ds["cloud"][:, :, :5] = True  # cloudy on every date: nothing to fill with
    out = fill_series(ds, calibrated, feather=0, inference=InferenceSettings(tile=32)).compute()
    assert np.isnan(out["error_scale"].values[:, :, :, :5]).all()
    assert (out["confidence"].values[:, :, :5] == 0).all()


@pytest.mark.slow  # two fills, 10 s
def test_bands_chunked_apart_are_calibrated_like_one_chunk(scene: xr.Dataset, calibrated) -> None:
    """A store written elsewhere may hold one chunk per band: the per-band columns (the
    intercept, the date residual) meet each band's own chunk."""
    settings = InferenceSettings(tile=32)
    apart = fill_series(scene.chunk({"band": 1, "y": 48, "x": 48}), calibrated, inference=settings)
    whole = fill_series(scene, calibrated, inference=settings)
    np.testing.assert_array_equal(apart["error_scale"].values, whole["error_scale"].values)


@pytest.mark.slow  # six small fills per case
@pytest.mark.parametrize("head", [True, False], ids=["head", "no-head"])
def test_calibrate_fits_a_model_with_and_without_a_head(head: bool) -> None:
    """calibrate() with its defaults (the fill's own adjust="auto") gives finite scales for
    synthesized and interpolated pixels, also for a model without a confidence head."""
    import cloudfill
    from cloudfill.fill.calibrate import calibrate
    from tests.conftest import make_tiny_model

    scenes = [
        cloudfill.simulate_scene((64, 64), dates=6, seed=seed, cloud_fraction=0.5)
        for seed in (81, 82, 83)
    ]
    # Blend pairing: every cloudy date with S1 is synthesized (no clear date is needed).
    model = make_tiny_model(scenes[0], confidence=head, reference_mode="blend")
    cal = calibrate(model, scenes, knots=3)
    assert cal.fitted_on["adjust"] == "auto"
    assert [scene["seed"] for scene in cal.fitted_on["scenes"]] == [81, 82, 83]
    assert ("raw" in cal.curves) == head  # without a head the raw feature is constant
    assert {"level", "age_gap", "departure"} <= set(cal.curves) and "synthesized" in cal.flags
    # Applied in a fill, every filled value gets a finite scale.
    calibrated = copy.copy(model)
    calibrated.card = replace(model.card, calibration=cal.to_dict())
    out = fill_series(scenes[0], calibrated).compute()
    es = np.moveaxis(out["error_scale"].values, 1, -1)[out["filled"].values]
    assert es.size and np.isfinite(es).all() and (es > 0).all()


@pytest.mark.slow  # a whole fill on StrictChunk chunks, 6 s
def test_a_calibrated_fill_keeps_the_chunk_type(scene: xr.Dataset, calibrated) -> None:
    """Like CuPy, StrictChunk refuses NumPy operands: the calibration's per-band columns and
    features must be made where the chunks live."""
    from tests.conftest import StrictChunk, on_strict_chunks

    cube = on_strict_chunks(scene, {"time": 1, "s1_time": 1, "y": 48, "x": 48})
    out = fill_series(cube, calibrated, feather=4, inference=InferenceSettings(tile=32))
    for name in ("s2", "error_scale", "confidence"):
        assert type(out[name].data._meta) is StrictChunk, name
    assert np.isfinite(out["error_scale"].values[out["filled"].values.nonzero()[0]]).any()
