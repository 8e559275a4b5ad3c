"""The model card: everything needed to rebuild, trust and reuse a trained generator.

A card travels with the weights in every checkpoint (see :mod:`cloudfill.model.checkpoint`).
It fixes the architecture (variant, attention, widths, norm, confidence head), the data
contract the model was trained on (input channel order, bands, polarisations, the scene-wide
normalisation statistics as a plain JSON dict), and provenance (patch size, training config,
split, metrics, cloudfill version, creation time).

Reading is strict: an unknown key, a missing key or a wrongly typed value raises
:class:`~cloudfill.errors.CheckpointError` naming it, so a card from a newer or a tampered
file is never half-understood. This module does not import torch.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from cloudfill._version import __version__
from cloudfill.core.variants import NORMS, SKIPS, attention_kind, get_variant
from cloudfill.cube.schema import BANDS, POLS
from cloudfill.errors import CheckpointError, ParameterError
from cloudfill.model.calibration import Calibration, readable_calibration

__all__ = ["FORMAT_VERSION", "REFERENCE_DIRECTIONS", "REFERENCE_MODES", "ModelCard"]

FORMAT_VERSION: int = 1

REFERENCE_DIRECTIONS: dict[str, str] = {
    "date": "earlier",
    "composite": "nearest",
    "blend": "nearest",
}
"""Per reference mode, which side of the target its source dates may lie on (a
:func:`~cloudfill.core.pairs.pairs` direction): the paper's single date is earlier, a
composite takes each pixel's nearest clear observation, earlier or later, and a blend the
nearest on each side."""

REFERENCE_MODES: tuple[str, ...] = tuple(REFERENCE_DIRECTIONS)
"""How an SO/SOD model's reference image is built (see :attr:`ModelCard.reference_mode`)."""
"""Version of the checkpoint layout and card schema this cloudfill writes and reads."""


def _now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


# JSON type each field must have after parsing (None allowed where listed).
_TYPES: dict[str, tuple[type, ...]] = {
    "format_version": (int,),
    "variant": (str,),
    "attention": (str,),
    "base_filters": (int,),
    "n_blocks": (int,),
    "norm": (str,),
    "confidence": (bool,),
    "reference_skip": (bool,),
    "skip": (str,),
    "pixel_features": (int,),
    "reference_mode": (str,),
    "input_channels": (list,),
    "bands": (list,),
    "pols": (list,),
    "normalisation": (dict, type(None)),
    "patch_size": (int, type(None)),
    "training": (dict,),
    "split": (dict,),
    "metrics": (dict,),
    "calibration": (dict, type(None)),
    "cloudfill_version": (str,),
    "created": (str,),
}


@dataclass
class ModelCard:
    """Metadata stored with a generator's weights.

    Attributes
    ----------
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``.
    attention
        ``"cbam"``, ``"self"`` or ``"none"`` (``True``/``False`` are accepted and normalised).
    base_filters, n_blocks, norm, confidence, reference_skip, skip, pixel_features
        The rest of the generator's architecture (see
        :class:`~cloudfill.model.generator.Generator`).
    reference_mode
        How the reference image of SO/SOD models is built: ``"date"`` (one clear date, the
        paper's setting), ``"composite"`` (each pixel's nearest clear observation; see
        :func:`cloudfill.core.reference.composite_reference`) or ``"blend"`` (the nearest
        clear observations before and after, weighted by time and S1 similarity; see
        :func:`cloudfill.core.reference.blend_reference`). Inference uses the mode the
        model was trained with.
    input_channels
        Input channel names in stack order; derived from the variant when omitted.
    bands
        Predicted S2 bands, in output order.
    pols
        S1 polarisations the model was trained on.
    normalisation
        Scene-wide normalisation statistics as a JSON dict
        (``cloudfill.preprocess.normalise.NormStats.to_dict()``), or None.
    patch_size
        Training patch side in pixels, or None.
    training
        Training configuration (learning rate, epochs, lambda ...).
    split
        How train/validation/test were split (e.g. spatial blocks, seed).
    metrics
        Metrics at save time (e.g. validation MAE).
    calibration
        How the error scale of a filled value follows from the confidence head's raw scale
        (:class:`~cloudfill.model.calibration.Calibration` as a JSON dict, fitted by
        :func:`~cloudfill.fill.calibrate.calibrate` on scenes the model never saw), or None
        (uncalibrated: ``fill_series`` then reports the raw scale).
    cloudfill_version
        Version of cloudfill that wrote the card.
    created
        ISO 8601 UTC timestamp.
    format_version
        Card/checkpoint schema version (:data:`FORMAT_VERSION`).

    Examples
    --------
    >>> card = ModelCard("SD", attention=True, base_filters=8, n_blocks=2)
    >>> card.attention, card.input_channels
    ('cbam', ['VV', 'VH', 'DEM'])
    >>> ModelCard.from_json(card.to_json()) == card
    True
    """

    variant: str
    attention: str = "cbam"
    base_filters: int = 64
    n_blocks: int = 9
    norm: str = "batch"
    confidence: bool = False
    # Cards written before the skip existed lack the key: their generators have none.
    reference_skip: bool = False
    # Cards from before the additive skip and the per-pixel path lack these keys: their
    # generators used tanh(head + atanh(reference)) and no per-pixel path.
    skip: str = "atanh"
    pixel_features: int = 0
    # Cards written before composites existed lack the key: they used one reference date.
    reference_mode: str = "date"
    input_channels: list[str] = field(default_factory=list)
    bands: list[str] = field(default_factory=lambda: list(BANDS))
    pols: list[str] = field(default_factory=lambda: list(POLS))
    normalisation: dict[str, Any] | None = None
    patch_size: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    split: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # Cards written before calibration existed lack the key: uncalibrated.
    calibration: dict[str, Any] | None = None
    cloudfill_version: str = __version__
    created: str = field(default_factory=_now)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        variant = get_variant(self.variant)
        self.variant = variant.name
        self.attention = attention_kind(self.attention)
        if self.norm not in NORMS:
            raise ParameterError(f"unknown norm {self.norm!r}; expected one of {list(NORMS)}")
        if self.base_filters < 1 or self.n_blocks < 0:
            raise ParameterError(
                f"base_filters must be >= 1 and n_blocks >= 0, got {self.base_filters}, "
                f"{self.n_blocks}"
            )
        if self.skip not in SKIPS:
            raise ParameterError(f"unknown skip {self.skip!r}; expected one of {list(SKIPS)}")
        if self.reference_mode not in REFERENCE_MODES:
            raise ParameterError(
                f"unknown reference_mode {self.reference_mode!r}; expected one of "
                f"{list(REFERENCE_MODES)}"
            )
        self.calibration = readable_calibration(self.calibration)  # form 1: ignored
        if self.calibration is not None:
            Calibration.from_dict(self.calibration)  # a ParameterError names what is wrong
        if not self.input_channels:
            self.input_channels = list(variant.channels)
        self.input_channels = [str(c) for c in self.input_channels]
        self.bands = [str(b) for b in self.bands]
        self.pols = [str(p) for p in self.pols]
        if tuple(self.input_channels) != variant.channels:
            raise ParameterError(
                f"card input_channels {self.input_channels} do not match variant "
                f"{variant.name} ({list(variant.channels)})"
            )

    @property
    def reference_direction(self) -> str:
        """Which side of the target the reference may come from (a :func:`pairs` direction):
        ``"nearest"`` for composites and blends (clear observations earlier or later),
        ``"earlier"`` for single dates (the paper's rule)."""
        return REFERENCE_DIRECTIONS[self.reference_mode]

    @property
    def n_inputs(self) -> int:
        """Number of input channels."""
        return len(self.input_channels)

    def generator_kwargs(self) -> dict[str, Any]:
        """Arguments that rebuild the generator: ``Generator(**card.generator_kwargs())``.

        Examples
        --------
        >>> ModelCard("S").generator_kwargs()["variant"]
        'S'
        """
        return {
            "variant": self.variant,
            "base_filters": self.base_filters,
            "n_blocks": self.n_blocks,
            "attention": self.attention,
            "norm": self.norm,
            "confidence": self.confidence,
            "reference_skip": self.reference_skip,
            "skip": self.skip,
            "pixel_features": self.pixel_features,
        }

    @classmethod
    def from_generator(cls, generator: Any, **metadata: Any) -> ModelCard:
        """A card for ``generator`` (its ``config()``) plus ``metadata`` fields.

        Examples
        --------
        >>> from cloudfill.model.generator import Generator
        >>> card = ModelCard.from_generator(Generator("SO", base_filters=8, n_blocks=1),
        ...                                 patch_size=128)
        >>> card.variant, card.n_blocks, card.patch_size
        ('SO', 1, 128)
        """
        return cls(**{**generator.config(), **metadata})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of all fields."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """Serialise to JSON.

        Raises
        ------
        ParameterError
            If a free-form field (``training``, ``metrics`` ...) holds a non-JSON value.
        """
        data = self.to_dict()
        for key, value in data.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:
                raise ParameterError(
                    f"model card field {key!r} is not JSON-serialisable: {err}"
                ) from None
        return json.dumps(data, indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Build a card from a parsed dict, strictly.

        Raises
        ------
        CheckpointError
            Unknown or missing keys, wrong types, a newer format version, or an inconsistent
            card (e.g. channels that do not match the variant).
        """
        if not isinstance(data, dict):
            raise CheckpointError(f"model card must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(
                f"model card has unknown key(s) {unknown}: written by another tool or a newer "
                "cloudfill"
            )
        required = [k for k in ("format_version", "variant") if k not in data]
        if required:
            raise CheckpointError(f"model card is missing key(s) {required}")
        for key, value in data.items():
            allowed = _TYPES[key]
            # bool is an int subclass: "n_blocks": true must not pass as 1.
            wrong_bool = isinstance(value, bool) and bool not in allowed
            if wrong_bool or not isinstance(value, allowed):
                names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
                raise CheckpointError(
                    f"model card key {key!r} should be {names}, got {type(value).__name__}"
                )
        version = data["format_version"]
        if version > FORMAT_VERSION or version < 1:
            raise CheckpointError(
                f"model card format_version {version} is not supported (this cloudfill reads "
                f"1..{FORMAT_VERSION}); upgrade cloudfill"
            )
        try:
            return cls(**data)
        except (ParameterError, TypeError) as err:
            raise CheckpointError(f"inconsistent model card: {err}") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        """Parse a card from JSON text, strictly (see :meth:`from_dict`).

        Examples
        --------
        >>> ModelCard.from_json('{"format_version": 1, "variant": "S"}').input_channels
        ['VV', 'VH']
        """
        try:
            data = json.loads(text)
        except ValueError as err:
            raise CheckpointError(f"model card is not valid JSON: {err}") from None
        return cls.from_dict(data)
