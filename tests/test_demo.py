"""The shipped demo cube and default model: the main job works out of the box."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cloudfill
from cloudfill.cli import run


@pytest.fixture(scope="module")
def demo():
    return cloudfill.load_demo()


def test_demo_cube_follows_the_contract(demo) -> None:
    demo.cloudfill.validate()
    assert demo.sizes["time"] == 6 and demo.s2.dtype == np.float32
    frac = demo.cloudfill.cloud_mask().mean(("y", "x")).values
    assert frac[0] == 0 and frac.max() == 1.0 and ((frac > 0.2) & (frac < 0.9)).sum() >= 2
    # Where the sky is clear the observation is the truth (both stored as integers).
    clear = np.broadcast_to(~demo.cloudfill.cloud_mask().values[:, None], demo.s2.shape)
    np.testing.assert_allclose(demo.s2.values[clear], demo.truth.values[clear], atol=0)


def test_default_model_card(demo) -> None:
    model = cloudfill.default_model()
    assert model.card.variant == "SODCTXH" and model.card.confidence
    assert model.card.calibration is not None  # fitted after training (bench_calibration)
    assert model.card.normalisation is not None
    model.check_cube(demo)


def test_default_model_fills_the_demo(demo) -> None:
    """Every cloudy pixel of the demo gets a value, from the model where it has inputs, and
    the filled pixels beat both persistence (nearest earlier clear value) and linear
    temporal interpolation on MAE and PSNR against the demo's truth (issue 7), per date
    averaged and over all filled pixels pooled.

    The full comparison (more baselines, other seeds) is benchmarks/bench_fill.py.
    """
    from cloudfill.core.temporal import linear_interpolation, persistence
    from cloudfill.metrics import mae, psnr

    out = demo.cloudfill.fill_series(cloudfill.default_model()).compute()
    mask = demo.cloudfill.cloud_mask().values
    np.testing.assert_array_equal(out["filled"].values, mask)
    assert np.isfinite(out["s2"].values).all()
    synth = out["method"].values == "synthesize"
    assert synth.sum() >= 4
    conf = out["confidence"].values[synth][mask[synth]]
    assert ((conf > 0) & (conf < 1)).all()
    truth = demo.truth.values
    names = ("model", "persistence", "interpolation")
    per_date: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    errors: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for i in np.flatnonzero(synth):
        date = demo.time.values[i]
        preds = {
            "model": out["s2"].values[i],
            "persistence": persistence(demo, date).values,
            "interpolation": linear_interpolation(demo, date).values,
        }
        for name, pred in preds.items():
            per_date[name].append((mae(pred, truth[i], mask[i]), psnr(pred, truth[i], mask[i])))
            errors[name].append((pred - truth[i])[:, mask[i]].ravel())
    mean = {name: np.mean(per_date[name], axis=0) for name in names}
    pooled = {name: np.concatenate(errors[name]) for name in names}
    for baseline in ("persistence", "interpolation"):
        assert mean["model"][0] < mean[baseline][0], baseline  # MAE, per date
        assert mean["model"][1] > mean[baseline][1] + 1.0, baseline  # PSNR (dB)
        assert np.abs(pooled["model"]).mean() < np.abs(pooled[baseline]).mean(), baseline
        assert (pooled["model"] ** 2).mean() < (pooled[baseline] ** 2).mean(), baseline


@pytest.mark.slow
def test_cloudfill_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert run(["demo", str(out), "--no-progress"]) == 0
    assert "fill-series output, 5 dates" in capsys.readouterr().out
    assert (out / "report" / "index.html").exists()
    assert (out / "filled.zarr").exists() and (out / "report" / "metrics.csv").exists()
