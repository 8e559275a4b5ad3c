"""``write_report`` and ``cloudfill evaluate``: files, images, references, a real browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.image import imread

import cloudfill
from cloudfill.cli import run
from cloudfill.evaluation import figures
from cloudfill.evaluation.evaluate import COLUMNS, date_case, plan_evaluation
from cloudfill.evaluation.landcover import LandcoverCheck
from cloudfill.evaluation.page import (
    DateSection,
    FigureView,
    Page,
    TableView,
    render_page,
    table_view,
)
from cloudfill.evaluation.report import Report, ReportSettings, write_report
from cloudfill.evaluation.sections import ConfidencePixels
from cloudfill.fill.series import fill_series
from tests.conftest import make_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
QUICKLOOKS = ("real", "synth", "filled", "truth", "error", "confidence", "scored")


@pytest.fixture(scope="module")
def scene64() -> xr.Dataset:
    return cloudfill.simulate_scene((64, 64), seed=1)


@pytest.fixture(scope="module")
def report(scene64: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> Report:
    out = tmp_path_factory.mktemp("report")
    # max_side 32 strides the 64 px scene by 2: quicklooks are 32 x 32.
    return write_report(
        scene64,
        make_tiny_model(scene64),
        out,
        settings=ReportSettings(max_side=32),
        landcover=LandcoverCheck(n_estimators=10, block=16),
    )


def _sources(page: str) -> list[str]:
    return re.findall(r'<img[^>]*\ssrc="([^"]+)"', page)


def test_report_files(report: Report) -> None:
    out = report.index.parent
    assert report.index == out / "index.html" and report.index.is_file()
    table = pd.read_csv(out / "metrics.csv", parse_dates=["date"])
    assert tuple(table.columns) == COLUMNS
    assert len(table) == len(report.metrics)
    np.testing.assert_allclose(table["mae"], report.metrics["mae"], rtol=1e-12)


def test_html_references_every_image(report: Report) -> None:
    out = report.index.parent
    page = report.index.read_text(encoding="utf-8")
    sources = _sources(page)
    assert sources and all(not s.startswith(("/", "http")) for s in sources)
    assert all((out / s).is_file() for s in sources)
    on_disk = {p.relative_to(out).as_posix() for p in (out / "img").glob("*.png")}
    assert on_disk == set(sources)
    assert {p.relative_to(out).as_posix() for p in report.images} == on_disk
    # Self-contained: no script, no external stylesheet, no network address.
    assert "<script" not in page and "<link" not in page and "http" not in page
    for heading in ("Metrics", "Quicklooks", "Land-cover check", "Error vs. predicted confidence"):
        assert f"<h2>{heading}</h2>" in page
    assert "Spearman" in page and 'href="metrics.csv"' in page


def test_images_are_valid_pngs_of_the_expected_size(report: Report) -> None:
    dates = pd.DatetimeIndex(report.metrics["date"].unique())
    img = report.index.parent / "img"
    for i, date in enumerate(dates):
        for kind in QUICKLOOKS:
            data = imread(img / f"d{i:02d}_{date:%Y-%m-%d}_{kind}.png")
            assert data.shape[:2] == (32, 32), kind
            assert data.shape[2] in (3, 4)
            assert np.ptp(data[..., :3]) > 0 or kind == "confidence", kind
    for name in ("landcover_f1.png", "error_vs_confidence.png", "colorbar_error.png"):
        data = imread(img / name)
        assert data.ndim == 3 and min(data.shape[:2]) > 50


def test_spearman_matches_scipy_on_the_plotted_pixels(report: Report, scene64: xr.Dataset) -> None:
    from scipy.stats import spearmanr

    assert report.spearman is not None and -1.0 <= report.spearman <= 1.0
    assert f"{report.spearman:.3f}" in report.index.read_text(encoding="utf-8")
    # The plotted pixels again: each date's cloud region at the quicklooks' stride of 2, the
    # band-mean predicted scale against the band-mean absolute error, pooled over dates.
    plan = plan_evaluation(scene64, make_tiny_model(scene64), landcover=False)
    scale, error = [], []
    for date in pd.DatetimeIndex(report.metrics["date"].unique()):
        case = date_case(plan, date)
        region = case.regions["cloud"].values[::2, ::2]
        scale.append(case.scale.mean("band").values[::2, ::2][region])
        err = abs(case.predictions["model"] - case.truth).mean("band")
        error.append(err.values[::2, ::2][region])
    expected = spearmanr(np.concatenate(scale), np.concatenate(error)).statistic
    assert report.spearman == pytest.approx(expected, abs=1e-12)


def test_spearman_matches_scipy_with_ties_and_nans() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    # Rounded values tie often; NaN in either array drops the pixel, as scipy's "omit".
    scale = rng.gamma(2.0, 0.01, (40, 40)).round(3)
    error = (scale + rng.normal(0, 0.01, scale.shape)).round(2)
    scale[rng.random(scale.shape) < 0.1] = np.nan
    error[rng.random(error.shape) < 0.1] = np.inf
    error[rng.random(error.shape) < 0.1] = np.nan
    scored = rng.random(scale.shape) < 0.8
    pixels = ConfidencePixels()
    pixels.add(pd.Timestamp("2023-01-01"), {"scale": scale, "error": error}, {"all": scored})
    x, y = scale[scored], np.where(np.isinf(error), np.nan, error)[scored]
    expected = spearmanr(x, y, nan_policy="omit").statistic
    (row,) = pixels.per_date
    assert row["region"] == "all" and row["pixels"] == pixels.scale[0].size
    assert row["pixels"] == int((np.isfinite(x) & np.isfinite(y)).sum())
    assert len(np.unique(pixels.scale[0])) < row["pixels"]  # there are ties
    assert row["spearman"] == pytest.approx(expected, abs=1e-12)
    assert figures.spearman(pixels.scale[0], pixels.error[0]) == row["spearman"]
    assert figures.spearman(np.ones(5), np.arange(5.0)) is None
    assert figures.spearman(np.arange(2.0), np.arange(2.0)) is None


def test_filled_quicklook_is_what_fill_series_writes(report: Report, scene64: xr.Dataset) -> None:
    """The filled picture comes from fill_series' own per-date fill (same-date adjustment,
    interpolation where the model has no value, feathered blend), not a re-implementation."""
    dates = pd.DatetimeIndex(report.metrics["date"].unique())
    filled = fill_series(scene64, make_tiny_model(scene64), dates=dates)
    rgb = list(figures.RGB_BANDS)
    truth = scene64["truth"].sel(band=rgb)
    lo, hi = figures.stretch_limits(truth.sel(time=d).values[:, ::2, ::2] for d in dates)
    img = report.index.parent / "img"
    for i, date in enumerate(dates):
        expected = figures.rgb(filled["s2"].sel(time=date, band=rgb).values[:, ::2, ::2], lo, hi)
        png = imread(img / f"d{i:02d}_{date:%Y-%m-%d}_filled.png")
        np.testing.assert_array_equal((png[..., :3] * 255).round().astype(np.uint8), expected)
    page = report.index.read_text(encoding="utf-8")
    assert "8 px feather, same-date adjustment σ chosen per date" in page


def test_page_escapes_every_value() -> None:
    nasty = "<script>alert('x')</script> & co"
    figure = FigureView("img/a.png", nasty)
    page = Page(
        title=nasty,
        version="0",
        generated="now",
        cube_y=1,
        cube_x=1,
        cube_dates=1,
        step=1,
        setup={
            "truth": nasty,
            "split_note": "s",
            "model": "m",
            "dates": [nasty],
            "regions": ["all"],
            "notes": [nasty],
        },
        summary=table_view(pd.DataFrame({"method": [nasty], "mae": [0.5]})),
        per_date=TableView((), ()),
        has_scale=False,
        dates=(DateSection(nasty, "1.0%", nasty, nasty, (figure,)),),
        landcover=None,
        confidence=None,
    )
    html = render_page(page)
    # title, h1, truth, dates, note, table cell, h3, S1 date, reference, alt, caption
    assert "<script" not in html and html.count("&lt;script&gt;alert(&#39;x&#39;)") == 11
    assert "<title>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co</title>" in html


def test_report_settings_are_checked_before_any_work(scene64: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(cloudfill.errors.ParameterError, match="max_side"):
        write_report(scene64, None, tmp_path / "a", settings=ReportSettings(max_side=8))
    with pytest.raises(cloudfill.errors.ParameterError, match="adjust"):
        write_report(scene64, None, tmp_path / "b", settings=ReportSettings(adjust=-1))
    with pytest.raises(cloudfill.errors.ParameterError, match="feather"):
        ReportSettings(feather=-1)
    with pytest.raises(TypeError, match="device"):
        write_report(scene64, None, tmp_path / "c", device="cpu")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_model_without_confidence_head(scene64: xr.Dataset, tmp_path: Path) -> None:
    model = make_tiny_model(scene64, confidence=False)
    date = scene64.time.values[1]
    rep = write_report(
        scene64, model, tmp_path, dates=[date], baselines=["persistence"], landcover=False
    )
    assert rep.spearman is None
    page = rep.index.read_text(encoding="utf-8")
    assert "no confidence head" in page and "confidence.png" not in page
    assert all((tmp_path / s).is_file() for s in _sources(page))


def test_cli_evaluate(scene64: xr.Dataset, tmp_path: Path, capsys) -> None:
    from cloudfill.model import save_model

    cube = tmp_path / "sim.zarr"
    cloudfill.write_cube(scene64, cube)
    model = save_model(make_tiny_model(scene64), None, tmp_path / "model")
    out = tmp_path / "report"
    args = ["evaluate", str(cube), "--model", str(model), "--out", str(out)]
    date = f"{pd.Timestamp(scene64.time.values[1]):%Y-%m-%d}"
    code = run([*args, "--dates", date, "--no-landcover", "--baselines", "persistence"])
    assert code == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "persistence" in text and "model" in text and "index.html" in text
    assert (out / "index.html").is_file() and (out / "metrics.csv").is_file()
    assert run([*args, "--split", "train"]) == 2
    assert "--split" in capsys.readouterr().err
    assert run([*args, "--dates", "2001-01-01"]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
def test_report_renders_in_headless_chromium(report: Report, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1400,3000",
    ]
    subprocess.run(
        [str(CHROMIUM), *flags, report.index.resolve().as_uri()],
        check=True,
        timeout=120,
        capture_output=True,
    )
    image = imread(shot)
    assert image.shape[:2] == (3000, 1400)
    # A rendered page, not a blank one: many distinct colours from the quicklooks.
    colours = np.unique((image[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 1000
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
