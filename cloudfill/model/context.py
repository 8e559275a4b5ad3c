"""The context path of a generator that reads the target date's own clear pixels (SODCTX).

What the clear part of a partly cloudy date tells about its gaps is how the date differs, on
the shown pixels, from what the network would have predicted there: the residual
``context - estimate`` of its first estimate (the SODCT generator's output), spread into the
gaps and added to the estimate. The hand-made same-date adjustment does this with a Gaussian
(:func:`cloudfill.fill.adjust.adjust_to_date`); here the spreading is learned, from a chain of
depthwise **partial convolutions** (Liu et al. 2018, "Image Inpainting for Irregular Holes
Using Partial Convolutions"): each 3x3 (dilated) convolution reads only the pixels its mask
marks as seen and rescales by how many of its taps saw something, so a pixel next to one
clear neighbour and one next to nine get values on the same scale; the mask then grows to
every pixel that saw anything. Dilations 1-16 reach 31 px.

Why this shape (RESULTS, "The target date's clear pixels"): a Gaussian-smoothed residual of
the shown pixels over the shipped model's output (sigma 2 px) lowers its error on the hidden
pixels of the validation patches by 11-12 %; over the reference it leaves them worse than the
model. Neither the trunk (the context channels with zero first-layer weights, 1290 steps),
nor plain dilated convolutions into the head, nor partial convolutions with ReLUs on
``context - reference`` learned any of it (300-400 steps of their own at lr 1e-4 and 1e-3):
the network could not read its own estimate at the shown pixels, and random features of the
residual were not a smoother it could start from. Here the estimate enters the residual
detached (the path learns to spread it; the estimate stays the SODCT generator's) and the
chain starts as normalised box filters at five scales, which a zero-initialised output only
has to weigh: 300 steps of the path alone at lr 1e-4 lowered that error by 8 %.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CONTEXT_DILATIONS",
    "CONTEXT_FEATURES",
    "HEIGHT_FEATURES",
    "ContextPath",
    "HeightPath",
    "PartialConv",
]

CONTEXT_FEATURES: int = 16
"""Width of the context path's hidden layer."""

HEIGHT_FEATURES: int = 32
"""Width of the height path's hidden layers."""

CONTEXT_DILATIONS: tuple[int, ...] = (1, 2, 4, 8, 16)
"""Dilations of its 3x3 partial convolutions (reach: their sum, 31 px)."""


class PartialConv(nn.Module):
    """A 3x3 depthwise partial convolution with reflection padding: per channel
    ``(w * (x m)) 9 / sum(m) + b`` where its taps saw anything, 0 elsewhere; returns the
    output and the grown mask. Its weights start at 1/9 and its bias at 0: the mean of the
    seen taps, a normalised box filter.

    Examples
    --------
    >>> conv = PartialConv(1, 1)
    >>> x, m = torch.ones(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    >>> m[..., 4, 4] = 1
    >>> with torch.no_grad():
    ...     y, seen = conv(x * 2, m)
    >>> round(float(y[0, 0, 4, 5]), 4), float(seen.sum()), float(y[0, 0, 0, 0])
    (2.0, 9.0, 0.0)
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.dilation = int(dilation)
        self.pad = nn.ReflectionPad2d(self.dilation)
        self.conv = nn.Conv2d(channels, channels, 3, dilation=self.dilation, groups=channels)
        nn.init.constant_(self.conv.weight, 1.0 / 9.0)
        nn.init.zeros_(self.conv.bias)
        self.register_buffer("taps", torch.ones(1, 1, 3, 3), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = F.conv2d(self.pad(mask), self.taps, dilation=self.dilation)
        raw = F.conv2d(
            self.pad(x * mask), self.conv.weight, None, dilation=self.dilation,
            groups=self.conv.groups,
        )  # fmt: skip
        seen = count > 0
        y = raw * (9.0 / count.clamp_min(1.0)) + self.conv.bias[None, :, None, None]
        return torch.where(seen, y, torch.zeros_like(y)), seen.to(x.dtype)


class ContextPath(nn.Module):
    """A correction of the generator's first estimate from the date's shown pixels.

    Input: ``residual`` (N, bands, H, W), the shown pixels' ``context - estimate`` (0
    elsewhere), and ``flag`` (N, 1, H, W), 1 on shown pixels. A chain of depthwise partial
    convolutions spreads the residual into the gaps, each step farther (dilations 1-16),
    starting as normalised box filters; every step's output and mask are features, so the
    path sees the residual at five scales and how far the nearest shown pixels are. Two
    convolutions turn them into a correction per band: a linear 3x3 and a 1x1 ReLU layer
    followed by a 3x3, both ending at zero, so an untrained path adds nothing.

    Examples
    --------
    >>> path = ContextPath()
    >>> flag = torch.zeros(1, 1, 32, 32)
    >>> flag[..., 16, 16] = 1
    >>> with torch.no_grad():
    ...     out = path(torch.ones(1, 4, 32, 32) * flag, flag)
    >>> out.shape, float(out.abs().sum())  # an untrained path adds nothing
    (torch.Size([1, 4, 32, 32]), 0.0)
    """

    def __init__(self, bands: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PartialConv(bands, d) for d in CONTEXT_DILATIONS)
        n = len(CONTEXT_DILATIONS) * (bands + 1)
        k = CONTEXT_FEATURES
        self.linear = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(n, bands, 3))
        self.mixed = nn.Sequential(
            nn.Conv2d(n, k, 1), nn.ReLU(inplace=True), nn.ReflectionPad2d(1),
            nn.Conv2d(k, bands, 3),
        )  # fmt: skip
        for last in (self.linear[-1], self.mixed[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, residual: torch.Tensor, flag: torch.Tensor) -> torch.Tensor:
        h, w = residual.shape[-2:]
        # Reflection padding needs a side longer than the dilation: a smaller input (the
        # smallest scenes, 16 px) is first extended as the runtime extends small tiles.
        pad_h, pad_w = (max(0, max(CONTEXT_DILATIONS) + 1 - n) for n in (h, w))
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            residual, flag = (F.pad(t, (0, pad_w, 0, pad_h), mode=mode) for t in (residual, flag))
        x, mask = residual * flag, flag
        scales, masks = [], []
        for layer in self.layers:
            x, mask = layer(x, mask)
            scales.append(x)
            masks.append(mask)
        features = torch.cat(scales + masks, 1)
        return (self.linear(features) + self.mixed(features))[..., :h, :w]


class HeightPath(nn.Module):
    """A per-pixel correction from what the date shows at the pixel's height (SODCTXH,
    SODCTXHI).

    Input (N, 6, H, W): the :data:`~cloudfill.core.variants.HEIGHT_CHANNELS` (the mean S2 of
    the date's clear pixels in the pixel's elevation band, their spread and the share shown;
    :mod:`cloudfill.core.height`), and (N, 4, H, W) the estimate so far, detached. Features:
    the band's mean less the estimate (0 where nothing is known), the band's mean, its spread,
    its share and the estimate; three 1x1 layers (ReLU between) turn them into a correction
    per band, the last starting at zero, so an untrained path adds nothing, and a pixel whose
    band shows nothing gets nothing. A band of small
    spread whose mean is far from the estimate says "this height looks different today" (a
    snow cover); a wide one (mixed land cover) says little, which only a learned weighing can
    tell apart.

    With ``light`` (SODCTXHI) it also reads ``light`` (N, 6, H, W), the
    :data:`~cloudfill.core.variants.LIGHT_CHANNELS`: the band's means as the pixel's slope
    would show them, less the estimate (0 where nothing is known), the pixel's light and its
    band's. A snow cover's brightness follows the slope, so the lit mean is the better guess
    where the band is all snow; where it mixes snow and bare ground the plain mean may be
    (``benchmarks/probe_slope_light.py``), which the path learns to weigh: besides the three
    layers, two gates per band (``tanh`` of a 1x1 layer on the hidden features, starting at
    0) move the estimate towards the lit mean and towards the plain mean.

    Examples
    --------
    >>> path = HeightPath()
    >>> with torch.no_grad():
    ...     out = path(torch.rand(1, 6, 8, 8), torch.zeros(1, 4, 8, 8))
    >>> out.shape, float(out.abs().sum())  # an untrained path adds nothing
    (torch.Size([1, 4, 8, 8]), 0.0)
    """

    def __init__(self, bands: int = 4, *, light: bool = False) -> None:
        super().__init__()
        k = HEIGHT_FEATURES
        self.light = bool(light)
        inputs = 3 * bands + 2 + (bands + 2 if light else 0)  # SODCTXHI: lit means, 2 lights
        self.layers = nn.Sequential(
            nn.Conv2d(inputs, k, 1), nn.ReLU(inplace=True), nn.Conv2d(k, k, 1),
            nn.ReLU(inplace=True), nn.Conv2d(k, bands, 1),
        )  # fmt: skip
        nn.init.zeros_(self.layers[-1].weight)
        nn.init.zeros_(self.layers[-1].bias)
        # SODCTXHI: per band, how far to move the estimate towards the band's lit mean and
        # towards its plain mean (tanh of a 1x1 layer on the hidden features, starting at 0).
        # A ReLU layer cannot easily form "a learned weight times a difference"; a gate can,
        # and which of the two means to trust depends on the band (all snow: the lit one).
        self.gate = nn.Conv2d(k, 2 * bands, 1) if light else None
        if self.gate is not None:
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def forward(
        self, height: torch.Tensor, estimate: torch.Tensor, light: torch.Tensor | None = None
    ) -> torch.Tensor:
        bands = estimate.shape[1]
        known = (height[:, -1:] > 0).to(height.dtype)
        means = height[:, :bands]
        features = [(means - estimate) * known, height, estimate]
        if self.light:
            if light is None:
                raise ValueError("this height path reads the slopes' light (SODCTXHI)")
            # The band's mean as this slope would show it (the condition scaled it in
            # reflectance: :func:`cloudfill.core.condition.lit_channels`; a snow cover's
            # brightness follows the slope). Appended after the SODCTXH features, so a warm
            # start from SODCTXH gives them zero weights and starts exact.
            lit = light[:, 2:]
            features += [(lit - estimate) * known, light[:, :2]]
        features = torch.cat(features, 1)
        hidden = self.layers[:-1](features)
        out = self.layers[-1](hidden)
        if self.gate is not None:
            g = torch.tanh(self.gate(hidden))
            out = (
                out
                + g[:, :bands] * features[:, -bands - 2 : -2]
                + g[:, bands:] * features[:, :bands]
            )
        # Where nothing is known at the pixel's height (a fully cloudy date, a band with too
        # few clear pixels) the path adds nothing: training never scores such a pixel (a date
        # with no clear pixel has no samples), so what it would add there is unlearned; on a
        # fully cloudy validation date it made the fill 4.5x worse (RESULTS, "Height context").
        return out * known
