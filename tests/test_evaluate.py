"""``evaluate``: the tidy table, same pixels for every method, regions, split, land cover."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cloudfill
from cloudfill.core.grid import patch_grid, pixel_splits, split_blocks
from cloudfill.core.temporal import persistence
from cloudfill.errors import ParameterError
from cloudfill.evaluation import scoring
from cloudfill.evaluation.evaluate import (
    COLUMNS,
    LandcoverCheck,
    evaluate,
    landcover_frame,
    split_pixels,
)
from cloudfill.metrics import METRICS, all_metrics
from tests.conftest import make_patchy_cube, make_tiny_model

LANDCOVER = LandcoverCheck(n_estimators=10, block=16)
# Test blocks of 32 px on the 64 x 64 scene: the bottom-right block only.
SPLIT = {
    "method": "spatial blocks",
    "block_size": 32,
    "n_blocks": [2, 2],
    "assignment": [[0, 1], [0, 2]],
    "codes": {"0": "train", "1": "val", "2": "test"},
}


@pytest.fixture(scope="module")
def scene64() -> xr.Dataset:
    # seed 1: several land-cover classes and two dates the model can fill.
    return cloudfill.simulate_scene((64, 64), seed=1)


@pytest.fixture(scope="module")
def model64(scene64: xr.Dataset):
    return make_tiny_model(scene64)


@pytest.fixture(scope="module")
def table(scene64: xr.Dataset, model64) -> pd.DataFrame:
    return evaluate(scene64, model64, landcover=LANDCOVER)


def test_tidy_table(table: pd.DataFrame, scene64: xr.Dataset) -> None:
    assert tuple(table.columns) == COLUMNS
    methods = ["model", "persistence", "interpolation", "regression"]
    assert list(table["method"].unique()) == methods
    assert set(table["region"]) == {"cloud", "all"}
    assert (table["split"] == "all").all()  # the tiny model's card records no split
    dates = pd.DatetimeIndex(table["date"].unique())
    # Default dates of a cube with truth: the cloudy ones the model can fill.
    plan = scene64.cloudfill.pairs()
    assert list(dates) == list(plan.index[plan["method"] == "synthesize"])
    assert len(table) == len(dates) * len(methods) * 2
    assert not table.duplicated(["date", "method", "region"]).any()
    assert table[list(METRICS)].notna().all().all()
    assert table.attrs["truth"] == "truth variable"
    assert "no spatial split" in table.attrs["split_note"]


def test_every_method_scored_on_the_same_pixels(table: pd.DataFrame, scene64) -> None:
    assert (table.groupby(["date", "region"])["n_pixels"].nunique() == 1).all()
    for date, rows in table.groupby("date"):
        n = rows.groupby("region")["n_pixels"].first()
        cloud = int(cloudfill.cloud_mask(scene64).sel(time=date).sum())
        # Every pixel of this scene has an earlier clear value, S1 and truth.
        assert n["all"] == 64 * 64
        assert n["cloud"] == cloud
        cloud_rows = rows[rows.region == "cloud"].set_index("method")
        all_rows = rows[rows.region == "all"].set_index("method")
        assert not np.allclose(cloud_rows["mae"], all_rows["mae"])


def test_values_equal_cloudfill_metrics(scene64: xr.Dataset, model64) -> None:
    date = scene64.cloudfill.pairs().query("method == 'synthesize'").index[0]
    got = evaluate(
        scene64, model64, dates=[date], baselines=["persistence"], landcover=False
    ).set_index(["method", "region"])
    truth = scene64["truth"].sel(time=date).drop_vars("time")
    preds = {
        "model": scene64.cloudfill.synthesize(date, model64).drop_vars("time").compute(),
        "persistence": persistence(scene64, date).drop_vars("time"),
    }
    available = truth.notnull().all("band")
    for pred in preds.values():
        available &= pred.notnull().all("band")
    cloud = cloudfill.cloud_mask(scene64).sel(time=date).drop_vars("time")
    for method, pred in preds.items():
        for region, where in (("cloud", cloud & available), ("all", available)):
            want = all_metrics(pred.where(available), truth.where(available), where)
            row = got.loc[(method, region)]
            for name in METRICS:
                assert row[name] == pytest.approx(want[name], rel=1e-9), (method, region, name)
            assert row["n_pixels"] == int(where.sum())


def test_landcover_results(table: pd.DataFrame) -> None:
    lc = table.attrs["landcover"]
    assert set(lc["overall_accuracy"]) == {
        "real",
        "model",
        "persistence",
        "interpolation",
        "regression",
    }
    assert all(0.0 <= v <= 1.0 for v in lc["overall_accuracy"].values())
    assert lc["n_train"] > 0 and lc["n_test"] > 0
    assert lc["classes"]["1"] == "forest"
    frame = landcover_frame(lc)
    assert {"name", "real", "model", "support"} <= set(frame.columns)
    assert frame["support"].sum() == lc["n_test"]
    # The cloudiest evaluated date (the paper's use case).
    n = table[table.method == "model"].pivot(index="date", columns="region", values="n_pixels")
    assert lc["date"] == f"{(n['cloud'] / n['all']).idxmax():%Y-%m-%d}"


def test_landcover_off_and_without_lulc(scene64: xr.Dataset) -> None:
    kw = {"with_model": False, "baselines": ["persistence"], "dates": [scene64.time.values[2]]}
    assert evaluate(scene64, landcover=False, **kw).attrs["landcover"] is None
    out = evaluate(scene64.drop_vars("lulc"), **kw)
    assert out.attrs["landcover"] is None
    assert any("lulc" in note for note in out.attrs["notes"])


def test_split_restricts_pixels_and_regression_training(
    scene64: xr.Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = make_tiny_model(scene64)
    model.card.split = dict(SPLIT)
    seen = []
    fit = scoring.fit_regression_baseline

    def spy(ds, dates, pixel_mask=None, **kw):
        seen.append((list(dates), pixel_mask))
        return fit(ds, dates, pixel_mask, **kw)

    monkeypatch.setattr(scoring, "fit_regression_baseline", spy)
    date = pd.Timestamp(scene64.time.values[1])
    out = evaluate(scene64, model, dates=[date], landcover=False)
    assert (out["split"] == "test").all()
    test = np.zeros((64, 64), bool)
    test[32:, 32:] = True
    n = out.groupby("region")["n_pixels"].first()
    assert n["all"] == test.sum()
    cloud = cloudfill.cloud_mask(scene64).sel(time=date).values
    assert n["cloud"] == (cloud & test).sum()
    # The regression learns from the training blocks of the other dates only.
    ((dates, pixel_mask),) = seen
    assert date not in dates and len(dates) == scene64.sizes["time"] - 1
    train = np.zeros((64, 64), bool)
    train[:, :32] = True
    np.testing.assert_array_equal(pixel_mask, train)

    full = evaluate(
        scene64, model, dates=[date], split="all", landcover=False, baselines=["persistence"]
    )
    assert (full["split"] == "all").all() and full["n_pixels"].max() == 64 * 64


def test_split_pixels_reads_defensively() -> None:
    sp = split_pixels(SPLIT, (64, 64))
    assert sp.used == "test" and sp.test[40, 40] and not sp.test[10, 40]
    # A remainder narrower than a patch is merged into the last block.
    merged = split_pixels(SPLIT, (70, 64))
    assert merged.used == "test" and merged.test[69, 40]
    for bad, reason in [
        ({}, "no spatial split"),
        ({"method": "random"}, "no usable block description"),
        ({**SPLIT, "assignment": "nope"}, "no usable block description"),
        ({**SPLIT, "n_blocks": [3, 3]}, "n_blocks"),
        ({**SPLIT, "codes": {"0": "train", "1": "val"}}, "no 'test'"),
        ({**SPLIT, "assignment": [[0, 1], [0, 0]]}, "no test block"),
    ]:
        sp = split_pixels(bad, (64, 64))
        assert sp.used == "all" and sp.test is None and reason in sp.note, bad
    other_scene = split_pixels(SPLIT, (200, 64))
    assert other_scene.used == "all" and "do not tile" in other_scene.note
    assert split_pixels(SPLIT, (64, 64), "all").test is None


@pytest.mark.parametrize(
    ("shape", "size", "block"), [((64, 64), 16, 32), ((70, 72), 16, 32), ((100, 90), 32, 32)]
)
def test_split_pixels_are_the_training_grid_blocks(shape, size, block) -> None:
    # Every pixel of a training patch carries its block's code, whether or not the training
    # grid merged a remainder narrower than a patch into the last block.
    grid = patch_grid(shape, size, 0, block_size=block)
    codes = split_blocks(grid.n_blocks, (0.5, 0.0, 0.5), seed=1)
    per_pixel = pixel_splits(shape, block, codes)
    assert per_pixel.shape == shape
    for (y0, x0), (r, c) in zip(grid.origins, grid.blocks, strict=True):
        assert (per_pixel[y0 : y0 + size, x0 : x0 + size] == codes[r, c]).all()
    record = {"block_size": block, "assignment": codes.tolist()}
    sp = split_pixels(record, shape)
    np.testing.assert_array_equal(sp.test, per_pixel == 2)
    np.testing.assert_array_equal(sp.train, per_pixel == 0)


def test_split_pixels_reads_one_block_fewer_as_before() -> None:
    # 96 px hold three whole 32 px blocks; a 2-block assignment (recorded on another scene)
    # puts the last 64 px in its second block, as evaluation always read such a record.
    sp = split_pixels(SPLIT, (96, 64))
    assert sp.used == "test"
    rows, cols = np.minimum(np.arange(96) // 32, 1), np.arange(64) // 32
    codes = np.asarray(SPLIT["assignment"])
    np.testing.assert_array_equal(sp.test, codes[rows][:, cols] == 2)
    assert sp.test[40:, 32:].all() and not sp.test[:32].any()


def test_landcover_check_date(scene64: xr.Dataset) -> None:
    dates = scene64.time.values[1:3]
    kw = {"with_model": False, "baselines": ["persistence"], "dates": dates}
    check = LandcoverCheck(date=str(dates[0])[:10], n_estimators=5, block=16)
    out = evaluate(scene64, landcover=check, **kw)
    assert out.attrs["landcover"]["date"] == str(dates[0])[:10]
    with pytest.raises(ParameterError, match="landcover_date"):
        evaluate(scene64, landcover=LandcoverCheck(date=scene64.time.values[0]), **kw)


def test_hidden_clear_dates_without_truth(scene64: xr.Dataset) -> None:
    real = scene64.drop_vars("truth")
    # This scene's only fully clear date is the first, which has nothing before it.
    out = evaluate(real, with_model=False, max_cloud=0.2, landcover=LANDCOVER)
    assert out.attrs["truth"] == "hidden clear dates"
    assert set(out["region"]) == {"all"}
    fractions = cloudfill.cloud_mask(real).mean(("y", "x")).to_series()
    for date, rows in out.groupby("date"):
        assert fractions.loc[date] <= 0.2 and date != real.time.values[0]
        clear = int((~cloudfill.cloud_mask(real).sel(time=date)).sum())
        assert rows["n_pixels"].iloc[0] == clear
    assert out.attrs["landcover"]["overall_accuracy"]["real"] > 0.5


def test_lazy_cube_gives_the_same_table(scene64: xr.Dataset) -> None:
    kw = {
        "with_model": False,
        "landcover": False,
        "dates": [scene64.time.values[1]],
        "baselines": ["persistence", "interpolation"],
    }
    eager = evaluate(scene64, **kw)
    lazy = evaluate(scene64.chunk({"time": 1, "y": 40, "x": 24}), **kw)
    pd.testing.assert_frame_equal(eager, lazy, check_exact=False, rtol=1e-9)


def test_accessor_returns_the_table(scene64: xr.Dataset) -> None:
    out = scene64.cloudfill.evaluate(
        with_model=False, baselines=["persistence"], landcover=False, mask="cloud"
    )
    assert isinstance(out, pd.DataFrame) and set(out["region"]) == {"cloud"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split": "train"}, "split must be"),
        ({"mask": "clouds"}, "mask must be"),
        ({"baselines": ["kriging"]}, "unknown baseline"),
        ({"dates": ["2001-01-01"]}, "not an S2 date"),
        ({"baselines": []}, "nothing to evaluate"),
    ],
)
def test_bad_arguments(scene64: xr.Dataset, kwargs: dict, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        evaluate(scene64, with_model=False, landcover=False, **kwargs)


def test_default_dates_of_a_blend_model_pair_by_pixel() -> None:
    from cloudfill.core.pairs import PairingRule, cloud_fractions
    from cloudfill.evaluation.plan import _default_dates

    ds = make_patchy_cube(32)  # no date is <= 5 % cloudy
    fractions = cloud_fractions(ds)

    def dates(model) -> list[str]:
        chosen = _default_dates(ds, model, True, fractions, 0.05, PairingRule())
        return [f"{d:%m-%d}" for d in chosen]

    with pytest.raises(ParameterError, match="reference"):
        dates(make_tiny_model(ds, "SO"))
    # Every cloudy date after the first (persistence needs an earlier date) has a reference.
    assert dates(make_tiny_model(ds, "SO", reference_mode="blend")) == ["01-11", "01-21", "01-31"]
