"""``--cluster``: scheduler selection, fill-series on a LocalCluster, model loaded once per
worker, and a worker killed mid-run (slow)."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import cloudfill
from cloudfill.cli import run
from cloudfill.cluster import describe, open_cluster
from cloudfill.core.pairs import PairingRule
from cloudfill.errors import ParameterError, SourceError
from cloudfill.fill.job import FillSettings, fill_to_zarr
from cloudfill.infer.settings import InferenceSettings
from tests.conftest import fill_series_argv, make_tiny_model

VARIABLES = ("s2", "filled", "confidence", "method", "s1_date", "reference_date", "unfilled")


def _job(tmp: Path, shape: tuple[int, int], fractions: list[float], seed: int) -> dict[str, Path]:
    ds = cloudfill.simulate_scene(shape, dates=len(fractions), seed=seed, cloud_fraction=fractions)
    cube = cloudfill.write_cube(ds, tmp / "cube.zarr")
    model = make_tiny_model(ds).save(tmp / "model.safetensors")
    reference = tmp / "reference.zarr"
    assert run(fill_series_argv(cube, model, reference, "--cluster", "none")) == 0
    return {"tmp": tmp, "cube": cube, "model": model, "reference": reference}


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 64x64, 5-date cube (3 dates synthesized), its model and the threaded-scheduler run."""
    return _job(tmp_path_factory.mktemp("cluster"), (64, 64), [0, 0.5, 1, 0.3, 0], seed=4)


def assert_same_output(path: Path, reference: Path) -> None:
    a = cloudfill.open_cube(path, chunks=None)
    b = cloudfill.open_cube(reference, chunks=None)
    assert a.sizes == b.sizes
    for name in VARIABLES:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)


def _worker_loads(client: Any) -> dict[str, dict[str, int]]:
    # A lambda travels by value, so workers need not import this test module.
    return client.run(lambda: dict(__import__("cloudfill.infer.runner").infer.runner.LOADS))


# --- selection --------------------------------------------------------------------------


def test_none_is_the_threaded_scheduler() -> None:
    with open_cluster("none") as client:
        assert client is None
    with open_cluster(None) as client:
        assert client is None
    assert describe(None) == "local threaded scheduler"


@pytest.mark.parametrize(
    ("spec", "kwargs", "words"),
    [
        ("bogus", {}, "none, local, cuda or a scheduler address"),
        ("local", {"workers": 0}, "--workers must be at least 1"),
        ("tcp://127.0.0.1:8786", {"threads": 2}, "not an address"),
        (42, {}, "distributed.Client"),
    ],
)
def test_bad_specs_are_parameter_errors(spec: Any, kwargs: dict[str, int], words: str) -> None:
    with pytest.raises(ParameterError, match=words), open_cluster(spec, **kwargs):
        pass


def test_unreachable_address_is_a_source_error() -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused at once.
    with (
        pytest.raises(SourceError, match="no Dask scheduler answers at tcp://127.0.0.1:9"),
        open_cluster("tcp://127.0.0.1:9", timeout="2s"),
    ):
        pass


def test_cli_rejects_a_bad_cluster(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # Its own cube and model, not the module's job: the refusal needs no reference run.
    ds = cloudfill.simulate_scene((32, 32), dates=3, seed=4, cloud_fraction=[0, 0.5, 0])
    cube = cloudfill.write_cube(ds, tmp_path / "cube.zarr")
    model = make_tiny_model(ds).save(tmp_path / "model.safetensors")
    out = tmp_path / "bad.zarr"
    assert run(fill_series_argv(cube, model, out, "--cluster", "nowhere")) == 2
    assert "--cluster must be none, local, cuda" in capsys.readouterr().err
    assert not out.exists()


# --- LocalCluster -------------------------------------------------------------------------


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_cluster_local_equals_threaded(job: dict[str, Path]) -> None:
    """`--cluster local` end to end: same bytes as the threaded scheduler."""
    out = job["tmp"] / "local.zarr"
    extra = ("--cluster", "local", "--workers", "2", "--threads", "1")
    assert run(fill_series_argv(job["cube"], job["model"], out, *extra)) == 0
    assert_same_output(out, job["reference"])


@pytest.mark.slow  # over 5 s; .ci/run runs the slow tests too
def test_model_loaded_once_per_worker(job: dict[str, Path]) -> None:
    """Two runs of three synthesized dates on two workers, one through a scheduler address
    (CLI), one through a Client (the Python keyword): each worker reads the checkpoint at most
    once, from the user's path (no temporary copy), and the client is left running."""
    with open_cluster("local", workers=2, threads=1) as client:
        address = client.scheduler.address
        assert describe(client).endswith("2 workers x 1 threads")
        by_address = job["tmp"] / "address.zarr"
        argv = fill_series_argv(job["cube"], job["model"], by_address, "--cluster", address)
        assert run(argv) == 0
        by_client = job["tmp"] / "client.zarr"
        settings = FillSettings(
            rule=PairingRule(max_ref_age=400), inference=InferenceSettings(tile=32)
        )
        result = fill_to_zarr(job["cube"], by_client, job["model"], settings, cluster=client)
        assert isinstance(result, xr.Dataset)
        assert client.status == "running"
        loads = _worker_loads(client)
    assert_same_output(by_address, job["reference"])
    assert_same_output(by_client, job["reference"])
    path = str(job["model"].resolve())
    assert all(set(counts) <= {path} for counts in loads.values()), loads
    assert all(n == 1 for counts in loads.values() for n in counts.values()), loads
    assert sum(n for counts in loads.values() for n in counts.values()) >= 1


# --- worker loss ----------------------------------------------------------------------------


class _Killer(threading.Thread):
    """Once the first date is recorded, SIGKILL a worker process that is running tasks."""

    def __init__(self, client: Any, markers: Path, n_dates: int) -> None:
        super().__init__(daemon=True)
        self.client, self.markers, self.n_dates = client, markers, n_dates
        self.killed: int | None = None
        self.done_at_kill = -1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            done = len(list(self.markers.glob("*.json"))) if self.markers.exists() else 0
            if done >= 1:
                busy = [w for w, keys in self.client.processing().items() if keys]
                if busy:
                    pid = self.client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    self.done_at_kill = done
                    os.kill(pid, signal.SIGKILL)
                    self.killed = pid
                    return
            time.sleep(0.02)


@pytest.mark.slow
def test_worker_killed_mid_run_gives_identical_output(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """2 workers x 1 thread; one worker is SIGKILLed while a date is being computed. Its
    tasks are rerun elsewhere, its nanny restarts it, and the output equals an undisturbed
    run."""
    from distributed import Client, LocalCluster

    fractions = [0, 0.6, 1, 0.4, 0.7, 0.2, 0.9, 0]
    job = _job(tmp_path_factory.mktemp("fault"), (128, 128), fractions, seed=7)
    out = job["tmp"] / "killed.zarr"
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        pids_before = set(client.run(os.getpid).values())
        killer = _Killer(client, out / ".cloudfill-done", len(fractions))
        killer.start()
        address = cluster.scheduler_address
        code = run(fill_series_argv(job["cube"], job["model"], out, "--cluster", address))
        killer.join(timeout=10)
        assert killer.error is None, killer.error
        assert code == 0
        assert killer.killed in pids_before
        assert 1 <= killer.done_at_kill < len(fractions), "the kill should land mid-run"
        client.wait_for_workers(2, timeout=60)
        pids_after = set(client.run(os.getpid).values())
    assert killer.killed not in pids_after and len(pids_after) == 2
    assert_same_output(out, job["reference"])


# --- GPU (dask-cuda) ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cuda_stack() -> None:
    """Skip unless dask-cuda, CuPy and a CUDA device are there; module-scoped and listed
    first, so it runs before the ``job`` fixture builds anything."""
    pytest.importorskip("dask_cuda")
    cupy = pytest.importorskip("cupy")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:
        count = 0
    if count == 0:
        pytest.skip("no CUDA device")


@pytest.mark.gpu
def test_cluster_cuda_fill_series_matches_cpu(cuda_stack: None, job: dict[str, Path]) -> None:
    out = job["tmp"] / "cuda.zarr"
    extra = ("--cluster", "cuda", "--device", "cuda")
    assert run(fill_series_argv(job["cube"], job["model"], out, *extra)) == 0
    a = cloudfill.open_cube(out, chunks=None)
    b = cloudfill.open_cube(job["reference"], chunks=None)
    for name in ("method", "filled", "s1_date", "reference_date"):
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    # cuDNN and the CPU kernels round differently.
    np.testing.assert_allclose(a["s2"].values, b["s2"].values, atol=1e-4)


@pytest.mark.gpu
def test_cluster_cuda_shares_the_rmm_pool(cuda_stack: None) -> None:
    pytest.importorskip("rmm")

    def allocator_name() -> str:
        import cupy

        return cupy.cuda.get_allocator().__name__

    with open_cluster("cuda") as client:
        names = set(client.run(allocator_name).values())
    assert names == {"rmm_cupy_allocator"}
