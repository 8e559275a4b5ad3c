"""Conditional PatchGAN discriminator (pix2pix, Isola et al. 2017).

The condition stack and an image (real target or generated) are concatenated along channels
and mapped by strided 4x4 convolutions with LeakyReLU(0.2) to a grid of logits, one per
overlapping patch (70 x 70 px with the default three strided layers). The sigmoid is *not*
applied here: train with :class:`torch.nn.BCEWithLogitsLoss` (numerically stable) — see
:func:`cloudfill.model.losses.adversarial_loss`.

The discriminator is used only in training, so the tile-dependence of instance norm does not
matter here; instance norm is the default because batch statistics of a batch of 2 are noisy.
"""

from __future__ import annotations

import torch
from torch import nn

from cloudfill.core.variants import OUTPUT_BANDS, Variant, get_variant
from cloudfill.errors import ParameterError
from cloudfill.model.generator import make_norm

__all__ = ["PatchDiscriminator"]


class PatchDiscriminator(nn.Module):
    """Conditional PatchGAN: ``D(condition, image) -> logits (N, 1, h, w)``.

    Parameters
    ----------
    variant
        Fixes the condition channels (as for the generator).
    base_filters
        Width of the first layer (64 in pix2pix).
    n_layers
        Number of stride-2 layers (3 gives 70 x 70 px patches).
    norm
        ``"instance"`` (default), ``"batch"`` or ``"none"``.

    Examples
    --------
    >>> d = PatchDiscriminator("SO", base_filters=8)
    >>> d(torch.zeros(1, 6, 64, 64), torch.zeros(1, 4, 64, 64)).shape
    torch.Size([1, 1, 6, 6])
    """

    def __init__(
        self,
        variant: str | Variant = "SOD",
        *,
        base_filters: int = 64,
        n_layers: int = 3,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        self.variant = get_variant(variant)
        if n_layers < 1 or base_filters < 1:
            raise ParameterError(
                f"n_layers and base_filters must be >= 1, got {n_layers}, {base_filters}"
            )
        cin = self.variant.n_inputs + len(OUTPUT_BANDS)
        f = base_filters
        layers: list[nn.Module] = [
            nn.Conv2d(cin, f, 4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        width = f
        # Widths double up to 8f; the last layer before the logits has stride 1 (pix2pix).
        for i in range(1, n_layers + 1):
            prev, width = width, f * min(2**i, 8)
            stride = 2 if i < n_layers else 1
            layers += [
                nn.Conv2d(prev, width, 4, stride=stride, padding=1, bias=norm != "batch"),
                make_norm(norm, width),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Logits (N, 1, h, w): > 0 means "looks real given this condition"."""
        if condition.shape[1] != self.variant.n_inputs or image.shape[1] != len(OUTPUT_BANDS):
            raise ParameterError(
                f"discriminator for variant {self.variant.name} expects condition with "
                f"{self.variant.n_inputs} and image with {len(OUTPUT_BANDS)} channels, got "
                f"{condition.shape[1]} and {image.shape[1]}"
            )
        return self.model(torch.cat([condition, image], dim=1))
