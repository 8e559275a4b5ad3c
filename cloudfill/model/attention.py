"""Attention blocks placed inside the generator's residual blocks.

The paper's "attention cGAN" adds an attention block to each residual block but does not pin
its type. cloudfill offers two, chosen by the generator's ``attention`` argument:

``"cbam"`` (the default, also ``attention=True``)
    Channel attention followed by spatial attention, after the idea of CBAM (Woo et al., 2018,
    "CBAM: Convolutional Block Attention Module", ECCV). The channel gate squeezes each feature
    map by global average and max pooling, passes both through a shared two-layer 1x1 MLP and
    rescales the channels with a sigmoid gate; the spatial gate pools over channels (mean, max)
    and runs a 7x7 convolution to a per-pixel sigmoid gate. It is cheap (a few percent of the
    block's MACs) and weights salient regions *and* channels, which is what the paper asks for.
``"self"``
    Self-attention over all positions of the feature map, after the idea of SAGAN (Zhang et
    al., 2019, "Self-Attention Generative Adversarial Networks", ICML): 1x1 query/key/value
    projections, softmax attention, and a learned residual weight ``gamma`` initialised at 0
    so training starts from the plain residual block. Memory and time grow with the square of
    the number of positions (a 256 px tile has 64 x 64 positions at the bottleneck).
``"none"``
    The plain cGAN of the paper.

Why CBAM is the default: it costs little, and its only non-local part is a per-channel gain
from two global pools, whereas self-attention mixes every position with every other. Both
make a tile's output depend on the whole tile (the theoretical receptive field is the tile);
see :mod:`cloudfill.model.receptive` for what that means for tiled inference.

The blocks below are our own code written from the papers' descriptions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cloudfill.core.variants import ATTENTION_KINDS, attention_kind
from cloudfill.errors import ParameterError

__all__ = [
    "ATTENTION_KINDS",
    "CBAM",
    "ChannelAttention",
    "SelfAttention",
    "SpatialAttention",
    "attention_kind",
    "make_attention",
]


class ChannelAttention(nn.Module):
    """CBAM channel gate: ``x * sigmoid(mlp(avgpool(x)) + mlp(maxpool(x)))``.

    The pools are modules (not tensor methods) so that the receptive-field walker sees them
    and reports the block as global.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.max_pool = nn.AdaptiveMaxPool2d(1)
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))
        return x * gate


class SpatialAttention(nn.Module):
    """CBAM spatial gate: ``x * sigmoid(conv7x7([mean_c(x), max_c(x)]))``."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ParameterError(f"spatial attention kernel_size must be odd, got {kernel_size}")
        # Reflection padding, like the rest of the generator, so tile borders look like interior.
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel then spatial attention (Woo et al., 2018).

    Parameters
    ----------
    channels
        Feature channels of the residual block.
    reduction
        Bottleneck ratio of the channel MLP.
    kernel_size
        Kernel of the spatial gate's convolution.

    Examples
    --------
    >>> block = CBAM(32)
    >>> block(torch.zeros(1, 32, 16, 16)).shape
    torch.Size([1, 32, 16, 16])
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.channel(x))


class SelfAttention(nn.Module):
    """Self-attention over all positions with a zero-initialised residual weight (SAGAN).

    ``out = x + gamma * softmax(q k^T / sqrt(d)) v`` with 1x1 projections; queries and keys
    have ``channels // 8`` features. Uses :func:`torch.nn.functional.scaled_dot_product_attention`,
    which picks a memory-efficient kernel where available.

    Examples
    --------
    >>> block = SelfAttention(32)
    >>> block(torch.zeros(1, 32, 8, 8)).shape
    torch.Size([1, 32, 8, 8])
    """

    #: Mixes every position with every other: read by the receptive-field walker.
    global_context = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        inner = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, inner, 1)
        self.key = nn.Conv2d(channels, inner, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        # (N, 1 head, positions, features) for scaled_dot_product_attention.
        q = self.query(x).flatten(2).transpose(1, 2).unsqueeze(1)
        k = self.key(x).flatten(2).transpose(1, 2).unsqueeze(1)
        v = self.value(x).flatten(2).transpose(1, 2).unsqueeze(1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.squeeze(1).transpose(1, 2).reshape(n, c, h, w)
        return x + self.gamma * out


def make_attention(kind: bool | str | None, channels: int) -> nn.Module:
    """Build the attention block for a residual block of ``channels`` features.

    Parameters
    ----------
    kind
        See :func:`attention_kind`.
    channels
        Feature channels.

    Returns
    -------
    torch.nn.Module
        :class:`CBAM`, :class:`SelfAttention` or :class:`torch.nn.Identity`.

    Examples
    --------
    >>> type(make_attention(True, 16)).__name__
    'CBAM'
    """
    kind = attention_kind(kind)
    if kind == "cbam":
        return CBAM(channels)
    if kind == "self":
        return SelfAttention(channels)
    return nn.Identity()
