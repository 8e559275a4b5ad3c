"""One place that turns ``--cluster none|local|cuda|ADDRESS`` into a Dask scheduler.

- ``none`` (default): dask's local threaded scheduler, no extra processes;
- ``local``: a ``distributed.LocalCluster`` (processes; ``workers``/``threads`` options);
- ``cuda``: ``dask_cuda.LocalCUDACluster``, one worker per GPU (optional extra ``gpu``), with
  an RMM pool when ``rmm`` is installed;
- anything else: the address of a running scheduler (``tcp://host:8786``).

:func:`compute` runs a dask collection with a progress bar that works for both the local
scheduler and distributed.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator
from typing import Any

from cloudfill.errors import ParameterError

__all__ = ["compute", "open_cluster"]


@contextlib.contextmanager
def open_cluster(
    spec: str | None = "none", *, workers: int | None = None, threads: int | None = None
) -> Iterator[Any]:
    """Yield a ``distributed.Client`` for ``spec`` (or None for the threaded scheduler).

    Examples
    --------
    >>> with open_cluster("none") as client:
    ...     client is None
    True
    """
    spec = (spec or "none").strip()
    if spec == "none":
        yield None
        return
    from distributed import Client, LocalCluster

    if spec == "local":
        with (
            LocalCluster(
                n_workers=workers, threads_per_worker=threads, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            yield client
        return
    if spec == "cuda":
        if importlib.util.find_spec("dask_cuda") is None:
            raise ParameterError(
                "--cluster cuda needs dask-cuda (pip install 'cloudfill[gpu]') and a GPU"
            )
        from dask_cuda import LocalCUDACluster

        kwargs: dict[str, Any] = {"dashboard_address": None}
        if importlib.util.find_spec("rmm") is not None:
            kwargs["rmm_pool_size"] = "0.8"
        with LocalCUDACluster(**kwargs) as cluster, Client(cluster) as client:
            if kwargs.get("rmm_pool_size"):
                client.run(_share_rmm_with_torch_and_cupy)
            yield client
        return
    if "://" not in spec and ":" not in spec:
        raise ParameterError(
            f"--cluster must be none, local, cuda or a scheduler address, got {spec!r}"
        )
    with Client(spec) as client:
        yield client


def _share_rmm_with_torch_and_cupy() -> None:  # pragma: no cover - needs a GPU
    import cupy
    import rmm
    from rmm.allocators.cupy import rmm_cupy_allocator

    cupy.cuda.set_allocator(rmm_cupy_allocator)
    try:
        import torch
        from rmm.allocators.torch import rmm_torch_allocator

        torch.cuda.memory.change_current_allocator(rmm_torch_allocator)
    except Exception:  # torch may already have allocated; keep its own pool then
        pass
    del rmm


def compute(obj: Any, *, progress: bool = True, client: Any = None) -> Any:
    """Compute a dask collection (or delayed) with a progress bar, on ``client`` if given."""
    if client is not None:
        future = client.compute(obj)
        if progress:
            from distributed import progress as dist_progress

            dist_progress(future, notebook=False)
        return future.result()
    if progress:
        from dask.diagnostics import ProgressBar

        with ProgressBar(minimum=1.0, dt=0.5):
            return obj.compute()
    return obj.compute()
