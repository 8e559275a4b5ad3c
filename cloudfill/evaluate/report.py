"""``write_report``: an HTML page with the metrics, quicklooks, land-cover and confidence checks.

The report is a folder::

    out_dir/index.html     the page (inline CSS, no script, no network)
    out_dir/metrics.csv    the tidy table of :func:`cloudfill.evaluate.evaluate.evaluate`
    out_dir/img/*.png      pictures, referenced from the page by relative paths

so it can be zipped, served or opened from disk. Pictures are drawn with matplotlib's Agg
canvas (no pyplot state). Quicklooks are true colour (B04, B03, B02) with one 2-98 %
percentile stretch per band for the whole report (from the truth images), so dates and panels
are comparable; they are strided to at most ``max_side`` pixels a side, computed in the same
pass as the metrics (the model runs once per date).
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from cloudfill._version import __version__
from cloudfill.errors import OutputError, ParameterError
from cloudfill.evaluate.evaluate import (
    BASELINES,
    REGIONS,
    DateCase,
    landcover_frame,
    plan_evaluation,
    run_evaluation,
)
from cloudfill.fill.series import CONFIDENCE_SCALE, feather_weights

__all__ = ["Report", "write_report"]

RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
STRETCH_PERCENTILES: tuple[float, float] = (2.0, 98.0)
NODATA_RGB = np.array([200, 60, 200], dtype=np.uint8)
"""Magenta: an unmistakably artificial colour for pixels without a value."""
MAP_NODATA_RGB = np.array([128, 128, 128], dtype=np.uint8)
ERROR_CMAP = "inferno"
CONFIDENCE_CMAP = "viridis"
SCATTER_MAX_POINTS = 200_000

_BETTER_LOW = {"mae": True, "rmse": True, "psnr": False, "ssim": False, "sam": True}
_METRIC_FORMAT = {
    "mae": "{:.4f}",
    "rmse": "{:.4f}",
    "psnr": "{:.2f}",
    "ssim": "{:.3f}",
    "sam": "{:.2f}",
}


@dataclass(frozen=True)
class Report:
    """What :func:`write_report` wrote.

    Attributes
    ----------
    index
        The HTML page.
    metrics_csv
        The metrics table as CSV.
    metrics
        The metrics table (as :func:`~cloudfill.evaluate.evaluate.evaluate` returns it).
    images
        Every PNG the page shows, in page order.
    spearman
        Spearman correlation between the predicted Laplace scale and the absolute error
        over the scored pixels, or None (no confidence head, too few pixels).
    """

    index: Path
    metrics_csv: Path
    metrics: pd.DataFrame
    images: tuple[Path, ...]
    spearman: float | None


# --- lazy picture inputs -----------------------------------------------------------------------


def _filled(case: DateCase, feather: int) -> xr.DataArray:
    """The real image with its unusable pixels replaced by the synthesized ones, blended over
    ``feather`` pixels as :func:`cloudfill.fill.series.fill_series` does."""
    synth = case.predictions["model"]
    has_synth = synth.notnull().all("band")
    weight = feather_weights(case.unusable, feather)
    weight = weight.where(has_synth & ~case.unusable, 0).where(~case.unusable, 1)
    out = weight * synth.fillna(0) + (1 - weight) * case.real.fillna(0)
    return out.where(~case.unusable | has_synth).transpose("band", "y", "x")


def _quicklook_inputs(case: DateCase, step: int, feather: int) -> dict[str, Any]:
    strided = {"y": slice(None, None, step), "x": slice(None, None, step)}
    rgb = list(RGB_BANDS)
    synth = case.predictions["model"]
    out: dict[str, Any] = {
        "real": case.real.sel(band=rgb).isel(strided),
        "truth": case.truth.sel(band=rgb).isel(strided),
        "synth": synth.sel(band=rgb).isel(strided),
        "filled": _filled(case, feather).sel(band=rgb).isel(strided),
        "error": abs(synth - case.truth).mean("band", skipna=False).isel(strided),
    }
    for region, where in case.regions.items():
        out[f"scored:{region}"] = where.isel(strided)
    if case.scale is not None:
        out["scale"] = case.scale.mean("band", skipna=False).isel(strided)
    return out


# --- rendering ---------------------------------------------------------------------------------


def _stretch_limits(images: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2 and 98 % percentiles over the finite values of (3, h, w) images."""
    stacked = np.concatenate([np.asarray(a, dtype="float64").reshape(3, -1) for a in images], 1)
    lo, hi = np.full(3, 0.0), np.full(3, 0.3)
    for b in range(3):
        values = stacked[b][np.isfinite(stacked[b])]
        if values.size:
            lo[b], hi[b] = np.percentile(values, STRETCH_PERCENTILES)
    hi = np.where(hi > lo, hi, lo + 1e-6)
    return lo, hi


def _rgb(image: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """(3, h, w) reflectance -> (h, w, 3) uint8 with the report's stretch."""
    data = np.asarray(image, dtype="float64")
    scaled = (data - lo[:, None, None]) / (hi - lo)[:, None, None]
    out = (np.clip(np.nan_to_num(scaled, nan=0.0), 0, 1) * 255).round().astype(np.uint8)
    out = np.moveaxis(out, 0, -1)
    out[~np.isfinite(data).all(axis=0)] = NODATA_RGB
    return out


def _colour_map(values: np.ndarray, cmap: str, vmax: float) -> np.ndarray:
    data = np.asarray(values, dtype="float64")
    norm = np.clip(np.nan_to_num(data / vmax, nan=0.0), 0, 1)
    out = (colormaps[cmap](norm)[..., :3] * 255).round().astype(np.uint8)
    out[~np.isfinite(data)] = MAP_NODATA_RGB
    return out


def _scored_map(scored: Mapping[str, np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    out = np.full((*shape, 3), 40, dtype=np.uint8)
    if "all" in scored:
        out[np.asarray(scored["all"], dtype=bool)] = (190, 190, 190)
    if "cloud" in scored:
        out[np.asarray(scored["cloud"], dtype=bool)] = (255, 140, 0)
    return out


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colorbar(path: Path, cmap: str, vmax: float, label: str) -> None:
    fig = _figure(3.4, 0.75)
    ax = fig.add_subplot()
    ax.imshow(np.linspace(0, 1, 256)[None], aspect="auto", cmap=cmap, extent=(0, vmax, 0, 1))
    ax.set_yticks([])
    ax.set_xlabel(label, fontsize=8)
    ax.tick_params(labelsize=8)
    fig.savefig(path)


def _f1_chart(path: Path, frame: pd.DataFrame, date: str) -> None:
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


def _scatter(path: Path, scale: np.ndarray, error: np.ndarray, rho: float | None) -> None:
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


def _spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)


# --- html ----------------------------------------------------------------------------------


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 24px auto;
       max-width: 1400px; padding: 0 16px; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.8em; }
h3 { margin-bottom: 0.3em; }
.meta, figcaption, .caption { color: #555; font-size: 0.9em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 8px 0 4px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
td.best { font-weight: bold; background: #eaf5ea; }
.grid { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: 184px; }
figure img.quick { width: 184px; image-rendering: pixelated; border: 1px solid #ccc; }
figure.wide { width: auto; }
figure.wide img { max-width: 100%; }
"""


def _cell(value: Any, fmt: str | None = None) -> str:
    if value is None:
        return "–"
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "∞"
        return (fmt or "{:.4g}").format(value)
    return html.escape(str(value))


def _table(frame: pd.DataFrame, best: pd.DataFrame | None = None) -> str:
    """A plain HTML table; text columns left-aligned, ``best`` (same shape, bool) in bold."""
    text = {c: not pd.api.types.is_numeric_dtype(frame[c]) for c in frame.columns}
    head = "".join(
        f'<th class="{"text" if text[c] else ""}">{html.escape(str(c))}</th>' for c in frame.columns
    )
    body = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for c in frame.columns:
            classes = []
            if text[c]:
                classes.append("text")
            if best is not None and c in best.columns and bool(best.iloc[i][c]):
                classes.append("best")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{_cell(row[c], _METRIC_FORMAT.get(str(c)))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(table: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean of each metric over dates per (region, method), and where each is the best."""
    metrics = list(_BETTER_LOW)
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
                best.loc[column.idxmin() if _BETTER_LOW[m] else column.idxmax(), m] = True
    return mean, best


def _figure_html(src: str, caption: str, *, quick: bool = True) -> str:
    cls = ' class="quick"' if quick else ""
    wide = "" if quick else ' class="wide"'
    return (
        f'<figure{wide}><img{cls} src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


# --- the report --------------------------------------------------------------------------------


def write_report(
    ds: xr.Dataset,
    model: Any = None,
    out_dir: str | Path = "report",
    *,
    dates: Any = None,
    split: str = "test",
    baselines: Iterable[str] | None = BASELINES,
    landcover: bool = True,
    mask: str | Sequence[str] = REGIONS,
    max_side: int = 512,
    feather: int = 8,
    landcover_kwargs: Mapping[str, Any] | None = None,
    title: str = "cloudfill evaluation report",
    **synth_kwargs: Any,
) -> Report:
    """Evaluate ``model`` on ``ds`` and write ``out_dir/index.html`` with ``metrics.csv``.

    The page holds: the setup (truth, split, dates, notes); a metrics table against the
    baselines (mean over dates, best in bold, then per date); per date the quicklooks —
    real (cloudy), synthesized, filled, truth, absolute error, confidence (as
    :func:`~cloudfill.fill.series.fill_series` defines it) and the scored pixels; the
    land-cover check's overall accuracies and per-class F1 bar chart; a density scatter of
    the absolute error against the predicted Laplace scale with its Spearman correlation.

    Parameters
    ----------
    ds, model, dates, split, baselines, landcover, mask, landcover_kwargs, **synth_kwargs
        As in :func:`cloudfill.evaluate.evaluate.evaluate` (the model is required).
    out_dir
        Output folder, created if needed; the report's files in it are replaced.
    max_side
        Quicklooks are strided to at most this many pixels a side.
    feather
        Blend width (pixels) of the filled quicklook.
    title
        Page title.

    Returns
    -------
    Report

    Raises
    ------
    OutputError
        If ``out_dir`` exists and is not a folder.

    Examples
    --------
    >>> import cloudfill
    >>> ds = cloudfill.simulate_scene((96, 96), seed=1)
    >>> report = write_report(ds, model, "report")  # doctest: +SKIP
    >>> report.index.name  # doctest: +SKIP
    'index.html'
    """
    if max_side < 16:
        raise ParameterError(f"max_side must be at least 16 pixels, got {max_side}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out} exists and is not a folder")
    img_dir = out / "img"
    img_dir.mkdir(parents=True, exist_ok=True)

    plan = plan_evaluation(
        ds,
        model,
        dates=dates,
        split=split,
        baselines=baselines,
        landcover=landcover,
        mask=mask,
        with_model=True,
        **synth_kwargs,
    )
    step = max(1, -(-max(ds.sizes["y"], ds.sizes["x"]) // max_side))
    inputs_used: dict[pd.Timestamp, dict[str, str]] = {}

    def extras(case: DateCase) -> dict[str, Any]:
        attrs = case.predictions["model"].attrs
        inputs_used[case.date] = {
            "s1_date": str(attrs.get("s1_date", "")),
            "reference_date": str(attrs.get("reference_date", "")),
        }
        return _quicklook_inputs(case, step, feather)

    table, looks = run_evaluation(plan, extras, landcover_kwargs)
    has_scale = any("scale" in v for v in looks.values())

    # One stretch and one error range for the whole report, so pictures compare.
    lo, hi = _stretch_limits(np.asarray(v["truth"]) for v in looks.values())
    errors = np.concatenate([np.asarray(v["error"]).ravel() for v in looks.values()])
    finite_errors = errors[np.isfinite(errors)]
    error_max = float(np.percentile(finite_errors, 98)) if finite_errors.size else 0.1
    error_max = max(error_max, 1e-3)

    images: list[Path] = []

    def save(name: str, rgb: np.ndarray) -> str:
        path = img_dir / name
        imsave(path, rgb)
        images.append(path)
        return f"img/{name}"

    error_bar = img_dir / "colorbar_error.png"
    _colorbar(error_bar, ERROR_CMAP, error_max, "absolute error (band mean, reflectance)")
    images.append(error_bar)
    if has_scale:
        conf_bar = img_dir / "colorbar_confidence.png"
        _colorbar(conf_bar, CONFIDENCE_CMAP, 1.0, "confidence (1 = real observation)")
        images.append(conf_bar)

    date_sections = []
    pooled_scale, pooled_error = [], []
    per_date_rho = []
    truth_label = (
        "truth (cloud-free, simulated)"
        if plan.truth_source == "truth variable"
        else "truth: the date's clear pixels, hidden from every method"
    )
    for i, (date, look) in enumerate(looks.items()):
        tag = f"d{i:02d}_{date:%Y-%m-%d}"
        scored = {
            k.split(":", 1)[1]: np.asarray(v, dtype=bool)
            for k, v in look.items()
            if k.startswith("scored:")
        }
        shape = np.asarray(look["error"]).shape
        figs = [
            _figure_html(
                save(f"{tag}_real.png", _rgb(look["real"], lo, hi)), "real image (with its clouds)"
            ),
            _figure_html(
                save(f"{tag}_synth.png", _rgb(look["synth"], lo, hi)), "synthesized by the model"
            ),
            _figure_html(
                save(f"{tag}_filled.png", _rgb(look["filled"], lo, hi)),
                f"filled: unusable pixels replaced, {feather} px feather",
            ),
            _figure_html(save(f"{tag}_truth.png", _rgb(look["truth"], lo, hi)), truth_label),
            _figure_html(
                save(f"{tag}_error.png", _colour_map(look["error"], ERROR_CMAP, error_max)),
                f"|synthesized − truth|, band mean ({ERROR_CMAP}, 0 – {error_max:.3f}; "
                "grey = no truth)",
            ),
        ]
        if "scale" in look:
            scale = np.asarray(look["scale"], dtype="float64")
            confidence = np.exp(-scale / CONFIDENCE_SCALE)
            figs.append(
                _figure_html(
                    save(f"{tag}_confidence.png", _colour_map(confidence, CONFIDENCE_CMAP, 1.0)),
                    f"confidence exp(−b / {CONFIDENCE_SCALE}) from the predicted Laplace scale b "
                    f"({CONFIDENCE_CMAP}, 0 – 1)",
                )
            )
            region = "cloud" if "cloud" in scored and scored["cloud"].any() else "all"
            pick = scored.get(region, np.zeros(shape, bool)) & np.isfinite(scale)
            error = np.asarray(look["error"], dtype="float64")
            pick &= np.isfinite(error)
            pooled_scale.append(scale[pick])
            pooled_error.append(error[pick])
            per_date_rho.append(
                {
                    "date": f"{date:%Y-%m-%d}",
                    "region": region,
                    "pixels": int(pick.sum()),
                    "spearman": _spearman(scale[pick], error[pick]),
                }
            )
        figs.append(
            _figure_html(
                save(f"{tag}_scored.png", _scored_map(scored, shape)),
                "scored pixels: orange = cloud region, light grey = other scored pixels, "
                "dark = not scored (outside the test blocks or without a value)",
            )
        )
        frac = float(plan.fractions.loc[date])
        used = inputs_used.get(date, {})
        ref = used.get("reference_date") or "none"
        date_sections.append(
            f"<h3>{date:%Y-%m-%d}</h3><p class='caption'>{100 * frac:.1f}% unusable; "
            f"S1 from {html.escape(used.get('s1_date', '?'))}, reference {html.escape(ref)}."
            f"</p><div class='grid'>{''.join(figs)}</div>"
        )

    # Confidence check over every date's scored pixels.
    rho = None
    scatter_html = "<p>The model has no confidence head (no Laplace scale): nothing to check.</p>"
    if has_scale:
        x = np.concatenate(pooled_scale) if pooled_scale else np.zeros(0)
        y = np.concatenate(pooled_error) if pooled_error else np.zeros(0)
        if x.size > SCATTER_MAX_POINTS:
            keep = np.random.default_rng(0).choice(x.size, SCATTER_MAX_POINTS, replace=False)
            x, y = x[keep], y[keep]
        rho = _spearman(x, y)
        scatter_path = img_dir / "error_vs_confidence.png"
        _scatter(scatter_path, x, y, rho)
        images.append(scatter_path)
        rho_table = pd.DataFrame(per_date_rho)
        rho_table["spearman"] = [_cell(r, "{:.3f}") for r in rho_table["spearman"]]
        scatter_html = _figure_html(
            "img/error_vs_confidence.png",
            f"Each pixel scored in the cloud region (all pixels where a date has none), "
            f"at quicklook resolution: {x.size} pixels. A useful confidence ranks pixels "
            f"by their error: Spearman ρ = {_cell(rho, '{:.3f}') if rho is not None else 'n/a'}"
            " (1 = perfect ranking, 0 = none). Points on the dashed line have an error "
            "equal to the predicted scale.",
            quick=False,
        ) + _table(rho_table)

    landcover_html = "<p>No land-cover check (no <code>lulc</code> variable, or disabled).</p>"
    lc = table.attrs.get("landcover")
    if lc:
        frame = landcover_frame(lc)
        chart = img_dir / "landcover_f1.png"
        _f1_chart(chart, frame, lc["date"])
        images.append(chart)
        oa = pd.DataFrame(
            {
                "image": list(lc["overall_accuracy"]),
                "overall accuracy": [f"{100 * v:.2f} %" for v in lc["overall_accuracy"].values()],
            }
        )
        landcover_html = (
            f"<p>A random forest learns land cover from the real image of {lc['date']} "
            f"({lc['n_train']} training pixels), then classifies {lc['n_test']} test pixels "
            "(other spatial blocks, inside the scored pixels) of the real image and of each "
            "method's image. The paper reports 93.21 % on the real image and 89.96 % on the "
            "synthesized one.</p>"
            + _table(oa)
            + _figure_html(
                "img/landcover_f1.png",
                "Per-class F1, real vs. each method "
                "(like the paper's figure 5); n = test pixels of the class.",
                quick=False,
            )
        )

    summary, best = _summary(table)
    per_date = table.assign(date=table["date"].dt.strftime("%Y-%m-%d"))
    attrs = table.attrs
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in attrs.get("notes", []))
    setup = (
        f"<ul><li>Truth: {html.escape(attrs['truth'])}.</li>"
        f"<li>Pixels: {html.escape(attrs['split_note'])}.</li>"
        f"<li>Model: {html.escape(attrs['model'])}.</li>"
        f"<li>Dates: {html.escape(', '.join(attrs['dates']))}.</li>"
        f"<li>Regions: {html.escape(', '.join(attrs['regions']))} "
        "(cloud = the date's unusable pixels; all = every scored pixel).</li></ul>"
        + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else "")
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">cloudfill {html.escape(__version__)} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ·
cube {ds.sizes["y"]} × {ds.sizes["x"]} px, {ds.sizes["time"]} S2 dates ·
quicklooks every {step} px</p>
<h2>Setup</h2>{setup}
<h2>Metrics</h2>
<p class="caption">Mean over the evaluated dates; best per region in bold. MAE and RMSE in
reflectance (0–1), PSNR in dB with MAX = 1, SSIM per band (Gaussian window, σ = 1.5) averaged
over bands, SAM in degrees. Every method is scored on the same pixels
(<code>n_pixels</code>, summed over dates).</p>
{_table(summary, best)}
<p class="caption">Per date (also in <a href="metrics.csv">metrics.csv</a>):</p>
{_table(per_date)}
<h2>Quicklooks</h2>
<p class="caption">True colour (B04, B03, B02), one 2–98 % stretch per band for the whole
report; magenta = no data. Error colour bar:</p>
<img src="img/colorbar_error.png" alt="error colour bar">
{
        '<p class="caption">Confidence colour bar:</p><img src="img/colorbar_confidence.png" '
        'alt="confidence colour bar">'
        if has_scale
        else ""
    }
{"".join(date_sections)}
<h2>Land-cover check</h2>{landcover_html}
<h2>Error vs. predicted confidence</h2>{scatter_html}
</body></html>
"""
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    csv = out / "metrics.csv"
    table.to_csv(csv, index=False)
    return Report(index, csv, table, tuple(images), rho)
