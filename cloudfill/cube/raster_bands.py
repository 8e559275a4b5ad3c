"""The scale and offset of STAC assets (the raster extension's ``raster:bands``).

L2A items of Planetary Computer and Earth Search declare how digital numbers map to
reflectance on each band asset: ``reflectance = DN * scale + offset``, with ``scale`` 0.0001
and ``offset`` -0.1 since processing baseline 04.00 (0 before). A series crossing a baseline
change mixes both, so the values are applied per item and asset, never once for the cube.

S2 is read unscaled and scaled here, by :func:`reflectance`, lazily: DN 0 (no data in L2A
products, as the GeoTIFF loader treats it) and any ``nodata`` an asset declares in
``raster:bands`` are masked first, so no data stays NaN instead of becoming -0.1, also where
the file itself declares no nodata (stackstac masks only the file's). S1 and DEM are scaled
by stackstac's ``rescale=True``, after the file's nodata. stackstac needs every asset to
carry a scale and an offset it can cast to the output dtype: it checks
``np.can_cast(type(value), dtype)``, which NumPy 2 refuses for a Python float or int into
float32. :func:`with_scaling` therefore gives every asset both, as ``numpy.float32``, on
copies of the items (the caller's items are never changed).

Precedence, per asset and per field (``scale``, ``offset``):

1. the value the asset declares in ``raster:bands``;
2. else the loader's keyword (``s2_scale``, default 1/10000; ``s2_offset``, default 0);
3. an explicit keyword that contradicts a declared value is a
   :class:`~cloudfill.errors.ParameterError`: the caller expected other data than the items
   describe (``s2_offset=-0.1`` given for a series whose early items declare offset 0).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from cloudfill.errors import ParameterError, SourceError

__all__ = ["S2_SCALE", "declared_scaling", "in_stack_order", "reflectance", "with_scaling"]

S2_SCALE: float = 1e-4
"""Sentinel-2 digital numbers are reflectance x 10000 (the scale of items that declare none)."""

_FIELDS = ("scale", "offset")


def declared_scaling(item: Mapping[str, Any], key: str) -> dict[str, float]:
    """The ``scale`` and ``offset`` that asset ``key`` of ``item`` declares (either, both or
    neither) in a single-band ``raster:bands``.

    Multi-band ``raster:bands`` declare nothing here: stackstac refuses such assets itself.

    Raises
    ------
    SourceError
        A declared value that is not a finite number.

    Examples
    --------
    >>> item = {"id": "a", "assets": {"B02": {"raster:bands": [{"scale": 0.0001}]}}}
    >>> declared_scaling(item, "B02")
    {'scale': 0.0001}
    """
    bands = item["assets"][key].get("raster:bands")
    if not isinstance(bands, list) or len(bands) != 1 or not isinstance(bands[0], Mapping):
        return {}
    declared = {}
    for field in _FIELDS:
        value = bands[0].get(field)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise SourceError(
                f"STAC item {item.get('id')!r}: the raster:bands {field} of its {key} asset "
                f"is {value!r}, not a finite number"
            )
        declared[field] = number
    return declared


def with_scaling(
    items: list[dict[str, Any]],
    scale: float | None = None,
    offset: float = 0.0,
    *,
    default_scale: float = 1.0,
    names: tuple[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Copies of ``items`` whose every asset declares a ``numpy.float32`` scale and offset
    in ``raster:bands``, ready for ``stackstac.stack(rescale=True, dtype="float32")``.

    Parameters
    ----------
    items
        Plain item dicts (their assets already renamed to the stacked names).
    scale, offset
        For assets that declare none; ``scale`` None: ``default_scale``.
    default_scale
        The scale of assets that declare none when ``scale`` is None (not asked for, so it
        contradicts nothing).
    names
        The keywords ``scale`` and ``offset`` were given as (``("s2_scale", "s2_offset")``):
        when given, an explicit value (a ``scale`` that is not None, an ``offset`` that is
        not 0) must agree with what each asset declares.

    Returns
    -------
    list of dict
        New item and asset dicts; ``items`` is left as it was.

    Raises
    ------
    ParameterError
        An explicit ``scale`` or ``offset`` contradicting an asset's declared value.
    SourceError
        A declared value that is not a finite number.

    Examples
    --------
    >>> items = [{"id": "a", "assets": {"B02": {"raster:bands": [{"offset": -0.1}]}}}]
    >>> band = with_scaling(items, default_scale=1e-4)[0]["assets"]["B02"]["raster:bands"][0]
    >>> type(band["scale"]).__name__, [round(float(band[f]), 6) for f in ("scale", "offset")]
    ('float32', [0.0001, -0.1])
    """
    fallback = {"scale": default_scale if scale is None else scale, "offset": offset}
    # 0 is the offset that asks for nothing (the CLI passes it by default).
    asked = {"scale": scale is not None, "offset": offset != 0}
    scaled = []
    for item in items:
        assets = {}
        for key, asset in item["assets"].items():
            bands = asset.get("raster:bands")
            if isinstance(bands, list) and len(bands) > 1:
                assets[key] = asset  # multi-band: stackstac refuses it with its own message
                continue
            declared = declared_scaling(item, key)
            if names is not None:
                _check_agrees(item, key, declared, fallback, asked, names)
            values = {f: np.float32(declared.get(f, fallback[f])) for f in _FIELDS}
            band = dict(bands[0]) if isinstance(bands, list) and bands else {}
            assets[key] = {**asset, "raster:bands": [{**band, **values}]}
        scaled.append({**item, "assets": assets})
    return scaled


def _check_agrees(
    item: Mapping[str, Any],
    key: str,
    declared: dict[str, float],
    given: dict[str, float],
    asked: dict[str, bool],
    names: tuple[str, str],
) -> None:
    for field, name in zip(_FIELDS, names, strict=True):
        if field not in declared or not asked[field]:
            continue
        if not math.isclose(declared[field], given[field], rel_tol=1e-6, abs_tol=1e-12):
            raise ParameterError(
                f"{name}={given[field]:g} contradicts STAC item {item.get('id')!r}, whose "
                f"{key} asset declares {field} {declared[field]:g} (raster:bands); the "
                f"items' own scale and offset are applied per date and asset: leave {name} "
                "out (or give the value the items declare)"
            )


def in_stack_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``items`` in the order :func:`stackstac.stack` stacks them (``sortby_date="asc"``: by
    the ``datetime`` text, ties in the given order), so its time axis can be matched to them.

    >>> [i["id"] for i in in_stack_order([{"id": "b", "properties": {"datetime": "2022-01-02"}},
    ...                                   {"id": "a", "properties": {"datetime": "2022-01-01"}}])]
    ['a', 'b']
    """
    return sorted(items, key=lambda item: item["properties"].get("datetime", "") or "")


def _band_fields(asset: Mapping[str, Any]) -> tuple[float, float, float, bool]:
    """An asset's (scale, offset, declared nodata or NaN, whether DN 0 is no data)."""
    band = asset["raster:bands"][0]  # with_scaling gave every asset one
    try:
        nodata = float(band.get("nodata"))
    except (TypeError, ValueError):
        nodata = math.nan  # none, or "nan"/"inf" (the file's own nodata is NaN already)
    # Integer digital numbers: 0 is no data; an asset declaring float data holds values.
    zero = not str(band.get("data_type", "")).startswith("float")
    return float(band["scale"]), float(band["offset"]), nodata, zero


def reflectance(
    dn: xr.DataArray, items: Sequence[Mapping[str, Any]], bands: Sequence[str]
) -> xr.DataArray:
    """``dn * scale + offset`` per item (the time axis) and band asset, no data masked first.

    Parameters
    ----------
    dn
        A stack ``(time, band, y, x)`` read without rescaling, one date per item, as
        :func:`stackstac.stack` returns it for ``items`` in :func:`in_stack_order`.
    items
        The stacked items, as :func:`with_scaling` left them (every asset declares a scale
        and an offset).
    bands
        The stacked asset keys, in the stack's band order.

    Returns
    -------
    xarray.DataArray
        Lazy float32 reflectance: NaN where the file had no data, where DN is 0 (unless the
        asset declares float ``data_type``) and where DN is the asset's declared ``nodata``.

    Examples
    --------
    >>> item = {"id": "a", "assets": {"B02": {"raster:bands": [
    ...     {"scale": 1e-4, "offset": -0.1, "nodata": 65535}]}}}
    >>> dn = xr.DataArray(np.array([[[[0, 2000, 65535]]]], "float32"),
    ...                   dims=("time", "band", "y", "x"))
    >>> [round(float(v), 4) for v in reflectance(dn, [item], ["B02"]).values.ravel()]
    [nan, 0.1, nan]
    """
    if dn.sizes["time"] != len(items):
        raise SourceError(f"stackstac stacked {dn.sizes['time']} dates for {len(items)} S2 items")
    ids = dn.coords["id"].values.tolist() if "id" in dn.coords else None
    if ids is not None and ids != [item.get("id") for item in items]:
        raise SourceError(f"stackstac stacked the S2 items in another order ({ids[:5]})")
    fields = np.array(
        [[_band_fields(item["assets"][band]) for band in bands] for item in items],
        dtype="float64",
    ).reshape(len(items), len(bands), 4)
    scale, offset, nodata = (fields[..., k, None, None].astype("float32") for k in range(3))
    zero = fields[..., 3, None, None].astype(bool)
    data = dn.data
    masked = (data == nodata) | ((data == 0) & zero)
    values = da.where(masked, np.float32(np.nan), data) * scale + offset
    return dn.copy(data=values.astype("float32"))
