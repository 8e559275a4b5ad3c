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
    assert model.card.variant == "SOD" and model.card.confidence
    assert model.card.normalisation is not None
    model.check_cube(demo)


def test_default_model_fills_the_demo(demo) -> None:
    """Every cloudy pixel of the demo gets a value, from the model where it has inputs, and
    the filled pixels beat linear temporal interpolation on the demo's truth (issue 10).

    The full comparison (persistence too, and other seeds) is benchmarks/bench_fill.py.
    """
    from cloudfill.evaluate.baselines import linear_interpolation
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
    scores = {"model": ([], []), "interpolation": ([], [])}
    for i in np.flatnonzero(synth):
        interp = linear_interpolation(demo, demo.time.values[i]).values
        for name, pred in (("model", out["s2"].values[i]), ("interpolation", interp)):
            scores[name][0].append(mae(pred, truth[i], mask[i]))
            scores[name][1].append(psnr(pred, truth[i], mask[i]))
    model_mae, model_psnr = (float(np.mean(v)) for v in scores["model"])
    interp_mae, interp_psnr = (float(np.mean(v)) for v in scores["interpolation"])
    assert model_mae < interp_mae and model_psnr > interp_psnr + 1.0


@pytest.mark.slow
def test_cloudfill_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert run(["demo", str(out), "--no-progress"]) == 0
    assert (out / "report" / "index.html").exists()
    assert (out / "filled.zarr").exists() and (out / "report" / "metrics.csv").exists()
