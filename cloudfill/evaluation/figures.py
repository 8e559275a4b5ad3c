"""The pictures of :func:`cloudfill.evaluation.report.write_report`, as arrays and PNG files.

Quicklooks are true colour (B04, B03, B02) with one 2-98 % percentile stretch per band for
the whole report (:func:`stretch_limits` over the truth images, applied by :func:`rgb`), so
dates and panels are comparable; error and confidence maps go through a matplotlib colour
map (:func:`colour_map`). Charts are drawn with matplotlib's Agg canvas on a
:class:`~matplotlib.figure.Figure` of their own (no pyplot state, so reports can be written
from threads or a server).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy.stats import spearmanr

__all__ = [
    "CONFIDENCE_CMAP",
    "ERROR_CMAP",
    "MAP_NODATA_RGB",
    "NODATA_RGB",
    "RGB_BANDS",
    "STRETCH_PERCENTILES",
    "colorbar",
    "colour_map",
    "f1_chart",
    "reliability",
    "rgb",
    "scatter",
    "scored_map",
    "spearman",
    "stretch_limits",
]

RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
STRETCH_PERCENTILES: tuple[float, float] = (2.0, 98.0)
NODATA_RGB = np.array([200, 60, 200], dtype=np.uint8)
"""Magenta: an unmistakably artificial colour for pixels without a value."""
MAP_NODATA_RGB = np.array([128, 128, 128], dtype=np.uint8)
ERROR_CMAP = "inferno"
CONFIDENCE_CMAP = "viridis"


# --- arrays ------------------------------------------------------------------------------------


def stretch_limits(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 % percentiles over the finite values of (3, h, w) images.

    Parameters
    ----------
    images
        True-colour images (3, h, w), pooled.

    Returns
    -------
    lo, hi
        Arrays of 3; a band without a finite value keeps 0 - 0.3, and ``hi`` is always
        above ``lo`` (a flat band would divide by zero).

    Examples
    --------
    >>> image = np.stack([np.linspace(0, 1, 101), np.full(101, 0.2), np.full(101, np.nan)])
    >>> lo, hi = stretch_limits([image[:, None]])
    >>> lo.round(6).tolist(), hi.round(6).tolist()
    ([0.02, 0.2, 0.0], [0.98, 0.200001, 0.3])
    """
    stacked = np.concatenate([np.asarray(a, dtype="float64").reshape(3, -1) for a in images], 1)
    lo, hi = np.full(3, 0.0), np.full(3, 0.3)
    for b in range(3):
        values = stacked[b][np.isfinite(stacked[b])]
        if values.size:
            lo[b], hi[b] = np.percentile(values, STRETCH_PERCENTILES)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return lo, hi


def rgb(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, h, w) reflectance -> (h, w, 3) uint8 with the report's stretch.

    Pixels without a value in some band are :data:`NODATA_RGB`.

    Examples
    --------
    >>> image = np.array([0.0, 0.5, np.nan]).reshape(1, 1, 3).repeat(3, axis=0)
    >>> rgb(image, np.zeros(3), np.ones(3))[0].tolist()
    [[0, 0, 0], [128, 128, 128], [200, 60, 200]]
    """
    data = np.asarray(image, dtype="float64")
    scaled = (data - lo[:, None, None]) / (hi - lo)[:, None, None]
    out = (np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1) * 255).round().astype(np.uint8)
    out = np.moveaxis(out, 0, -1)
    out[~np.isfinite(data).all(axis=0)] = NODATA_RGB
    return out


def colour_map(values: np.ndarray, cmap: str, vmax: float) -> np.ndarray:
    """(h, w) values in 0 - ``vmax`` -> (h, w, 3) uint8 through the matplotlib colour map
    ``cmap``; values outside are clipped, NaN is :data:`MAP_NODATA_RGB`."""
    data = np.asarray(values, dtype="float64")
    norm = np.clip(np.nan_to_num(data / vmax, nan=0.0), 0, 1)
    out = (colormaps[cmap](norm)[..., :3] * 255).round().astype(np.uint8)
    out[~np.isfinite(data)] = MAP_NODATA_RGB
    return out


def scored_map(scored: Mapping[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(h, w, 3) uint8 map of the scored pixels: orange = ``cloud`` region, light grey = other
    ``all`` pixels, dark = not scored. The cloud region is drawn last: it lies inside ``all``."""
    out = np.full((*shape, 3), 40, dtype=np.uint8)
    if "all" in scored:
        out[np.asarray(scored["all"], dtype=bool)] = (190, 190, 190)
    if "cloud" in scored:
        out[np.asarray(scored["cloud"], dtype=bool)] = (255, 140, 0)
    return out


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman rank correlation of two 1-D arrays (ties get their mean rank), or None when it
    is undefined: fewer than 3 pixels, or a constant array.

    The arrays must be finite (the report drops NaN pixels before calling it).

    Examples
    --------
    >>> round(spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 30.0, 20.0, 40.0])), 6)
    0.8
    >>> spearman(np.ones(5), np.arange(5.0)) is None
    True
    """
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


# --- charts ------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def colorbar(path: Path, cmap: str, vmax: float, label: str) -> None:
    """Write a horizontal colour bar of ``cmap`` over 0 - ``vmax`` to ``path`` (PNG)."""
    fig = _figure(3.4, 0.75)
    ax = fig.add_subplot()
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap, extent=(0, vmax, 0, 1))
    ax.set_yticks([])
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=8)
    fig.savefig(path)


def f1_chart(path: Path, frame: pd.DataFrame, date: str) -> None:
    """Write the land-cover check's per-class F1 bar chart to ``path`` (PNG).

    Parameters
    ----------
    path
        The PNG to write.
    frame
        :func:`~cloudfill.evaluation.evaluate.landcover_frame`: ``name``, ``support`` and one
        F1 column per image (``real`` first).
    date
        The date of the check, for the title.
    """
    # A class without test pixels has no F1 (scikit-learn reports 0): leave it out.
    frame = frame[frame["support"] > 0]
    methods = [c for c in frame.columns if c not in ("name", "support")]
    n_classes = len(frame)
    fig = _figure(max(6.0, 1.1 * n_classes + 2), 3.6)
    ax = fig.add_subplot()
    width = 0.8 / len(methods)
    x = np.arange(n_classes)
    colours = colormaps["tab10"]
    for i, method in enumerate(methods):
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            frame[method],
            width,
            label=method,
            color="0.25" if method == "real" else colours(i),
        )
    ax.set_xticks(
        x, [f"{n}\n(n={s})" for n, s in zip(frame["name"], frame["support"], strict=True)]
    )
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 score")
    ax.set_title(f"Per-class F1 of a random forest trained on the real image ({date})", fontsize=10)
    ax.legend(
        fontsize=8, ncols=min(len(methods), 5), loc="upper center", bbox_to_anchor=(0.5, -0.2)
    )
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path)


def reliability(path: Path, nominal: np.ndarray, empirical: np.ndarray, n: int) -> None:
    """Write the reliability diagram of the error bars to ``path`` (PNG): the share of the
    filled values' errors inside each nominal ``q``-interval (``b ln(1/(1-q))``) against
    ``q``, with the diagonal and a band of +-0.05 around it."""
    fig = _figure(4.6, 4.4)
    ax = fig.add_subplot()
    ax.fill_between([0, 1], [-0.05, 0.95], [0.05, 1.05], color="0.9", label="±0.05")
    ax.plot([0, 1], [0, 1], "--", color="0.3", lw=1, label="calibrated")
    ax.plot(nominal, empirical, "o-", color="tab:blue", ms=4, label="filled pixels")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("nominal coverage q")
    ax.set_ylabel("share of errors within b ln(1/(1−q))")
    ax.set_title(f"Reliability of error_scale ({n} pixel-bands)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path)


def scatter(path: Path, scale: np.ndarray, error: np.ndarray, rho: float | None) -> None:
    """Write the density scatter of the absolute error against the predicted Laplace scale
    (log-count hexbins, the identity as a dashed line) to ``path`` (PNG); ``rho`` goes in the
    title."""
    fig = _figure(5.2, 4.4)
    ax = fig.add_subplot()

    def top(values: np.ndarray) -> float:
        # The 99.5th percentile keeps a few wild pixels from squashing the rest.
        t = float(np.percentile(values, 99.5)) * 1.05 if values.size else 1.0
        return t if t > 0 else 1.0

    x_top, y_top = top(scale), top(error)
    art = ax.hexbin(
        scale, error, gridsize=50, extent=(0, x_top, 0, y_top), bins="log", mincnt=1, cmap="Blues"
    )
    fig.colorbar(art, ax=ax, label="pixels")
    both = min(x_top, y_top)
    ax.plot([0, both], [0, both], "--", color="0.3", lw=1, label="error = predicted scale")
    ax.set_xlim(0, x_top)
    ax.set_ylim(0, y_top)
    ax.set_xlabel("predicted Laplace scale b (expected |error|, reflectance)")
    ax.set_ylabel("absolute error (reflectance)")
    rho_text = "n/a" if rho is None else f"{rho:.3f}"
    ax.set_title(f"Band-mean error vs. predicted scale; Spearman ρ = {rho_text}", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.savefig(path)
