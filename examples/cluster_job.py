"""Fill a cube's cloudy dates on a Dask cluster: a LocalCluster here, SLURM on an HPC system.

The same graph runs on dask's threaded scheduler, a ``LocalCluster``, dask-cuda's
``LocalCUDACluster`` or any remote scheduler; :func:`cloudfill.cluster.open_cluster` turns
a name (``"none"``, ``"local"``, ``"cuda"``), an address or an existing ``Client`` into one.
The model travels as its checkpoint path: each worker process loads it once. The job is
:func:`cloudfill.fill.job.fill_to_zarr`, the one behind ``cloudfill fill-series``: written
date by date, so a killed run resumes where it stopped.

Run from the repository root (under a minute on a laptop CPU)::

    python examples/cluster_job.py                        # LocalCluster, 2 workers x 1 thread
    python examples/cluster_job.py --workers 4 --threads 2
    python examples/cluster_job.py --cluster tcp://scheduler:8786   # a running scheduler

The command-line equivalent::

    cloudfill fill-series cube.zarr --out filled.zarr --cluster local --workers 2 --threads 1

SLURM (not run here; needs ``pip install dask-jobqueue`` and a shared filesystem that holds
the cube, the output and the model checkpoint, since workers read them by path)::

    from dask_jobqueue import SLURMCluster
    from distributed import Client

    cluster = SLURMCluster(
        queue="gpu",                       # partition
        account="my-project",
        cores=8,                           # threads per job
        processes=1,                       # one worker per job (one GPU each)
        memory="64GB",
        walltime="02:00:00",
        job_extra_directives=["--gres=gpu:1"],
        job_script_prologue=["source /shared/envs/cloudfill/bin/activate"],
        worker_extra_args=["--resources", "GPU=1"],
    )
    cluster.scale(jobs=8)                  # or cluster.adapt(minimum_jobs=1, maximum_jobs=16)
    with Client(cluster) as client:
        fill(cube="/shared/cube.zarr", out="/shared/filled.zarr", cluster=client,
             settings=FillSettings(inference=InferenceSettings(device="cuda")))

or, from a login node, the CLI against that scheduler:
``cloudfill fill-series /shared/cube.zarr --out /shared/filled.zarr --cluster
tcp://<cluster.scheduler_address> --device cuda``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import cloudfill
from cloudfill.cluster import describe, open_cluster
from cloudfill.core.pairs import PairingRule
from cloudfill.fill.job import FillSettings, fill_to_zarr


def fill(
    cube: str | Path,
    out: str | Path,
    *,
    model: Any = None,
    settings: FillSettings = FillSettings(),
    cluster: Any = "local",
    workers: int | None = None,
    threads: int | None = None,
) -> Path:
    """Fill every cloudy date of the zarr cube ``cube`` and write the result to ``out``.

    Parameters
    ----------
    cube, out
        Input and output zarr stores.
    model
        A model, a checkpoint path or None (the shipped default model).
    settings
        What to compute (pairing rule, inference settings, adjustment ...).
    cluster
        ``"none"``, ``"local"``, ``"cuda"``, a scheduler address or a ``Client``.
    workers, threads
        Size of a ``local``/``cuda`` cluster.

    Returns
    -------
    pathlib.Path
        The output store.

    Examples
    --------
    >>> fill("cube.zarr", "filled.zarr", cluster="local", workers=2)  # doctest: +SKIP
    PosixPath('filled.zarr')
    """
    with open_cluster(cluster, workers=workers, threads=threads) as client:
        print(f"computing on {describe(client)}")
        # A given client is used and left running; each date streams to the store window by
        # window on the workers.
        fill_to_zarr(cube, out, model, settings, cluster=client, overwrite=True)
    return Path(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", default="local", help="none, local, cuda or an address")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--size", type=int, default=128, help="simulated scene side, px")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.cluster == "local":
        args.workers = args.workers or 2
        args.threads = args.threads or 1
    start = time.perf_counter()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="cloudfill-cluster-job-"))
    try:
        scene = cloudfill.simulate_scene((args.size, args.size), dates=5, seed=5, chunks=64)
        cube = cloudfill.write_cube(scene, workdir / "cube.zarr", overwrite=True)
        out = fill(
            cube,
            workdir / "filled.zarr",
            cluster=args.cluster,
            workers=args.workers,
            threads=args.threads,
            settings=FillSettings(rule=PairingRule(max_ref_age=400)),
        )
        result = cloudfill.open_cube(out)
        filled = result["filled"].mean(("y", "x")).compute().values
        for date, method, share in zip(
            result.time.values, result["method"].values, filled, strict=True
        ):
            print(f"{str(date)[:10]}  {method:<11} {100 * share:5.1f}% filled")
        print(f"filled {out.name} in {time.perf_counter() - start:.0f} s")
    finally:
        if args.workdir is None:  # a temporary folder: leave nothing behind
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
