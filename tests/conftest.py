"""Seeded synthetic fixtures shared by the test modules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rioxarray  # noqa: F401  (registers .rio)
import xarray as xr

import cloudfill


def make_tiny_cube(ny: int = 12, nx: int = 10, n_time: int = 3, n_s1: int = 4) -> xr.Dataset:
    """A minimal contract cube built by hand (no simulator), for schema tests."""
    rng = np.random.default_rng(42)
    x = 500000.0 + 10.0 * (np.arange(nx) + 0.5)
    y = 4000000.0 - 10.0 * (np.arange(ny) + 0.5)
    ds = xr.Dataset(
        {
            "s2": (("time", "band", "y", "x"), rng.random((n_time, 4, ny, nx), dtype="float32")),
            "s1": (
                ("s1_time", "pol", "y", "x"),
                rng.normal(-12, 3, (n_s1, 2, ny, nx)).astype("float32"),
                {"units": "dB"},
            ),
            "dem": (("y", "x"), rng.normal(500, 50, (ny, nx)).astype("float32")),
            "cloud": (("time", "y", "x"), rng.random((n_time, ny, nx)) > 0.7),
        },
        coords={
            "time": pd.date_range("2023-01-01", periods=n_time, freq="10D"),
            "s1_time": pd.date_range("2022-12-30", periods=n_s1, freq="12D"),
            "band": list(cloudfill.BANDS),
            "pol": list(cloudfill.POLS),
            "y": y,
            "x": x,
        },
    )
    return ds.rio.write_crs("EPSG:32633")


def make_patchy_cube(n: int = 20) -> xr.Dataset:
    """Four dates (10 days apart, each with S1 within 6 days) whose clouds no single date
    covers: no date is <= 5 % cloudy, yet most cloudy pixels are clear on some other date.

    - 01-01: the top half cloudy (50 %);
    - 01-11: the bottom half and the first ``q = max(1, n // 10)`` rows cloudy;
    - 01-21: all but the last column cloudy (clear elsewhere: pairing by date interpolates it,
      pairing by pixel synthesizes it);
    - 01-31: the first ``q`` rows but their last pixel cloudy: pixels cloudy on every date,
      so nothing but an S1-only model can synthesize it.
    """
    ds = make_tiny_cube(ny=n, nx=n, n_time=4, n_s1=6)
    q, half = max(1, n // 10), n // 2
    cloud = np.zeros((4, n, n), bool)
    cloud[0, :half] = True
    cloud[1, half:] = cloud[1, :q] = True
    cloud[2, :, :-1] = True
    cloud[3, :q, :-1] = True
    return ds.assign(cloud=(("time", "y", "x"), cloud))


@pytest.fixture
def tiny_cube() -> xr.Dataset:
    return make_tiny_cube()


@pytest.fixture(scope="session")
def scene() -> xr.Dataset:
    """A 96x96, 6-date simulated scene (numpy-backed)."""
    return cloudfill.simulate_scene((96, 96), seed=0)


@pytest.fixture(params=["numpy", "dask"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def scene_on_backend(scene: xr.Dataset, backend: str) -> xr.Dataset:
    """The simulated scene, numpy-backed or chunked with dask (uneven spatial chunks)."""
    if backend == "dask":
        return scene.chunk({"time": 1, "s1_time": 1, "y": 40, "x": 56})
    return scene


@pytest.fixture(scope="session")
def cuda():
    """CuPy, once a CUDA device is known to be there for both CuPy and torch; else skip."""
    cupy = pytest.importorskip("cupy")
    torch = pytest.importorskip("torch")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0 or not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return cupy


def _chunked_as(ds: xr.Dataset, chunks: dict[str, int], convert) -> xr.Dataset:
    """``ds`` chunked with dask, every data variable's chunks passed through ``convert``."""
    lazy = ds.chunk(chunks)
    return lazy.assign(
        {
            name: var.copy(
                data=var.data.map_blocks(
                    convert, meta=convert(np.empty((0,) * var.ndim, var.dtype))
                )
            )
            for name, var in lazy.items()
        }
    )


def on_cupy(ds: xr.Dataset, chunks: dict[str, int]) -> xr.Dataset:
    """``ds`` chunked with dask, every data variable's chunks moved to the GPU (CuPy): the
    cube a GPU user hands to cloudfill (coords stay NumPy, as xarray keeps them)."""
    import cupy

    return _chunked_as(ds, chunks, cupy.asarray)


class StrictChunk(np.ndarray):
    """A CPU stand-in for CuPy chunks, to check that dask keeps the chunk type.

    NumPy functions given a StrictChunk return StrictChunks (as CuPy's ``__array_function__``
    returns CuPy arrays), and at dask's meta inference (every StrictChunk operand empty) a
    plain NumPy array operand is refused, as CuPy refuses one: dask then falls back to a
    NumPy meta, which the tests see. Arrays made from scratch (``np.zeros``) are plain NumPy,
    as they would be next to CuPy chunks.
    """

    def __array_function__(self, func, types, args, kwargs):
        _refuse_numpy_at_meta_time(list(args) + list(kwargs.values()))
        return _strict(super().__array_function__(func, types, args, kwargs))

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        _refuse_numpy_at_meta_time(inputs)
        plain = [x.view(np.ndarray) if isinstance(x, StrictChunk) else x for x in inputs]
        if kwargs.get("out"):
            kwargs["out"] = tuple(
                o.view(np.ndarray) if isinstance(o, StrictChunk) else o for o in kwargs["out"]
            )
        return _strict(getattr(ufunc, method)(*plain, **kwargs))


def _flat(items) -> list:
    out, stack = [], list(items)
    while stack:
        item = stack.pop()
        if isinstance(item, tuple | list):
            stack.extend(item)
        else:
            out.append(item)
    return out


def _refuse_numpy_at_meta_time(items) -> None:
    flat = _flat(items)
    strict = [a for a in flat if isinstance(a, StrictChunk)]
    if strict and not any(a.size for a in strict):
        if any(type(a) is np.ndarray for a in flat):
            raise TypeError("a NumPy array operand next to StrictChunk chunks")


def _strict(out):
    if type(out) is np.ndarray:
        return out.view(StrictChunk)
    if isinstance(out, tuple | list):
        return type(out)(_strict(o) for o in out)
    return out


def on_strict_chunks(ds: xr.Dataset, chunks: dict[str, int]) -> xr.Dataset:
    """``ds`` chunked with dask, every data variable in :class:`StrictChunk` chunks."""
    return _chunked_as(ds, chunks, lambda block: np.asarray(block).view(StrictChunk))


def count_model_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the inference blocks the model runs on (one entry per call) from now on: for
    tests that a block is computed once however the output is cut."""
    import cloudfill.infer.synthesize as synthesize_module

    calls: list[int] = []
    block = synthesize_module._synthesize_block

    def counted(x, block_info=None, **kwargs):
        calls.append(1)
        return block(x, block_info=block_info, **kwargs)

    monkeypatch.setattr(synthesize_module, "_synthesize_block", counted)
    return calls


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): tiny
    convolutions gain nothing from threads, and on a busy machine OpenMP threads waiting for
    each other make them many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_model(
    ds: xr.Dataset,
    variant: str = "SOD",
    attention: bool | str = False,
    confidence: bool = True,
    seed: int = 0,
    reference_mode: str = "date",
):
    """An untrained small generator with the scene's statistics (for inference tests)."""
    import torch

    from cloudfill.model import CloudfillModel, ModelCard
    from cloudfill.model.generator import Generator
    from cloudfill.preprocess.normalise import scene_stats

    torch.manual_seed(seed)
    gen = Generator(variant, base_filters=8, n_blocks=1, attention=attention, confidence=confidence)
    card = ModelCard.from_generator(
        gen,
        normalisation=scene_stats(ds).to_dict(),
        training={"despeckle": 3},
        patch_size=32,
        reference_mode=reference_mode,
    )
    return CloudfillModel(gen, card)


def copy_to(model, device: str, fast: bool = False):
    """A copy of ``model`` on ``device`` (the original stays where it is)."""
    import copy

    from cloudfill.model import CloudfillModel

    return CloudfillModel(copy.deepcopy(model.generator), model.card, device=device, fast=fast)


@pytest.fixture(scope="session")
def tiny_model(scene: xr.Dataset):
    return make_tiny_model(scene)


def fill_series_argv(cube: Path, model: Path, out: Path, *extra: str) -> list[str]:
    """``cloudfill fill-series`` arguments for a tiny test cube and model (32 px tiles, no
    progress bar, references up to 400 days old so every simulated date has one)."""
    return [
        "fill-series",
        str(cube),
        "--model",
        str(model),
        "--out",
        str(out),
        "--tile",
        "32",
        "--no-progress",
        "--max-ref-age",
        "400",
        *extra,
    ]


@pytest.fixture(scope="session")
def spell_scene() -> xr.Dataset:
    """Five dates 30 days apart, the middle three fully cloudy: a spell longer than a
    40-day ``max_ref_age``, which only a chained fill synthesizes."""
    import pandas as pd

    dates = pd.date_range("2024-03-01", periods=5, freq="30D")
    return cloudfill.simulate_scene(
        (48, 48), dates=list(dates), seed=5, cloud_fraction=[0, 1, 1, 1, 0]
    )
