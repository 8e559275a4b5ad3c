"""Warm start: begin a training run from a trained model's weights instead of random ones.

A user fine-tunes the shipped model on a cube of their own region, or a long run continues
on new scenes, without the 1-2 hours a run from scratch takes on a CPU. The network only
means what it learned on inputs normalised as it was trained, so a warm start takes over
the model's normalisation statistics (the cube's own are not computed), and it needs the
configuration's generator to be the model's architecture exactly (width, blocks, attention,
normalisation layer, heads, skip, per-pixel path), the same reference mode and despeckling,
and the same variant or one that appends inputs to it (SODC -> SODCT: the new channels'
weights start at zero, :func:`start_state`).
The discriminator, the optimiser's moments and the schedule start afresh; the weight
average starts at the model's weights.

The model a run started from is recorded in the training record (``init``: the SHA-256 of
its weights and of its statistics, its creation time and training steps), so a resumed run
must name the same one. The S1 despeckling window must be the model's too: its statistics
were computed on S1 despeckled that way.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import torch

from cloudfill.core.variants import get_variant
from cloudfill.errors import ParameterError
from cloudfill.model.checkpoint import update_with_state
from cloudfill.model.runtime import CloudfillModel, load_model
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.config import TrainConfig
from cloudfill.training.index import PatchIndex
from cloudfill.training.step import config_generator
from cloudfill.training.targets import check_despeckle

__all__ = [
    "IDENTITY",
    "check_index",
    "check_init",
    "check_start",
    "extends",
    "init_record",
    "init_stats",
    "load_init",
    "same_start",
    "start_state",
    "weights_digest",
]

InitModel = CloudfillModel | str | os.PathLike[str]


def load_init(init: InitModel | None) -> CloudfillModel | None:
    """The model to start from: ``init`` itself, or loaded from a checkpoint path."""
    if init is None or isinstance(init, CloudfillModel):
        return init
    if not isinstance(init, str | os.PathLike):
        raise ParameterError(f"init must be a CloudfillModel or a checkpoint path, got {init!r}")
    return load_model(init)


def check_init(model: CloudfillModel, config: TrainConfig) -> None:
    """Refuse a model whose architecture, reference mode or statistics do not fit ``config``.

    Cheap: it runs before the cube is read.

    Raises
    ------
    ParameterError
        Names the first setting that differs, or the missing statistics.

    Examples
    --------
    >>> from cloudfill.training.config import NetworkSettings
    >>> from cloudfill.model.generator import Generator
    >>> model = CloudfillModel(Generator("S", base_filters=4, n_blocks=1))
    >>> wider = TrainConfig("S", network=NetworkSettings(base_filters=8, n_blocks=1))
    >>> check_init(model, wider)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: cannot start from this model: it has base_filters=4 but ...
    """
    # On the meta device: the architecture's settings without allocating or initialising a
    # network (a paper-size one is 11 M weights) or drawing from torch's random state.
    with torch.device("meta"):
        wanted = config_generator(config).config()
    have = model.generator.config()
    if wanted["variant"] != have["variant"] and not extends(have["variant"], wanted["variant"]):
        raise ParameterError(
            f"cannot start from this model: it is a {have['variant']} model and the "
            f"configuration's {wanted['variant']} does not extend its inputs (its channels "
            "must be the first of the configuration's)"
        )
    for key, value in wanted.items():
        if key != "variant" and have.get(key) != value:
            raise ParameterError(
                f"cannot start from this model: it has {key}={have.get(key)!r} but the "
                f"configuration asks for {key}={value!r}"
            )
    _check_reference(model, config.variant, config.reference)
    # The statistics were computed on S1 despeckled with the model's window: another window
    # would feed the weights inputs of another texture and spread.
    if "despeckle" in model.card.training:
        theirs = check_despeckle(model.card.training["despeckle"])
        if theirs != config.despeckle:
            raise ParameterError(
                f"cannot start from this model: it was trained with despeckle={theirs!r}, "
                f"the configuration asks for despeckle={config.despeckle!r}"
            )
    if model.card.normalisation is None:
        raise ParameterError(
            "cannot start from this model: its card holds no normalisation statistics"
        )


def extends(old: str, new: str) -> bool:
    """Whether variant ``new`` has all of ``old``'s input channels first, and more.

    Examples
    --------
    >>> extends("SODC", "SODCT"), extends("SOD", "SODC"), extends("SODC", "SOD")
    (True, True, False)
    """
    a, b = get_variant(old).channels, get_variant(new).channels
    return len(b) > len(a) and b[: len(a)] == a


def start_state(model: CloudfillModel, generator: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as a state of ``generator`` (the configuration's network).

    The same architecture: the model's state. A variant with more inputs
    (:func:`extends`): each layer that reads the inputs (the trunk's first convolution, the
    per-pixel path's first) gets the model's weights for the old channels and zeros for the
    new ones, so the network starts with exactly the model's output and learns what the new
    channels add. A path only the wider variant has (SODCTX's context path,
    :mod:`cloudfill.model.generator`) keeps ``generator``'s own initial weights (that path's
    output layers start at zero, so it starts unheard).
    """
    old, new = model.generator.variant.name, generator.variant.name
    if old != new and not extends(old, new):
        raise ParameterError(f"cannot start from this model: {new} does not extend {old}'s inputs")
    state, target = model.generator.state_dict(), generator.state_dict()
    out = {}
    for name, wanted in target.items():
        if name not in state and old != new:
            out[name] = wanted  # a path of the wider variant only: its fresh initialisation
            continue
        have = state[name]
        if have.shape == wanted.shape:
            out[name] = have
            continue
        # Only an input layer may differ, and only by more input channels.
        grows = have.ndim == 4 and have.shape[1] < wanted.shape[1]
        if not grows or have.shape[0] != wanted.shape[0] or have.shape[2:] != wanted.shape[2:]:
            raise ParameterError(
                f"cannot start from this model: {name} has shape {tuple(have.shape)}, "
                f"the network needs {tuple(wanted.shape)}"
            )
        grown = torch.zeros_like(wanted)
        grown[:, : have.shape[1]] = have.to(wanted)
        out[name] = grown
    return out


def _check_reference(model: CloudfillModel, variant: str, reference: str) -> None:
    mode = model.card.reference_mode
    if get_variant(variant).uses_reference and mode != reference:
        raise ParameterError(
            f"cannot start from this model: it was trained with reference={mode!r}, "
            f"the configuration asks for reference={reference!r}"
        )


def check_index(model: CloudfillModel, index: PatchIndex, variant: str) -> None:
    """Refuse a prebuilt index whose statistics or reference mode are not the model's (a
    prebuilt index, not the configuration, fixes them)."""
    if index.stats.to_dict() != model.card.normalisation:
        raise ParameterError(
            "the prebuilt index's normalisation statistics are not the init model's: "
            "build it with stats=init_stats(model), or pass no index"
        )
    _check_reference(model, variant, index.config.get("reference", "date"))


def init_stats(model: CloudfillModel) -> NormStats:
    """The normalisation statistics the model's weights expect."""
    return NormStats.from_dict(model.card.normalisation or {})


def weights_digest(generator: torch.nn.Module) -> str:
    """SHA-256 of a network's state (:func:`~cloudfill.model.checkpoint.update_with_state`).

    Examples
    --------
    >>> from cloudfill.model.generator import Generator
    >>> a = Generator("S", base_filters=4, n_blocks=1)
    >>> weights_digest(a) == weights_digest(a), len(weights_digest(a))
    (True, 64)
    """
    return update_with_state(hashlib.sha256(), generator).hexdigest()


IDENTITY: tuple[str, ...] = ("weights_sha256", "normalisation_sha256")
"""Keys of an ``init`` record that identify the start (a resume must match them); the
others (``created``, ``steps``) are information."""


def init_record(model: CloudfillModel | None) -> dict[str, Any] | None:
    """What the training record keeps of the model a run started from (None: random)."""
    if model is None:
        return None
    stats = json.dumps(model.card.normalisation, sort_keys=True).encode()
    return {
        "weights_sha256": weights_digest(model.generator),
        "normalisation_sha256": hashlib.sha256(stats).hexdigest(),
        "created": model.card.created,
        "steps": model.card.training.get("steps"),
    }


def same_start(saved: dict[str, Any] | None, wanted: dict[str, Any] | None) -> bool:
    """Whether two ``init`` records name the same start (weights and statistics).

    Examples
    --------
    >>> same_start(None, None), same_start({"weights_sha256": "a"}, None)
    (True, False)
    >>> same_start({"weights_sha256": "a", "created": "x"}, {"weights_sha256": "a"})
    True
    """
    if saved is None or wanted is None:
        return saved is wanted
    return all(saved.get(k) == wanted.get(k) for k in IDENTITY)


def _describe(record: dict[str, Any] | None) -> str:
    if record is None:
        return "random weights"
    return f"the model with weights {str(record.get('weights_sha256'))[:12]}"


def check_start(saved: dict[str, Any] | None, wanted: dict[str, Any] | None) -> None:
    """Refuse to resume a run from another start than the one it was begun from.

    Examples
    --------
    >>> check_start({"weights_sha256": "0123456789abcdef"}, None)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: cannot resume: ... weights 0123456789ab, not from random ...
    """
    if not same_start(saved, wanted):
        raise ParameterError(
            f"cannot resume: the run in the output folder started from {_describe(saved)}, "
            f"not from {_describe(wanted)} (give the same init model, or another output "
            "folder)"
        )
