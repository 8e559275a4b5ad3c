"""One place that turns ``--cluster none|local|cuda|ADDRESS`` into a Dask scheduler.

- ``none`` (default): dask's local threaded scheduler, no extra processes;
- ``local``: a ``distributed.LocalCluster`` of worker processes (``workers`` x ``threads``),
  each with a nanny that restarts it if it dies;
- ``cuda``: ``dask_cuda.LocalCUDACluster``, one worker per GPU (optional extra ``gpu``), with
  an RMM pool shared by CuPy and torch when ``rmm`` is installed; the scheduler spreads the
  inference blocks of a date (and its windows' fill tasks) over the workers. No GPU is an
  error; a single GPU is said in a warning (one worker: no parallelism over
  ``--device cuda`` alone, only a nanny that restarts it and the shared pool);
- anything else: the address of a running scheduler (``tcp://host:8786``); an existing
  ``distributed.Client`` is accepted too from Python.

:func:`compute` runs a dask collection with a progress bar that works for both the local
scheduler and distributed.

The model never travels as weights: tasks carry a :class:`~cloudfill.infer.runner.ModelRef`
(a checkpoint path) and each worker process loads it once into a per-process cache. With a
remote scheduler the checkpoint must therefore be readable by the workers at the same path
(a shared filesystem).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import warnings
from collections.abc import Iterator
from typing import Any

from dask.diagnostics import ProgressBar
from distributed import Client, LocalCluster
from distributed import progress as dist_progress
from distributed.diagnostics.plugin import WorkerPlugin

from cloudfill.errors import ParameterError, SourceError

__all__ = ["KINDS", "compute", "describe", "gpu_count", "open_cluster"]

KINDS = ("none", "local", "cuda")
"""The named cluster kinds; any other value is taken as a scheduler address."""


def _check_sizes(workers: int | None, threads: int | None) -> None:
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None and value < 1:
            raise ParameterError(f"--{name} must be at least 1, got {value}")


def _is_address(spec: str) -> bool:
    # tcp://host:8786, tls://..., ucx://..., host:8786, or a scheduler-file path is not
    # supported: an address always has a port.
    return "://" in spec or (":" in spec and spec.rsplit(":", 1)[1].isdigit())


@contextlib.contextmanager
def open_cluster(
    spec: str | Client | None = "none",
    *,
    workers: int | None = None,
    threads: int | None = None,
    memory_limit: str | float | None = "auto",
    timeout: str = "10s",
) -> Iterator[Client | None]:
    """Yield a ``distributed.Client`` for ``spec``, or None for the threaded scheduler.

    Clusters started here are shut down on exit; a given ``Client`` or address is left
    running. While the context is open the client is dask's default scheduler, so plain
    ``.compute()`` and ``to_zarr`` run on it too.

    Parameters
    ----------
    spec
        ``"none"``, ``"local"``, ``"cuda"``, a scheduler address (``"tcp://host:8786"``) or
        a ``distributed.Client``.
    workers
        Worker processes of a ``local`` cluster (default: dask's choice for this machine) or
        GPUs used by a ``cuda`` cluster (default: all visible).
    threads
        Threads per worker (default: dask's choice; 1 for ``cuda``).
    memory_limit
        Per-worker memory limit of a ``local``/``cuda`` cluster (``"4GiB"``, bytes, or
        ``"auto"``: the machine's memory split between workers). Above 95% of it the nanny
        restarts the worker and its tasks are rerun elsewhere.
    timeout
        How long to wait for a remote scheduler.

    Yields
    ------
    distributed.Client or None

    Raises
    ------
    ParameterError
        An unknown ``spec``, a non-positive size, sizes given with an address, or
        ``"cuda"`` without a GPU (or more ``workers`` than GPUs) or without dask-cuda.
    SourceError
        No scheduler answers at the address.

    Examples
    --------
    >>> with open_cluster("none") as client:
    ...     client is None
    True
    >>> with open_cluster("local", workers=2, threads=1) as client:  # doctest: +SKIP
    ...     sorted(client.nthreads().values())
    [1, 1]
    """
    _check_sizes(workers, threads)
    if spec is not None and not isinstance(spec, str):
        if not hasattr(spec, "submit") or not hasattr(spec, "scheduler"):
            raise ParameterError(
                f"cluster must be a name, an address or a distributed.Client, got {type(spec)}"
            )
        yield spec
        return
    spec = (spec or "none").strip()
    if spec == "none":
        yield None
        return
    if spec == "local":
        with _local_cluster(workers, threads, memory_limit) as client:
            yield client
        return
    if spec == "cuda":
        with _cuda_cluster(workers, threads, memory_limit) as client:
            yield client
        return
    if not _is_address(spec):
        raise ParameterError(
            f"--cluster must be none, local, cuda or a scheduler address "
            f"(tcp://host:8786), got {spec!r}"
        )
    if workers is not None or threads is not None:
        raise ParameterError("--workers/--threads size a local or cuda cluster, not an address")
    try:
        client = Client(spec, timeout=timeout)
    except OSError as exc:
        raise SourceError(f"no Dask scheduler answers at {spec} ({exc})") from None
    with client:
        yield client


@contextlib.contextmanager
def _local_cluster(
    workers: int | None, threads: int | None, memory_limit: str | float | None
) -> Iterator[Client]:
    # Processes, not threads: torch and numba hold the GIL in places, and a worker that dies
    # is restarted by its nanny without taking the job down.
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads,
            processes=True,
            memory_limit=memory_limit,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def gpu_count() -> int:
    """The GPUs a ``cuda`` cluster starts workers for: those listed in
    ``CUDA_VISIBLE_DEVICES`` where it is set, else NVML's count (0 without a driver).

    >>> gpu_count() >= 0
    True
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    from distributed.diagnostics import nvml  # NVML through distributed: no CUDA import

    return int(nvml.device_get_count())


def _cuda_workers(workers: int | None) -> int:
    """How many GPU workers a ``cuda`` cluster gets: checked against the GPUs there are,
    with a warning where that is one (nothing to spread the blocks over)."""
    count = gpu_count()
    if count == 0:
        raise ParameterError(
            "--cluster cuda found no GPU (CUDA_VISIBLE_DEVICES, NVML): use --cluster local, "
            "or none with --device cuda where torch sees a GPU"
        )
    if workers is not None and workers > count:
        raise ParameterError(f"--workers {workers} asks for more GPUs than the {count} visible")
    used = count if workers is None else workers
    if used == 1:
        warnings.warn(
            f"--cluster cuda uses 1 GPU ({count} visible): one worker computes every block, "
            "so the cluster adds no parallelism over --device cuda alone (only a nanny that "
            "restarts the worker, and the shared RMM pool)",
            UserWarning,
            stacklevel=2,
        )
    return used


@contextlib.contextmanager
def _cuda_cluster(
    workers: int | None, threads: int | None, memory_limit: str | float | None
) -> Iterator[Client]:
    if importlib.util.find_spec("dask_cuda") is None:
        raise ParameterError(
            "--cluster cuda needs dask-cuda (pip install 'cloudfill[gpu]') and a GPU"
        )
    n_gpus = _cuda_workers(workers)  # dask-cuda brings NVML's bindings, which count them
    from dask_cuda import LocalCUDACluster  # optional (the gpu extra): imported when asked for

    kwargs: dict[str, Any] = {
        "dashboard_address": None,
        "threads_per_worker": threads or 1,
        "memory_limit": memory_limit,
        "n_workers": n_gpus,
    }
    share_rmm = importlib.util.find_spec("rmm") is not None
    plugin = False
    if share_rmm:
        # A pool avoids cudaMalloc per chunk; 80% leaves room for the CUDA context and cuDNN.
        kwargs["rmm_pool_size"] = 0.8
        if "rmm_allocator_external_lib_list" in inspect.signature(LocalCUDACluster).parameters:
            kwargs["rmm_allocator_external_lib_list"] = ["cupy", "torch"]
        else:  # older dask-cuda: route the allocators ourselves
            plugin = True
    with LocalCUDACluster(**kwargs) as cluster, Client(cluster) as client:
        if plugin:
            # A plugin, not client.run: a worker restarted by its nanny runs it again.
            _register(client, RMMSharing())
        yield client


def _register(client: Client, plugin: WorkerPlugin) -> None:
    if hasattr(client, "register_plugin"):
        client.register_plugin(plugin)
    else:  # distributed < 2023.9
        client.register_worker_plugin(plugin)


class RMMSharing(WorkerPlugin):
    """Worker plugin: CuPy and torch allocate from the worker's RMM pool.

    One pool per GPU instead of three allocators competing for memory (RMM's, CuPy's and
    torch's caching allocator).
    """

    name = "cloudfill-rmm-sharing"

    def setup(self, worker: Any = None) -> None:  # pragma: no cover - needs a GPU
        share_rmm_with_torch_and_cupy()


def share_rmm_with_torch_and_cupy() -> None:  # pragma: no cover - needs a GPU
    """Route CuPy's and (if not yet initialised) torch's CUDA allocations through RMM."""
    # Optional GPU packages, present only where a cuda cluster runs this.
    import cupy
    from rmm.allocators.cupy import rmm_cupy_allocator

    cupy.cuda.set_allocator(rmm_cupy_allocator)
    try:
        # torch only here (a GPU worker's allocator): the scheduler helpers stay light.
        import torch
        from rmm.allocators.torch import rmm_torch_allocator  # optional; older rmm lacks it

        torch.cuda.memory.change_current_allocator(rmm_torch_allocator)
    except (ImportError, RuntimeError):
        # torch already allocated on this GPU (its allocator can no longer change): it keeps
        # its own caching allocator, which still works, just beside the pool.
        pass


def describe(client: Client | None) -> str:
    """One line saying where work runs.

    >>> describe(None)
    'local threaded scheduler'
    """
    if client is None:
        return "local threaded scheduler"
    nthreads = client.nthreads()
    counts = sorted(set(nthreads.values()))
    per = "/".join(str(c) for c in counts)
    return f"dask scheduler {client.scheduler.address}: {len(nthreads)} workers x {per} threads"


def compute(obj: Any, *, progress: bool = True, client: Client | None = None) -> Any:
    """Compute a dask collection (or delayed) with a progress bar, on ``client`` if given.

    On distributed, a worker lost mid-way is not an error: the scheduler reruns its tasks
    on the remaining (or restarted) workers, up to ``distributed.scheduler.allowed-failures``
    times per task.

    Examples
    --------
    >>> import dask.array as da
    >>> int(compute(da.ones(10, chunks=5).sum(), progress=False))
    10
    """
    if client is not None:
        future = client.compute(obj)
        if progress:
            dist_progress(future, notebook=False)
        return future.result()
    if progress:
        with ProgressBar(minimum=1.0, dt=0.5):
            return obj.compute()
    return obj.compute()
