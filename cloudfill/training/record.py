"""The training record: a configuration as the model card and the resumable state keep it.

:func:`training_record` turns a :class:`~cloudfill.training.config.TrainConfig` and the index
it trained on into the JSON-safe ``training`` record of the model card and the resumable
state; its keys and values are what checkpoints written before the configuration was one
value hold too (inference reads ``despeckle`` from it). :func:`check_resumable` compares a
saved record with a new one on the keys that define a run (:data:`FIXED`).
"""

from __future__ import annotations

from typing import Any

from cloudfill.core.pairs import PairingRule
from cloudfill.core.variants import attention_kind, get_variant
from cloudfill.errors import ParameterError
from cloudfill.training.config import TrainConfig
from cloudfill.training.index import PatchIndex

__all__ = ["FIXED", "check_resumable", "training_record"]

FIXED: tuple[str, ...] = (
    "variant",
    "attention",
    "base_filters",
    "n_blocks",
    "norm",
    "confidence",
    "reference_skip",
    "skip",
    "pixel_features",
    "reference_mode",
    "ema",
    "d_filters",
    "d_layers",
    "batch_size",
    "lr",
    "betas",
    "lambda_l1",
    "change_weight",
    "change_threshold",
    "patch_size",
    "overlap",
    "block_size",
    "fractions",
    "seed",
    "max_cloud",
    "despeckle",
    "dates",
    "max_s1_gap",
    "max_ref_age",
    "max_ref_cloud",
    "season",
)
"""Keys of the training record that define a run: a resumed run must have the same ones."""

# What a record saved without a key meant: references were single dates before composites
# existed, the pairing rule was always the default one before it could be chosen, the
# generator had the atanh skip and no per-pixel path, and season planes followed the
# northern calendar everywhere (a southern run of then cannot go on with turned planes).
_SAVED_DEFAULTS: dict[str, Any] = {
    "reference_mode": "date",
    "skip": "atanh",  # before the additive skip and the per-pixel path
    "pixel_features": 0,
    "season": "northern",
    # Recorded only when not these (cards and runs before 2026-12-07 lack them).
    "change_weight": 1.0,
    "change_threshold": 0.05,
    **PairingRule().to_dict(),
}


def training_record(config: TrainConfig, index: PatchIndex) -> dict[str, Any]:
    """The training settings as the model card and the resumable state record them.

    Values the index settled (patch size, overlap, blocks, despeckling after the cube's own,
    target dates, pairing rule, reference mode) come from ``index``: a prebuilt index wins
    over the configuration.

    Examples
    --------
    >>> import cloudfill
    >>> from cloudfill.training.config import TrainConfig
    >>> from cloudfill.training.index import PatchSettings, build_index
    >>> ds = cloudfill.simulate_scene((96, 96), seed=0)
    >>> config = TrainConfig("S", patches=PatchSettings(32, overlap=0, block_size=32))
    >>> index = build_index(ds, "S", config.patches, despeckle=3)
    >>> record = training_record(config, index)
    >>> record["despeckle"], record["patch_size"], record["loss"]
    (3, 32, 'l1')
    """
    spec = get_variant(config.variant)
    net, optim, schedule = config.network, config.optim, config.schedule
    reference_skip = net.reference_skip
    change = {k: float(getattr(optim, k)) for k in ("change_weight", "change_threshold")}
    return {
        "variant": spec.name,
        "attention": net.attention if isinstance(net.attention, str) else bool(net.attention),
        "base_filters": net.base_filters,
        "n_blocks": net.n_blocks,
        "norm": net.norm,
        "confidence": bool(net.confidence),
        "reference_skip": spec.uses_reference if reference_skip is None else bool(reference_skip),
        "skip": net.skip,
        "pixel_features": int(net.pixel_features),
        "reference_mode": index.config.get("reference", "date") if spec.uses_reference else "date",
        "d_filters": net.d_filters,
        "d_layers": net.d_layers,
        "batch_size": optim.batch_size,
        "lr": float(optim.lr),
        "betas": [float(b) for b in optim.betas],
        "lambda_l1": float(optim.lambda_l1),
        "patch_size": index.size,
        "overlap": index.config.get("overlap", config.patches.overlap),
        "block_size": index.grid.block_size,
        "fractions": index.config.get("fractions", list(config.patches.fractions)),
        "seed": config.seed,
        "max_cloud": index.config.get("max_cloud", config.patches.max_cloud),
        "despeckle": index.despeckle,
        "dates": index.split_record()["dates"],
        "max_s1_gap": index.config.get("max_s1_gap"),
        "max_ref_age": index.config.get("max_ref_age"),
        "max_ref_cloud": index.config.get("max_ref_cloud"),
        "loss": ("change-weighted l1" if optim.change_weight != 1 else "l1")
        + (" + laplace_nll(detached mean)" if net.confidence else ""),
        "optimizer": "adam",
        "epochs": schedule.epochs,
        "max_steps": schedule.max_steps,
        "patience": schedule.patience,
        "ema": None if optim.ema is None else float(optim.ema),
        # Only when not the defaults, which a card without them means (_SAVED_DEFAULTS).
        **(change if any(v != _SAVED_DEFAULTS[k] for k, v in change.items()) else {}),
        # Which calendar the season planes followed (cloudfill.core.season): the card then
        # says which hemisphere's seasons the model has seen.
        **({"season": "southern" if index.southern else "northern"} if spec.uses_season else {}),
    }


def check_resumable(saved: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to resume a run whose defining settings (:data:`FIXED`) differ.

    Examples
    --------
    >>> check_resumable({"lr": 0.001}, {"lr": 0.01})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: cannot resume: ... has lr=0.001 but lr=0.01 was asked for ...
    """
    for key in FIXED:
        a = saved.get(key, _SAVED_DEFAULTS.get(key))
        b = wanted.get(key, _SAVED_DEFAULTS.get(key))
        if isinstance(a, list | tuple) and isinstance(b, list | tuple):
            a, b = list(a), list(b)
        if key == "attention":  # True and "cbam" are the same attention
            a, b = attention_kind(a), attention_kind(b)
        if a != b:
            raise ParameterError(
                f"cannot resume: the run in the output folder has {key}={a!r} but {key}={b!r} "
                "was asked for (use the same settings, or another --out)"
            )
