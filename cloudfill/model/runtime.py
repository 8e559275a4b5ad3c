"""A trained generator ready for inference: :class:`CloudfillModel` and device selection.

:class:`CloudfillModel` pairs a :class:`~cloudfill.model.generator.Generator` with its
:class:`~cloudfill.model.card.ModelCard`, keeps it in eval mode on one device, and predicts
on tensors of any height and width (reflection-padded to the generator's multiple of 4 and
cropped back). ``fast=True`` runs channels-last with bfloat16 autocast (large speed-up on GPUs
with tensor cores; on CPUs without native bf16 it is slower, so fp32 stays the default);
``compile=True`` wraps the generator in :func:`torch.compile` and falls back to eager mode
with a warning if compilation fails. :meth:`CloudfillModel.check_cube` tells, before any pixel
is read, whether the model fits a cube.
"""

from __future__ import annotations

import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from cloudfill.core.grid import ALIGN
from cloudfill.core.variants import Variant, get_variant
from cloudfill.cube.sanity import check_dem
from cloudfill.cube.schema import conform
from cloudfill.errors import CheckpointError, ModelMismatchError, ParameterError
from cloudfill.model.card import ModelCard
from cloudfill.model.checkpoint import (
    load_state,
    locate,
    read_card,
    remember_checkpoint,
    save_model,
)
from cloudfill.model.generator import Generator, GeneratorOutput
from cloudfill.model.receptive import ReceptiveField, receptive_field

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["CloudfillModel", "load_model", "resolve_device"]

MIN_SIDE = 4 * ALIGN


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (or a device) into a torch device.

    Parameters
    ----------
    device
        ``"auto"`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ParameterError
        For an unknown name, or CUDA asked for where none is available.

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        resolved = device
    else:
        name = str(device).strip().lower()
        if name == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        try:
            resolved = torch.device(name)
        except RuntimeError:
            raise ParameterError(
                f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
            ) from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ParameterError(
                f"device {str(device)!r} requested but no CUDA device is available "
                "(use device='cpu' or 'auto')"
            )
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ParameterError(
                f"device {str(device)!r} requested but only {torch.cuda.device_count()} "
                "CUDA device(s) exist"
            )
    elif resolved.type not in ("cpu", "mps"):
        raise ParameterError(f"unsupported device {str(device)!r}; use 'cpu' or 'cuda'")
    return resolved


class CloudfillModel:
    """A generator with its model card, on one device, for inference.

    Parameters
    ----------
    generator
        The network; put in eval mode.
    card
        Its card; built from ``generator.config()`` when omitted.
    device
        See :func:`resolve_device`; the CPU by default.
    fast
        Channels-last memory layout and bfloat16 autocast in :meth:`predict`. On CPU the
        layout is channels-last in any case (see :attr:`channels_last`).
    compile
        Wrap the generator in :func:`torch.compile` (first call is slow).

    Examples
    --------
    >>> model = CloudfillModel(Generator("S", base_filters=8, n_blocks=1))
    >>> out = model.predict(torch.zeros(1, 2, 30, 30))
    >>> out.mean.shape, out.scale is None
    (torch.Size([1, 4, 30, 30]), True)
    """

    def __init__(
        self,
        generator: Generator,
        card: ModelCard | None = None,
        *,
        device: str | torch.device = "cpu",
        fast: bool = False,
        compile: bool = False,
    ) -> None:
        if card is None:
            card = ModelCard.from_generator(generator)
        config = generator.config()
        wanted = card.generator_kwargs()
        if config != wanted:
            diff = next(k for k in wanted if wanted[k] != config.get(k))
            raise ParameterError(
                f"model card says {diff}={wanted[diff]!r} but the generator has "
                f"{diff}={config.get(diff)!r}"
            )
        self.generator = generator.eval()
        self.card = card
        self.fast = bool(fast)
        self.compile = bool(compile)
        self._device = torch.device("cpu")
        self._compiled: Any = None
        self.to(device)

    # --- description -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device the weights live on."""
        return self._device

    @property
    def variant(self) -> Variant:
        """The input variant (channels in stack order)."""
        return get_variant(self.card.variant)

    @property
    def n_parameters(self) -> int:
        """Number of trainable parameters of the generator."""
        return sum(p.numel() for p in self.generator.parameters())

    @cached_property
    def receptive_field(self) -> ReceptiveField:
        """The convolutional receptive field (:func:`cloudfill.model.receptive.receptive_field`)."""
        return receptive_field(self.generator)

    @property
    def halo(self) -> int:
        """Pixels to pad every inference tile with (the receptive field's one-sided reach)."""
        return self.receptive_field.halo

    @property
    def alignment(self) -> int:
        """Inference tiles must start at multiples of this many scene pixels (4)."""
        return self.receptive_field.alignment

    def __repr__(self) -> str:
        c = self.card
        return (
            f"CloudfillModel(variant={c.variant!r}, attention={c.attention!r}, "
            f"base_filters={c.base_filters}, n_blocks={c.n_blocks}, norm={c.norm!r}, "
            f"confidence={c.confidence}, device={str(self.device)!r}, fast={self.fast})"
        )

    # --- running -------------------------------------------------------------------------
    @property
    def channels_last(self) -> bool:
        """Whether weights and inputs use the channels-last layout: with ``fast``, and on CPU
        always, where oneDNN's fp32 convolutions run faster in it (paper-size generator, one
        512 px tile, 2 AVX2 cores: 4.48 s against 5.29 s contiguous). The values agree with
        the contiguous layout to float32 rounding."""
        return self.fast or self.device.type == "cpu"

    def to(self, device: str | torch.device) -> CloudfillModel:
        """Move the weights to ``device`` (see :func:`resolve_device`); returns ``self``."""
        self._device = resolve_device(device)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.generator.to(device=self._device, memory_format=memory_format)
        self._compiled = None
        return self

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint; see :func:`cloudfill.model.checkpoint.save_model`."""

        return save_model(self, None, path)

    def _runner(self) -> Any:
        if not self.compile:
            return self.generator
        if self._compiled is None:
            self._compiled = torch.compile(self.generator)
        return self._compiled

    def _forward(self, x: torch.Tensor) -> GeneratorOutput:
        runner = self._runner()
        try:
            return runner(x)
        except ParameterError:
            raise
        except Exception as err:
            if runner is self.generator:
                raise
            # torch.compile needs a working compiler toolchain; eager is always correct.
            warnings.warn(
                f"torch.compile failed ({type(err).__name__}: {err}); running eagerly",
                RuntimeWarning,
                stacklevel=3,
            )
            self.compile = False
            self._compiled = None
            return self.generator(x)

    def predict(self, x: torch.Tensor, *, fast: bool | None = None) -> GeneratorOutput:
        """Predict the target bands for a condition stack, without gradients.

        Parameters
        ----------
        x
            (N, C, H, W) tensor with the card's ``input_channels`` in order, normalised as the
            card's ``normalisation`` says; any H, W >= 1, any device. Padding to the
            generator's multiple of 4 is added at the bottom and right only, so the tile's
            origin keeps its alignment (see :attr:`alignment`).
        fast
            Override the model's ``fast`` setting for this call (bf16 autocast).

        Returns
        -------
        GeneratorOutput
            ``mean`` (N, 4, H, W) in [-1, 1] and ``scale`` (N, 4, H, W) or None; float32 on
            the model's device.

        Raises
        ------
        ParameterError
            Wrong rank or channel count (the message lists the expected channels).

        Examples
        --------
        >>> model = CloudfillModel(Generator("SD", base_filters=8, n_blocks=1, confidence=True))
        >>> out = model.predict(torch.zeros(2, 3, 20, 24))
        >>> tuple(out.mean.shape), bool((out.scale > 0).all())
        ((2, 4, 20, 24), True)
        """
        if not isinstance(x, torch.Tensor):
            raise ParameterError(f"predict expects a torch.Tensor, got {type(x).__name__}")
        if x.ndim != 4 or x.shape[1] != self.card.n_inputs:
            raise ParameterError(
                f"model {self.card.variant} expects input (N, {self.card.n_inputs}, H, W) with "
                f"channels {self.card.input_channels}, got shape {tuple(x.shape)}"
            )
        fast = self.fast if fast is None else bool(fast)
        h, w = x.shape[-2:]
        pad_h = max(MIN_SIDE, -(-h // ALIGN) * ALIGN) - h
        pad_w = max(MIN_SIDE, -(-w // ALIGN) * ALIGN) - w
        self.generator.eval()
        with torch.inference_mode():
            x = x.to(self.device, torch.float32)
            if pad_h or pad_w:
                # Reflection needs the pad to be smaller than the side; tiny slivers replicate.
                mode = "reflect" if pad_h < h and pad_w < w else "replicate"
                x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
            if fast:
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16):
                    out = self._forward(x)
            elif self.channels_last:
                out = self._forward(x.contiguous(memory_format=torch.channels_last))
            else:
                out = self._forward(x.contiguous())
            mean = out.mean[..., :h, :w].float().contiguous()
            scale = None if out.scale is None else out.scale[..., :h, :w].float().contiguous()
        return GeneratorOutput(mean, scale)

    # --- fitting a cube --------------------------------------------------------------------
    def check_cube(self, ds: xr.Dataset) -> None:
        """Raise :class:`~cloudfill.errors.ModelMismatchError` if the model does not fit ``ds``.

        Reads coordinates only. Checks that the cube has S1 with the card's polarisations,
        S2 with exactly the card's bands (the model predicts those and no others), the DEM
        for SD/SOD models, and at least two S2 dates for SO/SOD models (one to fill and one
        to serve as the cloud-free reference).

        Examples
        --------
        >>> import numpy as np, xarray as xr
        >>> ds = xr.Dataset({"s1": (("s1_time", "pol", "y", "x"), np.zeros((1, 2, 4, 4)))},
        ...                 coords={"pol": ["VV", "VH"]})
        >>> CloudfillModel(Generator("S", base_filters=4, n_blocks=0)).check_cube(ds)
        >>> try:
        ...     CloudfillModel(Generator("SD", base_filters=4, n_blocks=0)).check_cube(ds)
        ... except ModelMismatchError as err:
        ...     print(err)
        model variant SD uses the DEM but the cube has no 'dem' variable
        """
        cube = conform(ds)
        card, variant = self.card, self.variant
        name = f"model variant {variant.name}"
        if "s1" not in cube.data_vars:
            raise ModelMismatchError(f"{name} needs S1 SAR but the cube has no 's1' variable")
        _check_labels(cube, "pol", card.pols, "polarisations")
        if variant.uses_dem and "dem" not in cube.data_vars:
            raise ModelMismatchError(f"{name} uses the DEM but the cube has no 'dem' variable")
        if "s2" in cube.data_vars:
            _check_labels(cube, "band", card.bands, "bands")
        if variant.uses_reference:
            if "s2" not in cube.data_vars:
                raise ModelMismatchError(
                    f"{name} needs a reference S2 image but the cube has no 's2' variable"
                )
            n_dates = cube.sizes.get("time", 0)
            if n_dates < 2:
                raise ModelMismatchError(
                    f"{name} needs a cloud-free reference S2 date besides the date to fill, "
                    f"but the cube has {n_dates} S2 date(s); use an S or SD model"
                )

    def check_inputs(self, ds: xr.Dataset) -> None:
        """:meth:`check_cube`, then what coordinates cannot show of the inputs the model
        reads: a DEM with no value (:func:`~cloudfill.cube.sanity.check_dem`) for a DEM
        model. What every verb whose model reads the cube calls before its work.

        Examples
        --------
        >>> import cloudfill
        >>> from cloudfill.errors import MissingVariableError
        >>> ds = cloudfill.simulate_scene((32, 32), seed=0)
        >>> model = CloudfillModel(Generator("SD", base_filters=4, n_blocks=0))
        >>> model.check_inputs(ds)
        >>> try:
        ...     model.check_inputs(ds.assign(dem=ds.dem.where(False)))
        ... except MissingVariableError as err:
        ...     print(str(err)[:40])
        variable 'dem' holds no value (all NaN):
        """
        self.check_cube(ds)
        if self.variant.uses_dem:
            check_dem(ds)


def _check_labels(cube: xr.Dataset, dim: str, expected: list[str], what: str) -> None:
    if dim not in cube.coords:
        raise ModelMismatchError(f"the cube has no {dim!r} labels; the model needs {expected}")
    have = [str(v) for v in cube[dim].values]
    missing = [v for v in expected if v not in have]
    if missing:
        raise ModelMismatchError(
            f"the model was trained on {what} {expected} but the cube lacks {missing} "
            f"(cube {dim}: {have})"
        )
    extra = [v for v in have if v not in expected]
    if extra:
        raise ModelMismatchError(
            f"the cube has {what} {extra} that the model was not trained on (model: {expected}); "
            f"drop the others from the cube (in Python: ds.sel({dim}={expected}))"
        )


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    *,
    fast: bool = False,
    compile: bool = False,
) -> CloudfillModel:
    """Load a checkpoint written by :func:`~cloudfill.model.checkpoint.save_model`, safely.

    Nothing from the file is executed: a pickle or ``torch.save`` file is refused before it is
    parsed, and the weights are read with safetensors only.

    Parameters
    ----------
    path
        A ``*.safetensors`` file or a checkpoint directory.
    device
        ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    fast, compile
        See :class:`CloudfillModel`.

    Returns
    -------
    CloudfillModel

    Raises
    ------
    CheckpointError
        Missing, unsafe or malformed file; a card that is invalid or does not match the
        weights (the message names the tensor).
    ParameterError
        An unusable ``device``.

    Examples
    --------
    >>> import tempfile
    >>> from cloudfill.model.checkpoint import save_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     path = save_model(Generator("SD", base_filters=4, n_blocks=1), None, tmp)
    ...     load_model(path).card.input_channels
    ['VV', 'VH', 'DEM']
    """
    weights, _ = locate(path)
    card = read_card(path)
    try:
        generator = Generator(**card.generator_kwargs())
    except ParameterError as err:
        raise CheckpointError(f"model card describes no valid generator: {err}") from None
    state = load_state(weights, card, generator)
    generator.load_state_dict(state, strict=True)
    model = CloudfillModel(generator, card, device=device, fast=fast, compile=compile)
    # Dask workers then load this file by path instead of a temporary copy of the weights.
    remember_checkpoint(model, Path(path).resolve())
    return model
