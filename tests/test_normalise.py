"""NormStats, normalise / denormalise_s2, scene_stats and the preprocess pipeline."""

from __future__ import annotations

import json

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr

import cloudfill
from cloudfill.errors import BandError, DTypeError, ParameterError
from cloudfill.preprocess import (
    NormStats,
    VariableRange,
    denormalise_s2,
    filter_outliers,
    normalise,
    preprocess,
    scene_stats,
)
from tests.test_outliers import make_cube


def example_stats() -> NormStats:
    return NormStats(
        {
            "s2": VariableRange(
                ("B02", "B03", "B04", "B08"), (0.0, 0.01, 0.1 + 0.2, None), (0.3, 0.4, 0.7, None)
            ),
            "s1": VariableRange(("VV", "VH"), (-25.123456789, -30.0), (5.0, -2.5)),
            "dem": VariableRange(("dem",), (3.3,), (3.3,)),
        },
        s1_units="dB",
    )


def test_round_trip_is_exact_and_json_safe() -> None:
    stats = example_stats()
    data = stats.to_dict()
    assert json.loads(json.dumps(data)) == data  # only JSON types inside
    assert NormStats.from_dict(json.loads(json.dumps(data))) == stats
    assert NormStats.from_json(stats.to_json()) == stats
    assert data["variables"]["s2"]["labels"] == ["B02", "B03", "B04", "B08"]
    assert data["variables"]["s1"]["dim"] == "pol"


@pytest.mark.parametrize(
    "bad",
    [{}, {"format": "cloudfill.NormStats", "version": 99}, {"format": "x", "version": 1}],
)
def test_from_dict_rejects_other_data(bad: dict) -> None:
    with pytest.raises(ParameterError):
        NormStats.from_dict(bad)


def test_malformed_ranges() -> None:
    with pytest.raises(ParameterError):
        VariableRange(("a", "b"), (0.0,), (1.0, 2.0))
    with pytest.raises(ParameterError):
        VariableRange(("a",), (2.0,), (1.0,))
    with pytest.raises(ParameterError):
        NormStats({}, target=(1.0, -1.0))


def test_offset_and_scale() -> None:
    stats = example_stats()
    assert stats.offset("s1") == (-10.0617283945, -16.25)
    assert stats.scale("s1") == (15.0617283945, 13.75)
    assert stats.scale("dem") == (1.0,)  # constant band
    assert stats.offset("s2")[3] == 0.0 and stats.scale("s2")[3] == 1.0  # no-data band


@pytest.mark.parametrize("chunked", [False, True])
def test_normalise_maps_clip_range_onto_minus_one_one(chunked: bool) -> None:
    ds = make_cube()
    ds = ds.chunk({"y": 16}) if chunked else ds
    clipped = filter_outliers(ds)
    stats = scene_stats(clipped)
    out = normalise(clipped, stats)
    for name in ("s1", "s2", "dem"):
        assert out[name].dtype == np.float32
        assert isinstance(out[name].data, da.Array) == chunked
        dim = {"s1": "pol", "s2": "band", "dem": None}[name]
        reduce_dims = [d for d in out[name].dims if d != dim]
        assert np.all(out[name].min(reduce_dims).values == -1.0)
        assert np.all(out[name].max(reduce_dims).values == 1.0)
    assert NormStats.from_json(out.attrs["cloudfill_norm_stats"]) == stats
    back = denormalise_s2(out.s2, stats)
    np.testing.assert_allclose(back.values, clipped.s2.values, atol=1e-6)


def test_scene_stats_reuses_recorded_clip_ranges() -> None:
    clipped = filter_outliers(make_cube().chunk({"y": 16}))

    def refuse(*args, **kwargs):
        raise AssertionError("scene_stats must not compute when clip ranges are recorded")

    with dask.config.set(scheduler=refuse):
        stats = scene_stats(clipped)
    low = [r[0] for r in clipped.s2.attrs["clip_range"]]
    assert list(stats.variables["s2"].low) == low
    assert stats.s1_units == "dB"


def test_bands_matched_by_label_not_position() -> None:
    ds = filter_outliers(make_cube())
    stats = scene_stats(ds)
    reordered = ds.isel(band=[3, 1, 0, 2], pol=[1, 0])
    out = normalise(reordered, stats)
    expected = normalise(ds, stats)
    xr.testing.assert_equal(out.s2.sel(band=list(ds.band.values)), expected.s2)
    xr.testing.assert_equal(out.s1.sel(pol=["VV", "VH"]), expected.s1)


def test_normalise_errors() -> None:
    ds = filter_outliers(make_cube())
    stats = scene_stats(ds)
    only_three = NormStats.from_clip_ranges({"s2": {b: (0.0, 1.0) for b in ("B02", "B03", "B04")}})
    with pytest.raises(BandError, match="'B08'"):
        normalise(ds, only_three)
    linear = ds.assign(s1=ds.s1.assign_attrs(units="linear"))
    with pytest.raises(DTypeError, match="linear"):
        normalise(linear, stats)


def test_preprocess_pipeline_is_lazy_and_chained() -> None:
    ds = make_cube().chunk({"time": 1, "s1_time": 1, "y": 20, "x": 17})
    out = preprocess(ds, size=3, normalise=True)
    assert all(isinstance(out[v].data, da.Array) for v in ("s1", "s2", "dem"))
    assert out.s1.attrs["units"] == "dB" and out.s1.attrs["despeckle"].startswith("median 3x3")
    stats = NormStats.from_json(out.attrs["cloudfill_norm_stats"])
    # s1 was despeckled before its thresholds were taken.
    despeckled = np.stack(
        [
            [ndi.median_filter(ds.s1.values[t, p], 3, mode="reflect") for p in range(2)]
            for t in range(ds.sizes["s1_time"])
        ]
    )
    width = (np.nanmax(despeckled[:, 0]) - np.nanmin(despeckled[:, 0])) / 16384
    exact = np.nanpercentile(despeckled[:, 0], [0.5, 99.5])
    got = (stats.variables["s1"].low[0], stats.variables["s1"].high[0])
    assert np.all(np.abs(np.array(got) - exact) <= width * 1.0001)
    assert float(out.s2.min()) == -1.0 and float(out.s2.max()) == 1.0


def test_preprocess_with_training_stats() -> None:
    train = preprocess(make_cube(seed=1), size=5, normalise=True)
    stats = NormStats.from_json(train.attrs["cloudfill_norm_stats"])
    new = make_cube(seed=2).chunk({"y": 24})

    def refuse(*args, **kwargs):
        raise AssertionError("with stats given nothing may be computed")

    with dask.config.set(scheduler=refuse):
        out = preprocess(new, size=5, stats=stats)
    assert out.s2.attrs["clip_range"] == [
        list(stats.clip_ranges()["s2"][b]) for b in cloudfill.BANDS
    ]
    assert float(out.s2.min()) >= -1.0 and float(out.s2.max()) <= 1.0


def test_accessor_and_exports() -> None:
    ds = make_cube()
    out = ds.cloudfill.preprocess(size=3, variables=["dem"])
    assert "clip_range" in out.dem.attrs and "clip_range" not in out.s2.attrs
    assert cloudfill.NormStats is NormStats and cloudfill.preprocess is preprocess
