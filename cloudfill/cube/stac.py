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
written with :func:`cloudfill.write_cube`; only the sun's position at each S2 date is kept, as
the ``sun_elevation`` and ``sun_azimuth`` coordinates (degrees, along ``time``) where the
items say it (``view:sun_elevation``/``view:sun_azimuth``, or Sentinel-2's
``s2:mean_solar_zenith``/``s2:mean_solar_azimuth``; the mean over a date's items), for the
models that read the slopes' sunlight (:mod:`cloudfill.core.illumination`).

S2, S1 and DEM values are scaled by the STAC raster extension (``raster:bands`` ``scale`` and
``offset``) of each item's asset, lazily (see :mod:`cloudfill.cube.raster_bands`); S2 assets
that declare none take ``s2_scale`` and ``s2_offset``, and S2's no data (DN 0, a declared
``nodata``) is masked before the offset.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from rasterio.enums import Resampling

from cloudfill.cube.coverage import (
    MIN_COVERAGE,
    check_coverage,
    check_min_coverage,
    item_footprint,
    listed,
    union_label,
)
from cloudfill.cube.raster_bands import S2_SCALE, in_stack_order, reflectance, with_scaling
from cloudfill.cube.schema import BANDS, POLS, S1_UNITS, _band_name, conform, validate
from cloudfill.cube.sun import sun_angles
from cloudfill.errors import BandError, GridMismatchError, ParameterError, SourceError

__all__ = ["StacAssets", "cube_from_stac"]


@dataclass(frozen=True)
class StacAssets:
    """Which asset keys of the STAC items hold what: the settings that sort items into roles.

    Each field can also be given to :func:`cube_from_stac` as the keyword in brackets.

    Attributes
    ----------
    s2
        Asset keys of ``B02, B03, B04, B08``, in that order (aliases accepted)
        (``s2_assets``).
    s1
        Asset keys of ``VV, VH``, in that order (``s1_assets``).
    dem
        Asset key of DEM items; None for a cube without ``dem`` (``dem_asset``).
    scl
        Asset key of the Sen2Cor scene classification in S2 items; used when present
        (``scl_asset``).
    cloud
        Asset key of a cloud mask in S2 items (nonzero = unusable); used when present
        (``cloud_asset``).

    Raises
    ------
    ParameterError
        When ``s2`` or ``s1`` does not hold one key per band or polarisation.

    Examples
    --------
    >>> StacAssets(dem="data", scl=None).s1
    ('vv', 'vh')
    """

    s2: Sequence[str] = BANDS
    s1: Sequence[str] = ("vv", "vh")
    dem: str | None = None
    scl: str | None = "SCL"
    cloud: str | None = None

    def __post_init__(self) -> None:
        # The messages name cube_from_stac's keywords, the way most callers give these keys.
        if len(self.s2) != len(BANDS):
            raise ParameterError(f"s2_assets needs {len(BANDS)} keys ({BANDS}), got {self.s2}")
        if len(self.s1) != len(POLS):
            raise ParameterError(f"s1_assets needs {len(POLS)} keys ({POLS}), got {self.s1}")
        # Tuples keep the frozen settings hashable whatever sequence the caller passed.
        object.__setattr__(self, "s2", tuple(self.s2))
        object.__setattr__(self, "s1", tuple(self.s1))


# cube_from_stac's keywords for the fields of StacAssets, kept for existing calls.
_ASSET_KEYWORDS = {
    "s2_assets": "s2",
    "s1_assets": "s1",
    "dem_asset": "dem",
    "scl_asset": "scl",
    "cloud_asset": "cloud",
}


def cube_from_stac(
    items: Any,
    *,
    assets: StacAssets | None = None,
    epsg: int | None = None,
    resolution: float | tuple[float, float] | None = None,
    bounds: tuple[float, float, float, float] | None = None,
    bounds_latlon: tuple[float, float, float, float] | None = None,
    chunksize: int = 1024,
    s2_scale: float | None = None,
    s2_offset: float = 0.0,
    s1_units: str = "linear",
    min_coverage: float = MIN_COVERAGE,
    **asset_keys: Any,
) -> xr.Dataset:
    """Build a lazy contract cube from STAC items via :func:`stackstac.stack`.

    Works offline on local COG hrefs. Reflectance is ``DN * scale + offset``, per item and
    band asset, lazily, after no data is masked (the file's nodata, DN 0 as in L2A products,
    and a ``nodata`` the asset declares in ``raster:bands``): the
    ``scale`` and ``offset`` an asset declares in the STAC raster extension
    (``raster:bands``, as Planetary Computer and Earth Search L2A items do: 0.0001 and -0.1
    since processing baseline 04.00) win; an asset declaring none takes ``s2_scale`` (default
    1/10000, Sentinel-2 digital numbers) and ``s2_offset`` (default 0). Items of different
    dates may declare different offsets (a series crossing a baseline change): each keeps
    its own.

    Parameters
    ----------
    items
        pystac Items, an ``ItemCollection``, plain item dicts, or an ItemCollection JSON dict
        (with ``"features"``). Asset hrefs must be absolute or resolvable from pystac
        Items' self links. ``proj:code`` is accepted in place of ``proj:epsg``.
    assets
        The asset keys of each role (:class:`StacAssets`); None for its defaults:
        ``B02, B03, B04, B08`` (or aliases) for S2, ``vv, vh`` for S1, ``SCL``, no DEM and
        no cloud mask.
    epsg, resolution, bounds, bounds_latlon
        The output grid, as for :func:`stackstac.stack`; by default the S2 items' own CRS,
        resolution and union of footprints.
    chunksize
        Spatial chunk size in pixels.
    s2_scale, s2_offset
        For S2 assets without ``raster:bands`` scale / offset: pass ``s2_offset=-0.1`` for
        such L2A items of processing baseline 04.00 and later, ``s2_scale=1`` for items that
        already hold reflectance. A given ``s2_scale``, or an ``s2_offset`` other than 0
        (0 asks for nothing), that contradicts a value an item declares is a
        ParameterError naming the item.
    s1_units
        ``"linear"`` (default, e.g. RTC gamma0 backscatter) or ``"dB"``. S1 and DEM assets
        declaring ``raster:bands`` scale / offset are scaled by them too.
    min_coverage
        The least share (0..1) of the S2 grid that the S1 items (all dates together: a
        date at the edge of its swath may cover less) and the DEM items must cover, judged
        from their ``proj:`` footprints (or ``bbox``); default
        :data:`~cloudfill.cube.coverage.MIN_COVERAGE` (0.5).
    **asset_keys
        ``s2_assets``, ``s1_assets``, ``dem_asset``, ``scl_asset``, ``cloud_asset``: the
        fields of :class:`StacAssets` as keywords (``s2_assets`` is ``StacAssets.s2`` ...);
        they override the same fields of ``assets``. ``s2_assets`` are the keys of ``B02,
        B03, B04, B08`` in that order (aliases accepted), ``s1_assets`` those of ``VV, VH``;
        ``dem_asset`` is the key of DEM items (None: a cube without ``dem``); ``scl_asset``
        the Sen2Cor scene classification and ``cloud_asset`` a cloud mask (nonzero =
        unusable) in S2 items, each used when present.

    Returns
    -------
    xarray.Dataset
        A validated cube with ``s2`` and, when found, ``s1``, ``dem``, ``scl``, ``cloud``.

    Raises
    ------
    SourceError
        No S2 item, an entry that is not a STAC item, an asset whose local file does not
        exist, or stackstac cannot place the items (missing ``proj:`` metadata, mixed CRSs
        without ``epsg``).
    GridMismatchError
        The S1 items (the union of their dates' footprints), or the DEM items, cover less
        than ``min_coverage`` of the S2 grid; the message names the items, a file and the
        share.
    BandError
        A Sentinel-2/-1 item (by platform) lacks one of the requested assets.
    ParameterError
        Bad ``s2_assets``, ``s1_assets``, ``s1_units`` or ``min_coverage``; an ``s2_scale``
        or ``s2_offset`` that contradicts the items' ``raster:bands``.
    TypeError
        A keyword that is neither a parameter nor one of ``asset_keys``.

    Examples
    --------
    >>> import pystac
    >>> items = pystac.ItemCollection.from_file("items.json")  # doctest: +SKIP
    >>> ds = cube_from_stac(items, epsg=32633, resolution=10)  # doctest: +SKIP
    >>> list(ds.band.values)  # doctest: +SKIP
    ['B02', 'B03', 'B04', 'B08']
    >>> with_dem = cube_from_stac(items, assets=StacAssets(dem="data"))  # doctest: +SKIP
    """
    assets = _asset_settings(assets, asset_keys)
    if s1_units not in S1_UNITS:
        raise ParameterError(f"s1_units must be one of {list(S1_UNITS)}, got {s1_units!r}")
    check_min_coverage(min_coverage)
    roles = _sort_roles(_plain_items(items), assets)
    if not roles["s2"]:
        raise SourceError(
            f"no Sentinel-2 item: none has assets {list(assets.s2)} (or aliases) or a "
            "'sentinel-2' platform"
        )
    _check_local_files(roles)
    # Before anything is stacked: an s2_scale / s2_offset contradicting the items.
    roles["s2"] = in_stack_order(
        with_scaling(
            roles["s2"],
            s2_scale,
            s2_offset,
            default_scale=S2_SCALE,
            names=("s2_scale", "s2_offset"),
        )
    )
    for name in ("s1", "dem"):
        roles[name] = with_scaling(roles[name])
    grid = {
        "epsg": epsg,
        "resolution": resolution,
        "bounds": bounds,
        "bounds_latlon": bounds_latlon,
    }
    # Unscaled: no data (DN 0 too) is masked before each item's scale and offset.
    s2 = _stack(roles["s2"], list(BANDS), Resampling.nearest, chunksize, **grid)
    spec = s2.attrs["spec"]
    _check_coverage(roles, spec, min_coverage)
    variables = {"s2": _tidy(reflectance(s2, roles["s2"], BANDS), "time")}
    variables.update(_stack_on_s2_grid(roles, spec, chunksize, s1_units))
    ds = _assemble(variables, spec.epsg)
    sun = sun_angles(roles["s2"], ds.indexes["time"])
    return ds if sun is None else ds.assign_coords(sun)


def _local_path(href: str) -> Path | None:
    """The local file an asset href names, or None for a remote one."""
    if href.startswith("file://"):
        return Path(href.removeprefix("file://"))
    return None if "://" in href else Path(href)


def _check_local_files(roles: dict[str, list[dict[str, Any]]]) -> None:
    """Refuse an asset of a used item whose local file does not exist (stackstac would fail
    only while the cube is computed)."""
    for role_items in roles.values():
        for item in role_items:
            for key, asset in item["assets"].items():
                path = _local_path(str(asset.get("href", "")))
                if path is not None and not path.exists():
                    raise SourceError(
                        f"STAC item {item.get('id')!r}: the file of its {key} asset, "
                        f"{asset.get('href')}, does not exist"
                    )


def _check_coverage(
    roles: dict[str, list[dict[str, Any]]], spec: Any, min_coverage: float = MIN_COVERAGE
) -> None:
    """Refuse the S1 items (all dates together: a swath-edge date may cover part of the grid),
    or the DEM items, whose footprints cover less than ``min_coverage`` of the S2 grid
    ``spec``. A group with an item without a footprint passes (its union is unknown)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    if roles["s1"]:
        dates = sorted({str(item["properties"].get("datetime"))[:10] for item in roles["s1"]})
        groups[union_label("S1", dates).rstrip(",")] = roles["s1"]
    if roles["dem"]:
        groups["DEM"] = roles["dem"]
    for what, group in groups.items():
        footprints = [item_footprint(item) for item in group]
        if any(f is None for f in footprints):
            continue
        ids = [str(item.get("id")) for item in group]
        href = next(iter(group[0]["assets"].values()), {}).get("href")
        shown = f"[{listed([repr(i) for i in ids])}]"
        check_coverage(
            f"{what}: STAC items {shown} (file {href}{', ...' if len(group) > 1 else ''})",
            footprints,  # type: ignore[arg-type]
            f"EPSG:{spec.epsg}",
            tuple(spec.bounds),
            min_coverage,
        )


def _asset_settings(assets: StacAssets | None, asset_keys: dict[str, Any]) -> StacAssets:
    """``assets`` (or the defaults) with the fields given as keywords replaced."""
    unknown = sorted(set(asset_keys) - set(_ASSET_KEYWORDS))
    if unknown:
        raise TypeError(f"cube_from_stac() got an unexpected keyword argument {unknown[0]!r}")
    fields = {_ASSET_KEYWORDS[key]: value for key, value in asset_keys.items()}
    base = StacAssets() if assets is None else assets
    # replace() goes through __init__, so keyword values are checked like the fields.
    return dataclasses.replace(base, **fields) if fields else base


def _stack(
    role_items: list[dict],
    assets: list[str],
    resampling: Any,
    chunksize: int,
    rescale: bool = False,
    **grid: Any,
) -> xr.DataArray:
    """:func:`stackstac.stack` with the settings every role shares, errors as SourceError;
    ``rescale`` applies the assets' float32 ``raster:bands`` scale and offset (``with_scaling``)."""
    import stackstac  # imports slowly; only STAC input needs it

    try:
        return stackstac.stack(
            role_items,
            assets=assets,
            chunksize=chunksize,
            dtype=np.dtype("float32"),
            # A numpy float32 scalar: stackstac checks np.can_cast(type(fill_value), dtype),
            # which NumPy 2 refuses for a Python float.
            fill_value=np.float32(np.nan),
            rescale=rescale,
            xy_coords="center",
            properties=False,
            band_coords=False,
            resampling=resampling,
            **grid,
        )
    except (ValueError, KeyError, TypeError) as exc:
        ids = [item.get("id") for item in role_items][:5]
        raise SourceError(f"stackstac cannot stack items {ids}: {exc}") from exc


def _stack_on_s2_grid(
    roles: dict[str, list[dict[str, Any]]], spec: Any, chunksize: int, s1_units: str
) -> dict[str, xr.DataArray]:
    """The SCL, cloud, S1 and DEM variables (those with items), stacked onto the S2 grid
    ``spec`` (a stackstac ``RasterSpec``)."""
    import stackstac  # imports slowly; only STAC input needs it

    on_grid = {
        "epsg": spec.epsg,
        "resolution": spec.resolutions_xy,
        "bounds": spec.bounds,
        "snap_bounds": False,
    }
    variables = {}
    for name in ("scl", "cloud"):
        if roles[name]:
            stacked = _stack(roles[name], [name], Resampling.nearest, chunksize, **on_grid)
            codes = _tidy(stacked, "time").isel(band=0, drop=True)
            # Pixels no item covers are "no data": SCL class 0, and unusable for cloud.
            variables[name] = (
                codes.fillna(0).astype("uint8") if name == "scl" else codes.fillna(1) != 0
            )
    if roles["s1"]:
        s1 = _stack(roles["s1"], list(POLS), Resampling.bilinear, chunksize, True, **on_grid)
        variables["s1"] = _tidy(s1, "s1_time").rename(band="pol").assign_attrs(units=s1_units)
    if roles["dem"]:
        dem = _stack(roles["dem"], ["dem"], Resampling.bilinear, chunksize, True, **on_grid)
        variables["dem"] = stackstac.mosaic(_tidy(dem, "time"), dim="time").isel(band=0, drop=True)
    return variables


def _assemble(variables: dict[str, xr.DataArray], epsg: int) -> xr.Dataset:
    """The validated contract cube of stacked ``variables``, all on the S2 grid."""
    x, y = variables["s2"].x.values, variables["s2"].y.values
    for name, var in variables.items():
        if var.sizes["x"] != x.size or var.sizes["y"] != y.size:
            raise GridMismatchError(f"stacked {name!r} is not on the S2 grid ({dict(var.sizes)})")
        variables[name] = var.assign_coords(x=x, y=y)
    ds = xr.Dataset(variables).assign_coords(band=list(BANDS))
    if "s1" in ds:
        ds = ds.assign_coords(pol=list(POLS))
    ds = conform(ds.rio.write_crs(epsg))
    validate(ds, require=list(variables))
    return ds


def _plain_items(items: Any) -> list[dict[str, Any]]:
    """Items as plain dicts with absolute hrefs and ``proj:epsg`` (what stackstac reads)."""
    import pystac  # imports slowly; only STAC input needs it

    if isinstance(items, pystac.Item | Mapping) and not (
        isinstance(items, Mapping) and "features" in items
    ):
        items = [items]
    elif isinstance(items, Mapping):
        items = items["features"]
    plain = []
    for index, item in enumerate(items):
        if isinstance(item, pystac.Item):
            # to_dict shares the Item's properties and extra fields: copied, so filling in
            # proj:epsg below never changes the caller's Items.
            entry = copy.deepcopy(item.to_dict(include_self_link=False))
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


def _sort_roles(items: list[dict[str, Any]], assets: StacAssets) -> dict[str, list[dict[str, Any]]]:
    """Split items into S2 / S1 / DEM and rename their assets to contract names.

    ``scl`` and ``cloud`` hold the S2 items with only that asset (empty when no item has it).
    """
    roles: dict[str, list[dict[str, Any]]] = {r: [] for r in ("s2", "s1", "dem", "scl", "cloud")}
    for item in items:
        keys = list(item["assets"])
        platform = str(item["properties"].get("platform", "")).lower()
        s2_keys = [_match(keys, w, band=True) for w in assets.s2]
        s1_keys = [_match(keys, w, band=False) for w in assets.s1]
        if platform.startswith("sentinel-2") or (
            all(s2_keys) and not platform.startswith("sentinel-1")
        ):
            role, labels, found, wanted = "s2", BANDS, s2_keys, assets.s2
        elif platform.startswith("sentinel-1") or all(s1_keys):
            role, labels, found, wanted = "s1", POLS, s1_keys, assets.s1
        elif assets.dem is not None and (key := _match(keys, assets.dem, band=False)):
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
        renamed = {label: item["assets"][key] for label, key in zip(labels, found, strict=True)}
        roles[role].append({**item, "assets": renamed})
        if role == "s2":
            for name, wanted_key in (("scl", assets.scl), ("cloud", assets.cloud)):
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
