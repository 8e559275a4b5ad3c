"""The attention cGAN: variants, generator, discriminator, losses, model card, checkpoints.

Names are resolved lazily, so ``from cloudfill.model import ModelCard`` or the variant table
do not import torch; the networks, checkpoints and :class:`CloudfillModel` do.

The variant table (channel order, configuration names) lives in :mod:`cloudfill.core.variants`,
below this package, and is re-exported here. Modules:
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
    "ALL_CHANNELS": "cloudfill.core.variants",
    "ATTENTION_KINDS": "cloudfill.core.variants",
    "NORMS": "cloudfill.core.variants",
    "OUTPUT_BANDS": "cloudfill.core.variants",
    "VARIANTS": "cloudfill.core.variants",
    "Variant": "cloudfill.core.variants",
    "attention_kind": "cloudfill.core.variants",
    "get_variant": "cloudfill.core.variants",
    "FORMAT_VERSION": "cloudfill.model.card",
    "ModelCard": "cloudfill.model.card",
    "CBAM": "cloudfill.model.attention",
    "SelfAttention": "cloudfill.model.attention",
    "Generator": "cloudfill.model.generator",
    "GeneratorOutput": "cloudfill.model.generator",
    "PatchDiscriminator": "cloudfill.model.discriminator",
    "adversarial_loss": "cloudfill.model.losses",
    "laplace_nll": "cloudfill.model.losses",
    "change_pixels": "cloudfill.model.losses",
    "change_weighted_l1": "cloudfill.model.losses",
    "masked_l1": "cloudfill.model.losses",
    "ReceptiveField": "cloudfill.model.receptive",
    "count_macs": "cloudfill.model.receptive",
    "gflops": "cloudfill.model.receptive",
    "receptive_field": "cloudfill.model.receptive",
    "CloudfillModel": "cloudfill.model.runtime",
    "resolve_device": "cloudfill.model.runtime",
    "is_model_checkpoint": "cloudfill.model.checkpoint",
    "load_model": "cloudfill.model.runtime",
    "read_card": "cloudfill.model.checkpoint",
    "save_model": "cloudfill.model.checkpoint",
    "default_model": "cloudfill.model.default",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cloudfill.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
