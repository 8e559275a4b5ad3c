"""The training loop, its checkpoints, exact resume, the experiment runner and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from safetensors import safe_open

import cloudfill
from cloudfill.cli import run
from cloudfill.cube.schema import BANDS
from cloudfill.errors import OutputError, ParameterError
from cloudfill.model import change_pixels, get_variant, load_model
from cloudfill.model.generator import Generator
from cloudfill.training.config import NetworkSettings, OptimSettings, Schedule, TrainConfig
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.experiment import run_experiment
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.run import train
from cloudfill.training.scoring import evaluate_patches

FRACTIONS = [0.0, 0.3, 0.2, 0.0, 0.4, 0.1]
NET = NetworkSettings(base_filters=8, n_blocks=1, d_filters=8)
PATCHES = PatchSettings(32, overlap=8, block_size=64)


def tiny(
    variant: str,
    *,
    max_steps: int | None = None,
    epochs: int = 50,
    lr: float = 2e-4,
    ema: float | None = None,
    seed: int = 0,
    network: NetworkSettings = NET,
    reference: str = "date",
    despeckle: int | None = 5,
) -> TrainConfig:
    """A CPU-sized configuration: 32 px patches, a one-block generator."""
    return TrainConfig(
        variant,
        network=network,
        optim=OptimSettings(lr=lr, ema=ema),
        schedule=Schedule(epochs=epochs, max_steps=max_steps),
        patches=PATCHES,
        reference=reference,
        despeckle=despeckle,
        seed=seed,
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene((128, 128), seed=1, cloud_fraction=FRACTIONS)


@pytest.fixture(scope="module")
def index(cube: xr.Dataset) -> PatchIndex:
    return build_index(cube, "SOD", PATCHES)


@pytest.fixture(scope="module")
def zarr_path(tmp_path_factory: pytest.TempPathFactory, cube: xr.Dataset) -> Path:
    path = tmp_path_factory.mktemp("train") / "cube.zarr"
    cloudfill.write_cube(cube, path, chunks={"y": 64, "x": 64})
    return path


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys()}


def test_a_few_steps_lower_the_validation_loss(
    cube: xr.Dataset, index: PatchIndex, tmp_path: Path
) -> None:
    # Without the reference skip the untrained generator is far off, so learning shows.
    network = NetworkSettings(base_filters=8, n_blocks=1, d_filters=8, reference_skip=False)
    config = tiny("SOD", max_steps=48, lr=1e-3, network=network)
    model = train(cube, config, tmp_path, progress=False, index=index)
    card = model.card
    assert card.training["steps"] == 48 and card.training["stop_reason"] == "max_steps"
    assert card.normalisation == index.stats.to_dict()
    assert card.training["despeckle"] == 5 and card.patch_size == 32
    assert card.split["samples"] == index.counts() and card.split["method"] == "spatial blocks"
    for key in ("val_mae", "test_mae", "test_rmse", "test_psnr", "test_ssim", "test_sam"):
        assert np.isfinite(card.metrics[key]), key
    history = pd.read_csv(tmp_path / "metrics.csv")
    start, best = history.iloc[0], history[history["best"]].iloc[-1]
    assert start["step"] == 0  # scored before the first step: the yardstick
    assert best["val_l1"] < 0.85 * start["val_l1"]
    assert best["val_mae"] < 0.85 * start["val_mae"]
    assert card.metrics["val_mae"] == pytest.approx(best["val_mae"])
    # The returned model is the best one, and scores the same when evaluated afresh.
    again = evaluate_patches(model.generator, PatchDataset.from_index(index, "val"))
    assert again["mae"] == pytest.approx(best["val_mae"], rel=1e-6)


def test_change_weight_reaches_the_loss_and_the_card(
    cube: xr.Dataset, index: PatchIndex, tmp_path: Path
) -> None:
    config = TrainConfig(
        "SOD",
        network=NET,
        optim=OptimSettings(change_weight=6.0, change_threshold=0.04),
        schedule=Schedule(max_steps=2),
        patches=PATCHES,
    )
    model = train(cube, config, tmp_path, progress=False, index=index)
    assert model.card.training["change_weight"] == 6.0
    assert model.card.training["change_threshold"] == 0.04
    # Selected by what it trains for: the change-weighted validation MAE, in the history too.
    history = pd.read_csv(tmp_path / "metrics.csv")
    assert history["val_change_mae"].gt(history["val_mae"]).all()
    best = history.loc[history["val_weighted_mae"].idxmin()]
    assert bool(best["best"]) and model.card.metrics["val_weighted_mae"] == pytest.approx(
        best["val_weighted_mae"]
    )
    # The loop hands the step the threshold in normalised units: reflectance / band scale.
    from cloudfill.training.loop import Run

    scales = np.asarray(index.stats.scale("s2"))
    run_ = Run.__new__(Run)
    run_.config, run_.index, run_.device = config, index, torch.device("cpu")
    np.testing.assert_allclose(run_.change_threshold.numpy(), 0.04 / scales, rtol=1e-6)
    with pytest.raises(ParameterError, match="change_weight needs a variant"):
        TrainConfig("S", optim=OptimSettings(change_weight=2.0))
    for bad in (0.5, float("inf"), float("nan")):
        with pytest.raises(ParameterError, match="change_weight must be a finite number >= 1"):
            OptimSettings(change_weight=bad)


def test_change_scores_match_a_float64_reference(index: PatchIndex) -> None:
    torch.manual_seed(0)
    generator = Generator("SOD", base_filters=4, n_blocks=1)
    with torch.no_grad():  # a head that is not zero, so the prediction is not the reference
        for p in generator.parameters():
            p.add_(0.05 * torch.randn_like(p))
    data = PatchDataset.from_index(index, "val")
    scales = np.asarray(index.stats.scale("s2"), "float64")
    threshold = torch.tensor(0.03 / scales, dtype=torch.float32)
    got = evaluate_patches(generator, data, change_threshold=threshold, change_weight=3.0)
    generator.eval()
    abs_c = w_abs = w_sum = n_c = 0.0
    with torch.no_grad():
        for i in range(len(data)):
            cond, target, valid = data[i]
            pred = generator(cond[None]).mean[0].double().numpy()
            t, v = target.double().numpy(), valid.numpy()[0]
            channels = get_variant("SOD").channels
            ref = cond[[channels.index(f"ref_{b}") for b in BANDS]].double().numpy()
            err = np.abs(pred - t) * scales[:, None, None]  # reflectance
            changed = (np.abs(t - ref) > (0.03 / scales)[:, None, None]).any(0) & v
            changed &= (ref != 0).any(0)
            abs_c += err[:, changed].sum()
            n_c += 4 * changed.sum()
            w = np.where(changed, 3.0, 1.0) * v
            w_abs += (err * w).sum()
            w_sum += 4 * w.sum()
    assert 0 < n_c < 4 * got["pixels"]
    assert got["change_pixels"] == n_c / 4
    assert got["change_mae"] == pytest.approx(abs_c / n_c, rel=1e-4)
    assert got["weighted_mae"] == pytest.approx(w_abs / w_sum, rel=1e-4)
    plain = evaluate_patches(generator, data)
    assert "change_mae" not in plain and got["mae"] == pytest.approx(plain["mae"])


def test_change_threshold_follows_the_targets_band_order(index: PatchIndex) -> None:
    """Statistics listed in another band order: the threshold still lines up with BANDS."""
    from cloudfill.preprocess.normalise import NormStats, VariableRange
    from cloudfill.training.loop import Run

    s2 = index.stats.variables["s2"]
    order = [3, 1, 0, 2]
    shuffled = VariableRange(
        tuple(s2.labels[i] for i in order),
        tuple(s2.low[i] for i in order),
        tuple(s2.high[i] for i in order),
    )
    stats = NormStats({**index.stats.variables, "s2": shuffled}, index.stats.target)
    run_ = Run.__new__(Run)
    run_.config = TrainConfig("SOD", optim=OptimSettings(change_weight=2.0, change_threshold=0.1))
    run_.index, run_.device = type("I", (), {"stats": stats})(), torch.device("cpu")
    want = [0.1 / ((s2.high[i] - s2.low[i]) / 2) for i in (s2.labels.index(b) for b in BANDS)]
    np.testing.assert_allclose(run_.change_threshold.numpy(), want, rtol=1e-6)


def test_train_step_uses_the_change_weighted_loss(index: PatchIndex) -> None:
    from cloudfill.model.losses import change_weighted_l1
    from cloudfill.training.step import Networks

    config = TrainConfig("SOD", network=NET, optim=OptimSettings(change_weight=7.0))
    data = PatchDataset.from_index(index, "train")
    cond, target, valid = (torch.stack(x) for x in zip(data[0], data[1], strict=True))
    channels = get_variant("SOD").channels
    reference = cond[:, [channels.index(f"ref_{b}") for b in BANDS]]
    threshold = torch.full((4,), 0.02)
    assert change_pixels(target, reference, threshold)[valid].float().mean() > 0.01

    def rec(weight: float) -> tuple[float, float]:
        torch.manual_seed(1)
        nets = Networks.build(config, torch.device("cpu"))
        with torch.no_grad():
            fake = nets.generator(cond).mean  # train mode, as the step runs it
        torch.manual_seed(1)
        nets = Networks.build(config, torch.device("cpu"))
        cfg = TrainConfig("SOD", network=NET, optim=OptimSettings(change_weight=weight))
        got = nets.step((cond, target, valid), cfg, threshold)["loss_rec"]
        want = change_weighted_l1(
            fake, target, reference, valid, factor=weight, threshold=threshold
        )
        return got, float(want)

    got, want = rec(7.0)
    assert got == pytest.approx(want, rel=1e-5)
    plain, _ = rec(1.0)
    assert got != pytest.approx(plain, rel=1e-3)  # the weight changed the loss


def test_resume_continues_exactly(cube: xr.Dataset, index: PatchIndex, tmp_path: Path) -> None:
    # Stop mid-epoch, resume across an epoch boundary, compare with one uninterrupted run.
    per_epoch = -(-index.counts()["train"] // 2)
    first, total = per_epoch // 2 + 1, per_epoch + 3
    settings = {"index": index, "progress": False}
    train(cube, tiny("SO", max_steps=first, seed=5, lr=1e-3), tmp_path / "a", **settings)
    with pytest.raises(OutputError):
        train(cube, tiny("SO", max_steps=total, seed=5, lr=1e-3), tmp_path / "a", **settings)
    with pytest.raises(ParameterError, match="lr"):
        config = tiny("SO", max_steps=total, seed=5, lr=1)
        train(cube, config, tmp_path / "a", resume=True, **settings)
    config = tiny("SO", max_steps=total, seed=5, lr=1e-3)
    train(cube, config, tmp_path / "a", resume=True, **settings)
    train(cube, config, tmp_path / "b", **settings)
    a = _tensors(tmp_path / "a" / "last" / "state.safetensors")
    b = _tensors(tmp_path / "b" / "last" / "state.safetensors")
    assert a.keys() == b.keys()
    assert any(k.startswith("opt_g.state.") for k in a) and any(k.startswith("D.") for k in a)
    for name in a:
        if name.startswith("rng."):
            continue
        assert torch.equal(a[name], b[name]), name
    history = pd.read_csv(tmp_path / "a" / "metrics.csv")
    assert history["step"].iloc[-1] == total and history["step"].iloc[0] == 0
    assert per_epoch in history["step"].tolist()  # the end-of-epoch validation happened


def test_checkpoints_hold_no_pickle(cube: xr.Dataset, index: PatchIndex, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(cube, tiny("SD", max_steps=3, epochs=2), out, progress=False, index=index)
    # (TensorBoard event files, written only when it is installed, are not checkpoints.)
    files = [p for p in out.rglob("*") if p.is_file() and "tensorboard" not in p.parts]
    assert {p.suffix for p in files} <= {".safetensors", ".json", ".csv"}
    for path in files:
        head = path.read_bytes()[:4]
        assert head[:2] not in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
        assert head != b"PK\x03\x04"  # torch.save's zip
    model = load_model(out / "best.safetensors")
    assert model.card.variant == "SD" and model.card.split["assignment"]
    state = (out / "last" / "state.json").read_text()
    assert '"param_groups"' in state and '"history"' in state


def test_composite_reference_is_recorded_and_guards_resume(
    cube: xr.Dataset, tmp_path: Path
) -> None:
    settings = {"max_steps": 2, "epochs": 1, "despeckle": 3}
    config = tiny("SOD", reference="composite", **settings)
    model = train(cube, config, tmp_path, progress=False)
    assert model.card.reference_mode == "composite"
    assert model.card.training["reference_mode"] == "composite"
    assert load_model(tmp_path / "best.safetensors").card.reference_mode == "composite"
    with pytest.raises(ParameterError, match="reference_mode"):
        train(cube, tiny("SOD", **settings), tmp_path, resume=True, progress=False)
    # Variants without a reference record the plain mode whatever was asked.
    config = tiny("SD", reference="composite", **settings)
    assert train(cube, config, progress=False).card.reference_mode == "date"


def test_weight_average_is_scored_kept_and_resumed(
    cube: xr.Dataset, index: PatchIndex, tmp_path: Path
) -> None:
    settings = {"index": index, "progress": False}

    def config(steps: int, ema: float = 0.9) -> TrainConfig:
        return tiny("SO", max_steps=steps, epochs=1, lr=1e-3, ema=ema, seed=2)

    torch.manual_seed(2)
    previous = Generator("SO", base_filters=8, n_blocks=1, attention=True).state_dict()
    # One step at a time (resume is exact): each average is 0.9 old + 0.1 new weights (and
    # batch-norm statistics).
    for steps in (1, 2, 3):
        model = train(cube, config(steps), tmp_path / "a", resume=steps > 1, **settings)
        state = _tensors(tmp_path / "a" / "last" / "state.safetensors")
        averaged = {k[2:]: v for k, v in state.items() if k.startswith("A.")}
        trained = {k[2:]: v for k, v in state.items() if k.startswith("G.")}
        assert averaged.keys() == trained.keys() == previous.keys()
        for key, value in averaged.items():
            if "num_batches" in key:  # an integer counter: copied
                assert torch.equal(value, trained[key]), key
            else:  # weights and batch-norm running statistics alike
                want = previous[key] + 0.1 * (trained[key] - previous[key])
                torch.testing.assert_close(value, want, rtol=0, atol=1e-6)
        assert not all(torch.equal(averaged[k], trained[k]) for k in averaged)
        previous = averaged
    # What is returned and saved is an average (the best-scoring one), never the raw weights.
    best = load_model(tmp_path / "a" / "best.safetensors").generator.state_dict()
    for key, value in model.generator.state_dict().items():
        assert torch.equal(best[key], value)
    assert not all(torch.equal(best[k], trained[k]) for k in best)
    # An uninterrupted run ends in the same state.
    train(cube, config(3), tmp_path / "b", **settings)
    again = _tensors(tmp_path / "b" / "last" / "state.safetensors")
    for key in state:
        if not key.startswith("rng."):
            assert torch.equal(state[key], again[key]), key
    with pytest.raises(ParameterError, match="ema"):
        train(cube, config(1, ema=1.0), **settings)


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_experiment_writes_the_table(cube: xr.Dataset, tmp_path: Path) -> None:
    config = TrainConfig(
        network=NET,
        schedule=Schedule(epochs=1, max_steps=2),
        patches=PatchSettings(32, block_size=64),
    )
    table = run_experiment(
        cube, tmp_path, config, variants=["S", "SOD"], attention=[True], progress=False
    )
    assert list(table["model"]) == ["A_cGAN_S", "A_cGAN_SOD"]
    assert table[["MAE", "RMSE", "PSNR", "SSIM"]].notna().all().all()
    text = (tmp_path / "results.md").read_text()
    assert "| A_cGAN_SOD |" in text and "| model | MAE | RMSE | PSNR | SSIM |" in text
    assert len(pd.read_csv(tmp_path / "results.csv")) == 2
    # A rerun skips finished models.
    again = run_experiment(cube, tmp_path, config, variants=["S"], attention=[True], progress=False)
    assert again["MAE"].iloc[0] == table["MAE"].iloc[0]


def test_cli_train(zarr_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model"
    args = ["train", str(zarr_path), "--out", str(out), "--variant", "S", "--patch-size", "32"]
    args += ["--max-steps", "2", "--base-filters", "4", "--n-blocks", "1", "--no-progress"]
    assert run(args) == 0
    assert "test MAE" in capsys.readouterr().out
    model = load_model(out / "best.safetensors")
    assert model.card.variant == "S" and model.card.training["reader"] == "zarr"
    assert run(args) == 2  # the folder holds a run and --resume was not given
    assert "--resume" in capsys.readouterr().err
    assert run([*args, "--resume", "--max-steps", "3"]) == 0


def test_cli_recipe_options_reach_the_card(
    zarr_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The small-real-set recipe's settings (benchmarks/RESULTS.md) are CLI options."""
    base = ["train", str(zarr_path), "--variant", "S", "--patch-size", "32", "--no-progress"]
    args = [*base, "--out", str(tmp_path / "m"), "--max-steps", "1", "--base-filters", "4"]
    args += ["--n-blocks", "1", "--lambda-l1", "1e4", "--d-filters", "8", "--d-layers", "2"]
    args += ["--pixel-features", "16", "--val-fraction", "0.25", "--test-fraction", "0"]
    assert run([*args, "--block-size", "32"]) == 0
    training = load_model(tmp_path / "m" / "best.safetensors").card.training
    assert training["lambda_l1"] == 1e4 and training["pixel_features"] == 16
    assert (training["d_filters"], training["d_layers"]) == (8, 2)
    assert training["fractions"] == [0.75, 0.25, 0.0] and training["block_size"] == 32
    capsys.readouterr()
    bad = [*base, "--out", str(tmp_path / "b"), "--val-fraction", "0.7", "--test-fraction", "0.6"]
    assert run(bad) == 2
    assert "fractions" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
    # S has no reference to tell change pixels by: refused by name, nothing written.
    assert run([*base, "--out", str(tmp_path / "c"), "--change-weight", "3"]) == 2
    assert "--change-weight needs a variant with a reference" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_cli_bad_input_exits_2(
    zarr_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["train", str(zarr_path), "--out", str(tmp_path / "m"), "--no-progress"]
    assert run([*base, "--variant", "SXD"]) == 2
    assert "variant" in capsys.readouterr().err
    assert run([*base, "--patch-size", "30"]) == 2
    assert "patch size" in capsys.readouterr().err
    assert run(["train", str(tmp_path / "none.zarr"), "--out", str(tmp_path / "m")]) == 2
    assert "no such cube" in capsys.readouterr().err
    cloudy = cloudfill.simulate_scene((64, 64), dates=3, seed=1, cloud_fraction=[0.6, 0.5, 0.7])
    cloudfill.write_cube(cloudy, tmp_path / "cloudy.zarr")
    args = ["train", str(tmp_path / "cloudy.zarr"), "--out", str(tmp_path / "c")]
    assert run([*args, "--patch-size", "32"]) == 2  # SOD needs a clear reference date
    err = capsys.readouterr().err
    assert "reference" in err and len(err.strip().splitlines()) == 1
    assert run(["experiment", str(zarr_path), "--out", str(tmp_path / "e"), "--epochs", "x"]) == 2


def test_train_is_exported_lazily() -> None:
    import cloudfill.training

    assert cloudfill.train is cloudfill.training.train is train
    assert "train" in cloudfill.__all__
