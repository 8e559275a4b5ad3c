"""``default_model``: the generator shipped with the package.

The change-aware SODCTXH model (blend reference, both sides' clear values with their S1, ages
and validity, the date's time of year, the date's own clear pixels through a context path of
partial convolutions, and what those pixels show at each pixel's height over the whole date)
with CBAM attention, a per-pixel path and the Laplace confidence head, 16 base filters and 4
residual blocks (sized for CPU inference), trained by ``scripts/train_default_model.py`` on
simulated scenes of two designs (an SODC model on nine scenes, fine-tuned as SODCT on twenty,
then as SODCTX and as SODCTXH on the same twenty, then with six snowy scenes added; the
shipped weights average two points of that last stage); its card holds the calibration of
its error bars. It demonstrates the pipeline; for real scenes train on
your own cube (``cloudfill train``). Loading it reads safetensors only.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from cloudfill.errors import CheckpointError
from cloudfill.model.runtime import load_model

__all__ = ["DEFAULT_MODEL_FILE", "default_model"]

DEFAULT_MODEL_FILE = "default_model.safetensors"


def default_model(device: str = "cpu", *, fast: bool = False) -> Any:
    """Load the shipped default model (a :class:`~cloudfill.model.runtime.CloudfillModel`).

    Examples
    --------
    >>> model = default_model()
    >>> model.card.variant, model.card.confidence
    ('SODCTXH', True)
    """
    path = resources.files("cloudfill") / "data" / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise CheckpointError(
            f"the default model {DEFAULT_MODEL_FILE} is missing from the installation; "
            "pass model=PATH (train one with `cloudfill train`)"
        )
    with resources.as_file(path) as local:
        return load_model(local, device=device, fast=fast)
