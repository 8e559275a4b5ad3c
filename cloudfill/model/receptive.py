"""Receptive field and cost of a network, computed from its modules (never typed in).

**Receptive field.** :func:`receptive_field` walks the module tree in data-flow order, collects
every layer that moves pixels (convolutions and pooling: kernel, stride, dilation, padding;
explicit padding layers; nearest upsampling; transposed convolutions), and maps an output
pixel back to the exact interval of input pixels it depends on. Residual skips and the
multiplicative attention gates are pointwise on one side, so walking the branch with the
largest extent in order is exact for the generators here.

**Global context.** Some layers see the whole tile: CBAM's channel gate (global average/max
pooling), self-attention, instance/group norm (statistics over the tile). Through them every
output pixel depends on every input pixel of the tile, so the *theoretical* receptive field
is the tile. The walker lists those layers in ``ReceptiveField.global_context`` and reports
the **convolutional** receptive field: the extent of the local path, where the spatial
detail comes from, and what an inference halo must cover so that the local computation of
every kept pixel is exact. What global layers add is a dependence on tile content through a
per-channel gain (CBAM) or attention weights; tiled inference copes with it by blending
overlapping tiles smoothly and fixing the tile grid to the scene rather than to dask chunks,
which keeps results independent of chunking. The model is *tile-independent* (pixel-exact
under any aligned tiling with a halo >= ``halo``) only when ``global_context`` is empty,
e.g. ``attention=False`` with batch norm in eval mode.

**Alignment.** With two stride-2 stages the generator is shift-equivariant only for shifts
by multiples of 4 (``ReceptiveField.alignment``): tiles must start at multiples of 4 in
scene pixel coordinates, or the same pixel gets a different value in different tilings.

**Cost.** :func:`count_macs` runs one forward pass on the ``meta`` device (no memory, no
arithmetic) with hooks on convolutions and self-attention and sums multiply-accumulates;
:func:`gflops` reports ``2 * MACs / 1e9`` for one tile.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from cloudfill.errors import ParameterError
from cloudfill.model.attention import SelfAttention
from cloudfill.model.discriminator import PatchDiscriminator

__all__ = ["ReceptiveField", "count_macs", "gflops", "receptive_field"]

# Layers that never move pixels (per-pixel maps in eval mode).
_POINTWISE = (
    nn.BatchNorm2d,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.ReLU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
)
# Layers whose output at a pixel uses statistics of the whole tile.
_TILE_STATISTICS = (
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.InstanceNorm2d,
    nn.GroupNorm,
    nn.LayerNorm,
)
_PADS = (nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ZeroPad2d, nn.ConstantPad2d)


@dataclass(frozen=True)
class _Op:
    """One pixel-moving layer along one axis."""

    kind: str  # "conv" (also pooling), "tconv", "pad" or "up"
    kernel: int = 1
    stride: int = 1
    dilation: int = 1
    padding: int = 0

    def back(self, lo: int, hi: int) -> tuple[int, int]:
        """Input index interval that output indices ``lo..hi`` of this layer depend on."""
        k, s, d, p = self.kernel, self.stride, self.dilation, self.padding
        if self.kind == "conv":
            return lo * s - p, hi * s - p + d * (k - 1)
        if self.kind == "pad":
            return lo - p, hi - p
        if self.kind == "up":
            return lo // s, hi // s
        # Transposed conv: input i writes outputs i*s - p + d*j for j in 0..k-1.
        return -((-(lo + p - d * (k - 1))) // s), (hi + p) // s


@dataclass(frozen=True)
class ReceptiveField:
    """The convolutional receptive field of a network.

    Attributes
    ----------
    size
        Largest width, in input pixels, of the input window one output pixel depends on
        (max over output positions and both axes).
    halo
        Largest one-sided reach in input pixels: pad each inference tile by at least this many
        pixels on every side so its kept pixels see their whole local window.
    jump
        Input pixels per output pixel (1 for the generator, 8 for a 3-layer PatchGAN).
    alignment
        Product of the downsampling strides (4 for the generator). The network is shift
        equivariant only for shifts by multiples of it, so inference tiles must start at
        multiples of ``alignment`` in scene pixel coordinates for the result not to depend
        on where the tiles fall.
    global_context
        Qualified names of layers that see the whole tile (empty = tile-independent).
    """

    size: int
    halo: int
    jump: float
    alignment: int
    global_context: tuple[str, ...] = ()
    _ops: tuple[tuple[_Op, ...], tuple[_Op, ...]] = field(default=((), ()), repr=False)

    @property
    def tile_independent(self) -> bool:
        """True when no layer uses whole-tile information (tiling with ``halo`` is exact)."""
        return not self.global_context

    def input_interval(self, index: int, axis: int = 1) -> tuple[int, int]:
        """Inclusive input index range that output ``index`` depends on along ``axis``.

        Valid away from the borders (padding is not modelled beyond its offset); ``axis`` 0
        is y, 1 is x.

        Examples
        --------
        >>> rf = receptive_field(nn.Conv2d(1, 1, 3, padding=1))
        >>> rf.input_interval(10)
        (9, 11)
        """
        lo, hi = index, index
        for op in reversed(self._ops[axis]):
            lo, hi = op.back(lo, hi)
        return lo, hi


def _pair(value: int | tuple[int, ...], axis: int) -> int:
    return int(value[axis]) if isinstance(value, tuple) else int(value)


def _layer_ops(module: nn.Module, axis: int) -> list[_Op] | None:
    """Geometry of a pixel-moving leaf along ``axis``, [] for a pointwise one, None if unknown."""
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        k = _pair(module.kernel_size, axis)
        s = _pair(module.stride, axis)
        d = _pair(getattr(module, "dilation", 1), axis)
        pad = module.padding
        if pad == "valid":
            p = 0
        elif pad == "same":
            p = d * (k - 1) // 2
        else:
            p = _pair(pad, axis)
        return [] if k == 1 and s == 1 else [_Op("conv", k, s, d, p)]
    if isinstance(module, nn.ConvTranspose2d):
        return [
            _Op(
                "tconv",
                _pair(module.kernel_size, axis),
                _pair(module.stride, axis),
                _pair(module.dilation, axis),
                _pair(module.padding, axis),
            )
        ]
    if isinstance(module, _PADS):
        # nn pad modules store (left, right, top, bottom).
        left = module.padding[0] if axis == 1 else module.padding[2]
        return [_Op("pad", padding=int(left))]
    if isinstance(module, nn.Upsample) and module.mode == "nearest":
        factor = module.scale_factor
        factor = _pair(factor, axis) if isinstance(factor, tuple) else factor
        if factor is None or float(factor) != int(factor):
            return None
        return [_Op("up", stride=int(factor))]
    if isinstance(module, _POINTWISE):
        return []
    return None


def _walk(module: nn.Module, name: str) -> Iterator[tuple[str, nn.Module]]:
    """Leaves and global blocks in data-flow order (``rf_path`` overrides child order)."""
    if getattr(module, "global_context", False) or isinstance(module, _TILE_STATISTICS):
        yield name, module
        return
    path = module.rf_path() if hasattr(module, "rf_path") else None
    if path is None:
        children = list(module.named_children())
    else:
        names = {id(m): n for n, m in module.named_children()}
        children = [(names.get(id(m), type(m).__name__), m) for m in path]
    if not children:
        yield name, module
        return
    for child_name, child in children:
        yield from _walk(child, f"{name}.{child_name}" if name else child_name)


def receptive_field(model: nn.Module) -> ReceptiveField:
    """Compute the convolutional receptive field of ``model`` from its layers.

    Parameters
    ----------
    model
        A :class:`~cloudfill.model.generator.Generator`, a PatchGAN, a
        :class:`~cloudfill.model.runtime.CloudfillModel` (its generator is used) or any
        module whose children are registered in data-flow order (a module may define
        ``rf_path()`` to list its path explicitly).

    Returns
    -------
    ReceptiveField

    Raises
    ------
    ParameterError
        If a layer of unknown geometry is met (rather than silently ignoring it).

    Examples
    --------
    >>> from cloudfill.model.generator import Generator
    >>> rf = receptive_field(Generator("S", base_filters=8, n_blocks=9, attention=False))
    >>> rf.size, rf.halo, rf.alignment, rf.tile_independent
    (169, 87, 4, True)
    """
    model = getattr(model, "generator", model)
    ops: tuple[list[_Op], list[_Op]] = ([], [])
    global_context: list[str] = []
    for name, leaf in _walk(model, ""):
        if getattr(leaf, "global_context", False) or isinstance(leaf, _TILE_STATISTICS):
            global_context.append(f"{name} ({type(leaf).__name__})")
            continue
        for axis in (0, 1):
            leaf_ops = _layer_ops(leaf, axis)
            if leaf_ops is None:
                raise ParameterError(
                    f"receptive_field: layer {name!r} ({type(leaf).__name__}) has unknown "
                    "geometry; give its parent an rf_path() or extend the walker"
                )
            ops[axis].extend(leaf_ops)

    up = math.prod(op.stride for op in ops[1] if op.kind in ("up", "tconv"))
    down = math.prod(op.stride for op in ops[1] if op.kind == "conv")
    jump = down / up
    rf = ReceptiveField(0, 0, jump, down, tuple(global_context), (tuple(ops[0]), tuple(ops[1])))
    # The map back is periodic in the output index with period `up`; sample two periods far
    # from index 0 so border padding never enters.
    base = 1024 * up * down
    size = halo = 0
    for axis in (0, 1):
        for index in range(base, base + 2 * up + 1):
            lo, hi = rf.input_interval(index, axis)
            centre = index * jump
            size = max(size, hi - lo + 1)
            halo = max(halo, math.ceil(max(centre - lo, hi - centre)))
    return ReceptiveField(size, halo, jump, down, rf.global_context, rf._ops)


def _in_channels(model: nn.Module) -> int:
    variant = getattr(model, "variant", None)
    if variant is not None and hasattr(variant, "n_inputs"):
        return int(variant.n_inputs)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise ParameterError("count_macs: cannot tell the model's input channels; pass in_channels")


def count_macs(model: nn.Module, tile: int = 256, in_channels: int | None = None) -> int:
    """Multiply-accumulates of one forward pass on a ``tile`` x ``tile`` input (batch 1).

    Counts convolutions, transposed convolutions, linear layers and the two matrix products
    of self-attention; norms, activations and gates (a few percent at most) are left out.

    Parameters
    ----------
    model
        A generator, discriminator or :class:`~cloudfill.model.runtime.CloudfillModel`.
        A PatchGAN is fed a condition and an image of matching channels.
    tile
        Tile side in pixels.
    in_channels
        Input channels; read from the model's variant by default.

    Returns
    -------
    int

    Examples
    --------
    >>> count_macs(nn.Conv2d(2, 4, 3, padding=1), tile=8)  # 8*8 px * 4 out * 2 in * 9
    4608
    """
    model = getattr(model, "generator", model)
    cin = in_channels if in_channels is not None else _in_channels(model)
    total = 0

    def conv_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.ConvTranspose2d):
            per_in = (module.out_channels // module.groups) * math.prod(module.kernel_size)
            total += inputs[0].numel() * per_in
        elif isinstance(module, nn.Conv2d):
            per_out = (module.in_channels // module.groups) * math.prod(module.kernel_size)
            total += out.numel() * per_out
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    def attention_hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], out: object) -> None:
        nonlocal total
        n, c, h, w = inputs[0].shape
        positions = h * w
        total += n * positions * positions * (module.query.out_channels + c)

    # A copy on the meta device: shapes propagate, nothing is allocated or computed.
    probe = copy.deepcopy(model).to("meta").eval()
    for module in probe.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            module.register_forward_hook(conv_hook)
        elif isinstance(module, SelfAttention):
            module.register_forward_hook(attention_hook)
    with torch.no_grad():
        x = torch.empty(1, cin, tile, tile, device="meta")
        if isinstance(probe, PatchDiscriminator):
            probe(x, torch.empty(1, 4, tile, tile, device="meta"))
        else:
            probe(x)
    return total


def gflops(model: nn.Module, tile: int = 256, in_channels: int | None = None) -> float:
    """GFLOP of one forward pass on a ``tile`` x ``tile`` input: ``2 * MACs / 1e9``.

    Parameters
    ----------
    model, tile, in_channels
        See :func:`count_macs`.

    Returns
    -------
    float

    Examples
    --------
    >>> from cloudfill.model.generator import Generator
    >>> paper = Generator("SOD", attention=False, pixel_features=0)  # the paper-size generator
    >>> round(gflops(paper), 1), round(gflops(Generator("SOD", attention=False)), 1)
    (115.7, 116.6)
    """
    return 2 * count_macs(model, tile, in_channels) / 1e9
