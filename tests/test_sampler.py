"""The training sampler: patch grid, spatial split, patches equal to direct cube slices."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import cloudfill
from cloudfill.core.condition import assemble_condition, condition_stack, normalise_bands
from cloudfill.core.grid import SPLITS, patch_grid, split_blocks
from cloudfill.core.pairs import reference_candidates
from cloudfill.cube.mask import cloud_mask
from cloudfill.errors import ModelMismatchError, ParameterError
from cloudfill.training.dataset import PatchDataset, sample_patches
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.sampler import ChunkSampler, augment, augmentation_code

SIZE = 32
PATCHES = PatchSettings(SIZE, 8, block_size=SIZE * 2)
# A varied scene (river, crops, forest, town) with several usable target dates.
FRACTIONS = [0.0, 0.3, 0.2, 0.0, 0.4, 0.1]


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene((128, 128), seed=1, cloud_fraction=FRACTIONS)


@pytest.fixture(scope="module")
def index(cube: xr.Dataset) -> PatchIndex:
    return build_index(cube, "SOD", PATCHES, seed=3)


@pytest.fixture(scope="module")
def zarr_cube(cube: xr.Dataset, tmp_path_factory: pytest.TempPathFactory) -> xr.Dataset:
    path = tmp_path_factory.mktemp("sampler") / "cube.zarr"
    cloudfill.write_cube(cube, path, chunks={"y": 64, "x": 64})
    return cloudfill.open_cube(path)


def test_grid_is_aligned_and_patches_stay_in_their_block() -> None:
    grid = patch_grid((200, 152), 32, 8, block_size=64, chunk_bounds=([128], []), margin=4)
    assert len(grid) > 0
    assert (grid.origins % 4 == 0).all()
    lo = grid.blocks * 64
    # The last block row/col absorbs a remainder narrower than a patch.
    hi_y = np.where(grid.blocks[:, 0] == grid.n_blocks[0] - 1, 200, lo[:, 0] + 64)
    hi_x = np.where(grid.blocks[:, 1] == grid.n_blocks[1] - 1, 152, lo[:, 1] + 64)
    assert (grid.origins >= lo).all()
    assert (grid.origins[:, 0] + 32 <= hi_y).all() and (grid.origins[:, 1] + 32 <= hi_x).all()
    # Patches keep the margin from the internal chunk boundary at y = 128.
    ends = grid.origins[:, 0] + 32
    assert ((ends <= 128 - 4) | (grid.origins[:, 0] >= 128 + 4)).all()


def test_split_blocks_fractions_and_seed() -> None:
    codes = split_blocks((5, 4), (0.8, 0.1, 0.1), seed=7)
    assert [int((codes == k).sum()) for k in range(3)] == [16, 2, 2]
    assert (codes == split_blocks((5, 4), seed=7)).all()
    assert not (codes == split_blocks((5, 4), seed=8)).all()
    with pytest.raises(ParameterError):
        split_blocks((3, 3), (0.5, 0.5, 0.5))


def test_split_has_no_spatial_overlap(index: PatchIndex) -> None:
    footprints = {name: np.zeros(index.reader.shape, bool) for name in SPLITS}
    for row in index.samples.itertuples():
        footprints[row.split][row.y0 : row.y0 + SIZE, row.x0 : row.x0 + SIZE] = True
    assert all(footprints[name].any() for name in SPLITS)
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            assert not (footprints[a] & footprints[b]).any(), (a, b)
    record = index.split_record()
    assert record["samples"] == index.counts()
    assert np.array(record["assignment"]).shape == tuple(record["n_blocks"])
    assert record["seed"] == 3


def test_targets_follow_the_pairing_rule(cube: xr.Dataset, index: PatchIndex) -> None:
    table = cube.cloudfill.pairs()
    for date, rows in index.samples.groupby("date"):
        assert (rows["s1_date"] == table.loc[date, "s1_date"]).all()
        assert (rows["reference_date"] == table.loc[date, "reference_date"]).all()
        assert (rows["cloud_fraction"] < 0.5).all()
    assert index.samples["reference_date"].notna().all()  # SOD targets need a reference


@pytest.mark.parametrize("backend", ["numpy", "dask", "zarr"])
def test_patches_equal_direct_slices(
    cube: xr.Dataset, zarr_cube: xr.Dataset, index: PatchIndex, backend: str
) -> None:
    source = {"numpy": cube, "dask": cube.chunk({"y": 48, "x": 40}), "zarr": zarr_cube}[backend]
    data = build_index(source, "SOD", PATCHES, seed=3, stats=index.stats)
    assert data.reader.mode == backend
    # Same blocks and split whatever the storage; zarr's 64 px chunks coincide with block
    # sides, where patches keep a 4 px margin, so its origins may differ slightly.
    assert data.split_record()["assignment"] == index.split_record()["assignment"]
    if backend != "zarr":
        pd.testing.assert_frame_equal(
            data.samples.drop(columns="group"), index.samples.drop(columns="group")
        )
    dataset = PatchDataset.from_index(data, "train", augment=False)
    despeckled = cube.cloudfill.despeckle(5)  # scene-level filter: the sampler must match it
    mask = cloud_mask(cube).values
    # Border patches (origin 0) and interior ones.
    picks = sorted({0, len(dataset) - 1, *np.flatnonzero(dataset.samples["y0"] == 0)[:2]})
    for i in picks:
        row = dataset.samples.iloc[i]
        win = {"y": slice(row.y0, row.y0 + SIZE), "x": slice(row.x0, row.x0 + SIZE)}
        ref = cube.s2.isel(time=row.ref_t, **win).values
        ref = np.where(mask[row.ref_t, win["y"], win["x"]], np.nan, ref)
        expected = assemble_condition(
            index.stats,
            "SOD",
            s1=despeckled.s1.isel(s1_time=row.s1_t, **win).values,
            s1_units="dB",
            reference=ref,
            dem=cube.dem.isel(**win).values,
        )
        condition, target, valid = dataset[i]
        np.testing.assert_array_equal(condition.numpy(), expected)
        truth_valid = ~mask[row.t, win["y"], win["x"]]
        np.testing.assert_array_equal(valid.numpy()[0], truth_valid)
        image = normalise_bands(cube.s2.isel(time=row.t, **win).values, index.stats, "s2",
                                cloudfill.BANDS, fill=False)  # fmt: skip
        np.testing.assert_array_equal(target.numpy()[:, truth_valid], image[:, truth_valid])
        assert (target.numpy()[:, ~truth_valid] == 0).all()


@pytest.mark.parametrize("mode", ["composite", "blend"])
def test_composite_patches_equal_the_inference_condition(
    cube: xr.Dataset, index: PatchIndex, mode: str
) -> None:
    data = build_index(cube, "SOD", PATCHES, seed=3, stats=index.stats, reference=mode)
    assert data.config["reference"] == mode
    s1_times = pd.DatetimeIndex(cube.s1_time.values)
    dataset = PatchDataset.from_index(data, "train", augment=False)
    despeckled = cube.cloudfill.despeckle(5)
    mask = cloud_mask(cube)
    times = pd.DatetimeIndex(cube.time.values)
    fractions = mask.mean(("y", "x")).values
    differs = False
    for i in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        row = dataset.samples.iloc[i]
        target = times[row.t]
        wanted = reference_candidates(times, fractions, target, pd.Timedelta(days=120))
        assert data.references.candidates[row.t] == tuple(times.get_loc(d) for d in wanted)
        full = condition_stack(
            despeckled,
            target,
            index.stats,
            "SOD",
            s1_date=row.s1_date,
            reference_date=row.reference_date,
            reference_dates=wanted,
            mask=mask,
            reference_s1_dates=(
                [s1_times[np.argmin(np.abs(s1_times - d))] for d in wanted]
                if mode == "blend"
                else None
            ),
        )
        window = full.isel(y=slice(row.y0, row.y0 + SIZE), x=slice(row.x0, row.x0 + SIZE))
        condition = dataset[i][0].numpy()
        np.testing.assert_array_equal(condition, window.values)
        single = PatchDataset.from_index(index, "train", augment=False)
        same = single.samples.index[
            (single.samples["t"] == row.t)
            & (single.samples["y0"] == row.y0)
            & (single.samples["x0"] == row.x0)
        ]
        if len(same):
            differs |= not np.array_equal(single[int(same[0])][0].numpy(), condition)
    assert differs  # the composite is not just the single reference date
    with pytest.raises(ParameterError, match="reference must be one of"):
        build_index(cube, "SOD", PATCHES, reference="mosaic")


def test_augmentation_is_shared_by_condition_target_and_mask(index: PatchIndex) -> None:
    plain = PatchDataset.from_index(index, "train", augment=False)
    augmented = PatchDataset.from_index(index, "train", augment=True)
    augmented.set_epoch(2)
    codes = [augmentation_code(index.seed, 2, i) for i in range(len(augmented))]
    assert len(set(codes)) > 3
    for i in range(min(len(augmented), 12)):
        expected = [augment(a, codes[i]) for a in plain.arrays(i)]
        got = [t.numpy() for t in augmented[i]]
        for e, g in zip(expected, got, strict=True):
            np.testing.assert_array_equal(e, g)
        assert (got[1][:, ~got[2][0]] == 0).all()
    square = np.arange(16).reshape(1, 4, 4)
    images = {augment(square, code).tobytes() for code in range(8)}
    assert len(images) == 8 and (augment(square, 0) == square).all()  # the 8 symmetries
    # Only the training split is augmented by default.
    val, train = PatchDataset.from_index(index, "val"), PatchDataset.from_index(index, "train")
    assert val.augment is False and train.augment is True


def test_chunk_sampler_orders_groups_and_resumes() -> None:
    groups = np.repeat(np.arange(6), 5)
    sampler = ChunkSampler(groups, seed=1, mix=1)
    order = sampler.order()
    assert sorted(order.tolist()) == list(range(30))
    # With mix=1 each group's members are consecutive.
    assert all(len(set(groups[order[i : i + 5]])) == 1 for i in range(0, 30, 5))
    again = ChunkSampler(groups, seed=1, mix=1)
    assert (again.order() == order).all()
    sampler.set_epoch(1)
    assert not (sampler.order() == order).all()
    sampler.set_epoch(1, start=7)
    assert list(sampler) == sampler.order()[7:].tolist() and len(sampler) == 23


def test_dataset_pickles_for_worker_processes(zarr_cube: xr.Dataset) -> None:
    data = sample_patches(zarr_cube, "SD", PATCHES, "val", despeckle=3)
    assert data.reader.mode == "zarr"
    first = data[0]
    clone = pickle.loads(pickle.dumps(data))
    assert clone.reader._cache is None  # nothing decoded travels; the clone reopens the store
    for a, b in zip(first, clone[0], strict=True):
        assert torch.equal(a, b)
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    condition, _target, valid = next(iter(loader))
    assert condition.shape == (2, 3, SIZE, SIZE) and valid.dtype == torch.bool


def test_accessor_binding(cube: xr.Dataset) -> None:
    data = cube.cloudfill.sample_patches(
        "S", PatchSettings(SIZE, overlap=0, block_size=SIZE), split="test"
    )
    assert data.n_channels == 2 and data.split == "test" and len(data) > 0


def test_blend_training_takes_targets_whose_reference_is_per_pixel() -> None:
    from tests.conftest import make_patchy_cube

    cube = make_patchy_cube(32)  # no date is <= 5 % cloudy: no single reference date
    patches = PatchSettings(16, overlap=0, block_size=16)
    with pytest.raises(ModelMismatchError, match="clear reference"):
        build_index(cube, "SO", patches, despeckle=3)
    for mode in ("composite", "blend"):
        index = build_index(cube, "SO", patches, despeckle=3, reference=mode)
        dates = sorted({f"{d:%m-%d}" for d in index.samples["date"]})
        # 01-21 is 97 % cloudy: no patch of it is under max_cloud (50 %).
        assert dates == ["01-01", "01-11", "01-31"]
        first = index.samples[index.samples["date"] == "2023-01-01"]
        assert (first["reference_date"] == pd.Timestamp("2023-01-11")).all()
        assert set(index.references.candidates[0]) == {1, 2, 3}


def test_bad_input_is_reported_before_reading(cube: xr.Dataset, tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="patch size"):
        build_index(cube, "S", PatchSettings(30))
    with pytest.raises(ParameterError, match="larger than the scene"):
        build_index(cube, "S", PatchSettings(256))
    with pytest.raises(ModelMismatchError, match="DEM"):
        build_index(cube.drop_vars("dem"), "SD", PatchSettings(SIZE))
    cloudy = cloudfill.simulate_scene((64, 64), dates=3, seed=1, cloud_fraction=[0.6, 0.5, 0.7])
    with pytest.raises(ModelMismatchError, match="reference"):
        build_index(cloudy, "SOD", PatchSettings(SIZE))
    overcast = cloudfill.simulate_scene((64, 64), dates=2, seed=1, cloud_fraction=1.0)
    with pytest.raises(ParameterError, match="no S2 date can be a training target"):
        build_index(overcast, "S", PatchSettings(SIZE))
    with pytest.raises(ParameterError, match="not an S2 date"):
        build_index(cube, "S", PatchSettings(SIZE), dates=["1999-01-01"])
