"""The ResNet-style generator, with optional attention and a per-pixel confidence head.

Layout (``f = base_filters``; pix2pix/CycleGAN "resnet" generator, Johnson et al. 2016)::

    stem   reflect-pad 3, conv 7x7 -> f,          norm, ReLU
    down   conv 3x3 stride 2 -> 2f,               norm, ReLU
    down   conv 3x3 stride 2 -> 4f,               norm, ReLU
    blocks n_blocks x [pad, conv 3x3, norm, ReLU, pad, conv 3x3, norm, attention] + skip
    up     nearest x2, pad, conv 3x3 -> 2f,       norm, ReLU
    up     nearest x2, pad, conv 3x3 -> f,        norm, ReLU
    pixel  1x1 conv -> p, ReLU, 1x1 conv -> p, ReLU  (optional; on the input, beside the trunk)
    context  5 x depthwise 3x3 partial conv (dilation 1, 2, 4, 8, 16) on the date's shown
           pixels' residual over the mean; their outputs and masks -> 3x3 conv, plus 1x1 -> 16,
           ReLU, 3x3 -> 4 bands, added to the mean (SODCTX, SODCTXH; :mod:`cloudfill.model.context`)
    height 1x1 -> 32, ReLU, 1x1 -> 32, ReLU, 1x1 -> 4 bands on what the date's clear pixels
           show at the pixel's height and the mean so far, added to it (SODCTXH, SODCTXHI;
           SODCTXHI's also reads the slope's light, its band's, and the band mean scaled by
           their ratio)
    head   reflect-pad 3, conv 7x7 -> 4 bands on [trunk, pixel]  (the mean: tanh, or the
           reference plus the head with the additive skip)
    scale  reflect-pad 3, conv 7x7 -> 4 bands, softplus + eps  (optional Laplace scale)

Choices the paper leaves open, and why:

- **Upsampling is resize-convolution** (nearest x2 then a 3x3 convolution), not a transposed
  convolution: a stride-2 transposed convolution with a 3x3 kernel covers output pixels
  unevenly and produces checkerboard artefacts (Odena et al., 2016, "Deconvolution and
  Checkerboard Artifacts", Distill), which on a tiled scene repeat with the tile grid.
- **Normalisation defaults to batch norm**, used in eval mode at inference. pix2pix uses
  instance norm, but instance (and group) norm compute statistics over the tile being
  processed, so a pixel's value depends on what else is in the tile and tiled inference shows
  seams. Batch norm in eval mode applies fixed running statistics stored in the checkpoint:
  a per-pixel affine map, independent of the tiling. ``norm="none"`` is the other tile-free
  choice; ``norm="instance"`` is kept to reproduce the paper and is reported as tile-dependent
  by :func:`cloudfill.model.receptive.receptive_field`.
- **Reflection padding** everywhere (also in the strided convolutions), so a tile border looks
  like image interior rather than a black frame.
- **A per-pixel path** (``pixel_features``, 32 by default): the head sees two 1x1
  convolutions of the condition stack beside the trunk's features. Without it the trunk's
  strided convolutions and normalisations had to carry a pixel's own values (its reference,
  its S1) to the head, and in practice did not: a per-pixel MLP on the same channels learned
  the residual the generator never did (``benchmarks/probe_learning.py``, RESULTS "Why the
  generator did not learn").
- **The additive skip** (``skip="add"``, the default): ``mean = reference + head`` in
  normalised units. The earlier ``tanh(head + atanh(reference))`` (``skip="atanh"``, what
  checkpoints without the field use) saturates: at reflectances near the ends of the
  normalisation range ``tanh'`` is 0.002-0.2, so the head could barely move those pixels.
- **A context path** (variants reading the target date's own clear pixels, SODCTX): partial
  convolutions at full resolution spread the shown pixels' residual over the mean into the
  gaps and add it (:mod:`cloudfill.model.context`, which says why). Its last layer starts at
  zero, so a warm start from SODCT begins at that model's output. It reads the mean's
  residual, so its reach (32 px) adds to the trunk's in the tiling's halo
  (:meth:`Generator.rf_path`, :mod:`cloudfill.model.receptive`).
  The trunk and the per-pixel path do not read the context channels (nor SODCTXH's height
  channels, nor SODCTXHI's band means of the light and the lit band means): the mean is the
  SODCT network's, the same whether a pixel is shown or hidden. They do read SODCTXHI's
  ``light``, the pixel's own slope at the date, which says nothing of what is shown.
- **Confidence head**: a second 7x7 head on the last decoder features predicts a per-pixel,
  per-band Laplace scale ``b > 0`` (``softplus + 1e-3``, in normalised output units), trained
  with :func:`cloudfill.model.losses.laplace_nll`. Large ``b`` = the network is unsure.

Inputs must have a height and width that are multiples of 4 (two stride-2 stages) and at
least 16 px; :meth:`cloudfill.model.runtime.CloudfillModel.predict` pads for you.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cloudfill.core.grid import ALIGN
from cloudfill.core.variants import (
    CONTEXT_CHANNELS,
    HEIGHT_CHANNELS,
    LIGHT_CHANNELS,
    NORMS,
    OUTPUT_BANDS,
    REFERENCE_CHANNELS,
    SKIPS,
    Variant,
    attention_kind,
    get_variant,
)
from cloudfill.errors import ParameterError
from cloudfill.model.attention import make_attention
from cloudfill.model.context import ContextPath, HeightPath

__all__ = [
    "NORMS",
    "SCALE_EPS",
    "SKIPS",
    "Generator",
    "GeneratorOutput",
    "ResidualBlock",
    "make_norm",
]

SCALE_EPS: float = 1e-3
"""Floor of the predicted Laplace scale, in normalised units (keeps the NLL finite)."""


class GeneratorOutput(NamedTuple):
    """What :class:`Generator` returns.

    Attributes
    ----------
    mean
        (N, 4, H, W) predicted bands in normalised units (within [-1, 1] except where an
        additive skip carries them out), order B02, B03, B04, B08.
    scale
        (N, 4, H, W) Laplace scale ``b > 0`` per pixel and band, or None when the generator
        has no confidence head.
    """

    mean: torch.Tensor
    scale: torch.Tensor | None


def make_norm(kind: str, channels: int) -> nn.Module:
    """A normalisation layer by name (see :data:`NORMS`).

    Examples
    --------
    >>> type(make_norm("batch", 8)).__name__
    'BatchNorm2d'
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ParameterError(f"unknown norm {kind!r}; expected one of {list(NORMS)}")


def _conv_block(cin: int, cout: int, kernel: int, norm: str, *, stride: int = 1) -> list[nn.Module]:
    # Batch norm has its own shift, so the conv bias would be redundant there.
    pad = kernel // 2
    layers: list[nn.Module] = []
    if stride == 1:
        layers.append(nn.ReflectionPad2d(pad))
        conv = nn.Conv2d(cin, cout, kernel, bias=norm != "batch")
    else:
        conv = nn.Conv2d(
            cin, cout, kernel, stride=stride, padding=pad, padding_mode="reflect",
            bias=norm != "batch",
        )  # fmt: skip
    layers += [conv, make_norm(norm, cout), nn.ReLU(inplace=True)]
    return layers


class ResidualBlock(nn.Module):
    """``x + attention(conv-norm-relu-conv-norm(x))``; attention on the residual branch (CBAM)."""

    def __init__(self, channels: int, norm: str, attention: str) -> None:
        super().__init__()
        bias = norm != "batch"
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, 3, bias=bias),
            make_norm(norm, channels),
        )
        self.attention = make_attention(attention, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attention(self.body(x))


#: The reference is clamped inside (-1, 1) before atanh so the skip stays finite.
_SKIP_LIMIT = 0.999


class Generator(nn.Module):
    """ResNet-style generator for one model variant (see the module docstring for the layout).

    Parameters
    ----------
    variant
        ``"S"``, ``"SD"``, ``"SO"`` or ``"SOD"``; fixes the input channels
        (:mod:`cloudfill.core.variants`).
    base_filters
        Width of the first stage (64 in the paper).
    n_blocks
        Number of residual blocks (9 in the paper).
    attention
        ``True``/``"cbam"`` (default), ``"self"``, or ``False``/``"none"``.
    norm
        ``"batch"`` (default), ``"none"`` or ``"instance"``.
    confidence
        Add the Laplace-scale head.
    reference_skip
        For variants with a reference S2 image (SO, SOD): predict the target as the reference
        plus a learned change, ``tanh(head + atanh(reference))``, instead of from scratch.
        Reference and target share one normalisation, so an untrained head already returns
        the reference (persistence) and training only has to learn what changed; cloudy
        reference pixels (0 after normalisation) leave the head to predict alone. Default:
        on for variants with a reference.
    skip
        How the reference enters the mean: ``"add"`` (default) ``reference + head``, or
        ``"atanh"`` ``tanh(head + atanh(reference))`` (checkpoints from before the field).
    pixel_features
        Width of the per-pixel path into the head (0: none, as checkpoints from before it).

    Examples
    --------
    >>> g = Generator("SOD", base_filters=8, n_blocks=2, confidence=True).eval()
    >>> out = g(torch.zeros(1, 7, 32, 32))
    >>> out.mean.shape, out.scale.shape
    (torch.Size([1, 4, 32, 32]), torch.Size([1, 4, 32, 32]))
    """

    def __init__(
        self,
        variant: str | Variant = "SOD",
        *,
        base_filters: int = 64,
        n_blocks: int = 9,
        attention: bool | str = True,
        norm: str = "batch",
        confidence: bool = False,
        reference_skip: bool | None = None,
        skip: str = "add",
        pixel_features: int = 32,
    ) -> None:
        super().__init__()
        self.variant = get_variant(variant)
        if reference_skip is None:
            reference_skip = self.variant.uses_reference
        if reference_skip and not self.variant.uses_reference:
            raise ParameterError(f"variant {self.variant.name} has no reference to skip to")
        self.reference_skip = bool(reference_skip)
        self._reference_index = [
            self.variant.channels.index(c) for c in REFERENCE_CHANNELS if c in self.variant.channels
        ]
        if base_filters < 1 or n_blocks < 0:
            raise ParameterError(
                f"base_filters must be >= 1 and n_blocks >= 0, got {base_filters}, {n_blocks}"
            )
        if norm not in NORMS:
            raise ParameterError(f"unknown norm {norm!r}; expected one of {list(NORMS)}")
        if skip not in SKIPS:
            raise ParameterError(f"unknown skip {skip!r}; expected one of {list(SKIPS)}")
        if pixel_features < 0:
            raise ParameterError(f"pixel_features must be >= 0, got {pixel_features}")
        self.skip = skip
        self.pixel_features = int(pixel_features)
        self.attention = attention_kind(attention)
        self.base_filters = int(base_filters)
        self.n_blocks = int(n_blocks)
        self.norm = norm
        self.confidence = bool(confidence)

        # The trunk and the per-pixel path read every channel but the date's own pixels: the
        # first estimate must not know which pixels are shown, or, trained only where they
        # are hidden, it would drift where they are shown, and the context path reads its
        # residual there (RESULTS, "The target date's clear pixels").
        context = {*CONTEXT_CHANNELS, *HEIGHT_CHANNELS, *LIGHT_CHANNELS[1:]}
        self._estimate_index = [i for i, c in enumerate(self.variant.channels) if c not in context]
        f, cin, cout = self.base_filters, len(self._estimate_index), len(OUTPUT_BANDS)
        self.trunk = nn.Sequential(
            *_conv_block(cin, f, 7, norm),
            *_conv_block(f, 2 * f, 3, norm, stride=2),
            *_conv_block(2 * f, 4 * f, 3, norm, stride=2),
            *(ResidualBlock(4 * f, norm, self.attention) for _ in range(self.n_blocks)),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_block(4 * f, 2 * f, 3, norm),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_conv_block(2 * f, f, 3, norm),
        )
        p = self.pixel_features
        self.pixel = (
            nn.Sequential(nn.Conv2d(cin, p, 1), nn.ReLU(inplace=True), nn.Conv2d(p, p, 1),
                          nn.ReLU(inplace=True))
            if p else None
        )  # fmt: skip
        self._context_index = (
            [self.variant.channels.index(c) for c in CONTEXT_CHANNELS]
            if self.variant.uses_context
            else []
        )
        self._height_index = (
            [self.variant.channels.index(c) for c in HEIGHT_CHANNELS]
            if self.variant.uses_height
            else []
        )
        self.context = ContextPath(len(OUTPUT_BANDS)) if self._context_index else None
        self._light_index = (
            [self.variant.channels.index(c) for c in LIGHT_CHANNELS]
            if self.variant.uses_light
            else []
        )
        self.height = (
            HeightPath(len(OUTPUT_BANDS), light=bool(self._light_index))
            if self._height_index
            else None
        )
        self.head = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(f + p, cout, 7))
        if self.reference_skip:
            # Start from the identity (output = reference), as residual nets zero their last
            # layer: training then only learns the change, and never starts below persistence.
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)
        self.scale_head = (
            nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(f + p, cout, 7)) if confidence else None
        )

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this architecture (stored in the model card).

        Examples
        --------
        >>> Generator("S", base_filters=8, n_blocks=1).config()["variant"]
        'S'
        """
        return {
            "variant": self.variant.name,
            "base_filters": self.base_filters,
            "n_blocks": self.n_blocks,
            "attention": self.attention,
            "norm": self.norm,
            "confidence": self.confidence,
            "reference_skip": self.reference_skip,
            "skip": self.skip,
            "pixel_features": self.pixel_features,
        }

    @property
    def reference_index(self) -> list[int]:
        """Positions of the reference S2 bands in the condition stack (empty without one)."""
        return list(self._reference_index)

    def rf_path(self) -> list[nn.Module]:
        """Modules along the longest input-to-output path, in order (for the RF walker).

        The scale head runs parallel to the mean head with the same geometry, so the path
        through ``head`` covers both. A context path reads the mean's residual, so its reach
        adds to the trunk's and the head's.
        """
        if self.context is None:
            return [self.trunk, self.head]
        spread = [m for layer in self.context.layers for m in (layer.pad, layer.conv)]
        return [self.trunk, self.head, *spread, self.context.linear]

    def forward(self, x: torch.Tensor) -> GeneratorOutput:
        """Predict the target bands (and their Laplace scale) from the condition stack ``x``."""
        if x.ndim != 4 or x.shape[1] != self.variant.n_inputs:
            raise ParameterError(
                f"variant {self.variant.name} expects input (N, {self.variant.n_inputs}, H, W) "
                f"with channels {list(self.variant.channels)}, got shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % ALIGN or w % ALIGN or min(h, w) < 4 * ALIGN:
            raise ParameterError(
                f"tile height and width must be multiples of {ALIGN} and >= {4 * ALIGN}, "
                f"got {h} x {w} (CloudfillModel.predict pads automatically)"
            )
        inputs = x if self.context is None else x[:, self._estimate_index]
        features = self.trunk(inputs)
        if self.pixel is not None:
            features = torch.cat([features, self.pixel(inputs)], 1)
        logits = self.head(features)
        if self.reference_skip and self.skip == "add":
            mean = x[:, self._reference_index] + logits
        elif self.reference_skip:
            reference = x[:, self._reference_index].clamp(-_SKIP_LIMIT, _SKIP_LIMIT)
            mean = torch.tanh(logits + torch.atanh(reference))
        else:
            mean = torch.tanh(logits)
        if self.context is not None:
            # The shown pixels' residual over the estimate, detached: the path learns to
            # spread it, the estimate stays what the SODCT generator computes.
            shown = x[:, self._context_index]
            flag = shown[:, -1:]
            mean = mean + self.context((shown[:, :-1] - mean.detach()) * flag, flag)
        if self.height is not None:
            # Per pixel, after the context path: what the date shows at this height against
            # the estimate so far (detached, as the context path's residual).
            light = x[:, self._light_index] if self._light_index else None
            mean = mean + self.height(x[:, self._height_index], mean.detach(), light)
        scale = None
        if self.scale_head is not None:
            # The scale head reads the features but does not shape them: its Laplace NLL,
            # weighted like the L1 term, otherwise pulled the shared features towards
            # predicting the error's size and the mean learned nothing (issue 21).
            scale = F.softplus(self.scale_head(features.detach())) + SCALE_EPS
        return GeneratorOutput(mean, scale)
