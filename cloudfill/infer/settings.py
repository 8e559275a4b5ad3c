"""How inference runs: one typed value that travels from the CLI or the accessor to the blocks."""

from __future__ import annotations

from dataclasses import dataclass

from cloudfill.errors import ParameterError

__all__ = ["InferenceSettings"]


@dataclass(frozen=True)
class InferenceSettings:
    """Tiling, batching and device of a synthesis; none of it changes which dates are used.

    Parameters
    ----------
    tile, overlap
        Tile size and overlap in pixels (default None: from the model's receptive field, see
        :func:`cloudfill.infer.synthesize.plan_tiles`).
    batch_size
        Tiles per forward pass (default None: 1 on CPU, where batching only adds cache
        misses, 4 on a GPU; :func:`cloudfill.infer.synthesize.default_batch_size`).
    min_block
        Smallest block side in pixels (default None: four tiles; blocks follow larger input
        chunks). 0 lets blocks be as small as one tile.
    device
        Torch device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:1"`` or ``"auto"``. A CUDA
        device also keeps the cube's chunks on the GPU (:func:`cloudfill._device.place`).
    fast
        bf16 autocast and the channels-last layout.

    Examples
    --------
    >>> InferenceSettings(tile=256).batch_size is None
    True
    >>> InferenceSettings(tile=0)
    Traceback (most recent call last):
    ...
    cloudfill.errors.ParameterError: tile must be positive, got 0
    """

    tile: int | None = None
    overlap: int | None = None
    batch_size: int | None = None
    min_block: int | None = None
    device: str = "cpu"
    fast: bool = False

    def __post_init__(self) -> None:
        for name in ("tile", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ParameterError(f"{name} must be positive, got {value}")
        for name in ("overlap", "min_block"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ParameterError(f"{name} must not be negative, got {value}")
