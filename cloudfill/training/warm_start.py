"""Warm start: begin a training run from a trained model's weights instead of random ones.

A user fine-tunes the shipped model on a cube of their own region, or a long run continues
on new scenes, without the 1-2 hours a run from scratch takes on a CPU. The network only
means what it learned on inputs normalised as it was trained, so a warm start takes over
the model's normalisation statistics (the cube's own are not computed), and it needs the
configuration's generator to be the model's architecture exactly (variant, width, blocks,
attention, normalisation layer, heads, skip, per-pixel path) and the same reference mode.
The discriminator, the optimiser's moments and the schedule start afresh; the weight
average starts at the model's weights.

The model a run started from is recorded in the training record (``init``: the SHA-256 of
its weights, its creation time and training steps), so a resumed run must name the same one.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import torch

from cloudfill.core.variants import get_variant
from cloudfill.errors import ParameterError
from cloudfill.model.runtime import CloudfillModel, load_model
from cloudfill.preprocess.normalise import NormStats
from cloudfill.training.config import TrainConfig
from cloudfill.training.step import config_generator

__all__ = ["check_init", "init_record", "init_stats", "load_init", "weights_digest"]

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
    wanted = config_generator(config).config()
    have = model.generator.config()
    for key, value in wanted.items():
        if have.get(key) != value:
            raise ParameterError(
                f"cannot start from this model: it has {key}={have.get(key)!r} but the "
                f"configuration asks for {key}={value!r}"
            )
    mode = model.card.reference_mode
    if get_variant(config.variant).uses_reference and mode != config.reference:
        raise ParameterError(
            f"cannot start from this model: it was trained with reference={mode!r}, "
            f"the configuration asks for reference={config.reference!r}"
        )
    if model.card.normalisation is None:
        raise ParameterError(
            "cannot start from this model: its card holds no normalisation statistics"
        )


def init_stats(model: CloudfillModel) -> NormStats:
    """The normalisation statistics the model's weights expect."""
    return NormStats.from_dict(model.card.normalisation or {})


def weights_digest(generator: torch.nn.Module) -> str:
    """SHA-256 of a network's state (names, dtypes, shapes and values, in name order).

    Examples
    --------
    >>> from cloudfill.model.generator import Generator
    >>> a = Generator("S", base_filters=4, n_blocks=1)
    >>> weights_digest(a) == weights_digest(a), len(weights_digest(a))
    (True, 64)
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(generator.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()


def init_record(model: CloudfillModel | None) -> dict[str, Any] | None:
    """What the training record keeps of the model a run started from (None: random)."""
    if model is None:
        return None
    return {
        "weights_sha256": weights_digest(model.generator),
        "created": model.card.created,
        "steps": model.card.training.get("steps"),
    }
