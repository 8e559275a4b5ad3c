"""The change-aware variant (SODC): each side's reference, S1, age and flag as channels, built
by one function for training patches and inference, and a model that trains and fills."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import cloudfill
from cloudfill.core.condition import AGE_SCALE_DAYS, condition_stack, side_channels
from cloudfill.core.pairs import reference_candidates
from cloudfill.core.reference import _nearest_side, blend_reference, blend_with_sides
from cloudfill.core.season import centre_latitude, season_channels, southern_hemisphere
from cloudfill.core.variants import ALL_CHANNELS, SEASON_CHANNELS, SIDE_CHANNELS, get_variant
from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.training import TrainConfig
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.index import PatchSettings, build_index

SIZE = 32
PATCHES = PatchSettings(SIZE, 8, block_size=SIZE * 2)


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene(
        (96, 96), dates=8, seed=4, surface_change=0.4,
        cloud_fraction=[0.0, 0.3, 0.5, 0.1, 0.6, 0.2, 0.4, 0.0],
    )  # fmt: skip


def _sides_inputs(rng: np.random.Generator):
    shape = (4, 6, 5)
    images = [rng.uniform(0, 0.5, shape).astype("float32") for _ in range(4)]
    unusable = [rng.random(shape[1:]) < 0.4 for _ in range(4)]
    radar = [rng.normal(-12, 3, (2, *shape[1:])).astype("float32") for _ in range(4)]
    radar[3] = None  # a candidate without S1 near it
    target = rng.normal(-12, 3, (2, *shape[1:])).astype("float32")
    return images, unusable, [-30.0, -10.0, 12.0, 40.0], radar, target


def test_channels_and_variant() -> None:
    spec = get_variant("sodc")
    assert spec.channels == (*ALL_CHANNELS, *SIDE_CHANNELS)
    assert spec.uses_reference and spec.uses_dem and spec.uses_sides
    assert not get_variant("SOD").uses_sides
    assert len(SIDE_CHANNELS) == 16 and SIDE_CHANNELS[6:8] == ("before_age", "before_valid")


def test_blend_with_sides_is_the_blend_and_its_nearest_sides() -> None:
    rng = np.random.default_rng(0)
    images, unusable, offsets, radar, target = _sides_inputs(rng)
    blend, (before, after) = blend_with_sides(images, unusable, offsets, radar, target)
    np.testing.assert_array_equal(blend, blend_reference(images, unusable, offsets, radar, target))
    nan = target * np.float32(np.nan)
    filled = [nan if r is None else r for r in radar]
    for side, order in ((before, [1, 0]), (after, [2, 3])):
        value, age, s1 = _nearest_side(images, unusable, filled, [abs(o) for o in offsets], order)
        np.testing.assert_array_equal(side.value, value)
        np.testing.assert_array_equal(side.age, age)
        np.testing.assert_array_equal(side.radar, s1)
    # Where the nearest clear "after" value is the one without S1, its radar is NaN.
    only_far = unusable[2] & ~unusable[3]
    assert only_far.any() and np.isnan(after.radar[:, only_far]).all()
    # One side only: the blend is that side, the other is None.
    blend, (none, after) = blend_with_sides(images[2:], unusable[2:], offsets[2:], radar[2:],
                                            target)  # fmt: skip
    assert none is None
    np.testing.assert_array_equal(blend, after.value)


def test_side_channels_numpy_and_dask_agree(cube: xr.Dataset) -> None:
    from cloudfill.preprocess.normalise import scene_stats

    stats = scene_stats(cube)
    rng = np.random.default_rng(1)
    images, unusable, offsets, radar, target = _sides_inputs(rng)
    _, sides = blend_with_sides(images, unusable, offsets, radar, target)
    out = side_channels(sides, stats, target[0])
    assert out.shape == (16, 6, 5) and out.dtype == np.float32 and np.isfinite(out).all()
    before = sides[0]
    valid = np.isfinite(before.age)
    np.testing.assert_array_equal(out[7], valid.astype("float32"))
    np.testing.assert_allclose(out[6][valid], before.age[valid] / AGE_SCALE_DAYS, rtol=1e-6)
    assert (out[:7, ~valid] == 0).all()
    lazy = [da.from_array(a, chunks=3) for a in images]
    lazy_radar = [None if r is None else da.from_array(r, chunks=3) for r in radar]
    _, lazy_sides = blend_with_sides(lazy, unusable, offsets, lazy_radar, da.from_array(target))
    lazy_out = side_channels(lazy_sides, stats, da.from_array(target[0], chunks=3))
    assert isinstance(lazy_out, da.Array)
    np.testing.assert_array_equal(lazy_out.compute(), out)


@pytest.mark.parametrize(
    ("variant", "crs"), [("SODC", None), ("SODCT", None), ("SODCT", "EPSG:32745")]
)
def test_training_patches_equal_the_inference_condition(
    cube: xr.Dataset, variant: str, crs: str | None
) -> None:
    """The sampler's SODC (SODCT) condition is, window for window, the inference stack's;
    south of the equator (UTM 45S) both turn the season by half a year."""
    if crs is not None:
        cube = cube.rio.write_crs(crs)
    data = build_index(cube, variant, PATCHES, seed=3, reference="blend")
    assert data.southern is (crs is not None)
    dataset = PatchDataset.from_index(data, "train", augment=False)
    despeckled = cube.cloudfill.despeckle(5)
    mask = cloud_mask(cube)
    times = pd.DatetimeIndex(cube.time.values)
    s1_times = pd.DatetimeIndex(cube.s1_time.values)
    fractions = mask.mean(("y", "x")).values
    checked = 0
    for i in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        row = dataset.samples.iloc[i]
        wanted = reference_candidates(times, fractions, times[row.t], pd.Timedelta(days=120))
        full = condition_stack(
            despeckled,
            times[row.t],
            data.stats,
            variant,
            s1_date=row.s1_date,
            reference_date=row.reference_date,
            reference_dates=wanted,
            mask=mask,
            reference_s1_dates=[s1_times[np.argmin(np.abs(s1_times - d))] for d in wanted],
        )
        assert list(full.channel.values) == list(get_variant(variant).channels)
        window = full.isel(y=slice(row.y0, row.y0 + SIZE), x=slice(row.x0, row.x0 + SIZE))
        np.testing.assert_array_equal(dataset[i][0].numpy(), window.values)
        if variant == "SODCT":
            north = season_channels(times[row.t], np.zeros((1, 1), "float32"))[:, 0, 0]
            season = window.sel(channel=list(SEASON_CHANNELS)).values[:, 0, 0]
            np.testing.assert_allclose(season, -north if crs else north, atol=1e-6)
        checked += 1
    assert checked >= 2
    with pytest.raises(ModelMismatchError, match="needs the blend"):
        condition_stack(despeckled, times[3], data.stats, variant, s1_date=row.s1_date,
                        reference_date=times[0])  # fmt: skip


def test_season_channels_are_the_targets_time_of_year() -> None:
    spec = get_variant("sodct")
    assert spec.channels == (*ALL_CHANNELS, *SIDE_CHANNELS, *SEASON_CHANNELS)
    assert spec.uses_season and spec.uses_sides and not get_variant("SODC").uses_season
    like = np.zeros((3, 4), "float32")
    # Day 1, about a quarter year later, and the last day of a leap year: angles 2 pi d/365.25.
    for date, day in [("2023-01-01", 1), ("2023-04-02", 92), ("2024-12-31", 366)]:
        x = season_channels(date, like)
        angle = 2 * np.pi * day / 365.25
        np.testing.assert_allclose(x[:, 0, 0], [np.sin(angle), np.cos(angle)], atol=1e-6)
        assert x.shape == (2, 3, 4) and x.dtype == np.float32 and np.ptp(x, axis=(1, 2)).max() == 0
    # Same date, other year: the same values (a season, not a time line).
    np.testing.assert_array_equal(season_channels("2023-06-01", like)[:, 0, 0],
                                  season_channels("2022-06-01", like)[:, 0, 0])  # fmt: skip
    # Lazy arrays stay lazy.
    lazy = season_channels("2023-06-01", da.zeros((3, 4), chunks=2, dtype="float32"))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(), season_channels("2023-06-01", like))


def test_the_season_of_the_southern_hemisphere_is_half_a_year_later() -> None:
    like = np.zeros((2, 2), "float32")
    for date in ("2023-01-15", "2023-07-15", "2024-10-01"):
        north, south = season_channels(date, like), season_channels(date, like, southern=True)
        np.testing.assert_allclose(south, -north, atol=1e-6)
    # January in the south is (within a day or two) July in the north.
    np.testing.assert_allclose(season_channels("2023-01-15", like, southern=True),
                               season_channels("2023-07-16", like), atol=0.02)  # fmt: skip


@pytest.mark.parametrize(
    ("crs", "x", "y", "lat"),
    [
        ("EPSG:32645", 300000.0, 3100000.0, 28.01),  # UTM 45N: the simulated scenes
        ("EPSG:32721", 500000.0, 6100000.0, -35.24),  # UTM 21S: the Pampas
        ("EPSG:4326", -60.0, -35.0, -35.0),
        ("EPSG:3035", 4321000.0, 3210000.0, 52.0),  # LAEA Europe (origin 52 N, 10 E)
    ],
)
def test_centre_latitude_from_the_grid(crs: str, x: float, y: float, lat: float) -> None:
    step = 0.001 if crs == "EPSG:4326" else 10.0
    ds = xr.Dataset(coords={"x": x + step * np.arange(-2, 3), "y": y - step * np.arange(-2, 3)})
    ds = ds.rio.write_crs(crs)
    assert centre_latitude(ds) == pytest.approx(lat, abs=0.01)
    assert southern_hemisphere(ds) is (lat < 0)
    # No CRS: unknown, taken as northern (the training scenes' hemisphere).
    plain = ds.drop_vars("spatial_ref")
    assert centre_latitude(plain) is None and southern_hemisphere(plain) is False


def test_a_local_crs_has_no_latitude_and_still_trains() -> None:
    """A local engineering CRS (no way to the globe) is an unknown latitude, northern: the
    index builds, for a season variant too, instead of failing in pyproj."""
    ds = cloudfill.simulate_scene((64, 64), dates=4, seed=2)
    ds = ds.rio.write_crs('LOCAL_CS["arbitrary",UNIT["metre",1]]')
    assert centre_latitude(ds) is None
    index = build_index(ds, "SODCT", PatchSettings(32, overlap=0, block_size=32),
                        reference="blend", despeckle=3)  # fmt: skip
    assert index.southern is False
    # Far outside UTM 45S's domain the projection gives no finite latitude: unknown too.
    far = ds.rio.write_crs("EPSG:32745").assign_coords(x=ds.x + 5e7)
    assert centre_latitude(far) is None and southern_hemisphere(far) is False


def test_the_training_record_says_which_seasons_and_a_resume_keeps_them(
    cube: xr.Dataset,
) -> None:
    from cloudfill.training.record import check_resumable, training_record

    config = TrainConfig("SODCT", patches=PATCHES, reference="blend")
    north = build_index(cube, "SODCT", PATCHES, reference="blend")
    south = build_index(cube.rio.write_crs("EPSG:32745"), "SODCT", PATCHES, reference="blend")
    record = training_record(config, north)
    assert record["season"] == "northern"
    assert training_record(config, south)["season"] == "southern"
    sodc = TrainConfig("SODC", patches=PATCHES, reference="blend")
    assert "season" not in training_record(sodc, build_index(cube, "SODC", PATCHES,
                                                             reference="blend"))  # fmt: skip
    # A record saved before the flag existed had northern planes everywhere: a northern run
    # goes on, a southern one (its planes would turn mid-run) is refused.
    before = {k: v for k, v in record.items() if k != "season"}
    check_resumable(before, record)
    with pytest.raises(ParameterError, match="season='northern' but season='southern'"):
        check_resumable(before, training_record(config, south))


def test_a_southern_cube_turns_the_season_in_the_fill_too(cube: xr.Dataset) -> None:
    """``synthesize`` of the shipped model (SODCTXH) on the same scene declared south of the
    equator: its condition's season planes change sign, nothing else."""
    from cloudfill.core.pairs import PairingRule
    from cloudfill.infer.inputs import synthesis_inputs

    model = cloudfill.default_model()
    date = pd.Timestamp(cube.time.values[4])
    north = synthesis_inputs(cube, date, model, PairingRule()).condition
    south = synthesis_inputs(cube.rio.write_crs("EPSG:32745"), date, model,
                             PairingRule()).condition  # fmt: skip
    season = list(SEASON_CHANNELS)
    np.testing.assert_allclose(south.sel(channel=season).values,
                               -north.sel(channel=season).values, atol=1e-6)  # fmt: skip
    others = [c for c in north.channel.values if c not in season]
    np.testing.assert_array_equal(south.sel(channel=others).values,
                                  north.sel(channel=others).values)  # fmt: skip


def test_needs_the_blend_reference() -> None:
    with pytest.raises(ParameterError, match="reference='blend'"):
        TrainConfig("SODC")
    with pytest.raises(ParameterError, match="reference='blend'"):
        TrainConfig("SODC", reference="composite")
    assert TrainConfig("SODC", reference="blend").variant == "SODC"


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("variant", ["SODC", "SODCT"])
def test_trains_and_fills(cube: xr.Dataset, tmp_path, variant: str) -> None:
    from cloudfill.training.config import NetworkSettings, OptimSettings, Schedule

    config = TrainConfig(
        variant,
        network=NetworkSettings(base_filters=8, n_blocks=1, d_filters=8),
        optim=OptimSettings(lr=2e-4),
        schedule=Schedule(epochs=1, max_steps=3),
        patches=PATCHES,
        reference="blend",
    )
    model = cloudfill.train(cube, config, tmp_path / "run")
    assert model.variant.name == variant and model.card.reference_mode == "blend"
    assert model.card.input_channels == list(get_variant(variant).channels)
    out = cube.cloudfill.fill_series(model=model)
    synthesized = out.method.values == "synthesize"
    assert synthesized.any()
    values = out.s2.isel(time=np.flatnonzero(synthesized)).values
    filled = out.filled.isel(time=np.flatnonzero(synthesized)).values
    assert np.isfinite(values.transpose(1, 0, 2, 3)[:, filled]).all()


@pytest.mark.parametrize("variant", ["SODC", "SODCT"])
def test_missing_s1_pixels_stay_local(variant: str) -> None:
    """S1 with no data in a corner (a swath edge): the zero planes of a missing side and the
    season planes stay zero there, so every condition is finite (a NaN plane would spread
    through the convolutions over the whole tile), and only the corner goes unsynthesized."""
    import torch

    from cloudfill.infer.synthesize import synthesize

    ds = cloudfill.simulate_scene((96, 96), seed=0)
    ds["s1"].values[:, :, :10, :10] = np.nan
    index = build_index(ds, variant, PatchSettings(32, overlap=0, block_size=32), seed=3,
                        reference="blend", despeckle=3)  # fmt: skip
    data = PatchDataset.from_index(index, "train", augment=False)
    assert len(data) and all(torch.isfinite(data[i][0]).all() for i in range(len(data)))
    if variant == "SODCT":  # and the shipped model (SODCTXH, a season variant too)
        out = synthesize(ds, ds.time.values[3], cloudfill.default_model()).values
        missing = np.isnan(out).any(0)
        assert missing[:10, :10].all() and missing.sum() == 100
