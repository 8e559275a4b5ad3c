"""The HTML page of :func:`cloudfill.evaluation.report.write_report`.

The page is the Jinja2 template ``templates/report.html.j2`` rendered with autoescape on:
the code here only formats values into plain strings (:func:`cell`) and gathers them in small
frozen views (:class:`Page` and its parts); the template places them and escapes every one,
so a title, a note or a class name holding ``<`` or ``&`` cannot break the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Any

import jinja2
import numpy as np
import pandas as pd

__all__ = [
    "BETTER_LOW",
    "METRIC_FORMAT",
    "Cell",
    "ConfidenceView",
    "DateSection",
    "FigureView",
    "LandcoverView",
    "Page",
    "ReliabilityView",
    "TableView",
    "cell",
    "render_page",
    "summary",
    "table_view",
]

BETTER_LOW: dict[str, bool] = {"mae": True, "rmse": True, "psnr": False, "ssim": False, "sam": True}
"""Per metric: True when lower is better (for the bold best value of the summary)."""

METRIC_FORMAT: dict[str, str] = {
    "mae": "{:.4f}",
    "rmse": "{:.4f}",
    "psnr": "{:.2f}",
    "ssim": "{:.3f}",
    "sam": "{:.2f}",
}
"""Format of each metric's column in the tables."""

TEMPLATE = "report.html.j2"


@dataclass(frozen=True)
class Cell:
    """One table cell: its text (unescaped) and its CSS class (``""`` for none)."""

    text: str
    css: str = ""


@dataclass(frozen=True)
class TableView:
    """A table ready for the template: header cells, then rows of cells."""

    head: tuple[Cell, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True)
class FigureView:
    """A picture with its caption (also its alt text); ``quick`` = a quicklook tile, else a
    wide chart."""

    src: str
    caption: str
    quick: bool = True


@dataclass(frozen=True)
class DateSection:
    """The quicklooks of one date and the line above them."""

    date: str
    unusable: str
    s1_date: str
    reference: str
    figures: tuple[FigureView, ...]


@dataclass(frozen=True)
class LandcoverView:
    """The land-cover check: its setup, overall accuracies and per-class F1 chart."""

    date: str
    n_train: int
    n_test: int
    accuracy: TableView
    chart: FigureView


@dataclass(frozen=True)
class ConfidenceView:
    """The error vs. confidence check: the scatter and the per-date Spearman table."""

    scatter: FigureView
    per_date: TableView


@dataclass(frozen=True)
class ReliabilityView:
    """The error bars' check: the reliability diagram and the coverage table."""

    diagram: FigureView
    coverage: TableView


@dataclass(frozen=True)
class Page:
    """Everything the template shows.

    Attributes
    ----------
    title
        Page title.
    version
        cloudfill's version.
    generated
        When the report was written (``YYYY-MM-DD HH:MM``, UTC).
    cube_y, cube_x, cube_dates
        The cube's size.
    step
        Quicklook stride in pixels.
    setup
        The metrics table's attrs (``truth``, ``split_note``, ``model``, ``dates``,
        ``regions``, ``notes``), as :func:`~cloudfill.evaluation.evaluate.evaluate` sets them.
    summary, per_date
        The metrics tables.
    has_scale
        Whether the model predicts a Laplace scale (the confidence colour bar is shown).
    dates
        One section of quicklooks per date.
    landcover, confidence
        The two checks, or None when they did not run.
    reliability
        The error bars' coverage, or None (no truth under the fills, no error scale).
    """

    title: str
    version: str
    generated: str
    cube_y: int
    cube_x: int
    cube_dates: int
    step: int
    setup: dict[str, Any]
    summary: TableView
    per_date: TableView
    has_scale: bool
    dates: tuple[DateSection, ...]
    landcover: LandcoverView | None
    confidence: ConfidenceView | None
    reliability: ReliabilityView | None = None


def cell(value: Any, fmt: str | None = None) -> str:
    """A table value as text: floats with ``fmt`` (default 4 significant digits), missing
    values as an en dash, infinity as ∞.

    Examples
    --------
    >>> cell(0.123456, "{:.3f}"), cell(float("nan")), cell(None), cell(np.inf), cell("a<b")
    ('0.123', '–', '–', '∞', 'a<b')
    """
    if value is None:
        return "–"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞"
        return (fmt or "{:.4g}").format(value)
    return str(value)


def table_view(frame: pd.DataFrame, best: pd.DataFrame | None = None) -> TableView:
    """``frame`` as a :class:`TableView`: text columns left-aligned (class ``text``), the
    cells where ``best`` (same index, bool columns) is True in bold (class ``best``), metric
    columns formatted with :data:`METRIC_FORMAT`.

    Examples
    --------
    >>> view = table_view(pd.DataFrame({"method": ["a", "b"], "mae": [0.1, 0.2]}))
    >>> [c.css for c in view.head], [c.text for c in view.rows[1]]
    (['text', ''], ['b', '0.2000'])
    """
    text = {c: not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    head = tuple(Cell(str(c), "text" if text[c] else "") for c in frame.columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for c in frame.columns:
            classes = []
            if text[c]:
                classes.append("text")
            if best is not None and c in best.columns and bool(best.iloc[i][c]):
                classes.append("best")
            cells.append(Cell(cell(row[c], METRIC_FORMAT.get(str(c))), " ".join(classes)))
        rows.append(tuple(cells))
    return TableView(head, tuple(rows))


def summary(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean of each metric over dates per (region, method), and where each is the best.

    Parameters
    ----------
    table
        The metrics table of :func:`~cloudfill.evaluation.evaluate.evaluate`.

    Returns
    -------
    mean, best
        ``mean``: one row per (region, method), the metrics' means (infinite values, e.g. the
        PSNR of a perfect prediction, left out) and ``n_pixels`` summed; ``best``: the same
        index, one bool column per metric, True at the best method of each region.
    """
    metrics = list(BETTER_LOW)
    mean = (
        table.replace([np.inf, -np.inf], np.nan)
        .groupby(["region", "method"], sort=False)[metrics]
        .mean()
    )
    mean["n_pixels"] = table.groupby(["region", "method"], sort=False)["n_pixels"].sum()
    mean = mean.reset_index()
    best = pd.DataFrame(False, index=mean.index, columns=metrics)
    for _, group in mean.groupby("region", sort=False):
        for m in metrics:
            column = group[m].dropna()
            if len(column):
                best.loc[column.idxmin() if BETTER_LOW[m] else column.idxmax(), m] = True
    return mean, best


@cache
def _environment() -> jinja2.Environment:
    # StrictUndefined: a field missing from the view fails loudly instead of leaving a gap.
    return jinja2.Environment(
        loader=jinja2.PackageLoader("cloudfill.evaluation", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_page(page: Page) -> str:
    """The report's HTML (inline CSS, no script, no network address).

    Examples
    --------
    >>> empty = TableView((), ())
    >>> setup = {"truth": "t", "split_note": "s", "model": "m", "dates": [], "regions": []}
    >>> html = render_page(Page("a <b>", "0", "now", 1, 1, 1, 1, {**setup, "notes": []},
    ...                         empty, empty, False, (), None, None))
    >>> "<title>a &lt;b&gt;</title>" in html and "<script" not in html
    True
    """
    return _environment().get_template(TEMPLATE).render(page=page)
