"""The pairing rule: S1 date and reference date for each S2 date, and the reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.core.pairs import PairingRule, pairs, reference_candidates
from cloudfill.cube.mask import cloud_mask
from tests.conftest import make_patchy_cube, make_tiny_cube


def _cube_with_fractions(fractions: list[float]) -> xr.Dataset:
    """Tiny cube whose dates have exactly the given cloud fractions (10 x 10 px)."""
    ds = make_tiny_cube(ny=10, nx=10, n_time=len(fractions), n_s1=6)
    cloud = np.zeros((len(fractions), 10, 10), bool)
    for i, f in enumerate(fractions):
        cloud[i].flat[: round(f * 100)] = True
    # S2 every 10 days from 2023-01-01; S1 every 12 days from 2022-12-30.
    return ds.assign(cloud=(("time", "y", "x"), cloud))


def test_pairs_nearest_s1_and_earlier_clear_reference() -> None:
    ds = _cube_with_fractions([0.0, 0.5, 0.03, 1.0])
    table = ds.cloudfill.pairs(PairingRule(max_s1_gap=6, max_ref_age=60))
    assert list(table["cloud_fraction"]) == pytest.approx([0.0, 0.5, 0.03, 1.0])
    # 2023-01-11 -> nearest S1 is 2023-01-11 (2022-12-30 + 12 d); reference 2023-01-01.
    row = table.loc["2023-01-11"]
    assert row.s1_date == pd.Timestamp("2023-01-11") and row.s1_gap_days == 0
    assert row.reference_date == pd.Timestamp("2023-01-01") and row.method == "synthesize"
    # 2023-01-31 -> the 3 %-cloud 2023-01-21 is a usable reference (<= 5 %).
    assert table.loc["2023-01-31"].reference_date == pd.Timestamp("2023-01-21")
    assert table.loc["2023-01-31"].s1_date == pd.Timestamp("2023-02-04")
    assert table.loc["2023-01-01"].method == "clear"
    # The first date has no earlier reference at all.
    assert pd.isna(table.loc["2023-01-01"].reference_date)


def test_pairs_fallback_and_reasons() -> None:
    ds = _cube_with_fractions([0.0, 0.5, 0.4])
    table = ds.cloudfill.pairs(PairingRule(max_s1_gap=0.5))
    row = table.loc["2023-01-21"]
    assert row.method == "interpolate"
    assert "no S1 date within 0.5 days" in row.reason
    no_s1 = ds.drop_vars("s1").cloudfill.pairs()
    assert set(no_s1.method) == {"clear", "interpolate"}
    assert "the cube has no s1" in no_s1.loc["2023-01-11"].reason


def test_pairs_nothing_usable() -> None:
    ds = _cube_with_fractions([1.0, 1.0])
    table = ds.cloudfill.pairs()
    assert list(table.method) == ["none", "none"]
    assert all("no other date has a usable pixel" in r for r in table.reason)


def test_pairs_direction_nearest_uses_later_reference() -> None:
    ds = _cube_with_fractions([0.8, 0.0])
    assert pd.isna(ds.cloudfill.pairs().iloc[0].reference_date)
    nearest = ds.cloudfill.pairs(direction="nearest")
    assert nearest.iloc[0].reference_date == pd.Timestamp("2023-01-11")


def test_pairs_bad_parameters() -> None:
    ds = _cube_with_fractions([0.0, 0.5])
    with pytest.raises(errors.ParameterError, match="direction"):
        ds.cloudfill.pairs(direction="later")
    with pytest.raises(errors.ParameterError, match="max_ref_cloud"):
        ds.cloudfill.pairs(PairingRule(max_ref_cloud=5))
    with pytest.raises(errors.ParameterError, match="max_s1_gap"):
        ds.cloudfill.pairs(PairingRule(max_s1_gap=-1))


def test_pairs_without_reference_need() -> None:
    ds = _cube_with_fractions([0.8, 0.0])
    table = ds.cloudfill.pairs(needs_reference=False)
    assert table.iloc[0].method == "synthesize" and pd.isna(table.iloc[0].reference_date)


def test_reference_candidates_nearest_first_and_filtered() -> None:
    dates = pd.DatetimeIndex(
        ["2024-01-01", "2024-01-21", "2024-02-10", "2024-02-20", "2024-03-01", "2024-07-01"]
    )
    fractions = np.array([0.0, 0.5, 0.0, 1.0, 0.2, 0.0])
    target = pd.Timestamp("2024-02-10")
    got = reference_candidates(dates, fractions, target, pd.Timedelta(days=60))
    # 01-21 and 03-01 are both 20 days away: the earlier first; 02-20 is fully cloudy;
    # 07-01 is too far; the target itself never serves.
    assert got == [pd.Timestamp(d) for d in ("2024-01-21", "2024-03-01", "2024-01-01")]
    earlier = reference_candidates(dates, fractions, target, pd.Timedelta(days=60), "earlier")
    assert earlier == [pd.Timestamp("2024-01-21"), pd.Timestamp("2024-01-01")]


def test_chain_plans_a_long_cloudy_spell(spell_scene: xr.Dataset) -> None:
    plain = spell_scene.cloudfill.pairs(PairingRule(max_ref_age=40))
    assert list(plain["method"]) == ["clear", "synthesize", "interpolate", "interpolate", "clear"]
    assert not plain["reference_chained"].any()
    chained = spell_scene.cloudfill.pairs(PairingRule(max_ref_age=40), chain=True)
    dates = list(spell_scene.indexes["time"])
    assert list(chained["method"]) == ["clear", *["synthesize"] * 3, "clear"]
    # Each date of the spell takes the filled date before it; only those are flagged.
    assert list(chained["reference_date"].iloc[1:4]) == dates[:3]
    assert list(chained["reference_chained"]) == [False, False, True, True, False]
    assert list(chained["chain_source"]) == [False, True, True, True, False]
    assert not plain["chain_source"].any()
    assert (chained["reference_age_days"].iloc[1:4] == 30).all()


def test_pairing_rule_reads_durations_and_refuses_bad_values() -> None:
    assert PairingRule(max_s1_gap="36h", max_ref_age=pd.Timedelta(weeks=2)).to_dict() == {
        "max_s1_gap": 1.5,
        "max_ref_age": 14.0,
        "max_ref_cloud": 0.05,
    }
    assert PairingRule(6, 120, 0.05) == PairingRule()
    # NumPy numbers are days too (pandas would read a bare np.int64 as nanoseconds).
    assert PairingRule(np.int64(6), np.float32(120), np.float64(0.05)) == PairingRule()
    for bad in ({"max_ref_age": "soon"}, {"max_s1_gap": True}, {"max_ref_cloud": -0.1}):
        with pytest.raises(errors.ParameterError):
            PairingRule(**bad)


def _numpy_shares(
    ds: xr.Dataset, table: pd.DataFrame, rule: PairingRule, per_pixel: bool, direction: str
) -> np.ndarray:
    """reference_share recomputed the plain way: the whole mask in memory, date by date."""
    mask = np.asarray(cloud_mask(ds).values)
    dates = pd.DatetimeIndex(ds["time"].values)
    out = np.full(len(dates), np.nan)
    for i, date in enumerate(dates):
        if not mask[i].any() or pd.isna(table["reference_date"].iloc[i]):
            continue
        if per_pixel:
            near = np.abs(dates - date) <= rule.ref_age
            side = dates < date if direction == "earlier" else dates != date
            sources = np.flatnonzero(near & side)
        else:
            sources = [dates.get_loc(table["reference_date"].iloc[i])]
        covered = (~mask[sources]).any(axis=0)
        out[i] = (mask[i] & covered).sum() / mask[i].sum()
    return out


@pytest.mark.parametrize("mode", ["composite", "blend"])
def test_per_pixel_pairing_synthesizes_dates_no_single_date_serves(mode: str) -> None:
    from cloudfill.model.card import REFERENCE_DIRECTIONS

    ds = make_patchy_cube()
    direction = REFERENCE_DIRECTIONS[mode]
    by_date = pairs(ds, direction=direction)
    by_pixel = pairs(ds, direction=direction, per_pixel=True)
    # No date is <= 5 % cloudy (the last is 9.5 %): pairing by date interpolates them all.
    assert list(by_date["method"]) == ["interpolate"] * 4
    assert "no reference date with <= 5% cloud within 120 days" in by_date["reason"].iloc[2]
    assert by_date["reference_share"].isna().all()
    # By pixel: 01-21 (95 % cloudy) has 342 of its 380 cloudy pixels clear on a neighbour
    # (the first two rows are cloudy everywhere); its reference date is the nearest one.
    row = by_pixel.loc["2023-01-21"]
    assert row.method == "synthesize" and row.reference_date == pd.Timestamp("2023-01-11")
    assert row.reference_share == pytest.approx(342 / 380)
    # 01-31's clouds are cloudy on every other date: no pixel has a reference.
    last = by_pixel.loc["2023-01-31"]
    assert last.method == "interpolate" and last.reference_share == 0
    assert last.reason == "no unusable pixel has a clear observation within 120 days"
    assert list(by_pixel["method"]) == ["synthesize"] * 3 + ["interpolate"]
    np.testing.assert_allclose(
        by_pixel["reference_share"], _numpy_shares(ds, by_pixel, PairingRule(), True, direction)
    )


def test_reference_share_counts_nan_s2_as_unusable_and_follows_the_direction() -> None:
    ds = make_patchy_cube()
    s2 = ds["s2"].values.copy()
    s2[0, 2, 15, 5] = np.nan  # 01-01 has no data where only it could serve 01-21 (earlier)
    ds = ds.assign(s2=(ds["s2"].dims, s2))
    rule = PairingRule(max_ref_age=15)
    table = pairs(ds, rule, per_pixel=True)
    # Earlier only and at most 15 days: 01-21 draws on 01-11 alone (rows 2..9 clear there).
    assert table.loc["2023-01-21"].reference_share == pytest.approx(8 * 19 / 380)
    wide = pairs(ds, per_pixel=True)  # 120 days: 01-01 too, but not at its NaN pixel
    assert wide.loc["2023-01-21"].reference_share == pytest.approx(341 / 380)
    assert "within 120 days before" in wide.loc["2023-01-01"].reason
    for per_pixel, direction in [(True, "earlier"), (True, "nearest"), (False, "nearest")]:
        got = pairs(ds, rule, per_pixel=per_pixel, direction=direction)
        want = _numpy_shares(ds, got, rule, per_pixel, direction)
        np.testing.assert_allclose(got["reference_share"], want)


def test_reference_share_by_date_is_the_chosen_dates_cover() -> None:
    ds = _cube_with_fractions([0.0, 0.5, 0.03, 1.0])
    table = ds.cloudfill.pairs()
    # 01-31 (all cloudy) takes the 3 %-cloudy 01-21: 97 of its 100 pixels have a value.
    assert list(table["reference_share"].iloc[1:]) == pytest.approx([1.0, 1.0, 0.97])
    assert np.isnan(table["reference_share"].iloc[0])  # nothing unusable
    no_s1 = ds.drop_vars("s1").cloudfill.pairs()  # no pass over the mask at all
    assert no_s1["reference_share"].isna().all()
    skipped = ds.cloudfill.pairs(shares=False)
    assert skipped["reference_share"].isna().all()
    assert list(skipped["method"]) == list(table["method"])


def test_per_pixel_tables_agree_on_dask_and_numpy() -> None:
    ds = make_tiny_cube(ny=24, nx=20, n_time=6, n_s1=8)  # random clouds, ~30 % per date
    s2 = ds["s2"].values.copy()
    s2[2, 1, :3, :4] = np.nan
    ds = ds.assign(s2=(ds["s2"].dims, s2))
    lazy = ds.chunk({"time": 1, "y": 10, "x": 7})
    for per_pixel in (False, True):
        for direction in ("earlier", "nearest"):
            rule = PairingRule(max_ref_age=25)
            want = pairs(ds, rule, direction=direction, per_pixel=per_pixel)
            got = pairs(lazy, rule, direction=direction, per_pixel=per_pixel)
            pd.testing.assert_frame_equal(got, want)
            np.testing.assert_allclose(
                want["reference_share"], _numpy_shares(ds, want, rule, per_pixel, direction)
            )


def test_s1_only_models_synthesize_every_cloudy_date_with_s1() -> None:
    ds = make_patchy_cube()
    for per_pixel in (False, True):
        table = pairs(ds, needs_reference=False, per_pixel=per_pixel)
        # Even 01-31, whose clouds have no clear observation anywhere, and 01-01 with no
        # earlier date at all: an S/SD model needs S1 only.
        assert list(table["method"]) == ["synthesize"] * 4
    no_s1 = pairs(ds, PairingRule(max_s1_gap=0.5), needs_reference=False)
    assert list(no_s1["method"]) == ["interpolate", "synthesize", "interpolate", "interpolate"]


def test_per_pixel_chain_counts_a_filled_date_as_covering_everything(
    spell_scene: xr.Dataset,
) -> None:
    rule = PairingRule(max_ref_age=40)
    chained = spell_scene.cloudfill.pairs(rule, chain=True, per_pixel=True, direction="nearest")
    # Dates 30 days apart, the middle three fully cloudy: the first of them draws on the
    # clear date before it, the others on the filled date before them (a tie with the clear
    # last date goes to the earlier one).
    assert list(chained["method"]) == ["clear", *["synthesize"] * 3, "clear"]
    assert list(chained["reference_share"].iloc[1:4]) == [1.0, 1.0, 1.0]
    assert list(chained["reference_chained"]) == [False, False, True, True, False]
    plain = spell_scene.cloudfill.pairs(rule, per_pixel=True, direction="nearest")
    assert list(plain["method"]) == ["clear", "synthesize", "interpolate", "synthesize", "clear"]
