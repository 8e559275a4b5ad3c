"""Losses: masked L1, the Laplace negative log-likelihood, and the adversarial loss.

The Laplace NLL of a target ``y`` under a prediction with mean ``mu`` and scale ``b`` is
``log(2 b) + |y - mu| / b``. With a fixed scale ``b = c`` it is ``|y - mu| / c + log(2c)``:
the L1 loss of pix2pix up to a factor and a constant, so a generator trained with it learns
the same mean while the scale head learns where the mean is unreliable (Kendall & Gal, 2017,
"What Uncertainties Do We Need in Bayesian Deep Learning?").

Every loss takes an optional boolean ``mask`` that is **True where the pixel counts** (a valid
target); masked-out pixels contribute nothing and the mean is over counted elements only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cloudfill.errors import ParameterError

__all__ = [
    "adversarial_loss",
    "change_pixels",
    "change_weighted_l1",
    "laplace_nll",
    "masked_l1",
]


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # ``mask`` may also hold float weights (change_weighted_l1): a weighted mean.
    if mask is None:
        return values.mean()
    weights = torch.broadcast_to(mask, values.shape).to(values.dtype)
    # clamp: an all-masked batch gives 0, not NaN, so one bad patch cannot poison training.
    return (values * weights).sum() / weights.sum().clamp_min(1.0)


def masked_l1(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute error over the pixels where ``mask`` is True.

    Parameters
    ----------
    pred, target
        Tensors of one shape, e.g. (N, 4, H, W).
    mask
        Boolean, broadcastable to ``pred`` (e.g. (N, 1, H, W)); True = counted. None = all.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 3.0], [0.0, 0.0]]]])
    >>> float(masked_l1(pred, target, target > 0))
    2.0
    """
    return _masked_mean((pred - target).abs(), mask)


def change_pixels(
    target: torch.Tensor, reference: torch.Tensor, threshold: torch.Tensor
) -> torch.Tensor:
    """Where the target differs from its reference by more than ``threshold`` in some band.

    Pixels without a reference (all bands exactly 0: the condition's fill for a missing
    reference) are not change pixels: nothing changed *from* anything there.

    Parameters
    ----------
    target, reference
        (N, C, H, W) tensors in the same (normalised) units.
    threshold
        Per band, (C,), in those units.

    Returns
    -------
    torch.Tensor
        Boolean (N, 1, H, W).

    Examples
    --------
    >>> target = torch.tensor([[[[0.2, 1.0, 0.5]]]])
    >>> reference = torch.tensor([[[[0.2, 0.2, 0.0]]]])
    >>> change_pixels(target, reference, torch.tensor([0.1])).flatten().tolist()
    [False, True, False]
    """
    excess = (target - reference).abs() > threshold.view(1, -1, 1, 1).to(target)
    present = (reference != 0).any(dim=1, keepdim=True)
    return excess.any(dim=1, keepdim=True) & present


def change_weighted_l1(
    pred: torch.Tensor,
    target: torch.Tensor,
    reference: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    factor: float,
    threshold: torch.Tensor,
) -> torch.Tensor:
    """Masked L1 that counts :func:`change_pixels` ``factor`` times.

    Change pixels (the target off its reference by more than ``threshold`` in some band;
    the benchmarks score pixels off linear interpolation by 0.05 reflectance separately)
    are a few per cent of the pixels but hold most of the reference's error. Plain L1 gives
    each pixel the same pull, so a generator can lower its loss on the many unchanged
    pixels while the few that matter move little. The mean is weighted (divided by the
    weights' sum), so ``factor=1`` is :func:`masked_l1`.

    Parameters
    ----------
    pred, target, reference
        (N, C, H, W) tensors in the same (normalised) units.
    mask
        Boolean (N, 1, H, W), True where the target is valid; None = all.
    factor
        Weight of a change pixel (>= 1; other pixels weigh 1).
    threshold
        Per band, (C,), in the tensors' units.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> target, reference = torch.tensor([[[[0.2, 1.0]]]]), torch.tensor([[[[0.2, 0.2]]]])
    >>> float(masked_l1(reference, target))  # errors 0 and 0.8
    0.4000000059604645
    >>> round(float(change_weighted_l1(reference, target, reference, None, factor=3.0,
    ...                                threshold=torch.tensor([0.1]))), 6)  # (0 + 3 * 0.8) / 4
    0.6
    """
    if not 1 <= factor < math.inf:
        raise ParameterError(f"factor must be a finite number >= 1, got {factor}")
    changed = change_pixels(target, reference, threshold)
    weights = 1.0 + (factor - 1.0) * changed.to(pred.dtype)
    if mask is not None:
        weights = weights * mask.to(pred.dtype)
    return _masked_mean((pred - target).abs(), weights)


def laplace_nll(
    pred: torch.Tensor,
    scale: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    full: bool = False,
) -> torch.Tensor:
    """Mean Laplace negative log-likelihood ``log(b) + |y - mu| / b`` over counted pixels.

    Parameters
    ----------
    pred
        Predicted mean ``mu`` (the generator's ``mean``).
    scale
        Predicted Laplace scale ``b > 0`` (the generator's ``scale``), same shape as ``pred``.
    target
        Target ``y``.
    mask
        Boolean, broadcastable to ``pred``; True = counted. None = all pixels.
    full
        Add the constant ``log 2`` so the value is the exact NLL.

    Returns
    -------
    torch.Tensor
        A scalar. With a constant ``scale = c`` it equals ``masked_l1 / c + log c``.

    Raises
    ------
    ParameterError
        If shapes differ.

    Examples
    --------
    >>> mu, y = torch.zeros(1, 4, 8, 8), torch.ones(1, 4, 8, 8)
    >>> float(laplace_nll(mu, torch.full_like(mu, 0.5), y))  # 1/0.5 + log 0.5
    1.3068528175354004
    """
    if pred.shape != scale.shape or pred.shape != target.shape:
        raise ParameterError(
            f"laplace_nll needs pred, scale and target of one shape, got {tuple(pred.shape)}, "
            f"{tuple(scale.shape)}, {tuple(target.shape)}"
        )
    nll = torch.log(scale) + (target - pred).abs() / scale
    if full:
        nll = nll + math.log(2.0)
    return _masked_mean(nll, mask)


def adversarial_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of PatchGAN logits against "real" or "fake" (sigmoid inside).

    Parameters
    ----------
    logits
        Discriminator output (N, 1, h, w).
    real
        The label every patch should get.

    Returns
    -------
    torch.Tensor
        A scalar.

    Examples
    --------
    >>> round(float(adversarial_loss(torch.zeros(1, 1, 2, 2), real=True)), 4)  # log 2
    0.6931
    """
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)
