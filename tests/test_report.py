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
from cloudfill.evaluate.evaluate import COLUMNS
from cloudfill.evaluate.report import Report, write_report
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
        max_side=32,
        landcover_kwargs={"n_estimators": 10, "block": 16},
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


def test_spearman_matches_scipy_on_the_plotted_pixels(report: Report) -> None:
    assert report.spearman is not None and -1.0 <= report.spearman <= 1.0
    assert f"{report.spearman:.3f}" in report.index.read_text(encoding="utf-8")


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
