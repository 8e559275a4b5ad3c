"""The pairing rule: S1 date and reference date for each S2 date, and the reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from cloudfill import errors
from cloudfill.core.pairs import PairingRule, reference_candidates
from tests.conftest import make_tiny_cube


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
