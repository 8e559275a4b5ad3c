"""Counter-based randomness for the simulator: integer hashing and lattice (value / fBm) noise.

Every random value is a pure function of integer indices (lattice node, octave, field id, seed,
day), never of a generator's state, so a block of the scene can be computed on its own and
agrees bit for bit with the same pixels computed in any other block.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from cloudfill._hashing import GOLDEN, M64, hash_key, mix64_array

# The splitmix64 constants and mixers live in cloudfill._hashing (the training sampler hashes
# with them too); these two names stay because other simulator modules import them from here.
_M64 = M64
_key = hash_key
_COL_MULT = np.uint64(0xD1B54A32D192ED03)


def _unit(*parts: int) -> float:
    """A deterministic uniform number in [0, 1) from integer parts."""
    return (_key(*parts) >> 11) * 2.0**-53


def _hash2d(rows: np.ndarray, cols: np.ndarray, key: int) -> np.ndarray:
    """uint64 hash of every (row, col) pair of the outer grid, shape (len(rows), len(cols))."""
    hr = rows.astype(np.int64).view(np.uint64) * np.uint64(GOLDEN) + np.uint64(key)
    mix64_array(hr)
    hc = cols.astype(np.int64).view(np.uint64) * _COL_MULT
    return mix64_array(hr[:, None] ^ hc[None, :])


def _to_unit(h: np.ndarray) -> np.ndarray:
    """Top 24 bits of a hash as float32 in [0, 1) (exactly representable)."""
    return (h >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)


# --- lattice noise ---------------------------------------------------------------------------
def _lattice_axis(idx: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice nodes needed by ``idx``, each index's lower node position and quintic weight."""
    f = idx / cell
    lower = np.floor(f)
    t = (f - lower).astype(np.float32)
    fade = t * t * t * (t * (t * np.float32(6) - np.float32(15)) + np.float32(10))
    lower = lower.astype(np.int64)
    # Unique nodes (not a min..max range) keep sparse sample grids over huge scenes cheap.
    nodes = np.unique(np.concatenate([lower, lower + 1]))
    return nodes, np.searchsorted(nodes, lower), fade


def _value_noise(
    ys: np.ndarray, xs: np.ndarray, cell: float, key: int, amplitude: float = 1.0
) -> np.ndarray:
    """Value noise in [-amplitude, amplitude) on the outer grid ys x xs, smooth (C2) between
    lattice nodes."""
    ry, iy, uy = _lattice_axis(ys, cell)
    rx, ix, ux = _lattice_axis(xs, cell)
    g = _to_unit(_hash2d(ry, rx, key)) * np.float32(2 * amplitude) - np.float32(amplitude)
    g0 = g[:, ix]
    rows = g0 + (g[:, ix + 1] - g0) * ux
    out = rows[iy + 1]
    lo = rows[iy]
    out -= lo
    out *= uy[:, None]
    out += lo
    return out


def _fbm(
    ys: np.ndarray, xs: np.ndarray, cells_px: Sequence[float], key: int, gain: float = 0.5
) -> np.ndarray:
    """Fractional Brownian motion: octaves of value noise, normalised to about [-1, 1]."""
    norm = sum(gain**octave for octave in range(len(cells_px)))
    total = None
    for octave, cell in enumerate(cells_px):
        noise = _value_noise(ys, xs, cell, _key(key, octave), gain**octave / norm)
        if total is None:
            total = noise
        else:
            total += noise
    if total is None:  # every octave finer than the pixels
        return np.zeros((len(ys), len(xs)), dtype=np.float32)
    return total


def _cell_values(ys: np.ndarray, xs: np.ndarray, cell: tuple[float, float], key: int) -> np.ndarray:
    """A uniform [0, 1) value per rectangular cell (fields, blocks), piecewise constant."""
    cy = np.floor(ys / cell[0]).astype(np.int64)
    cx = np.floor(xs / cell[1]).astype(np.int64)
    ry, iy = np.unique(cy, return_inverse=True)
    rx, ix = np.unique(cx, return_inverse=True)
    g = _to_unit(_hash2d(ry, rx, key))
    return g[iy][:, ix]


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, np.float32(0), np.float32(1))
    return x * x * (np.float32(3) - np.float32(2) * x)


@functools.lru_cache(maxsize=4)
def _speckle_table(looks: float) -> np.ndarray:
    """Quantiles of Gamma(L, 1/L) at 65536 mid-points: a 16-bit hash indexes the speckle."""
    from scipy.stats import gamma  # 1.8 s to import: only when a scene is simulated

    u = (np.arange(65536, dtype=np.float64) + 0.5) / 65536
    return gamma.ppf(u, a=looks, scale=1.0 / looks).astype(np.float32)
