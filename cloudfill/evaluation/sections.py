"""The sections of the report's page: their pictures written, their views for the template.

Each function here draws one part of :func:`cloudfill.evaluation.report.write_report`'s page
with :mod:`cloudfill.evaluation.figures` into the report's ``img`` folder (:class:`Pictures`
keeps them in page order) and returns what :mod:`cloudfill.evaluation.page` shows of it. The
inputs are the computed, strided quicklook images of each date (``looks``: ``real``,
``synth``, ``filled``, ``truth``, ``error``, ``scale`` when the model has a confidence head,
and ``scored:<region>`` masks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.image import imsave

from cloudfill.evaluation import figures
from cloudfill.evaluation.evaluate import EvaluationPlan, landcover_frame
from cloudfill.evaluation.page import (
    ConfidenceView,
    DateSection,
    FigureView,
    LandcoverView,
    ReliabilityView,
    cell,
    table_view,
)
from cloudfill.model.calibration import CONFIDENCE_TOLERANCE, COVERAGE_QUANTILES

RELIABILITY_QUANTILES: tuple[float, ...] = tuple(
    sorted({*(round(0.05 * k, 2) for k in range(1, 20)), *COVERAGE_QUANTILES, 0.99})
)
"""The nominal shares the reliability diagram is drawn at (the coverage table: those of
:data:`~cloudfill.model.calibration.COVERAGE_QUANTILES`)."""

__all__ = [
    "RELIABILITY_QUANTILES",
    "SCATTER_MAX_POINTS",
    "ConfidencePixels",
    "Pictures",
    "confidence_view",
    "date_sections",
    "landcover_view",
    "open_pictures",
    "quicklooks",
    "reliability_view",
    "scored_regions",
]

SCATTER_MAX_POINTS = 200_000
"""The scatter draws a fixed random sample of at most this many pixels (hexbin cost)."""


@dataclass
class Pictures:
    """The report's image folder, the shared colour scales, and every PNG written so far
    (in page order)."""

    folder: Path
    lo: np.ndarray
    hi: np.ndarray
    error_max: float
    paths: list[Path] = field(default_factory=list)

    def save(self, name: str, image: np.ndarray) -> str:
        """Write an (h, w, 3) uint8 image; returns its address relative to the page."""
        return self.add(name, lambda path: imsave(path, image))

    def add(self, name: str, draw: Callable[[Path], Any]) -> str:
        """Draw a picture with ``draw(path)``; returns its address relative to the page."""
        path = self.folder / name
        draw(path)
        self.paths.append(path)
        return f"img/{name}"


@dataclass
class ConfidencePixels:
    """The scored pixels' predicted scale and error, pooled over dates, and per date."""

    scale: list[np.ndarray] = field(default_factory=list)
    error: list[np.ndarray] = field(default_factory=list)
    per_date: list[dict[str, Any]] = field(default_factory=list)

    def add(
        self, date: pd.Timestamp, look: Mapping[str, Any], scored: dict[str, np.ndarray]
    ) -> None:
        """Pool the date's pixels of the cloud region (all pixels if it has none)."""
        scale = np.asarray(look["scale"], dtype="float64")
        error = np.asarray(look["error"], dtype="float64")
        region = "cloud" if "cloud" in scored and scored["cloud"].any() else "all"
        pick = scored.get(region, np.zeros(error.shape, bool)) & np.isfinite(scale)
        pick &= np.isfinite(error)
        self.scale.append(scale[pick])
        self.error.append(error[pick])
        self.per_date.append(
            {
                "date": f"{date:%Y-%m-%d}",
                "region": region,
                "pixels": int(pick.sum()),
                "spearman": figures.spearman(scale[pick], error[pick]),
            }
        )


def quicklooks(
    pics: Pictures, tag: str, look: Mapping[str, Any], filled: str, truth: str
) -> tuple[FigureView, ...]:
    """Write one date's quicklooks (``tag``: the file names' prefix); ``filled`` and
    ``truth`` are the captions of those panels, which depend on how the report was made."""
    lo, hi, error_max = pics.lo, pics.hi, pics.error_max
    cmap = figures.ERROR_CMAP
    scored = scored_regions(look)
    figs = [
        FigureView(
            pics.save(f"{tag}_real.png", figures.rgb(look["real"], lo, hi)),
            "real image (with its clouds)",
        ),
        FigureView(
            pics.save(f"{tag}_synth.png", figures.rgb(look["synth"], lo, hi)),
            "synthesized by the model",
        ),
        FigureView(
            pics.save(f"{tag}_filled.png", figures.rgb(look["filled"], lo, hi)),
            filled,
        ),
        FigureView(pics.save(f"{tag}_truth.png", figures.rgb(look["truth"], lo, hi)), truth),
        FigureView(
            pics.save(f"{tag}_error.png", figures.colour_map(look["error"], cmap, error_max)),
            f"|synthesized − truth|, band mean ({cmap}, 0 – {error_max:.3f}; grey = no truth)",
        ),
    ]
    if "scale" in look and "confidence" in look:
        confidence = np.asarray(look["confidence"], dtype="float64")
        conf_cmap = figures.CONFIDENCE_CMAP
        figs.append(
            FigureView(
                pics.save(f"{tag}_confidence.png", figures.colour_map(confidence, conf_cmap, 1.0)),
                f"confidence of the filled date, P(|error| ≤ {CONFIDENCE_TOLERANCE}) under its "
                f"error_scale ({conf_cmap}, 0 – 1; 1 = real observation)",
            )
        )
    shape = np.asarray(look["error"]).shape
    figs.append(
        FigureView(
            pics.save(f"{tag}_scored.png", figures.scored_map(scored, shape)),
            "scored pixels: orange = cloud region, light grey = other scored pixels, "
            "dark = not scored (outside the test blocks or without a value)",
        )
    )
    return tuple(figs)


def scored_regions(look: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Region name -> the strided (y, x) scored pixels of a date's quicklook inputs."""
    return {
        k.split(":", 1)[1]: np.asarray(v, dtype=bool)
        for k, v in look.items()
        if k.startswith("scored:")
    }


def confidence_view(
    pics: Pictures, pixels: ConfidencePixels
) -> tuple[ConfidenceView, float | None]:
    """Draw the pooled error vs. scale scatter; returns the section and its Spearman ρ."""
    x = np.concatenate(pixels.scale) if pixels.scale else np.zeros(0)
    y = np.concatenate(pixels.error) if pixels.error else np.zeros(0)
    if x.size > SCATTER_MAX_POINTS:
        keep = np.random.default_rng(0).choice(x.size, SCATTER_MAX_POINTS, replace=False)
        x, y = x[keep], y[keep]
    rho = figures.spearman(x, y)
    src = pics.add("error_vs_confidence.png", lambda path: figures.scatter(path, x, y, rho))
    rho_table = pd.DataFrame(pixels.per_date)
    rho_table["spearman"] = [cell(r, "{:.3f}") for r in rho_table["spearman"]]
    caption = (
        f"Each pixel scored in the cloud region (all pixels where a date has none), "
        f"at quicklook resolution: {x.size} pixels. A useful confidence ranks pixels "
        f"by their error: Spearman ρ = {cell(rho, '{:.3f}') if rho is not None else 'n/a'}"
        " (1 = perfect ranking, 0 = none). Points on the dashed line have an error "
        "equal to the predicted scale."
    )
    return ConfidenceView(FigureView(src, caption, quick=False), table_view(rho_table)), rho


def reliability_view(
    pics: Pictures, looks: Mapping[pd.Timestamp, Mapping[str, Any]]
) -> ReliabilityView | None:
    """Draw the reliability diagram of the filled pixels' error bars, pooled over dates from
    each look's ``coverage:n`` and ``coverage:<q>`` counts; None without any such pixel."""
    counted = [look for look in looks.values() if "coverage:n" in look]
    n = int(sum(int(look["coverage:n"]) for look in counted))
    if not n:
        return None
    qs = np.array(RELIABILITY_QUANTILES)
    inside = np.array([sum(int(look[f"coverage:{q}"]) for look in counted) for q in qs])
    share = inside / n
    src = pics.add("reliability.png", lambda path: figures.reliability(path, qs, share, n))
    table = pd.DataFrame(
        {
            "q": [f"{q:g}" for q in COVERAGE_QUANTILES],
            "interval": [f"|error| ≤ {-np.log1p(-q):.3f} b" for q in COVERAGE_QUANTILES],
            "empirical coverage": [f"{share[list(qs).index(q)]:.3f}" for q in COVERAGE_QUANTILES],
            "pixel-bands": [n] * len(COVERAGE_QUANTILES),
        }
    )
    caption = (
        "Each filled pixel of the cloud region with a known error scale b (every band, "
        "full resolution, against the truth): the share whose error lies within "
        "b ln(1/(1−q)), against q. On the diagonal the error bars are calibrated."
    )
    return ReliabilityView(FigureView(src, caption, quick=False), table_view(table))


def landcover_view(pics: Pictures, lc: Mapping[str, Any]) -> LandcoverView:
    """Draw the land-cover check's F1 chart; returns its section."""
    frame = landcover_frame(lc)
    src = pics.add("landcover_f1.png", lambda path: figures.f1_chart(path, frame, lc["date"]))
    accuracy = pd.DataFrame(
        {
            "image": list(lc["overall_accuracy"]),
            "overall accuracy": [f"{100 * v:.2f} %" for v in lc["overall_accuracy"].values()],
        }
    )
    chart = FigureView(
        src,
        "Per-class F1, real vs. each method "
        "(like the paper's figure 5); n = test pixels of the class.",
        quick=False,
    )
    return LandcoverView(lc["date"], lc["n_train"], lc["n_test"], table_view(accuracy), chart)


def open_pictures(folder: Path, looks: Mapping[pd.Timestamp, Mapping[str, Any]]) -> Pictures:
    """The shared colour scales, and the colour bars (the page's first pictures)."""
    # One stretch and one error range for the whole report, so pictures compare.
    lo, hi = figures.stretch_limits(np.asarray(v["truth"]) for v in looks.values())
    errors = np.concatenate([np.asarray(v["error"]).ravel() for v in looks.values()])
    finite_errors = errors[np.isfinite(errors)]
    error_max = float(np.percentile(finite_errors, 98)) if finite_errors.size else 0.1
    pics = Pictures(folder, lo, hi, max(error_max, 1e-3))
    error_label = "absolute error (band mean, reflectance)"
    pics.add(
        "colorbar_error.png",
        lambda p: figures.colorbar(p, figures.ERROR_CMAP, pics.error_max, error_label),
    )
    if any("scale" in v for v in looks.values()):
        conf_label = "confidence (1 = real observation)"
        pics.add(
            "colorbar_confidence.png",
            lambda p: figures.colorbar(p, figures.CONFIDENCE_CMAP, 1.0, conf_label),
        )
    return pics


def date_sections(
    plan: EvaluationPlan,
    looks: Mapping[pd.Timestamp, Mapping[str, Any]],
    inputs_used: Mapping[pd.Timestamp, Mapping[str, str]],
    pics: Pictures,
    filled: str,
) -> tuple[tuple[DateSection, ...], ConfidencePixels]:
    """Write every date's quicklooks (``filled``: the filled panel's caption); returns the
    sections and the confidence check's pixels."""
    truth = (
        "truth (cloud-free, simulated)"
        if plan.truth_source == "truth variable"
        else "truth: the date's clear pixels, hidden from every method"
    )
    sections = []
    pixels = ConfidencePixels()
    for i, (date, look) in enumerate(looks.items()):
        figs = quicklooks(pics, f"d{i:02d}_{date:%Y-%m-%d}", look, filled, truth)
        if "scale" in look:
            pixels.add(date, look, scored_regions(look))
        used = inputs_used.get(date, {})
        sections.append(
            DateSection(
                date=f"{date:%Y-%m-%d}",
                unusable=f"{100 * float(plan.fractions.loc[date]):.1f}%",
                s1_date=used.get("s1_date", "?"),
                reference=used.get("reference_date") or "none",
                figures=figs,
            )
        )
    return tuple(sections), pixels
