"""The attention cGAN: variants, generator, discriminator, losses, model card, checkpoints.

Names are resolved lazily, so ``from cloudfill.model import ModelCard`` or the variant table
do not import torch; the networks, checkpoints and :class:`CloudfillModel` do.

Modules: :mod:`~cloudfill.model.variants` (channel order, configuration names),
:mod:`~cloudfill.model.attention`, :mod:`~cloudfill.model.generator`,
:mod:`~cloudfill.model.discriminator`, :mod:`~cloudfill.model.losses`,
:mod:`~cloudfill.model.receptive`, :mod:`~cloudfill.model.card`,
:mod:`~cloudfill.model.checkpoint` (safe save/load), :mod:`~cloudfill.model.runtime`
(:class:`CloudfillModel`, devices).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "ALL_CHANNELS": "variants",
    "ATTENTION_KINDS": "variants",
    "NORMS": "variants",
    "OUTPUT_BANDS": "variants",
    "VARIANTS": "variants",
    "Variant": "variants",
    "attention_kind": "variants",
    "get_variant": "variants",
    "FORMAT_VERSION": "card",
    "ModelCard": "card",
    "CBAM": "attention",
    "SelfAttention": "attention",
    "Generator": "generator",
    "GeneratorOutput": "generator",
    "PatchDiscriminator": "discriminator",
    "adversarial_loss": "losses",
    "laplace_nll": "losses",
    "masked_l1": "losses",
    "ReceptiveField": "receptive",
    "count_macs": "receptive",
    "gflops": "receptive",
    "receptive_field": "receptive",
    "CloudfillModel": "runtime",
    "resolve_device": "runtime",
    "is_model_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "read_card": "checkpoint",
    "save_model": "checkpoint",
    "default_model": "default",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudfill.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"cloudfill.model.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
