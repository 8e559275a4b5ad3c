"""The patch cache: built once, reused, invalidated by what changes samples, atomic, and
a run from it equal to a run from the cube; augmentation on the batch's device; bf16."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from safetensors import safe_open

import cloudfill
from cloudfill.cli import run
from cloudfill.cli.train import _training_run
from cloudfill.errors import OutputError, ParameterError
from cloudfill.training import cache as cache_module
from cloudfill.training.cache import open_patch_cache
from cloudfill.training.cache_key import cache_key
from cloudfill.training.config import (
    NetworkSettings,
    OptimSettings,
    RuntimeSettings,
    Schedule,
    TrainConfig,
)
from cloudfill.training.dataset import PatchDataset
from cloudfill.training.index import PatchIndex, PatchSettings, build_index
from cloudfill.training.run import train
from cloudfill.training.sampler import augment, augment_batch

FRACTIONS = [0.0, 0.3, 0.2, 0.0, 0.4, 0.1]
PATCHES = PatchSettings(32, overlap=0, block_size=32)
SPLITS = ("train", "val", "test")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def cube() -> xr.Dataset:
    return cloudfill.simulate_scene((96, 96), seed=1, cloud_fraction=FRACTIONS)


@pytest.fixture(scope="module")
def index(cube: xr.Dataset) -> PatchIndex:
    return build_index(cube, "SO", PATCHES, despeckle=3)


def _splits(index: PatchIndex, variant: str = "SO") -> list[PatchDataset]:
    return [PatchDataset.from_index(index, s, variant=variant) for s in SPLITS]


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The caches written (counted by wrapping ``write_cache``)."""
    made: list[Path] = []
    original = cache_module.write_cache

    def counted(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(cache_module, "write_cache", counted)
    return made


def config(
    *, steps: int = 4, lr: float = 1e-3, cache: str | None = "off", precision: str = "fp32"
) -> TrainConfig:
    return TrainConfig(
        "SO",
        network=NetworkSettings(base_filters=4, n_blocks=1, d_filters=4),
        optim=OptimSettings(batch_size=4, lr=lr),
        schedule=Schedule(epochs=3, max_steps=steps),
        patches=PATCHES,
        despeckle=3,
        seed=3,
        runtime=RuntimeSettings(patch_cache=cache, precision=precision),
    )


def _state(out: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(out / "last" / "state.safetensors"), framework="pt") as fh:
        return {k: fh.get_tensor(k) for k in fh.keys() if not k.startswith("rng.")}


# --- augmentation ---------------------------------------------------------------------------
def test_batch_augmentation_is_the_sample_augmentation_applied_alike() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((8, 1, 6, 6)).astype(np.float32)
    # Condition, target and mask carry the same picture: they must stay aligned.
    condition = torch.from_numpy(np.repeat(image, 3, axis=1))
    target = torch.from_numpy(np.repeat(image, 4, axis=1))
    valid = torch.from_numpy(image > 0.5)
    codes = list(range(8))  # every transform once
    out = [augment_batch(t, codes) for t in (condition, target, valid)]
    for i, code in enumerate(codes):
        for before, after in zip((condition, target, valid), out, strict=True):
            assert np.array_equal(after[i].numpy(), augment(before[i].numpy(), code))
        assert torch.equal(out[0][i, 0], out[1][i, 3]) and torch.equal(
            out[2][i, 0], out[0][i, 0] > 0.5
        )
    assert not torch.equal(out[0][1], condition[1])  # a transform happened
    assert augment_batch(condition, [0] * 8) is condition


# --- the cache's contents -------------------------------------------------------------------
def test_cached_items_and_batches_equal_the_cube_samples(index: PatchIndex, tmp_path: Path) -> None:
    data = _splits(index)
    cached = open_patch_cache(data, tmp_path)
    assert [c.split for c in cached] == list(SPLITS)
    for source, mine in zip(data, cached, strict=True):
        assert len(mine) == len(source) and mine.augment == source.augment
        source.set_epoch(2)
        mine.set_epoch(2)
        for i in range(len(source)):
            for a, b in zip(source[i], mine[i], strict=True):
                assert a.dtype == b.dtype and torch.equal(a, b)
    train_set, cached_train = data[0], cached[0]
    picks = [5, 0, 7, 3]
    batch = cached_train.batch(picks, torch.device("cpu"))
    for got, want in zip(batch, zip(*(train_set[i] for i in picks), strict=True), strict=True):
        assert torch.equal(got, torch.stack(want))
    # Memory-mapped or read whole: the same values.
    mapped = open_patch_cache(data, tmp_path, in_memory=0)[0]
    assert isinstance(mapped.condition, np.memmap) and not isinstance(
        cached_train.condition, np.memmap
    )
    assert np.array_equal(mapped.condition, cached_train.condition)
    files = sorted(p.name for p in (tmp_path / cached_train.key).iterdir())
    assert files == ["manifest.json"] + [
        f"{s}-{a}.npy" for s in sorted(SPLITS) for a in ("condition", "target", "valid")
    ]


# --- reuse and invalidation -----------------------------------------------------------------
def test_built_once_then_reused(index: PatchIndex, tmp_path: Path, builds: list[Path]) -> None:
    first = open_patch_cache(_splits(index), tmp_path)
    again = open_patch_cache(_splits(index), tmp_path)
    assert len(builds) == 1 and first[0].key == again[0].key
    assert [p.name for p in tmp_path.iterdir()] == [first[0].key]


def test_key_follows_the_cube_and_the_sample_settings(cube: xr.Dataset, index: PatchIndex) -> None:
    key = cache_key(_splits(index))[0]
    assert cache_key(_splits(index))[0] == key
    changed = cube.copy(deep=True)
    changed["s1"][0, 0, 5, 5] = changed["s1"][0, 0, 5, 5] + 1.0
    assert cache_key(_splits(build_index(changed, "SO", PATCHES, despeckle=3)))[0] != key
    for other in (
        build_index(cube, "SO", replace(PATCHES, max_cloud=0.3), despeckle=3),  # fewer samples
        build_index(cube, "SO", PATCHES, despeckle=5),  # other S1 values
        build_index(cube, "SO", PATCHES, despeckle=3, seed=1),  # another split
        build_index(cube, "SO", PATCHES, despeckle=3, reference="composite"),
    ):
        assert cache_key(_splits(other))[0] != key
    assert cache_key(_splits(index, "S"))[0] != key  # other condition channels
    stats = replace(index.stats, target=(-2.0, 2.0))  # another normalisation
    assert cache_key(_splits(replace(index, stats=stats)))[0] != key
    # South of the equator an SODCT model's season planes turn: another cache. Its samples
    # are all the flag changes, so other variants (and every northern cache) keep the key
    # they had before it existed: the description leaves it out.
    south = replace(index, southern=True)
    assert cache_key(_splits(south))[0] == key
    assert "southern" not in json.dumps(cache_key(_splits(index))[1])
    sodct = build_index(cube, "SODCT", PATCHES, despeckle=3, reference="blend")
    north_key = cache_key(_splits(sodct, "SODCT"))[0]
    south_key, south_description = cache_key(_splits(replace(sodct, southern=True), "SODCT"))
    assert south_key != north_key and "southern" in json.dumps(south_description)
    # An in-memory cube's dates (the blend's ages, the season): the same arrays a day later
    later_cube = cube.assign_coords(time=cube.indexes["time"] + pd.Timedelta(days=1))
    later_sodct = build_index(later_cube, "SODCT", PATCHES, despeckle=3, reference="blend")
    assert cache_key(_splits(later_sodct, "SODCT"))[0] != north_key
    # SODCTXHI: the sun of each sample's date and where the cube lies; a mosaic's scene width
    lit = build_index(cube, "SODCTXHI", PATCHES, despeckle=3, reference="blend")
    lit_key = cache_key(_splits(lit, "SODCTXHI"))[0]
    moved = replace(lit, light=replace(lit.light, latitude=-40.0))
    assert cache_key(_splits(moved, "SODCTXHI"))[0] != lit_key
    later = lit.samples.assign(date=pd.DatetimeIndex(lit.samples["date"]) + pd.Timedelta(days=1))
    assert cache_key(_splits(replace(lit, samples=later), "SODCTXHI"))[0] != lit_key
    mosaic = build_index(cube.assign_attrs(mosaic_scene_width=32), "SODCTXHI", PATCHES,
                         despeckle=3, reference="blend")  # fmt: skip
    assert cache_key(_splits(mosaic, "SODCTXHI"))[0] != lit_key


def test_a_rewritten_zarr_cube_is_another_cache(tmp_path: Path) -> None:
    path = tmp_path / "cube.zarr"
    keys = []
    for seed in (1, 2):
        ds = cloudfill.simulate_scene((64, 64), seed=seed, cloud_fraction=FRACTIONS)
        cloudfill.write_cube(ds, path, overwrite=True)
        index = build_index(path, "S", PATCHES, despeckle=3)
        assert index.reader.mode == "zarr"
        keys.append(cache_key(_splits(index, "S"))[0])
    assert keys[0] != keys[1]
    with pytest.raises(OutputError, match="inputs are never written"):
        open_patch_cache(_splits(index, "S"), path / "cache")


def test_training_reuses_the_cache_across_resume_and_learning_rates(
    cube: xr.Dataset, index: PatchIndex, tmp_path: Path, builds: list[Path]
) -> None:
    shared = str(tmp_path / "shared")
    settings = {"index": index, "progress": False}
    train(cube, config(steps=2, cache=shared), tmp_path / "a", **settings)
    train(cube, config(steps=4, cache=shared), tmp_path / "a", resume=True, **settings)
    model = train(cube, config(steps=2, lr=5e-4, cache=shared), tmp_path / "b", **settings)
    assert len(builds) == 1
    assert model.card.training["patch_cache"] == builds[0].name
    # A setting that changes the samples builds another cache next to it.
    other = build_index(cube, "SO", replace(PATCHES, max_cloud=0.3), despeckle=3)
    train(cube, config(steps=1, cache=shared), tmp_path / "c", progress=False, index=other)
    assert len(builds) == 2 and len(list(Path(shared).iterdir())) == 2
    # In the run's own folder ("on"), superseded caches are removed.
    own = tmp_path / "d"
    train(cube, config(steps=1, cache="on"), own, progress=False, index=index)
    (own / "patch-cache" / "0123456789abcdef").mkdir()
    train(cube, config(steps=2, cache="on"), own, resume=True, progress=False, index=index)
    assert [p.name for p in (own / "patch-cache").iterdir()] == [builds[0].name]
    assert len(builds) == 3


def _folder(path: Path, manifest: dict | None = None) -> Path:
    """A folder holding a file of the user's and, given one, a ``manifest.json``."""
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine")
    if manifest is not None:
        (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def test_pruning_removes_only_this_caches_superseded_folders(
    index: PatchIndex, tmp_path: Path
) -> None:
    own = tmp_path / "patch-cache"
    fmt = cache_module.FORMAT
    superseded = _folder(own / "0123456789abcdef", {"format": fmt, "key": "0123456789abcdef"})
    (own / "fedcba9876543210").mkdir()  # empty, named by a key: a husk of a cache
    kept = [
        _folder(own / "results", {"format": fmt, "key": "results"}),  # not named by a key
        _folder(own / "1111111111111111", {"format": "mine", "key": "1111111111111111"}),
        _folder(own / "2222222222222222", {"format": fmt, "key": "3333333333333333"}),
        _folder(own / "4444444444444444", ["not", "a", "manifest"]),
        _folder(own / "data", {"anything": 1}),
    ]
    (own / "empty").mkdir()
    kept.append(own / "empty")
    elsewhere = _folder(tmp_path / "elsewhere", {"format": fmt, "key": "5555555555555555"})
    (own / "5555555555555555").symlink_to(elsewhere)
    kept.append(own / "5555555555555555")
    cached = open_patch_cache(_splits(index), own, prune=True)
    left = sorted(p.name for p in own.iterdir())
    assert left == sorted([cached[0].key, *(p.name for p in kept)])
    assert not superseded.exists() and (elsewhere / "notes.txt").exists()
    assert all((p / "notes.txt").exists() for p in kept if p.name != "empty")


def test_a_folder_named_like_the_key_that_is_no_cache_is_left_alone(
    index: PatchIndex, tmp_path: Path
) -> None:
    key = cache_key(_splits(index))[0]
    mine = _folder(tmp_path / key)
    with pytest.raises(OutputError, match="not one"):
        open_patch_cache(_splits(index), tmp_path)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


# --- atomicity ------------------------------------------------------------------------------
def test_a_failed_build_leaves_no_cache(
    index: PatchIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = PatchDataset.arrays

    def failing(self, i):
        calls.append(i)
        if len(calls) == 5:
            raise RuntimeError("disk full")
        return original(self, i)

    monkeypatch.setattr(PatchDataset, "arrays", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        open_patch_cache(_splits(index), tmp_path)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(PatchDataset, "arrays", original)
    assert len(open_patch_cache(_splits(index), tmp_path)[0]) == index.counts()["train"]


def _build_slowly(index: PatchIndex, folder: Path, ready) -> None:  # runs in a forked child
    original = PatchDataset.arrays
    calls = []

    def slow(self, i):
        calls.append(i)
        if len(calls) == 6:
            ready.set()
            signal.pause()  # killed here, mid-write
        return original(self, i)

    PatchDataset.arrays = slow
    open_patch_cache(_splits(index), folder)


def test_a_killed_build_is_never_read_and_is_cleaned_up(
    index: PatchIndex, tmp_path: Path, builds: list[Path]
) -> None:
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_build_slowly, args=(index, tmp_path, ready))
    child.start()
    try:
        assert ready.wait(60)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    key = cache_key(_splits(index))[0]
    left = [p.name for p in tmp_path.iterdir()]
    assert left == [f".{key}.tmp-{socket.gethostname()}-{child.pid}-" + left[0].rsplit("-", 1)[1]]
    assert not (tmp_path / left[0] / "manifest.json").exists()
    cached = open_patch_cache(_splits(index), tmp_path)
    assert len(builds) == 1 and [p.name for p in tmp_path.iterdir()] == [key]
    source = PatchDataset.from_index(index, "train")
    assert all(
        np.array_equal(a, b) for a, b in zip(source.arrays(3), cached[0].arrays(3), strict=True)
    )


def test_an_incomplete_cache_folder_is_rebuilt(index: PatchIndex, tmp_path: Path) -> None:
    cached = open_patch_cache(_splits(index), tmp_path)[0]
    (tmp_path / cached.key / "val-target.npy").unlink()
    with pytest.warns(UserWarning, match="incomplete"):
        again = open_patch_cache(_splits(index), tmp_path)
    val = PatchDataset.from_index(index, "val")
    assert np.array_equal(again[1].target, np.stack([val.arrays(i)[1] for i in range(len(val))]))
    assert (tmp_path / cached.key / "val-target.npy").exists()


# --- training from the cache ----------------------------------------------------------------
def test_a_run_from_the_cache_equals_a_run_from_the_cube(
    cube: xr.Dataset, index: PatchIndex, tmp_path: Path
) -> None:
    settings = {"index": index, "progress": False}
    # Over an epoch boundary (22 samples, batch 4: 6 steps an epoch).
    cached = train(cube, config(steps=9, cache="on"), tmp_path / "a", **settings)
    plain = train(cube, config(steps=9, cache="off"), tmp_path / "b", **settings)
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [pd.read_csv(tmp_path / run / "metrics.csv").drop(columns="seconds") for run in "ab"]
    pd.testing.assert_frame_equal(history[0], history[1])  # every loss, every validation
    assert len(history[0]) == 3 and history[0]["loss_g"].iloc[1:].notna().all()
    assert cached.card.metrics["test_mae"] == plain.card.metrics["test_mae"]
    assert plain.card.training["patch_cache"] is None
    # Interrupted mid-epoch and resumed from the cache: the same weights again.
    train(cube, config(steps=4, cache="on"), tmp_path / "c", **settings)
    train(cube, config(steps=9, cache="on"), tmp_path / "c", resume=True, **settings)
    c = _state(tmp_path / "c")
    assert all(torch.equal(c[k], b[k]) for k in b)


def test_bf16_autocast_trains(cube: xr.Dataset, index: PatchIndex, tmp_path: Path) -> None:
    fp32 = train(cube, config(steps=2), tmp_path / "a", progress=False, index=index)
    bf16 = train(
        cube, config(steps=2, precision="bf16"), tmp_path / "b", progress=False, index=index
    )
    assert bf16.card.training["precision"] == "bf16" and fp32.card.training["precision"] == "fp32"
    a, b = _state(tmp_path / "a"), _state(tmp_path / "b")  # the last weights, not the best
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("G."))  # other arithmetic
    for key in a:  # ... weights and Adam's moments float32, near the fp32 run's after two steps
        assert b[key].dtype == a[key].dtype
        if key.startswith(("G.", "D.")) and a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=0.05, atol=0.01)
    with pytest.raises(ParameterError, match="precision"):
        RuntimeSettings(precision="fp16")


def test_cli_patch_cache_and_precision(
    cube: xr.Dataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "cube.zarr"
    cloudfill.write_cube(cube, path)
    shared = tmp_path / "cache"
    args = ["train", str(path), "--variant", "S", "--patch-size", "32", "--max-steps", "2"]
    args += ["--base-filters", "4", "--n-blocks", "1", "--no-progress", "--despeckle", "3"]
    args += ["--patch-cache", str(shared), "--precision", "bf16"]
    assert run([*args, "--out", str(tmp_path / "m")]) == 0
    card = cloudfill.load_model(tmp_path / "m" / "best.safetensors").card
    assert card.training["precision"] == "bf16"
    assert [p.name for p in shared.iterdir()] == [card.training["patch_cache"]]
    capsys.readouterr()
    bad = [*args[:-4], "--patch-cache", str(path / "cache"), "--out", str(tmp_path / "n")]
    assert run(bad) == 2
    assert "inputs are never written" in capsys.readouterr().err
    assert run([*args[:-2], "--precision", "fp8", "--out", str(tmp_path / "n")]) == 2
    assert "precision" in capsys.readouterr().err


def test_patch_cache_keywords_are_read_in_any_case(
    cube: xr.Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert [RuntimeSettings(patch_cache=v).patch_cache for v in ("On", "OFF", "Auto")] == [
        "on",
        "off",
        "auto",
    ]
    assert RuntimeSettings(patch_cache="./On").patch_cache == "./On"  # a folder
    path = tmp_path / "cube.zarr"
    cloudfill.write_cube(cube, path)
    monkeypatch.chdir(tmp_path)
    args = ["train", str(path), "--variant", "S", "--patch-size", "32", "--max-steps", "1"]
    args += ["--base-filters", "4", "--n-blocks", "1", "--no-progress", "--despeckle", "3"]
    assert run([*args, "--patch-cache", "On", "--out", "m"]) == 0
    assert cache_module.is_patch_cache(tmp_path / "m" / "patch-cache")
    assert not (tmp_path / "On").exists()


def test_a_users_patch_cache_folder_does_not_make_a_training_run(
    index: PatchIndex, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    _folder(out / "patch-cache" / "0123456789abcdef", {"format": "mine"})
    args = ["train", str(tmp_path / "cube.zarr"), "--out", str(out), "--no-progress"]
    assert run(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "patch-cache" / "0123456789abcdef" / "notes.txt").exists()
    assert not _training_run(out)
    # The cache of a run stopped before its first checkpoint: the run's folder.
    started = tmp_path / "started"
    open_patch_cache(_splits(index), started / "patch-cache")
    assert _training_run(started)


@pytest.mark.gpu
def test_cached_batches_on_the_gpu_equal_the_cpu_ones(index: PatchIndex, tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    device = torch.device("cuda")
    host = open_patch_cache(_splits(index), tmp_path)[0]
    resident = open_patch_cache(_splits(index), tmp_path)[0]
    assert resident.place(device)
    order = list(range(len(host)))[::-1]
    for mine in (host, resident):
        mine.set_epoch(1)
        for got, want in zip(
            mine.batches(order, 4, device), host.batches(order, 4, torch.device("cpu")), strict=True
        ):
            assert all(
                g.device.type == "cuda" and torch.equal(g.cpu(), w)
                for g, w in zip(got, want, strict=True)
            )


def test_prefetching_keeps_order_errors_and_stops_with_the_consumer() -> None:
    from cloudfill.training.cached_patches import _prefetched

    assert list(_prefetched(iter(range(10)))) == list(range(10))
    made = []

    def items():
        for i in range(1000):
            made.append(i)
            yield i

    stream = _prefetched(items())
    assert [next(stream) for _ in range(3)] == [0, 1, 2]
    stream.close()  # the consumer stops early (a step budget): so does the thread
    assert len(made) <= 6

    def failing():
        yield 1
        raise RuntimeError("unreadable cache")

    with pytest.raises(RuntimeError, match="unreadable"):
        list(_prefetched(failing()))
