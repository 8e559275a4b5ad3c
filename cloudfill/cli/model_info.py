"""``cloudfill info MODEL``: describe a checkpoint (card, parameters, receptive field, cost).

The receptive field and GFLOP are computed from the loaded network, never read from the
card, so they are right even for a hand-edited card.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from rich.table import Table
from rich.text import Text

from cloudfill.cli._common import LazyModule

# Bound lazily (they import torch): loaded when a command runs, so --help stays fast.
receptive = LazyModule("cloudfill.model.receptive")
runtime = LazyModule("cloudfill.model.runtime")

__all__ = ["describe_model", "model_facts"]

TILE = 256


def _compact(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": ")) if value else "-"
    return str(value)


def _global_summary(names: tuple[str, ...]) -> str:
    # "trunk.10.attention.channel.avg_pool (AdaptiveAvgPool2d)" -> count per layer type.
    kinds = Counter(name.rsplit("(", 1)[-1].rstrip(")") for name in names)
    return ", ".join(f"{n} x {kind}" for kind, n in sorted(kinds.items()))


def model_facts(path: str | os.PathLike[str]) -> dict[str, str]:
    """The facts ``cloudfill info`` prints about a checkpoint, as ordered strings.

    Parameters
    ----------
    path
        A ``*.safetensors`` checkpoint or a checkpoint directory.

    Returns
    -------
    dict[str, str]

    Raises
    ------
    cloudfill.errors.CheckpointError
        If the checkpoint is missing, unsafe or inconsistent.

    Examples
    --------
    >>> import tempfile
    >>> from cloudfill.model import Generator, save_model
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = save_model(Generator("S", base_filters=4, n_blocks=1, attention=False), None, tmp)
    ...     facts = model_facts(tmp)
    >>> facts["variant"], facts["receptive field"]
    ('S', '41 px (halo 23 px per side)')
    """
    model = runtime.load_model(path)
    card = model.card
    rf = model.receptive_field
    n_params = model.n_parameters
    facts: dict[str, str] = {
        "checkpoint": f"{path} ({'directory' if Path(path).is_dir() else 'single file'})",
        "format version": str(card.format_version),
        "variant": card.variant,
        "input channels": ", ".join(card.input_channels),
        "output bands": ", ".join(card.bands),
        "polarisations": ", ".join(card.pols),
        "attention": card.attention,
        "base filters": str(card.base_filters),
        "residual blocks": str(card.n_blocks),
        "norm": card.norm,
        "confidence head": "yes (Laplace scale)" if card.confidence else "no",
        "normalisation": _compact(card.normalisation),
        "patch size": _compact(card.patch_size),
        "training": _compact(card.training),
        "split": _compact(card.split),
        "metrics": _compact(card.metrics),
        "cloudfill version": card.cloudfill_version,
        "created": card.created,
        "parameters": f"{n_params:,} ({n_params / 1e6:.2f} M)",
        "receptive field": f"{rf.size} px (halo {rf.halo} px per side)",
        "tile alignment": f"{rf.alignment} px (tile origins on multiples of it)",
        "tile-independent": (
            "yes"
            if rf.tile_independent
            else f"no: whole-tile layers {_global_summary(rf.global_context)}"
        ),
        f"GFLOP per {TILE}x{TILE} tile": f"{receptive.gflops(model, tile=TILE):.1f}",
    }
    return facts


def describe_model(path: str | os.PathLike[str]) -> Table:
    """A rich table describing a checkpoint, for ``cloudfill info MODEL``.

    Values are plain :class:`rich.text.Text`, so brackets in a card are never read as markup.

    Parameters
    ----------
    path
        A ``*.safetensors`` checkpoint or a checkpoint directory.

    Returns
    -------
    rich.table.Table

    Examples
    --------
    >>> import io, tempfile
    >>> from rich.console import Console
    >>> from cloudfill.model import Generator, save_model
    >>> console = Console(file=io.StringIO(), width=100)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     g = Generator("SD", base_filters=4, n_blocks=1)
    ...     console.print(describe_model(save_model(g, None, f"{tmp}/m.safetensors")))
    >>> "GFLOP per 256x256 tile" in console.file.getvalue()
    True
    """
    table = Table(title="cloudfill model", show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in model_facts(path).items():
        table.add_row(Text(key), Text(value))
    return table
