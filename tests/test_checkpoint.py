"""Checkpoints: round trips, refusal of pickles, card/weight consistency, cube fit, `info`."""

from __future__ import annotations

import dataclasses
import io
import json
import pickle
from pathlib import Path

import pytest
import torch
import xarray as xr
from rich.console import Console
from safetensors import safe_open
from safetensors.torch import save_file

import cloudfill
from cloudfill.cli.model_info import describe_model, model_facts
from cloudfill.errors import CheckpointError, ModelMismatchError, ParameterError
from cloudfill.model import (
    CloudfillModel,
    Generator,
    ModelCard,
    is_model_checkpoint,
    load_model,
    read_card,
    resolve_device,
    save_model,
)
from cloudfill.model.checkpoint import CARD_NAME, FORMAT_TAG, WEIGHTS_NAME

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _trained_like(variant: str = "SOD", **kwargs: object) -> Generator:
    """A small generator with non-default weights and batch-norm statistics."""
    torch.manual_seed(3)
    g = Generator(variant, base_filters=4, n_blocks=1, **kwargs)  # type: ignore[arg-type]
    g.train()
    with torch.no_grad():
        g(torch.randn(4, g.variant.n_inputs, 32, 32) * 3 + 1)
    return g.eval()


def _card(g: Generator) -> ModelCard:
    return ModelCard.from_generator(
        g,
        normalisation={"s1": {"VV": [-25.0, 0.0]}, "method": "percentile"},
        patch_size=128,
        training={"lr": 2e-4, "batch_size": 2, "epochs": 50, "lambda_l1": 100.0},
        split={"kind": "spatial-blocks", "seed": 0},
        metrics={"val_mae": 0.051},
    )


# --- round trips ------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["file", "directory"])
def test_save_load_round_trip_is_identical(tmp_path: Path, layout: str) -> None:
    g = _trained_like("SOD", attention="cbam", confidence=True)
    card = _card(g)
    path = tmp_path / ("m.safetensors" if layout == "file" else "model_dir")
    written = save_model(g, card, path)
    assert written == path and is_model_checkpoint(path)
    if layout == "directory":
        assert sorted(p.name for p in path.iterdir()) == [CARD_NAME, WEIGHTS_NAME]
    else:
        assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp files left

    model = load_model(path)
    assert model.card == card
    assert read_card(path) == card
    x = torch.randn(2, 7, 32, 32)
    with torch.no_grad():
        plain = g(x)
    # The same inference path (layout included) gives the same bits; the CPU's channels-last
    # layout differs from the plain call by float32 rounding only.
    expected = CloudfillModel(g, card).predict(x)
    out = model.predict(x)
    assert torch.equal(out.mean, expected.mean)
    assert torch.equal(out.scale, expected.scale)
    torch.testing.assert_close(out.scale, plain.scale, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.mean, plain.mean, rtol=1e-5, atol=1e-6)
    # Buffers (batch-norm running statistics) travel too.
    for name, tensor in g.state_dict().items():
        assert torch.equal(model.generator.state_dict()[name], tensor), name


def test_save_overwrites_atomically_and_model_saves_itself(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_model(_trained_like("S"), None, path)
    model = CloudfillModel(_trained_like("SD", attention=False))
    assert model.save(path) == path
    assert load_model(path).card.variant == "SD"
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    with safe_open(str(path), framework="pt") as fh:
        assert fh.metadata()["format"] == FORMAT_TAG


def test_save_refuses_a_card_that_does_not_describe_the_generator(tmp_path: Path) -> None:
    g = _trained_like("SO")
    with pytest.raises(ParameterError, match="n_blocks"):
        save_model(g, ModelCard("SO", base_filters=4, n_blocks=3), tmp_path / "m.safetensors")
    unserialisable = dataclasses.replace(_card(g), metrics={"x": object()})
    with pytest.raises(ParameterError, match="'metrics' is not JSON"):
        save_model(g, unserialisable, tmp_path / "m.safetensors")
    (tmp_path / "file.bin").write_bytes(b"x")
    with pytest.raises(ParameterError, match="suffix"):
        save_model(g, None, tmp_path / "file.bin")


# --- never unpickle ---------------------------------------------------------------------
class _Payload:
    """Pickles to a call of exec() that creates a marker file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("how", ["torch.save", "pickle-5", "pickle-0", "in-directory"])
def test_pickle_payload_is_refused_without_running_it(tmp_path: Path, how: str) -> None:
    marker = tmp_path / "pwned"
    payload = {"trunk.1.weight": _Payload(marker)}
    if how == "torch.save":
        path = tmp_path / "evil.pt"
        torch.save(payload, path)
    elif how == "in-directory":
        path = tmp_path / "evil_dir"
        path.mkdir()
        torch.save(payload, path / WEIGHTS_NAME)
        (path / CARD_NAME).write_text(ModelCard("S").to_json())
    else:
        # A lying suffix: the content decides, not the name.
        path = tmp_path / "evil.safetensors"
        path.write_bytes(pickle.dumps(payload, protocol=int(how[-1])))
    with pytest.raises(CheckpointError, match="pickle|zip|not a safetensors"):
        load_model(path)
    with pytest.raises(CheckpointError):
        read_card(path)
    assert not marker.exists()

    # The payload is live: unpickling it (what torch.load without weights_only would do)
    # creates the marker. So the refusal above is what kept it from running.
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(_Payload(live)))
    assert live.exists()


# --- card and weights must agree --------------------------------------------------------
def _write_raw(path: Path, tensors: dict[str, torch.Tensor], card_json: str | None) -> None:
    metadata = {"format": FORMAT_TAG, "format_version": "1"}
    if card_json is not None:
        metadata["card"] = card_json
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)


def test_card_with_other_channel_count_than_weights(tmp_path: Path) -> None:
    weights = _trained_like("S").state_dict()  # 2 input channels
    card = ModelCard("SOD", base_filters=4, n_blocks=1, skip="add", pixel_features=32)  # 7 inputs
    path = tmp_path / "m.safetensors"
    _write_raw(path, weights, card.to_json())
    with pytest.raises(CheckpointError, match=r"'trunk\.1\.weight' has shape \(4, 2, 7, 7\)"):
        load_model(path)


@pytest.mark.parametrize("defect", ["missing", "unexpected", "nan", "depth"])
def test_weights_that_do_not_match_the_card(tmp_path: Path, defect: str) -> None:
    g = _trained_like("SD")
    card = ModelCard.from_generator(g)
    weights = dict(g.state_dict())
    if defect == "missing":
        del weights["head.1.bias"]
        match = "lack tensor 'head.1.bias'"
    elif defect == "unexpected":
        weights["scale_head.1.weight"] = torch.zeros(4, 4, 7, 7)
        match = "hold tensor 'scale_head.1.weight'"
    elif defect == "nan":
        weights["head.1.weight"] = weights["head.1.weight"].clone()
        weights["head.1.weight"][0, 0, 0, 0] = float("nan")
        match = "'head.1.weight' holds NaN"
    else:
        card = ModelCard.from_generator(g, n_blocks=2)
        match = "lack tensor 'trunk.11"
    path = tmp_path / "m.safetensors"
    _write_raw(path, weights, card.to_json())
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"colour": "blue"}, "unknown key"),
        ({"n_blocks": "9"}, "'n_blocks' should be int"),
        ({"confidence": 1}, "'confidence' should be bool"),
        ({"format_version": 99}, "format_version 99"),
        ({"variant": "SAR"}, "unknown model variant"),
        ({"input_channels": ["VV", "VH"]}, "do not match variant"),
    ],
)
def test_card_is_read_strictly(tmp_path: Path, edit: dict[str, object], match: str) -> None:
    path = save_model(_trained_like("SD"), None, tmp_path / "model_dir")
    data = json.loads((path / CARD_NAME).read_text())
    data.update(edit)
    (path / CARD_NAME).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=match):
        load_model(path)


def test_unreadable_or_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model(tmp_path / "nothing.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_model(tmp_path / "garbage.safetensors")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a cloudfill model"):
        load_model(foreign)
    no_card = tmp_path / "nocard.safetensors"
    _write_raw(no_card, _trained_like("S").state_dict(), None)
    with pytest.raises(CheckpointError, match="no model card"):
        load_model(no_card)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match=WEIGHTS_NAME):
        load_model(tmp_path / "empty_dir")


def test_lazy_top_level_names(tmp_path: Path) -> None:
    path = cloudfill.save_model(_trained_like("S"), None, tmp_path / "m.safetensors")
    assert isinstance(cloudfill.load_model(path), CloudfillModel)
    assert cloudfill.ModelCard is ModelCard


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ParameterError, match="unknown device"):
        resolve_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA"):
            resolve_device("cuda")


# --- does the model fit the cube? -------------------------------------------------------
def _model(variant: str, **card_fields: object) -> CloudfillModel:
    g = Generator(variant, base_filters=4, n_blocks=0)
    return CloudfillModel(g, ModelCard.from_generator(g, **card_fields))


def test_check_cube_accepts_a_fitting_cube(tiny_cube: xr.Dataset) -> None:
    for variant in ("S", "SD", "SO", "SOD"):
        _model(variant).check_cube(tiny_cube)
    # Band aliases are conformed before comparing.
    aliased = tiny_cube.assign_coords(band=["blue", "green", "red", "nir"])
    _model("SOD").check_cube(aliased)


def test_check_cube_names_the_mismatch(tiny_cube: xr.Dataset) -> None:
    with pytest.raises(ModelMismatchError, match="no 's1'"):
        _model("S").check_cube(tiny_cube.drop_vars("s1"))
    with pytest.raises(ModelMismatchError, match="SD uses the DEM"):
        _model("SD").check_cube(tiny_cube.drop_vars("dem"))
    one_date = tiny_cube.isel(time=[0])
    _model("SD").check_cube(one_date)  # needs no reference
    with pytest.raises(ModelMismatchError, match="reference S2 date.*1 S2 date"):
        _model("SO").check_cube(one_date)
    with pytest.raises(ModelMismatchError, match="no 's2'"):
        _model("SOD").check_cube(tiny_cube.drop_vars(["s2", "cloud"]))
    with pytest.raises(ModelMismatchError, match=r"lacks \['B05'\]"):
        _model("S", bands=["B02", "B03", "B04", "B05"]).check_cube(tiny_cube)
    with pytest.raises(ModelMismatchError, match=r"lacks \['VH'\]"):
        _model("S").check_cube(tiny_cube.isel(pol=[0]))
    # An extra band is refused, not dropped, and the message says how to select the model's.
    b05 = tiny_cube["s2"].isel(band=[0]).assign_coords(band=["B05"])
    wide = tiny_cube.drop_dims("band").assign(s2=xr.concat([tiny_cube["s2"], b05], "band"))
    with pytest.raises(
        ModelMismatchError, match=r"\['B05'\].*drop the others.*ds.sel\(band=\['B02'"
    ):
        _model("S").check_cube(wide)


# --- cloudfill info MODEL ---------------------------------------------------------------
def test_describe_model_prints_card_parameters_rf_and_cost(tmp_path: Path) -> None:
    g = _trained_like("SOD", confidence=True)
    path = save_model(g, _card(g), tmp_path / "m.safetensors")
    facts = model_facts(path)
    n_params = sum(p.numel() for p in g.parameters())
    assert facts["parameters"].startswith(f"{n_params:,}")
    assert facts["variant"] == "SOD" and facts["confidence head"].startswith("yes")
    assert facts["receptive field"].startswith("65 px")  # 41 + one CBAM 7x7 gate at jump 4
    assert float(facts["GFLOP per 256x256 tile"]) > 0
    console = Console(file=io.StringIO(), width=120)
    console.print(describe_model(path))
    text = console.file.getvalue()
    for needle in ["lambda_l1", "val_mae", "spatial-blocks", "receptive field", "GFLOP"]:
        assert needle in text
