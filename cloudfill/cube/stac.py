"""Building a cube from STAC items with stackstac.

Items are sorted into roles by their assets:

- **S2**: items with an asset for each of ``s2_assets`` (``B02, B03, B04, B08`` by default,
  matched case-insensitively and through the aliases ``blue, green, red, nir`` and ``B2`` ...),
  or whose ``properties["platform"]`` starts with ``sentinel-2``;
- **S1**: items with an asset for each of ``s1_assets`` (``vv, vh``), or platform
  ``sentinel-1*``;
- **DEM**: items with the ``dem_asset`` key (e.g. ``"data"`` for Copernicus DEM items);
- anything else is ignored.

The S2 stack defines the grid (``epsg``, ``resolution`` and ``bounds`` as for
:func:`stackstac.stack`); S1 and DEM are stacked onto exactly that grid, bilinearly. Items
sharing a datetime (adjacent tiles of one pass) are mosaicked, first valid pixel wins.
stackstac's per-item metadata coordinates and its attrs are dropped, so the result can be
written with :func:`cloudfill.write_cube`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from cloudfill.cube.schema import BANDS, POLS, S1_UNITS, _band_name, conform, validate
from cloudfill.errors import BandError, GridMismatchError, ParameterError, SourceError

__all__ = ["cube_from_stac"]


def cube_from_stac(
    items: Any,
    *,
    s2_assets: Sequence[str] = BANDS,
    s1_assets: Sequence[str] = ("vv", "vh"),
    dem_asset: str | None = None,
    scl_asset: str | None = "SCL",
    cloud_asset: str | None = None,
    epsg: int | None = None,
    resolution: float | tuple[float, float] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    bounds_latlon: tuple[float, float, float, float] | None = None,
    chunksize: int = 1024,
    s2_scale: float = 1e-4,
    s2_offset: float = 0.0,
    s1_units: str = "linear",
) -> xr.Dataset:
    """Build a lazy contract cube from STAC items via :func:`stackstac.stack`.

    Works offline on local COG hrefs. Reflectance is read as float32 with
    ``rescale=False`` and then mapped as ``value * s2_scale + s2_offset``: the default turns
    Sentinel-2 integer digital numbers into 0..1 reflectance; pass ``s2_offset=-0.1`` for
    L2A products of processing baseline 04.00 and later, or ``s2_scale=1`` for items that
    already hold reflectance.

    Parameters
    ----------
    items
        pystac Items, an ``ItemCollection``, plain item dicts, or an ItemCollection JSON dict
        (with ``"features"``). Asset hrefs must be absolute or resolvable from pystac
        Items' self links. ``proj:code`` is accepted in place of ``proj:epsg``.
    s2_assets
        Asset keys of ``B02, B03, B04, B08``, in that order (aliases accepted).
    s1_assets
        Asset keys of ``VV, VH``, in that order.
    dem_asset
        Asset key of DEM items; None for a cube without ``dem``.
    scl_asset
        Asset key of the Sen2Cor scene classification in S2 items; used when present.
    cloud_asset
        Asset key of a cloud mask in S2 items (nonzero = unusable); used when present.
    epsg, resolution, bounds, bounds_latlon
        The output grid, as for :func:`stackstac.stack`; by default the S2 items' own CRS,
        resolution and union of footprints.
    chunksize
        Spatial chunk size in pixels.
    s2_scale, s2_offset
        Applied to S2 values (see above).
    s1_units
        ``"linear"`` (default, e.g. RTC gamma0 backscatter) or ``"dB"``.

    Returns
    -------
    xarray.Dataset
        A validated cube with ``s2`` and, when found, ``s1``, ``dem``, ``scl``, ``cloud``.

    Raises
    ------
    SourceError
        No S2 item, an entry that is not a STAC item, or stackstac cannot place the items
        (missing ``proj:`` metadata, mixed CRSs without ``epsg``).
    BandError
        A Sentinel-2/-1 item (by platform) lacks one of the requested assets.
    ParameterError
        Bad ``s2_assets``, ``s1_assets`` or ``s1_units``.

    Examples
    --------
    >>> import pystac
    >>> items = pystac.ItemCollection.from_file("items.json")  # doctest: +SKIP
    >>> ds = cube_from_stac(items, epsg=32633, resolution=10)  # doctest: +SKIP
    >>> list(ds.band.values)  # doctest: +SKIP
    ['B02', 'B03', 'B04', 'B08']
    """
    import stackstac  # heavy; only needed here
    from rasterio.enums import Resampling

    if len(s2_assets) != len(BANDS):
        raise ParameterError(f"s2_assets needs {len(BANDS)} keys ({BANDS}), got {s2_assets}")
    if len(s1_assets) != len(POLS):
        raise ParameterError(f"s1_assets needs {len(POLS)} keys ({POLS}), got {s1_assets}")
    if s1_units not in S1_UNITS:
        raise ParameterError(f"s1_units must be one of {list(S1_UNITS)}, got {s1_units!r}")

    roles = _sort_roles(
        _plain_items(items), s2_assets, s1_assets, dem_asset, scl_asset, cloud_asset
    )
    if not roles["s2"]:
        raise SourceError(
            f"no Sentinel-2 item: none has assets {list(s2_assets)} (or aliases) or a "
            "'sentinel-2' platform"
        )

    def stack(role_items: list[dict], assets: list[str], resampling: Resampling, **grid: Any):
        try:
            return stackstac.stack(
                role_items,
                assets=assets,
                chunksize=chunksize,
                dtype=np.dtype("float32"),
                # A numpy float32 scalar: stackstac checks np.can_cast(type(fill_value), dtype),
                # which NumPy 2 refuses for a Python float.
                fill_value=np.float32(np.nan),
                rescale=False,
                xy_coords="center",
                properties=False,
                band_coords=False,
                resampling=resampling,
                **grid,
            )
        except (ValueError, KeyError, TypeError) as exc:
            ids = [item.get("id") for item in role_items][:5]
            raise SourceError(f"stackstac cannot stack items {ids}: {exc}") from exc

    s2 = stack(
        roles["s2"],
        list(BANDS),
        Resampling.nearest,
        epsg=epsg,
        resolution=resolution,
        bounds=bounds,
        bounds_latlon=bounds_latlon,
    )
    spec = s2.attrs["spec"]
    on_grid = {
        "epsg": spec.epsg,
        "resolution": spec.resolutions_xy,
        "bounds": spec.bounds,
        "snap_bounds": False,
    }
    variables = {"s2": _tidy(s2, "time") * np.float32(s2_scale) + np.float32(s2_offset)}
    for name in ("scl", "cloud"):
        if roles[name]:
            codes = _tidy(stack(roles[name], [name], Resampling.nearest, **on_grid), "time")
            codes = codes.isel(band=0, drop=True)
            # Pixels no item covers are "no data": SCL class 0, and unusable for cloud.
            variables[name] = (
                codes.fillna(0).astype("uint8") if name == "scl" else codes.fillna(1) != 0
            )
    if roles["s1"]:
        s1 = stack(roles["s1"], list(POLS), Resampling.bilinear, **on_grid)
        variables["s1"] = _tidy(s1, "s1_time").rename(band="pol").assign_attrs(units=s1_units)
    if roles["dem"]:
        dem = stack(roles["dem"], ["dem"], Resampling.bilinear, **on_grid)
        variables["dem"] = stackstac.mosaic(_tidy(dem, "time"), dim="time").isel(band=0, drop=True)

    x, y = variables["s2"].x.values, variables["s2"].y.values
    for name, var in variables.items():
        if var.sizes["x"] != x.size or var.sizes["y"] != y.size:
            raise GridMismatchError(f"stacked {name!r} is not on the S2 grid ({dict(var.sizes)})")
        variables[name] = var.assign_coords(x=x, y=y)
    ds = xr.Dataset(variables).assign_coords(band=list(BANDS))
    if "s1" in ds:
        ds = ds.assign_coords(pol=list(POLS))
    ds = conform(ds.rio.write_crs(spec.epsg))
    validate(ds, require=list(variables))
    return ds


def _plain_items(items: Any) -> list[dict[str, Any]]:
    """Items as plain dicts with absolute hrefs and ``proj:epsg`` (what stackstac reads)."""
    import pystac

    if isinstance(items, pystac.Item | Mapping) and not (
        isinstance(items, Mapping) and "features" in items
    ):
        items = [items]
    elif isinstance(items, Mapping):
        items = items["features"]
    plain = []
    for index, item in enumerate(items):
        if isinstance(item, pystac.Item):
            entry = item.to_dict(include_self_link=False)
            for key, asset in item.assets.items():
                entry["assets"][key]["href"] = asset.get_absolute_href() or asset.href
        elif isinstance(item, Mapping):
            entry = copy.deepcopy(dict(item))
        else:
            raise SourceError(f"entry {index} is not a STAC item but a {type(item).__name__}")
        if not isinstance(entry.get("assets"), Mapping) or "properties" not in entry:
            raise SourceError(f"entry {index} ({entry.get('id')}) has no assets or properties")
        _fill_epsg(entry["properties"])
        for asset in entry["assets"].values():
            _fill_epsg(asset)
        plain.append(entry)
    return plain


def _fill_epsg(fields: dict[str, Any]) -> None:
    # The projection extension v2 replaced proj:epsg by proj:code; stackstac reads only the
    # former.
    code = fields.get("proj:code")
    if fields.get("proj:epsg") is None and isinstance(code, str):
        authority, _, number = code.partition(":")
        if authority.upper() == "EPSG" and number.isdigit():
            fields["proj:epsg"] = int(number)


def _match(assets: Iterable[str], wanted: str, *, band: bool) -> str | None:
    """The asset key standing for ``wanted``: case-insensitive, band aliases for S2."""
    for key in assets:
        if key.lower() == wanted.lower() or (band and _band_name(key) == _band_name(wanted)):
            return key
    return None


def _sort_roles(
    items: list[dict[str, Any]],
    s2_assets: Sequence[str],
    s1_assets: Sequence[str],
    dem_asset: str | None,
    scl_asset: str | None,
    cloud_asset: str | None,
) -> dict[str, list[dict[str, Any]]]:
    """Split items into S2 / S1 / DEM and rename their assets to contract names.

    ``scl`` and ``cloud`` hold the S2 items with only that asset (empty when no item has it).
    """
    roles: dict[str, list[dict[str, Any]]] = {r: [] for r in ("s2", "s1", "dem", "scl", "cloud")}
    for item in items:
        keys = list(item["assets"])
        platform = str(item["properties"].get("platform", "")).lower()
        s2_keys = [_match(keys, w, band=True) for w in s2_assets]
        s1_keys = [_match(keys, w, band=False) for w in s1_assets]
        if platform.startswith("sentinel-2") or (
            all(s2_keys) and not platform.startswith("sentinel-1")
        ):
            role, labels, found, wanted = "s2", BANDS, s2_keys, s2_assets
        elif platform.startswith("sentinel-1") or all(s1_keys):
            role, labels, found, wanted = "s1", POLS, s1_keys, s1_assets
        elif dem_asset is not None and (key := _match(keys, dem_asset, band=False)):
            roles["dem"].append({**item, "assets": {"dem": item["assets"][key]}})
            continue
        else:
            continue
        for key, want in zip(found, wanted, strict=True):
            if key is None:
                raise BandError(
                    f"STAC item {item.get('id')!r} ({role.upper()}) has no asset for {want!r}; "
                    f"its assets are {keys}"
                )
        assets = {label: item["assets"][key] for label, key in zip(labels, found, strict=True)}
        roles[role].append({**item, "assets": assets})
        if role == "s2":
            for name, wanted_key in (("scl", scl_asset), ("cloud", cloud_asset)):
                key = _match(keys, wanted_key, band=False) if wanted_key else None
                # Every S2 item goes in, so the mask shares the S2 time axis; stackstac
                # fills a missing asset with NaN (no data).
                roles[name].append({**item, "assets": {name: item["assets"][key]} if key else {}})
    for name in ("scl", "cloud"):
        if not any(item["assets"] for item in roles[name]):
            roles[name] = []
    return roles


def _tidy(arr: xr.DataArray, time_dim: str) -> xr.DataArray:
    """A stackstac array without its metadata coords/attrs, dates mosaicked and unique."""
    times = pd.DatetimeIndex(arr["time"].values)
    if times.tz is not None:
        times = times.tz_convert("UTC").tz_localize(None)
    data = arr.data.rechunk({1: -1})  # all bands in one chunk, as the contract asks
    out = xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"time": times, "y": arr.y.values, "x": arr.x.values},
    )
    if times.has_duplicates:
        # Adjacent tiles of one pass share a datetime: mosaic them, first valid pixel wins.
        out = out.groupby("time").first(skipna=True)
    return out.rename(time=time_dim) if time_dim != "time" else out
