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
    """Every cloudy pixel of the demo gets a value, from the model where it has inputs.

    Whether it beats the baselines is measured, not asserted: see benchmarks/bench_fill.py
    and benchmarks/RESULTS.md (the shipped model does not yet beat interpolation there).
    """
    out = demo.cloudfill.fill_series(cloudfill.default_model()).compute()
    mask = demo.cloudfill.cloud_mask().values
    np.testing.assert_array_equal(out["filled"].values, mask)
    assert np.isfinite(out["s2"].values).all()
    synth = out["method"].values == "synthesize"
    assert synth.sum() >= 4
    conf = out["confidence"].values[synth][mask[synth]]
    assert ((conf > 0) & (conf < 1)).all()
    # Filled reflectance stays physical and close to the truth in the mean.
    truth = demo.truth.values
    err = np.abs(out["s2"].values - truth)[np.broadcast_to(mask[:, None], truth.shape)]
    assert err.mean() < 0.05


@pytest.mark.slow
def test_cloudfill_demo_command(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert run(["demo", str(out), "--no-progress"]) == 0
    assert (out / "report" / "index.html").exists()
    assert (out / "filled.zarr").exists() and (out / "report" / "metrics.csv").exists()
