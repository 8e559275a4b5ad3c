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
    fit_calibration,
    write_calibration,
)
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import read_card

BANDS = ("B02", "B03", "B04", "B08")


def _synthetic(seed: int, n: int = 40_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw scales 3x too wide in B02, 5x in the others, with a floor; interpolated half."""
    rng = np.random.default_rng(seed)
    raw = rng.lognormal(np.log(0.03), 0.6, (n, 4))
    true = np.maximum(raw / np.array([3.0, 5.0, 5.0, 5.0]), 0.002)
    kind = np.where(np.arange(n) % 2 == 0, "synthesized", "interpolated")
    true[kind == "interpolated"] = np.array([0.01, 0.012, 0.015, 0.03])
    raw[kind == "interpolated"] = np.nan
    return rng.laplace(0.0, true), raw, kind


def test_fitted_intervals_cover_a_new_laplace_sample() -> None:
    error, raw, kind = _synthetic(0)
    cal = fit_calibration(BANDS, error, raw, kind)
    error, raw, kind = _synthetic(1)  # a fresh sample: no pixel of the fit
    synth = kind == "synthesized"
    scale = np.empty_like(error)
    scale[synth] = cal.map_raw(raw[synth], band_axis=1)
    scale[~synth] = np.array(cal.interpolated)
    got = coverage(error, scale)
    assert all(abs(got[q] - q) < 0.02 for q in got), got
    # Per kind too, and the raw scale was far off.
    for pick in (synth, ~synth):
        assert all(abs(c - q) < 0.03 for q, c in coverage(error[pick], scale[pick]).items())
    assert coverage(error[synth], raw[synth])[0.5] > 0.85


def test_calibration_round_trips_through_the_card(tmp_path) -> None:
    error, raw, kind = _synthetic(0, 5_000)
    cal = fit_calibration(BANDS, error, raw, kind, fitted_on={"seeds": [81]})
    card = ModelCard("S", base_filters=4, n_blocks=1, calibration=cal.to_dict())
    back = ModelCard.from_json(card.to_json())
    assert back == card and Calibration.from_dict(back.calibration) == cal
    assert Calibration.from_dict(back.calibration).fitted_on["seeds"] == [81]
    # Cards written before the field existed still read (uncalibrated).
    assert ModelCard.from_json('{"format_version": 1, "variant": "S"}').calibration is None
    bad = {**cal.to_dict(), "scale": [list(reversed(k)) for k in cal.to_dict()["scale"]]}
    with pytest.raises(errors.CheckpointError, match="non-decreasing"):
        ModelCard.from_dict({**card.to_dict(), "calibration": bad})


def test_write_calibration_keeps_the_weights_byte_identical(tmp_path) -> None:
    src = resources.files("cloudfill") / "data" / "default_model.safetensors"
    path = tmp_path / "m.safetensors"
    shutil.copy(src, path)
    error, raw, kind = _synthetic(0, 5_000)
    cal = fit_calibration(BANDS, error, raw, kind)
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
    """The tiny model with a calibration: raw scales halved, interpolation 0.02 per band."""
    cal = Calibration(
        BANDS,
        raw=((1e-4, 10.0),) * 4,
        scale=((0.5e-4, 5.0),) * 4,
        synthesized=(0.01,) * 4,
        interpolated=(0.02, 0.02, 0.03, 0.04),
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
    np.testing.assert_allclose(
        np.moveaxis(es, 1, -1)[synth], np.moveaxis(es_raw, 1, -1)[synth] / 2, rtol=1e-4
    )
    # Interpolated pixels: the calibration's per-band scale; uncalibrated: NaN.
    np.testing.assert_allclose(
        np.moveaxis(es, 1, -1)[interp], [[0.02, 0.02, 0.03, 0.04]] * int(interp.sum()), rtol=1e-6
    )
    assert np.isnan(np.moveaxis(es_raw, 1, -1)[interp]).all()
    assert (raw["confidence"].values[interp] == INTERPOLATION_CONFIDENCE).all()
    conf = out["confidence"].values
    expected = 1 - np.exp(-0.01 / np.mean([0.02, 0.02, 0.03, 0.04]))
    np.testing.assert_allclose(conf[interp], expected, rtol=1e-5)
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
    """A store written elsewhere may hold one chunk per band: the per-band map needs all."""
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
    cal = calibrate(model, scenes, bins=2)
    assert cal.fitted_on["adjust"] == "auto" and cal.fitted_on["seeds"] == [81, 82, 83]
    assert np.isfinite(cal.interpolated).all()
    if head:  # the head's raw scale is mapped
        assert all(len(knots) >= 1 for knots in cal.raw)
        assert np.isfinite(cal.map_raw(np.full((1, 4), 0.01), band_axis=1)).all()
    else:  # one fitted constant per band
        assert np.isfinite(cal.synthesized).all() and not any(cal.raw)
