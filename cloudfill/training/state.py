"""The resumable training state on disk: safetensors tensors plus a JSON document, no pickle.

A training checkpoint is a directory (``out/last/``) holding

``state.safetensors``
    Every tensor: generator and discriminator weights and buffers (``G.*``, ``D.*``),
    optimiser tensors (``opt_g.state.<param>.<key>``, e.g. Adam's ``exp_avg``), RNG states
    (``rng.torch``, ``rng.cuda.<i>``) and the generator's weight average (``A.*``), if any.
``state.json``
    Everything else: epoch and step counters, history, best score, the optimisers'
    ``param_groups`` and non-tensor state entries, the training configuration, the
    normalisation statistics and the split.

``torch.optim.Optimizer.state_dict()`` mixes tensors and Python scalars; :func:`flatten_optimizer`
splits it into those two parts and :func:`restore_optimizer` puts it back, so nothing is ever
pickled (``torch.save`` would pickle it).

Writes are atomic at the directory level: the new state is written and synced in a sibling
temporary directory, the old directory is renamed aside, the new one renamed into place, and
the old one removed. A crash leaves either the old or the new state under the final name (or,
between the two renames, the old one under ``.<name>.old-*``, which :func:`read_state` finds).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from cloudfill.errors import CheckpointError
from cloudfill.training.step import Networks

__all__ = [
    "HISTORY_COLUMNS",
    "flatten_optimizer",
    "load_networks",
    "network_tensors",
    "read_state",
    "restore_optimizer",
    "write_history",
    "write_state",
]

HISTORY_COLUMNS: tuple[str, ...] = (
    "epoch",
    "step",
    "partial",
    "loss_g",
    "loss_d",
    "loss_adv",
    "loss_rec",
    "val_mae",
    "val_rmse",
    "val_l1",
    "val_change_mae",
    "val_weighted_mae",
    "seconds",
    "best",
)
"""Columns of ``metrics.csv``: one row per validation (end of epoch, or of a partial one)."""

TENSORS = "state.safetensors"
DOCUMENT = "state.json"
FORMAT = "cloudfill-training-state"
VERSION = 1


def flatten_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser's state dict into named tensors and a JSON-safe remainder.

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.ones(2))
    >>> opt = torch.optim.Adam([p])
    >>> p.grad = torch.ones(2); opt.step()
    >>> tensors, meta = flatten_optimizer(opt, "opt")
    >>> sorted(tensors)
    ['opt.state.0.exp_avg', 'opt.state.0.exp_avg_sq', 'opt.state.0.step']
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.state.{param}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(param), {})[key] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    json.dumps(meta)  # fail here, not half-way through a write, on a non-JSON entry
    return tensors, meta


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    prefix: str,
) -> None:
    """Inverse of :func:`flatten_optimizer`: load the state back into ``optimizer``."""
    state: dict[int, dict[str, Any]] = {}
    head = f"{prefix}.state."
    for name, value in tensors.items():
        if name.startswith(head):
            param, key = name[len(head) :].split(".", 1)
            state.setdefault(int(param), {})[key] = value
    for param, entries in meta["scalars"].items():
        state.setdefault(int(param), {}).update(entries)
    groups = []
    for saved, current in zip(meta["param_groups"], optimizer.param_groups, strict=True):
        # JSON turned tuples (Adam's betas) into lists; give them their type back.
        group = {
            k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v
            for k, v in saved.items()
        }
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def network_tensors(nets: Networks) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Every tensor of a run's networks, optimisers and RNGs, and the optimisers' JSON part.

    Names: ``G.*``, ``D.*`` (weights and buffers), ``opt_g.*``, ``opt_d.*``
    (:func:`flatten_optimizer`), ``rng.torch``, ``rng.cuda.<i>`` and ``A.*`` (the weight
    average, if any).

    Examples
    --------
    >>> from cloudfill.training.config import NetworkSettings, TrainConfig
    >>> config = TrainConfig("S", network=NetworkSettings(base_filters=4, n_blocks=1))
    >>> nets = Networks.build(config, torch.device("cpu"))
    >>> tensors, optim = network_tensors(nets)
    >>> load_networks(Networks.build(config, torch.device("cpu")), tensors, optim)
    >>> sorted({name.split(".")[0] for name in tensors})
    ['D', 'G', 'rng']
    """
    tensors = {f"G.{k}": v for k, v in nets.generator.state_dict().items()}
    tensors.update({f"D.{k}": v for k, v in nets.discriminator.state_dict().items()})
    t_g, meta_g = flatten_optimizer(nets.opt_g, "opt_g")
    t_d, meta_d = flatten_optimizer(nets.opt_d, "opt_d")
    tensors.update(t_g)
    tensors.update(t_d)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    if nets.average is not None:
        tensors.update({f"A.{k}": v for k, v in nets.average.state_dict().items()})
    return tensors, {"opt_g": meta_g, "opt_d": meta_d}


def load_networks(nets: Networks, tensors: dict[str, torch.Tensor], optim: dict[str, Any]) -> None:
    """Inverse of :func:`network_tensors` (``optim`` is its second value), RNGs included.

    See :func:`network_tensors` for an example.
    """
    for prefix, module in (("G.", nets.generator), ("D.", nets.discriminator)):
        state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        module.load_state_dict(state, strict=True)
    restore_optimizer(nets.opt_g, tensors, optim["opt_g"], "opt_g")
    restore_optimizer(nets.opt_d, tensors, optim["opt_d"], "opt_d")
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    if nets.average is not None:
        state = {k[2:]: v for k, v in tensors.items() if k.startswith("A.")}
        nets.average.load_state_dict(state, strict=True)


def write_history(path: Path, history: list[dict[str, Any]]) -> None:
    """Write the validation history as CSV (:data:`HISTORY_COLUMNS`), atomically.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     write_history(Path(tmp) / "metrics.csv", [{"epoch": 0, "step": 0, "best": True}])
    ...     print((Path(tmp) / "metrics.csv").read_text().splitlines()[1])
    0,0,,,,,,,,,,,,True
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in HISTORY_COLUMNS})
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(buffer.getvalue())
    os.replace(tmp, path)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_state(
    path: str | os.PathLike[str], tensors: dict[str, torch.Tensor], document: dict
) -> Path:
    """Write a training state directory atomically (see the module docstring).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     _ = write_state(f"{tmp}/last", {"w": torch.ones(2)}, {"step": 3})
    ...     tensors, doc = read_state(f"{tmp}/last")
    >>> doc["step"], tensors["w"].tolist()
    (3, [1.0, 1.0])
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    tmp = target.with_name(f".{target.name}.tmp-{tag}")
    old = target.with_name(f".{target.name}.old-{tag}")
    tmp.mkdir()
    try:
        payload = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        _write_file(tmp / TENSORS, safetensors_bytes(payload, {"format": FORMAT}))
        text = json.dumps({"format": FORMAT, "version": VERSION, **document}, indent=1)
        _write_file(tmp / DOCUMENT, text.encode())
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return target


def _locate(target: Path) -> Path:
    if (target / DOCUMENT).is_file():
        return target
    # A crash between the two renames of write_state leaves the old state aside.
    aside = sorted(target.parent.glob(f".{target.name}.old-*"), key=os.path.getmtime)
    for candidate in reversed(aside):
        if (candidate / DOCUMENT).is_file():
            return candidate
    raise CheckpointError(f"no training state in {str(target)!r} (nothing to resume)")


def read_state(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a state written by :func:`write_state`; only safetensors and JSON are parsed."""
    where = _locate(Path(path))
    try:
        document = json.loads((where / DOCUMENT).read_text())
    except ValueError as exc:
        raise CheckpointError(f"{str(where / DOCUMENT)!r} is not valid JSON: {exc}") from None
    if document.get("format") != FORMAT or document.get("version") != VERSION:
        raise CheckpointError(
            f"{str(where)!r} is not a cloudfill training state (version {VERSION})"
        )
    tensors: dict[str, torch.Tensor] = {}
    try:
        with safe_open(str(where / TENSORS), framework="pt", device="cpu") as fh:
            for name in fh.keys():
                tensors[name] = fh.get_tensor(name)
    except Exception as exc:
        raise CheckpointError(f"cannot read {str(where / TENSORS)!r}: {exc}") from None
    return tensors, document
