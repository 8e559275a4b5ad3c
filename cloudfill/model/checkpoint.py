"""Safe checkpoints: safetensors weights plus a JSON model card, nothing ever unpickled.

Two layouts, chosen by the path:

``model.safetensors`` (one file)
    The weights, with the card JSON in the safetensors header metadata (``"card"``), next to
    ``"format": "cloudfill-model"`` and ``"format_version"``.
``model_dir/`` (a directory)
    ``model.safetensors`` (weights, same metadata minus the card) and ``card.json`` (the card,
    readable and editable by hand, e.g. to add metrics).

Writing is atomic: each file is written to a temporary name in the same directory, synced and
moved into place with :func:`os.replace`, so a crash never leaves a half-written checkpoint
under the final name.

Reading never executes code from the file. Weights are read only by
:func:`safetensors.safe_open`, which parses a JSON header and raw tensor bytes. Before that,
the first bytes are inspected: a ``torch.save`` zip archive or a pickle stream is refused
with :class:`~cloudfill.errors.CheckpointError` *without* being unpickled, as is anything
that is not a well-formed safetensors header. The card is then checked strictly
(:meth:`ModelCard.from_json`) and against the weights: every tensor the card's architecture
needs must be present, with the right shape, finite, and nothing else may be in the file.
"""

from __future__ import annotations

import os
import struct
import uuid
import weakref
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from cloudfill.errors import CheckpointError, ParameterError
from cloudfill.model.card import FORMAT_VERSION, ModelCard
from cloudfill.model.generator import Generator

__all__ = [
    "CARD_NAME",
    "FORMAT_TAG",
    "WEIGHTS_NAME",
    "is_model_checkpoint",
    "load_state",
    "locate",
    "read_card",
    "remember_checkpoint",
    "remembered_checkpoint",
    "save_model",
    "update_with_state",
]

WEIGHTS_NAME = "model.safetensors"
"""Weights file inside a checkpoint directory."""

CARD_NAME = "card.json"
"""Card file inside a checkpoint directory."""

FORMAT_TAG = "cloudfill-model"
"""Value of the ``format`` metadata key of every cloudfill safetensors file."""

SUFFIX = ".safetensors"
# A safetensors header is JSON; anything larger than this is not a checkpoint we wrote.
_MAX_HEADER = 100 * 1024 * 1024


def is_model_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` looks like a cloudfill checkpoint (by name only; nothing is read).

    Examples
    --------
    >>> is_model_checkpoint("runs/sod.safetensors"), is_model_checkpoint("cube.zarr")
    (True, False)
    """
    p = Path(path)
    return p.suffix == SUFFIX or (p.is_dir() and (p / WEIGHTS_NAME).is_file())


# --- writing -------------------------------------------------------------------------------
def _unwrap(model: Any) -> Generator:
    generator = getattr(model, "generator", model)
    generator = getattr(generator, "_orig_mod", generator)  # a torch.compile wrapper
    if not isinstance(generator, Generator):
        raise ParameterError(
            f"save_model expects a Generator or CloudfillModel, got {type(model).__name__}"
        )
    return generator


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_model(model: Any, card: ModelCard | None, path: str | os.PathLike[str]) -> Path:
    """Write a checkpoint (safetensors weights + JSON card), atomically.

    Parameters
    ----------
    model
        A :class:`~cloudfill.model.generator.Generator` or a
        :class:`~cloudfill.model.runtime.CloudfillModel` (also under ``torch.compile``).
    card
        The card to store; None uses ``model.card`` (a CloudfillModel) or a card built from
        the generator's configuration. Its architecture fields must match the generator.
    path
        ``*.safetensors`` for one file, anything else for a directory (created if needed)
        holding ``model.safetensors`` and ``card.json``.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ParameterError
        If the card does not describe the generator, or a card field is not JSON.

    Examples
    --------
    >>> import tempfile
    >>> from cloudfill.model.runtime import load_model
    >>> g = Generator("S", base_filters=4, n_blocks=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     out = save_model(g, None, f"{tmp}/s.safetensors")
    ...     load_model(out).card.variant
    'S'
    """
    generator = _unwrap(model)
    if card is None:
        card = getattr(model, "card", None) or ModelCard.from_generator(generator)
    config, wanted = generator.config(), card.generator_kwargs()
    for key, value in wanted.items():
        if config.get(key) != value:
            raise ParameterError(
                f"model card says {key}={value!r} but the generator has {key}={config.get(key)!r}"
            )
    card_json = card.to_json()
    tensors = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in generator.state_dict().items()
    }
    metadata = {"format": FORMAT_TAG, "format_version": str(FORMAT_VERSION)}

    path = Path(path)
    if path.suffix == SUFFIX and not path.is_dir():
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, safetensors_bytes(tensors, {**metadata, "card": card_json}))
        return path
    if path.exists() and not path.is_dir():
        raise ParameterError(
            f"checkpoint path {str(path)!r} is an existing file without the {SUFFIX} suffix; "
            f"use a name ending in {SUFFIX} (one file) or a directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    # Weights first: a crash in between leaves the old card, which the load check catches.
    _write_atomic(path / WEIGHTS_NAME, safetensors_bytes(tensors, metadata))
    _write_atomic(path / CARD_NAME, (card_json + "\n").encode())
    return path


# --- reading -------------------------------------------------------------------------------
def _refuse_unsafe(path: Path) -> None:
    """Raise unless ``path`` starts like a safetensors file; never unpickles anything."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"{str(path)!r} is a zip archive (torch.save format), which holds pickled code; "
            "cloudfill loads only safetensors checkpoints and will not unpickle it"
        )
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise CheckpointError(
            f"{str(path)!r} is a pickle stream (torch.save/pickle), which can run arbitrary "
            "code; cloudfill loads only safetensors checkpoints and will not unpickle it"
        )
    if len(head) < 9:
        raise CheckpointError(f"{str(path)!r} is too short to be a safetensors checkpoint")
    (header_len,) = struct.unpack("<Q", head[:8])
    if head[8:9] != b"{" or header_len > min(_MAX_HEADER, size - 8):
        raise CheckpointError(f"{str(path)!r} is not a safetensors file (bad header)")


def locate(path: str | os.PathLike[str]) -> tuple[Path, Path | None]:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.is_dir():
        weights = p / WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"checkpoint directory {str(p)!r} has no {WEIGHTS_NAME}")
        card = p / CARD_NAME
        if not card.is_file():
            raise CheckpointError(f"checkpoint directory {str(p)!r} has no {CARD_NAME}")
        return weights, card
    return p, None


def _read_metadata(weights: Path) -> dict[str, str]:
    _refuse_unsafe(weights)
    try:
        with safe_open(str(weights), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
    except Exception as err:
        raise CheckpointError(
            f"{str(weights)!r} is not a readable safetensors file: {err}"
        ) from None
    if metadata.get("format") != FORMAT_TAG:
        raise CheckpointError(
            f"{str(weights)!r} is a safetensors file but not a cloudfill model "
            f"(metadata format={metadata.get('format')!r})"
        )
    return metadata


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """Read only the model card of a checkpoint (no weights are loaded).

    Parameters
    ----------
    path
        A ``*.safetensors`` file or a checkpoint directory.

    Returns
    -------
    ModelCard

    Raises
    ------
    CheckpointError
        Missing, unsafe or malformed checkpoint or card.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_model(Generator("SO", base_filters=4, n_blocks=1), None, tmp)
    ...     read_card(tmp).input_channels[:3]
    ['VV', 'VH', 'ref_B02']
    """
    weights, card_path = locate(path)
    metadata = _read_metadata(weights)
    if card_path is not None:
        text = card_path.read_text()
    elif "card" in metadata:
        text = metadata["card"]
    else:
        raise CheckpointError(f"{str(weights)!r} carries no model card in its metadata")
    return ModelCard.from_json(text)


def _shape(shape: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in shape)


def load_state(weights: Path, card: ModelCard, generator: Generator) -> dict[str, torch.Tensor]:
    expected = {k: v for k, v in generator.state_dict().items()}
    arch = (
        f"variant {card.variant}, {card.n_inputs} input channels, attention={card.attention}, "
        f"base_filters={card.base_filters}, n_blocks={card.n_blocks}, norm={card.norm}, "
        f"confidence={card.confidence}, pixel_features={card.pixel_features}"
    )
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(weights), framework="pt", device="cpu") as fh:
        present = set(fh.keys())
        missing = [k for k in expected if k not in present]
        if missing:
            raise CheckpointError(
                f"checkpoint weights lack tensor {missing[0]!r} ({len(missing)} missing in all) "
                f"that the card's architecture ({arch}) needs"
            )
        unexpected = sorted(present - set(expected))
        if unexpected:
            raise CheckpointError(
                f"checkpoint weights hold tensor {unexpected[0]!r} ({len(unexpected)} unexpected "
                f"in all) that the card's architecture ({arch}) does not have"
            )
        for name, ref in expected.items():
            shape = _shape(fh.get_slice(name).get_shape())
            if shape != tuple(ref.shape):
                raise CheckpointError(
                    f"tensor {name!r} has shape {shape} in the checkpoint but the card's "
                    f"architecture ({arch}) needs {tuple(ref.shape)}"
                )
            tensor = fh.get_tensor(name)
            if tensor.is_floating_point() != ref.is_floating_point():
                raise CheckpointError(
                    f"tensor {name!r} has dtype {tensor.dtype} in the checkpoint, expected "
                    f"{ref.dtype}"
                )
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"tensor {name!r} holds NaN or infinite values")
            state[name] = tensor.to(ref.dtype)
    return state


# --- which checkpoint holds a model's weights -------------------------------------------------
#: Per in-memory model: (state key, checkpoint path holding exactly those weights).
_SAVED: weakref.WeakKeyDictionary[Any, tuple[tuple, str]] = weakref.WeakKeyDictionary()


def _state_key(model: Any) -> tuple:
    """Changes whenever the weights may have: storage address and in-place version of each
    tensor (an optimiser step, ``load_state_dict`` or ``.to()`` bumps one or the other)."""
    tensors = model.generator.state_dict(keep_vars=True).values()
    try:
        return (id(model.card), *((t.data_ptr(), t._version) for t in tensors))
    except RuntimeError:  # inference tensors keep no version: never assume unchanged
        return (object(),)


def remember_checkpoint(model: Any, path: str | os.PathLike[str]) -> None:
    """Record that ``model``'s current weights are those of the checkpoint at ``path``.

    :meth:`cloudfill.infer.runner.ModelRef.from_model` then references that file instead of
    writing a temporary copy, so workers (on a shared filesystem too) load the user's
    checkpoint, and every date of a series shares one cache entry per worker.

    Examples
    --------
    >>> import tempfile
    >>> from cloudfill.model import CloudfillModel
    >>> model = CloudfillModel(Generator("S", base_filters=4, n_blocks=1))
    >>> path = model.save(Path(tempfile.mkdtemp()) / "s.safetensors")
    >>> remember_checkpoint(model, path)
    >>> remembered_checkpoint(model) == str(path)
    True
    """
    _SAVED[model] = (_state_key(model), os.fspath(path))


def remembered_checkpoint(model: Any) -> str | None:
    """The checkpoint recorded by :func:`remember_checkpoint` if it still exists and the
    model's weights have not changed since; else None."""
    saved = _SAVED.get(model)
    if saved is not None and saved[0] == _state_key(model) and Path(saved[1]).exists():
        return saved[1]
    return None


def update_with_state(digest: Any, network: torch.nn.Module) -> Any:
    """Feed a network's state (weights and buffers) to a :mod:`hashlib` object, bit for bit:
    each entry's name, then its raw bytes, in ``state_dict`` order; returns ``digest``.

    Examples
    --------
    >>> import hashlib
    >>> a = Generator("S", base_filters=4, n_blocks=1)
    >>> update_with_state(hashlib.sha256(), a).hexdigest() == (
    ...     update_with_state(hashlib.sha256(), a).hexdigest())
    True
    """
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())  # any dtype, bit for bit
    return digest
