"""Where the chunks live (``cloudfill._device``): placed once from the inference device, kept
there through the fill, back on the host only to be written.

On the CPU a stand-in for CuPy chunks (:class:`tests.conftest.StrictChunk`, which refuses
NumPy operands as CuPy does) is put under the ``"cpu"`` device kind, so torch stays on the
CPU while the whole job runs from a zarr store on disk with placed chunks. The ``gpu`` tests
run the same on CuPy chunks and a CUDA device.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import pytest
import xarray as xr

import cloudfill
from cloudfill import _device
from cloudfill._device import PLACEMENTS, on_host, place, placement_kind
from cloudfill.core.pairs import PairingRule
from cloudfill.errors import ParameterError
from cloudfill.fill.job import FillSettings, fill_to_zarr
from cloudfill.fill.series import fill_series
from cloudfill.fill.writer import DateWriter
from cloudfill.infer.settings import InferenceSettings
from cloudfill.infer.synthesize import synthesize
from tests.conftest import StrictChunk, make_tiny_model

CHUNKS = {"time": 1, "s1_time": 1, "y": 48, "x": 48}
OUTPUTS = (
    "s2", "filled", "confidence", "error_scale", "adjust_sigma", "method", "s1_date",
    "reference_date", "unfilled",
)  # fmt: skip
HAS_CUPY = importlib.util.find_spec("cupy") is not None
NO_GPU = not __import__("torch").cuda.is_available()


def to_strict(block: Any) -> StrictChunk:
    return np.asarray(block).view(StrictChunk)


@pytest.fixture
def strict_device(monkeypatch: pytest.MonkeyPatch) -> str:
    """The ``"cpu"`` device, placing chunks as :class:`StrictChunk` (torch stays on the CPU)."""
    monkeypatch.setitem(PLACEMENTS, "cpu", lambda device: to_strict)
    return "cpu"


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64x64, 4-date scene (2 dates synthesized) in a zarr store on disk, in 32 px chunks,
    and a tiny model file."""
    tmp = tmp_path_factory.mktemp("device")
    ds = cloudfill.simulate_scene((64, 64), dates=4, seed=4, cloud_fraction=[0, 0.5, 1, 0])
    cube = cloudfill.write_cube(ds, tmp / "cube.zarr", chunks={"y": 32, "x": 32})
    model = make_tiny_model(ds).save(tmp / "model.safetensors")
    return {"tmp": tmp, "cube": cube, "model": model}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs in 32 px zarr chunks, so that a date of :func:`stored` is written in windows."""
    from cloudfill.cube import zarr_io

    monkeypatch.setitem(zarr_io.DEFAULT_WRITE_CHUNKS, "y", 32)
    monkeypatch.setitem(zarr_io.DEFAULT_WRITE_CHUNKS, "x", 32)


def _settings(device: str, chain: bool = False) -> FillSettings:
    # 32 px blocks and windows: each synthesized date is written in 4 windows, so it goes
    # through the scratch store (the adjustment reads across window edges).
    return FillSettings(
        chain=chain,
        rule=PairingRule(max_ref_age=400),
        inference=InferenceSettings(tile=32, min_block=0, device=device),
        window=32,
    )


def _record_written_chunk_types(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, type]]:
    """The chunk type (dask ``_meta``) of each variable handed to the writer, per date."""
    seen: list[dict[str, type]] = []
    write = DateWriter.write

    def recording(self: DateWriter, part: xr.Dataset, *args: Any, **kwargs: Any) -> None:
        seen.append({n: type(v.data._meta) for n, v in part.data_vars.items() if v.chunks})
        write(self, part, *args, **kwargs)

    monkeypatch.setattr(DateWriter, "write", recording)
    return seen


def _assert_same(path: Path, reference: Path, atol: float = 0.0) -> None:
    a = cloudfill.open_cube(path, chunks=None)
    b = cloudfill.open_cube(reference, chunks=None)
    for name in OUTPUTS:
        if atol and name in ("s2", "confidence"):
            np.testing.assert_allclose(a[name].values, b[name].values, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


# --- the decision --------------------------------------------------------------------------


def test_cpu_leaves_the_cube_itself(scene: xr.Dataset) -> None:
    lazy = scene.chunk(CHUNKS)
    assert place(scene, "cpu") is scene and place(lazy, "cpu") is lazy
    s2 = lazy["s2"]
    assert place(s2, "cpu") is s2


def test_device_kinds() -> None:
    assert [placement_kind(d) for d in ("cpu", "cuda", "cuda:1", " CUDA ")] == [
        "cpu",
        "cuda",
        "cuda",
        "cuda",
    ]
    if not HAS_CUPY:  # "auto" never asks for what is not installed
        assert placement_kind("auto") == "cpu"


def test_placement_moves_numeric_chunks_once(scene: xr.Dataset, strict_device: str) -> None:
    cube = scene.assign(label=("time", np.array(["a"] * scene.sizes["time"])))
    placed = place(cube, strict_device)
    for name in ("s2", "s1", "dem", "cloud", "truth"):
        if name in placed:
            assert type(placed[name].data._meta) is StrictChunk, name
            np.testing.assert_array_equal(placed[name].values, scene[name].values)
    assert placed["label"].dtype.kind == "U" and not isinstance(placed["label"].data, da.Array)
    again = place(placed, strict_device)  # nothing moves twice
    assert all(again[n].data is placed[n].data for n in placed.data_vars)
    s2 = placed["s2"]
    assert on_host(s2) is s2  # only CuPy goes back to the host


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed")
def test_gpu_without_cupy_keeps_chunks_on_the_host_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Torch has a GPU but the gpu extra is missing: inference alone runs there, as before."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ds = xr.Dataset({"dem": (("y", "x"), np.zeros((2, 2), "float32"))})
    with pytest.warns(RuntimeWarning, match=r"only inference runs on the GPU"):
        assert place(ds, "cuda") is ds


@pytest.mark.skipif(HAS_CUPY or NO_GPU is False, reason="CuPy is installed or torch has a GPU")
def test_cuda_without_a_gpu_names_the_gpu_extra_before_any_work(
    stored: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudfill.fill.job as job_module

    def no_work(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("work began")

    monkeypatch.setattr(job_module, "prepare_fill", no_work)
    ds = cloudfill.open_cube(stored["cube"])
    for call in (
        lambda: fill_series(ds, stored["model"], inference=InferenceSettings(device="cuda")),
        lambda: synthesize(ds, ds.time.values[1], inference=InferenceSettings(device="cuda")),
        lambda: fill_to_zarr(stored["cube"], tmp_path / "out.zarr", settings=_settings("cuda")),
    ):
        with pytest.raises(ParameterError, match=r"pip install 'cloudfill\[gpu\]'"):
            call()
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.skipif(HAS_CUPY or NO_GPU is False, reason="CuPy is installed or torch has a GPU")
def test_cli_device_cuda_without_cupy_exits_2(
    stored: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from cloudfill.cli import run
    from tests.conftest import fill_series_argv

    argv = fill_series_argv(
        stored["cube"], stored["model"], tmp_path / "o.zarr", "--device", "cuda"
    )
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert "cloudfill[gpu]" in err and "Traceback" not in err


# --- the CPU stand-in: a whole job on placed chunks ---------------------------------------


@pytest.mark.slow  # two jobs of 25 s each on 2 busy cores; .ci/run runs the slow tests too
@pytest.mark.parametrize("chain", [False, True], ids=["windows+scratch", "chain"])
def test_fill_to_zarr_keeps_placed_chunks_until_written(
    stored: dict[str, Path],
    windows: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chain: bool,
) -> None:
    """From a zarr store on disk: every date reaches the writer in placed chunks (the cube's,
    the scratch synthesis read back, with ``chain`` the earlier dates read back from the
    output), no NumPy operand is refused, and the bytes equal the CPU path's. Without the
    placement of the scratch copy its dates reach the writer in NumPy chunks; without that
    of the written dates the chained date refuses a NumPy operand."""
    reference = tmp_path / "reference.zarr"
    fill_to_zarr(stored["cube"], reference, stored["model"], _settings("cpu", chain))
    seen = _record_written_chunk_types(monkeypatch)
    monkeypatch.setitem(PLACEMENTS, "cpu", lambda device: to_strict)
    # The paths this test is about were taken: the scratch synthesis read back, and with
    # ``chain`` the earlier dates read back from the output (besides the cube itself).
    placed: list[str] = []

    def counting(where: str) -> Any:
        def counted(obj: Any, device: Any = "cpu") -> Any:
            placed.append(where)
            return _device.place(obj, device)

        return counted

    import cloudfill.fill.job as job_module
    import cloudfill.fill.scratch as scratch_module

    monkeypatch.setattr(scratch_module, "place", counting("scratch"))
    monkeypatch.setattr(job_module, "place", counting("job"))
    out = tmp_path / "placed.zarr"
    fill_to_zarr(stored["cube"], out, stored["model"], _settings("cpu", chain))
    assert len(seen) == len(cloudfill.open_cube(out).time)
    for i, types in enumerate(seen):
        assert set(types.values()) == {StrictChunk}, (i, types)
    assert placed.count("scratch") == 2  # both synthesized dates, in windows
    assert placed.count("job") == (2 if chain else 1)  # the cube (and the written dates)
    _assert_same(out, reference)


def test_fill_series_from_disk_stays_placed(stored: dict[str, Path], strict_device: str) -> None:
    ds = cloudfill.open_cube(stored["cube"], chunks={})
    inference = InferenceSettings(tile=32, min_block=0, device=strict_device)
    rule = PairingRule(max_ref_age=400)
    out = fill_series(
        ds, stored["model"], dates=ds.time.values[2:3], rule=rule, inference=inference
    )
    for name in ("s2", "filled", "confidence", "unfilled"):
        assert type(out[name].data._meta) is StrictChunk, name
    first = out["s2"].data.blocks[0, 0, 0, 0].compute()
    assert type(first) is StrictChunk
    syn = synthesize(ds, ds.time.values[2], stored["model"], rule=rule, inference=inference)
    assert type(syn.data._meta) is StrictChunk


# --- --cluster cuda: one worker per GPU --------------------------------------------------


def test_cluster_cuda_says_how_many_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloudfill.cluster as cluster

    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    with pytest.raises(ParameterError, match="--cluster cuda found no GPU"):
        cluster._cuda_workers(None)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 1)
    with pytest.warns(UserWarning, match=r"uses 1 GPU \(1 visible\).*no parallelism"):
        assert cluster._cuda_workers(None) == 1
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two GPUs: nothing to say
        assert cluster._cuda_workers(None) == 2
    with pytest.warns(UserWarning, match=r"uses 1 GPU \(2 visible\)"):
        assert cluster._cuda_workers(1) == 1
    with pytest.raises(ParameterError, match="--workers 3 asks for more GPUs than the 2"):
        cluster._cuda_workers(3)


def test_gpu_count_follows_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    from cloudfill.cluster import gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_count() == 0


@pytest.mark.slow  # a 2-worker LocalCluster and a job on it: ~15-30 s on 2 busy cores
def test_blocks_spread_over_the_workers(
    stored: dict[str, Path], windows: None, tmp_path: Path
) -> None:
    """A CPU stand-in for ``--cluster cuda`` on two GPUs: two single-threaded worker
    processes (one per GPU, as dask-cuda starts them). The scheduler spreads a date's four
    inference blocks, and the fill tasks of its windows, over both."""
    from distributed import get_task_stream

    from cloudfill.cluster import open_cluster

    date = cloudfill.open_cube(stored["cube"]).time.values[2]  # fully cloudy: synthesized
    with open_cluster("local", workers=2, threads=1) as client, get_task_stream(client) as ts:
        fill_to_zarr(
            stored["cube"],
            tmp_path / "out.zarr",
            stored["model"],
            _settings("cpu"),
            dates=[date],
            cluster=client,
        )
    by_kind: dict[str, set[str]] = {}
    for task in ts.data:
        name = str(task["key"][0] if isinstance(task["key"], tuple) else task["key"])
        kind = "model" if "_synthesize_block" in name else "other"
        by_kind.setdefault(kind, set()).add(task["worker"])
    assert len(by_kind["model"]) == 2, by_kind
    assert len(by_kind["other"]) == 2, by_kind


# --- GPU ----------------------------------------------------------------------------------
# cuDNN rounds differently from the CPU kernels (and convolves in TF32 by default).


@pytest.mark.gpu
def test_place_on_cuda_gives_cupy_chunks(scene: xr.Dataset, cuda) -> None:
    placed = place(scene.chunk(CHUNKS), "cuda")
    assert isinstance(placed["s2"].data._meta, cuda.ndarray)
    assert isinstance(placed["s2"].data.blocks[0, 0, 0, 0].compute(), cuda.ndarray)
    np.testing.assert_array_equal(on_host(placed["s2"]).values, scene["s2"].values)


@pytest.mark.gpu
@pytest.mark.parametrize("chain", [False, True], ids=["windows+scratch", "chain"])
def test_fill_to_zarr_on_cuda_from_disk_matches_cpu(
    stored: dict[str, Path],
    windows: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chain: bool,
    cuda,
) -> None:
    reference = tmp_path / "reference.zarr"
    fill_to_zarr(stored["cube"], reference, stored["model"], _settings("cpu", chain))
    seen = _record_written_chunk_types(monkeypatch)
    out = tmp_path / "cuda.zarr"
    fill_to_zarr(stored["cube"], out, stored["model"], _settings("cuda", chain))
    for i, types in enumerate(seen):
        assert set(types.values()) == {cuda.ndarray}, (i, types)
    _assert_same(out, reference, atol=1e-3)


@pytest.mark.gpu
def test_adjustment_on_cupy_matches_numpy(scene: xr.Dataset, cuda) -> None:
    # Its CuPy path (cupyx.scipy.ndimage.gaussian_filter over map_overlap blocks).
    from cloudfill.fill.adjust import adjust_to_date

    date = scene.time.values[2]
    real = scene["s2"].sel(time=date)
    fill = scene["truth"].sel(time=date) if "truth" in scene else real + 0.01
    clear = ~scene.cloudfill.cloud_mask().sel(time=date)
    args = [a.chunk({"y": 48, "x": 48}) for a in (fill, real, clear)]
    ref = adjust_to_date(*args, sigma=12.0).values
    got = adjust_to_date(*[place(a, "cuda") for a in args], sigma=12.0)
    assert isinstance(got.data._meta, cuda.ndarray)
    np.testing.assert_allclose(on_host(got).values, ref, atol=1e-5)


@pytest.mark.gpu
def test_cli_fill_series_device_cuda(stored: dict[str, Path], tmp_path: Path, cuda) -> None:
    from cloudfill.cli import run
    from tests.conftest import fill_series_argv

    reference, out = tmp_path / "cpu.zarr", tmp_path / "cuda.zarr"
    assert run(fill_series_argv(stored["cube"], stored["model"], reference)) == 0
    assert run(fill_series_argv(stored["cube"], stored["model"], out, "--device", "cuda")) == 0
    _assert_same(out, reference, atol=1e-3)
