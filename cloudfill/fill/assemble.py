"""The filled dates of a series as one Dataset: values, per-date provenance and metadata.

Split from :mod:`cloudfill.fill.series` (which fills each date) to keep both small.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd
import xarray as xr

from cloudfill.model.calibration import CONFIDENCE_TOLERANCE

__all__ = ["FILLED_NAME", "assemble_series", "count_unfilled"]


def count_unfilled(filled: xr.Dataset) -> xr.DataArray:
    """Unusable pixels left NaN per date (nothing to fill them with), from the result alone:
    a filled ``s2`` pixel is NaN exactly where it was unusable and nothing was available, so
    the count can be summed over any windows of the written output.

    >>> import numpy as np
    >>> s2 = xr.DataArray(np.array([[[[np.nan, 1.0]]]]), dims=("time", "band", "y", "x"))
    >>> int(count_unfilled(xr.Dataset({"s2": s2}))[0])
    1
    """
    return filled["s2"].isnull().any("band").sum(("y", "x")).astype("int64")


FILLED_NAME = "; unusable pixels filled"
"""Appended to the input's ``s2`` long_name in the output."""


def assemble_series(
    ds: xr.Dataset,
    chosen: pd.DatetimeIndex,
    plan: pd.DataFrame,
    parts: Mapping[pd.Timestamp, xr.Dataset],
    attrs: Mapping[str, Any],
) -> xr.Dataset:
    """The filled dates as one Dataset along ``time``, with the plan's provenance, the
    cube's attrs followed by ``attrs``, and its CRS."""
    # One spatial chunking for every date, the inference blocks' where a date is synthesized:
    # concatenating different chunkings would refine them all to the finest.
    synthesized = [d for d in chosen if plan.loc[d, "method"] == "synthesize"]
    if synthesized and parts[synthesized[0]].chunks:
        blocks = {d: parts[synthesized[0]].chunksizes[d] for d in ("y", "x")}
        parts = {d: part.chunk(blocks) for d, part in parts.items()}
    out = xr.concat([parts[d] for d in chosen], dim=pd.Index(chosen, name="time"))
    out["s2"] = out["s2"].transpose("time", "band", "y", "x")
    # The input's attrs (units, scale, provenance), its name saying what changed.
    name = ds["s2"].attrs.get("long_name", "S2 reflectance")
    if isinstance(name, str) and not name.endswith(FILLED_NAME):  # a filled cube filled again
        name = f"{name}{FILLED_NAME}"
    out["s2"].attrs = {**ds["s2"].attrs, "long_name": name}
    out["filled"].attrs = {"long_name": "pixel replaced by a synthesized or interpolated value"}
    out["confidence"].attrs = {
        "long_name": "confidence of the pixel value (1 = real observation)",
        "definition": f"P(|error| <= {CONFIDENCE_TOLERANCE}) = 1 - exp(-{CONFIDENCE_TOLERANCE}"
        " / band-mean error_scale); where error_scale is unknown, a fixed value",
    }
    calibrated = out["error_scale"].attrs.get("calibrated", 0)  # each part's, the same
    out["error_scale"] = out["error_scale"].transpose("time", "band", "y", "x")
    out["error_scale"].attrs = {
        "long_name": "Laplace scale b of the filled value's error",
        "units": "reflectance",
        "definition": "P(|error| <= b ln(1/(1-q))) = q; 0 = real observation, NaN = unknown "
        "or unfilled; in the feather band b times the fill's blend weight",
        "calibrated": int(calibrated),
    }
    sub = plan.loc[chosen]
    out["method"] = ("time", sub["method"].astype(str).to_numpy())
    # The plan's own words for a date not synthesized, so a summary never restates the rule.
    out["reason"] = ("time", sub["reason"].astype(str).to_numpy())
    out["s1_date"] = ("time", pd.DatetimeIndex(sub["s1_date"]).to_numpy())
    out["reference_date"] = ("time", pd.DatetimeIndex(sub["reference_date"]).to_numpy())
    out["reference_chained"] = ("time", sub["reference_chained"].to_numpy(dtype=bool))
    out["cloud_fraction"] = ("time", sub["cloud_fraction"].to_numpy(dtype="float32"))
    out["unfilled"] = count_unfilled(out).assign_attrs(
        long_name="unusable pixels left NaN (nothing to fill them with)"
    )
    out.attrs = {**ds.attrs, **attrs}
    for name in ("spatial_ref",):
        if name in ds.coords:
            out = out.assign_coords({name: ds[name]})
    return out
