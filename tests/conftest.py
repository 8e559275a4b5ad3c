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
        training={"despeckle_size": 3},
        patch_size=32,
        reference_mode=reference_mode,
    )
    return CloudfillModel(gen, card)


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
