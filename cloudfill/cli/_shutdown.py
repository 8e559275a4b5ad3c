"""A failed command ends with its one line, not with pages of asyncio noise at shutdown.

When a dask computation stops on an error (a corrupt zarr chunk), the threaded scheduler
raises at once while its other threads are still reading, and zarr-python reads every chunk
through coroutines on its own event loop: a ``gather`` that failed leaves its sibling reads
running there, awaited by no one. At interpreter shutdown zarr's executor refuses them new
work and its loop is closed under them, and asyncio reports each one ("Task exception was
never retrieved", "Task was destroyed but it is pending!", "Exception ignored in: <coroutine
...>": one traceback a chunk).

:func:`settle_reads` runs after a failed command, before the shutdown: it lets dask's
threads finish the tasks they are running (queued ones are cancelled), then cancels the
reads left on zarr's loop and waits for them to end, and silences asyncio's logger for what
already ended unseen. Nothing is imported here that the command did not import itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from concurrent.futures import Executor

__all__ = ["settle_reads"]

_TIMEOUT = 10.0  # seconds the zarr reads left over may take to end once cancelled


def settle_reads() -> None:
    """Quiet the leftovers of a failed dask computation (see the module's docstring)."""
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    for pool in _dask_pools():
        pool.shutdown(wait=True, cancel_futures=True)  # the process is ending: none is reused
    sync = sys.modules.get("zarr.core.sync")
    loop = getattr(sync, "loop", [None])[0] if sync is not None else None
    if loop is None or loop.is_closed() or not loop.is_running():
        return
    with contextlib.suppress(Exception):  # best effort: never a new error at exit
        asyncio.run_coroutine_threadsafe(_cancel_pending(), loop).result(_TIMEOUT)


def _dask_pools() -> list[Executor]:
    threaded = sys.modules.get("dask.threaded")
    if threaded is None:
        return []
    pools = [threaded.default_pool] if threaded.default_pool is not None else []
    for by_size in list(threaded.pools.values()):
        pools.extend(by_size.values())
    return pools


async def _cancel_pending() -> None:
    current = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _TIMEOUT
    while loop.time() < deadline:
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        if not pending:
            return
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=1.0)
