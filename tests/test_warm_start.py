"""Warm starts: a run that begins from a trained model's weights (``train(init=...)``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
import xarray as xr

import cloudfill
from cloudfill.cli import run
from cloudfill.core.variants import get_variant
from cloudfill.errors import ParameterError
from cloudfill.model import load_model
from cloudfill.training.config import NetworkSettings, OptimSettings, Schedule, TrainConfig
from cloudfill.training.index import PatchSettings, build_index
from cloudfill.training.run import train
from cloudfill.training.step import config_generator
from cloudfill.training.warm_start import check_init, init_stats, start_state, weights_digest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NET = NetworkSettings(base_filters=4, n_blocks=1, d_filters=4, confidence=True)
PATCHES = PatchSettings(32, overlap=0, block_size=32)


def config(
    lr: float = 2e-4,
    network: NetworkSettings = NET,
    steps: int = 2,
    seed: int = 0,
    ema: float | None = None,
    variant: str = "SODC",
    reference: str = "blend",
    despeckle: int = 3,
) -> TrainConfig:
    return TrainConfig(
        variant,
        network=network,
        optim=OptimSettings(lr=lr, ema=ema),
        schedule=Schedule(max_steps=steps),
        patches=PATCHES,
        reference=reference,
        despeckle=despeckle,
        seed=seed,
    )


@pytest.fixture(scope="module")
def scenes() -> tuple[xr.Dataset, xr.Dataset]:
    return tuple(cloudfill.simulate_scene((96, 96), seed=s) for s in (0, 1))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def trained(scenes: tuple[xr.Dataset, xr.Dataset]) -> cloudfill.CloudfillModel:
    # Another seed than the runs below: other initial weights.
    return train(scenes[0], config(steps=3, seed=5), progress=False)


def _parameters(model: cloudfill.CloudfillModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.generator.named_parameters()}


def test_a_warm_start_begins_at_the_models_weights_and_statistics(
    scenes: tuple[xr.Dataset, xr.Dataset], trained: cloudfill.CloudfillModel
) -> None:
    # A learning rate of 1e-12: one step cannot move the weights measurably, so the run's
    # weights are where it began; with a weight average (what is returned), it begins there too.
    warm = train(scenes[1], config(lr=1e-12, steps=1, ema=0.5), progress=False, init=trained)
    cold = train(scenes[1], config(lr=1e-12, steps=1), progress=False)
    start, mine, fresh = _parameters(trained), _parameters(warm), _parameters(cold)
    assert all(torch.allclose(mine[k], start[k], atol=1e-9) for k in start)
    assert not all(torch.allclose(fresh[k], start[k], atol=1e-3) for k in start)
    # The statistics are the model's (the second scene's own differ), the start recorded.
    assert warm.card.normalisation == trained.card.normalisation
    assert cold.card.normalisation != trained.card.normalisation
    record = warm.card.training["init"]
    assert record["weights_sha256"] == weights_digest(trained.generator)
    assert record["steps"] == 3 and cold.card.training["init"] is None


def test_a_model_of_another_architecture_is_refused_before_the_cube_is_read(
    trained: cloudfill.CloudfillModel, tmp_path: Path
) -> None:
    wider = NetworkSettings(base_filters=8, n_blocks=1, d_filters=4, confidence=True)
    missing = tmp_path / "no-such-cube.zarr"  # never opened: the check comes first
    with pytest.raises(ParameterError, match="base_filters=4 but .* base_filters=8"):
        train(missing, config(network=wider), progress=False, init=trained)
    with pytest.raises(ParameterError, match="despeckle=3, .* despeckle=5"):
        train(missing, config(despeckle=5), progress=False, init=trained)
    with pytest.raises(ParameterError, match="init must be"):
        train(missing, config(), progress=False, init=42)  # type: ignore[arg-type]


def test_a_model_of_another_reference_mode_is_refused(
    scenes: tuple[xr.Dataset, xr.Dataset], tmp_path: Path
) -> None:
    sod = config(variant="SOD", reference="date", steps=1)
    dated = train(scenes[0], sod, progress=False)
    missing = tmp_path / "no-such-cube.zarr"
    blended = config(variant="SOD", reference="blend")
    with pytest.raises(ParameterError, match="reference='date'.*reference='blend'"):
        train(missing, blended, progress=False, init=dated)
    # A prebuilt index fixes the reference mode and the statistics: both are checked.
    composite = build_index(scenes[1], "SOD", PATCHES, reference="composite", despeckle=3,
                            stats=init_stats(dated))  # fmt: skip
    with pytest.raises(ParameterError, match="reference='date'.*reference='composite'"):
        train(scenes[1], sod, progress=False, init=dated, index=composite)
    own = build_index(scenes[1], "SOD", PATCHES, despeckle=3)
    with pytest.raises(ParameterError, match="statistics are not the init model's"):
        train(scenes[1], sod, progress=False, init=dated, index=own)


def test_a_resumed_run_must_name_the_same_start(
    scenes: tuple[xr.Dataset, xr.Dataset], trained: cloudfill.CloudfillModel, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    train(scenes[1], config(steps=1), out, progress=False, init=trained)
    with pytest.raises(ParameterError, match="cannot resume: .* started from the model with"):
        train(scenes[1], config(steps=2), out, resume=True, progress=False)
    # The same weights in another wrapper (another creation time) are the same start.
    again = cloudfill.CloudfillModel(trained.generator, replace(trained.card, created="x"))
    resumed = train(scenes[1], config(steps=2), out, resume=True, progress=False, init=again)
    assert resumed.card.training["steps"] == 2


def test_cli_init_takes_the_architecture_from_the_model(
    scenes: tuple[xr.Dataset, xr.Dataset],
    trained: cloudfill.CloudfillModel,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ckpt = trained.save(tmp_path / "start.safetensors")
    cube = cloudfill.write_cube(scenes[1], tmp_path / "cube.zarr")
    # The command line's architecture defaults (SOD, 64 filters, 9 blocks, date reference)
    # are not the model's: with --init, what is not given comes from the model.
    base = ["train", str(cube), "--patch-size", "32", "--overlap", "0", "--block-size", "32"]
    base += ["--max-steps", "1", "--d-filters", "4", "--no-progress"]
    assert run([*base, "--out", str(tmp_path / "a"), "--init", str(ckpt)]) == 0
    card = load_model(tmp_path / "a" / "best.safetensors").card
    assert card.training["despeckle"] == 3  # the model's, not the command line's default 5
    assert (card.variant, card.base_filters, card.n_blocks, card.confidence) == (
        "SODC",
        4,
        1,
        True,
    )
    assert card.reference_mode == "blend" and card.training["init"]["steps"] == 3
    # A resume of that run: with the same --init it continues; without, it says so.
    resume = [*base, "--out", str(tmp_path / "a"), "--max-steps", "2", "--resume"]
    capsys.readouterr()
    assert run(resume) == 2
    assert "started from the model with weights" in capsys.readouterr().err
    assert run([*resume, "--init", str(ckpt)]) == 0
    capsys.readouterr()
    # A setting given on the command line that the model does not have is refused.
    wider = [*base, "--out", str(tmp_path / "b"), "--init", str(ckpt), "--base-filters", "8"]
    assert run(wider) == 2
    assert "--base-filters=4 but" in capsys.readouterr().err  # flags under the CLI
    assert not (tmp_path / "b" / "best.safetensors").exists()


def test_a_variant_that_appends_inputs_starts_at_the_models_output(
    scenes: tuple[xr.Dataset, xr.Dataset], trained: cloudfill.CloudfillModel
) -> None:
    # SODC -> SODCT: the two season channels' weights start at zero, so whatever they hold
    # the network computes what the SODC model computes.
    wider = config_generator(config(variant="SODCT")).eval()
    wider.load_state_dict(start_state(trained, wider), strict=True)
    x = torch.randn(2, get_variant("SODCT").n_inputs, 32, 32)
    with torch.no_grad():
        want, got = trained.generator(x[:, :-2]), wider(x)
    torch.testing.assert_close(got.mean, want.mean, rtol=0, atol=1e-6)
    torch.testing.assert_close(got.scale, want.scale, rtol=0, atol=1e-6)
    run = train(scenes[1], config(variant="SODCT", steps=1), progress=False, init=trained)
    assert run.card.variant == "SODCT" and run.card.training["init"]["steps"] == 3
    # Fewer inputs, or other ones, are refused.
    with pytest.raises(ParameterError, match="does not extend its inputs"):
        check_init(run, config(variant="SODC"))
    with pytest.raises(ParameterError, match="SODC does not extend SODCT"):
        start_state(run, config_generator(config(variant="SODC")))
