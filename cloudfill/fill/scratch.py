"""A date's synthesis kept on disk while the date is written in windows.

The same-date adjustment reads a halo across window edges, so without a stored copy a
windowed write would run the model on a neighbouring block once more for each window.
:class:`SynthesisStore` computes the synthesis once into a scratch zarr store and hands back
a lazy copy read from it, chunked as it was computed and placed where the device computes
(:func:`cloudfill._device.place`: CuPy chunks for a CUDA device, as the synthesis was).
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill._device import place
from cloudfill.cube.zarr_io import prepare_for_zarr
from cloudfill.infer.synthesize import Synthesis

__all__ = ["SynthesisStore"]


class SynthesisStore:
    """Syntheses written to scratch zarr stores in ``folder`` and read back.

    Each model block is then computed once, however the date is cut into windows.
    :func:`cloudfill.fill.job.fill_to_zarr` keeps the folder inside the output's marker
    folder and clears it once the date is written (a killed run recomputes the date).

    Parameters
    ----------
    folder
        Where the scratch stores go (created on first use).
    device
        The inference device: the chunks read back are placed there
        (:func:`cloudfill._device.place`), so the fill of the date stays on it.

    Examples
    --------
    >>> import tempfile
    >>> store = SynthesisStore(Path(tempfile.mkdtemp()) / "work")
    >>> store.clear()  # nothing there yet: a no-op
    >>> store.folder.exists()
    False
    """

    def __init__(self, folder: Path, device: str = "cpu") -> None:
        self.folder = folder
        self.device = device

    def keep(self, date: pd.Timestamp, syn: Synthesis, compute: Callable[[Any], Any]) -> Synthesis:
        """Compute ``syn`` into the folder with ``compute`` and return it read back lazily.

        Parameters
        ----------
        date
            The synthesized date (names the scratch store).
        syn
            The lazy synthesis (:class:`~cloudfill.infer.synthesize.Synthesis`).
        compute
            Runs a dask collection (the job's scheduler).

        Returns
        -------
        Synthesis
            ``syn`` with ``mean`` (and ``scale``) read from the scratch store, chunked as
            the model's blocks, on the device.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{date:%Y%m%dT%H%M%S}.zarr"  # two passes a day stay apart
        parts = {"mean": syn.mean} if syn.scale is None else {"mean": syn.mean, "scale": syn.scale}
        data = xr.Dataset(parts).drop_vars(["time", "spatial_ref"], errors="ignore")
        # Zarr needs equal chunks (the last may be shorter); inference blocks need not be.
        blocks = {d: data.chunksizes[d] for d in ("y", "x")}
        layout = {"band": -1, "y": blocks["y"][0], "x": blocks["x"][0]}
        data = prepare_for_zarr(data, layout)
        compute(data.to_zarr(path, mode="w", compute=False, consolidated=False))
        back = place(xr.open_zarr(path, consolidated=False).chunk(blocks), self.device)

        def like(new: xr.DataArray, old: xr.DataArray) -> xr.DataArray:
            return old.copy(data=new.transpose(*old.dims).data)

        scale = None if syn.scale is None else like(back["scale"], syn.scale)
        return dataclasses.replace(syn, mean=like(back["mean"], syn.mean), scale=scale)

    def clear(self) -> None:
        """Remove the folder and every scratch store in it."""
        shutil.rmtree(self.folder, ignore_errors=True)
