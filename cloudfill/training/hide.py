"""Clear pixels hidden from a context variant in training: the gaps it learns to fill.

A variant that reads the target date's own clear pixels (``SODCTX``,
:data:`~cloudfill.core.variants.CONTEXT_CHANNELS`) cannot learn from the target's clear
pixels as they are: it would see the answer. Each training patch therefore hides a cloud-like
part of its clear pixels (:func:`hide_mask`): the network reads the rest as the date's context,
and the loss counts only the hidden ones (:func:`split_context`). A share of the patches
hides everything, as a fully cloudy date does (the network then sees what SODCT sees).

Cloud-like: smoothed white noise thresholded at its own quantile gives connected blobs of a
chosen cover, with gap sizes from a few pixels to the whole patch (the smoothing length is
drawn too). The mask depends on the seed and the sample's number only, not on the epoch, so a
sample's condition and loss pixels are the same every epoch and the patch cache holds them;
flips and rotations still vary it per epoch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cloudfill._hashing import splitmix64

__all__ = ["FULL_SHARE", "HIDE_VERSION", "hide_mask", "split_context"]

FULL_SHARE: float = 0.25
"""Share of the patches that hide every pixel (a fully cloudy date)."""

HIDE_VERSION: int = 1
"""Changes whenever :func:`hide_mask` draws other masks (part of the patch cache's key)."""

_COVER = (0.05, 0.95)  # the cover of a partly hidden patch, uniform in this range
_SIGMAS = (1.5, 3.0, 6.0, 12.0)  # smoothing lengths in pixels: small showers to large decks


def hide_mask(seed: int, index: int, size: int) -> np.ndarray:
    """The (size, size) bool mask of the pixels sample ``index`` hides (True = hidden).

    With probability :data:`FULL_SHARE` all of them; otherwise blobs covering a uniform
    5-95 % of the patch (up to rounding), at one of four smoothing lengths.

    Examples
    --------
    >>> m = hide_mask(0, 3, 64)
    >>> m.shape, m.dtype, bool((hide_mask(0, 3, 64) == m).all())
    ((64, 64), dtype('bool'), True)
    """
    rng = np.random.default_rng([splitmix64(int(seed)) & 0xFFFFFFFF, int(index), 0x41DE])
    if rng.random() < FULL_SHARE:
        return np.ones((size, size), dtype=bool)
    cover = rng.uniform(*_COVER)
    sigma = _SIGMAS[rng.integers(len(_SIGMAS))]
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return field > np.quantile(field, 1.0 - cover)


def split_context(
    image: np.ndarray, valid: np.ndarray, hidden: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The context a sample shows and the pixels its loss counts.

    Parameters
    ----------
    image
        (band, y, x) the target's S2, NaN where unusable.
    valid
        (y, x) its usable pixels.
    hidden
        (y, x) :func:`hide_mask`.

    Returns
    -------
    context, loss_pixels
        ``image`` with the hidden pixels NaN too, and ``valid & hidden``.

    Examples
    --------
    >>> image = np.ones((4, 1, 3), "float32")
    >>> context, scored = split_context(image, np.array([[True, True, False]]),
    ...                                 np.array([[True, False, True]]))
    >>> np.isnan(context[0, 0]).tolist(), scored.tolist()
    ([True, False, True], [[True, False, False]])
    """
    shown = valid & ~hidden
    context = np.where(shown[None], image, np.float32(np.nan)).astype("float32")
    return context, valid & hidden
