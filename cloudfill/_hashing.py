"""Counter-based hashing: splitmix64 on Python integers and on uint64 arrays.

Randomness that must not depend on a generator's state (which block of a scene is computed
first, which worker process reads a training sample) is drawn from a hash of integer indices
instead: the simulator's noise (:mod:`cloudfill.cube.simulate.noise`) and the training
sampler's augmentation (:func:`cloudfill.training.sampler.augmentation_code`) share these
functions, so there is one copy of the constants to get right.

The functions are Sebastiano Vigna's splitmix64: :func:`mix64` is its finaliser (an
invertible, well-mixed map of 64-bit integers), :func:`splitmix64` one output of the
generator whose state is ``z`` (the state advanced by the golden-ratio increment, then
finalised). Arithmetic wraps modulo 2**64, negative inputs included.
"""

from __future__ import annotations

import numpy as np

__all__ = ["GOLDEN", "M64", "hash_key", "mix64", "mix64_array", "splitmix64"]

M64 = (1 << 64) - 1
"""Mask of the low 64 bits."""

GOLDEN = 0x9E3779B97F4A7C15
"""splitmix64's state increment: 2**64 divided by the golden ratio, odd."""

_KEY_START = 0x243F6A8885A308D3  # the first 64 bits of pi's fraction: any odd constant would do


def mix64(z: int) -> int:
    """splitmix64's finaliser of a Python integer (taken modulo 2**64).

    Examples
    --------
    >>> mix64(0), mix64(1) == mix64(1 + 2**64)
    (0, True)
    """
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mix64_array(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, in place on a uint64 array (NumPy wraps the products).

    Returns ``z`` itself, so calls can be chained.

    Examples
    --------
    >>> z = np.array([1, 2], dtype=np.uint64)
    >>> [int(v) for v in mix64_array(z)] == [mix64(1), mix64(2)]
    True
    """
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def splitmix64(z: int) -> int:
    """One splitmix64 output from state ``z``: ``mix64(z + GOLDEN)``.

    Examples
    --------
    >>> hex(splitmix64(0))
    '0xe220a8397b1dcdaf'
    """
    return mix64(z + GOLDEN)


def hash_key(*parts: int) -> int:
    """A 64-bit key from small integers (seed, field, octave, day ...), order-sensitive.

    Each part is folded in by one splitmix64 step, so ``hash_key(a, b)`` and
    ``hash_key(b, a)`` differ and a key can itself be a part of another.

    Examples
    --------
    >>> hash_key(1, 2) == hash_key(1, 2), hash_key(1, 2) == hash_key(2, 1)
    (True, False)
    """
    z = _KEY_START
    for part in parts:
        z = mix64(z + GOLDEN + (part & M64))
    return z
