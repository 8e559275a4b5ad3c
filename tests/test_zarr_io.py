"""open_cube / write_cube: round trips, cleaning of unwritable metadata, safe overwriting."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from affine import Affine
from rasterio.crs import CRS

from cloudfill import errors as cloudfill_errors
from cloudfill import open_cube, validate, write_cube
from cloudfill.cube.zarr_io import store_digest
from cloudfill.errors import OutputError, ParameterError, SourceError


def small_cube(lazy: bool = True, ny: int = 12, nx: int = 10) -> xr.Dataset:
    rng = np.random.default_rng(3)
    s2 = rng.random((3, 4, ny, nx), dtype="float32")
    s1 = rng.normal(-12, 3, (2, 2, ny, nx)).astype("float32")
    ds = xr.Dataset(
        {
            "s2": (
                ("time", "band", "y", "x"),
                da.from_array(s2, chunks=(1, 4, 5, 5)) if lazy else s2,
            ),
            "s1": (("s1_time", "pol", "y", "x"), s1, {"units": "dB"}),
            "dem": (("y", "x"), rng.random((ny, nx), dtype="float32") * 500),
            "cloud": (("time", "y", "x"), rng.random((3, ny, nx)) > 0.7),
            "lulc": (("y", "x"), rng.integers(0, 6, (ny, nx), dtype="uint8")),
        },
        coords={
            "time": pd.to_datetime(["2021-01-01", "2021-01-11", "2021-01-21"]),
            "s1_time": pd.to_datetime(["2021-01-02", "2021-01-14"]),
            "band": ["B02", "B03", "B04", "B08"],
            "pol": ["VV", "VH"],
            "y": 5000000.0 - 5 - 10 * np.arange(ny),
            "x": 500000.0 + 5 + 10 * np.arange(nx),
        },
        attrs={"title": "test cube", "created_by": "test"},
    )
    return ds.rio.write_crs("EPSG:32633")


def test_round_trip_values_coords_attrs_crs(tmp_path: Path) -> None:
    ds = small_cube()
    path = write_cube(ds, tmp_path / "cube.zarr")
    assert path == (tmp_path / "cube.zarr").resolve()
    back = open_cube(path)
    validate(back, require=["s2", "s1", "dem", "cloud", "lulc"])
    assert back.rio.crs == ds.rio.crs
    assert back.s2.chunks is not None
    xr.testing.assert_identical(
        back.drop_vars("spatial_ref").coords.to_dataset(),
        ds.drop_vars("spatial_ref").coords.to_dataset(),
    )
    for name in ds.data_vars:
        assert back[name].dtype == ds[name].dtype, name
        np.testing.assert_array_equal(back[name].values, ds[name].values)
    assert back.attrs == ds.attrs
    assert back.s1.attrs["units"] == "dB"
    assert back.encoding["source"] == str(path)


def test_default_write_chunks(tmp_path: Path) -> None:
    back = open_cube(write_cube(small_cube(ny=30, nx=20), tmp_path / "c.zarr", chunks={"y": 16}))
    assert back.s2.encoding["chunks"] == (1, 4, 16, 20)
    assert back.dem.encoding["chunks"] == (16, 20)


def test_open_without_chunks_gives_numpy(tmp_path: Path) -> None:
    back = open_cube(write_cube(small_cube(), tmp_path / "c.zarr"), chunks=None)
    assert all(isinstance(v.data, np.ndarray) for v in back.data_vars.values())
    assert back.rio.crs.to_epsg() == 32633


def test_stackstac_like_metadata_is_cleaned(tmp_path: Path) -> None:
    ds = small_cube()
    ds.attrs.update(
        spec=object(),  # an opaque object: dropped
        crs=CRS.from_epsg(32633),  # a rasterio CRS: kept as text
        transform=Affine(10, 0, 500000, 0, -10, 5000000),  # a tuple of floats: a list
        nested={"resolution": np.float64(10.0), "bad": object()},
        nodata=np.nan,
    )
    ds = ds.assign_coords(
        id=("time", np.array(["a", {"b": 1}, None], dtype=object)),  # object coord: dropped
        platform=("time", ["sentinel-2a", "sentinel-2b", "sentinel-2a"]),  # strings: kept
    )
    ds["s2"] = ds.s2.chunk({"y": 7})  # irregular against the written chunks
    ds.s2.encoding["chunks"] = (3, 4, 12, 10)  # stale
    back = open_cube(write_cube(ds, tmp_path / "c.zarr"))
    assert "id" not in back.coords and "spec" not in back.attrs
    assert list(back.platform.values) == ["sentinel-2a", "sentinel-2b", "sentinel-2a"]
    assert back.attrs["crs"] == "EPSG:32633"
    assert back.attrs["transform"][:3] == [10.0, 0.0, 500000.0]
    assert back.attrs["nested"] == {"resolution": 10.0}
    assert back.attrs["nodata"] == "nan"
    np.testing.assert_array_equal(back.s2.values, ds.s2.values)
    # the caller's dataset is untouched
    assert "spec" in ds.attrs and "id" in ds.coords


def test_refuses_to_overwrite_without_permission(tmp_path: Path) -> None:
    path = write_cube(small_cube(), tmp_path / "c.zarr")
    with pytest.raises(OutputError, match="overwrite=True"):
        write_cube(small_cube(), path)
    bigger = small_cube(ny=14)
    write_cube(bigger, path, overwrite=True)
    assert open_cube(path).sizes["y"] == 14
    write_cube(small_cube(), path, mode="w")
    assert open_cube(path).sizes["y"] == 12
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "c.zarr"]
    assert leftovers == []


def test_refuses_to_replace_a_non_store(tmp_path: Path) -> None:
    folder = tmp_path / "documents"
    folder.mkdir()
    (folder / "thesis.txt").write_text("precious")
    with pytest.raises(OutputError, match="not a zarr store"):
        write_cube(small_cube(), folder, overwrite=True)
    assert (folder / "thesis.txt").exists()


def test_refuses_to_write_onto_its_source(tmp_path: Path) -> None:
    path = write_cube(small_cube(), tmp_path / "c.zarr")
    opened = open_cube(path)
    with pytest.raises(OutputError, match="read from"):
        write_cube(opened, path, overwrite=True)
    derived = opened[["s2", "dem"]].isel(x=slice(0, 4))
    with pytest.raises(OutputError, match="read from"):
        write_cube(derived, str(tmp_path / "." / "c.zarr"), overwrite=True)
    write_cube(derived, tmp_path / "other.zarr")  # elsewhere is fine


def test_refuses_to_write_a_result_onto_the_cube_it_is_computed_from(tmp_path: Path) -> None:
    """A new Dataset computed lazily from an opened cube (no encoding of its own, as
    ``fill_series``'s result) still reads that store: writing onto it or into it is refused."""
    path = write_cube(small_cube(), tmp_path / "c.zarr")
    opened = open_cube(path)
    result = xr.Dataset({"twice": opened["s2"] * 2}).rio.write_crs(opened.rio.crs)
    assert "source" not in result.encoding and "source" not in result["twice"].encoding
    before = store_digest(path)
    for target in (path, path / "inside.zarr"):
        with pytest.raises(OutputError, match="read from"):
            write_cube(result, target, overwrite=True)
    assert store_digest(path) == before
    write_cube(result.compute(), tmp_path / "elsewhere.zarr")  # in memory and elsewhere: fine


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    ds = small_cube()

    def explode(block: np.ndarray) -> np.ndarray:
        raise RuntimeError("boom")

    ds["s2"] = ds.s2.copy(data=ds.s2.data.map_blocks(explode, dtype="float32"))
    with pytest.raises(RuntimeError, match="boom"):
        write_cube(ds, tmp_path / "c.zarr")
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_old_store(tmp_path: Path) -> None:
    path = write_cube(small_cube(), tmp_path / "c.zarr")
    ds = small_cube(ny=14)
    ds["s2"] = ds.s2.copy(data=ds.s2.data.map_blocks(lambda b: 1 / 0, dtype="float32"))
    with pytest.raises(ZeroDivisionError):
        write_cube(ds, path, overwrite=True)
    assert open_cube(path).sizes["y"] == 12
    assert [p.name for p in tmp_path.iterdir()] == ["c.zarr"]


def test_errors_on_bad_paths_and_modes(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="nowhere.zarr"):
        open_cube(tmp_path / "nowhere.zarr")
    (tmp_path / "empty.zarr").mkdir()
    with pytest.raises(SourceError, match="empty.zarr"):
        open_cube(tmp_path / "empty.zarr")
    with pytest.raises(ParameterError, match="mode"):
        write_cube(small_cube(), tmp_path / "c.zarr", mode="a")


def test_open_cube_renames_band_aliases(tmp_path: Path) -> None:
    ds = small_cube().assign_coords(band=["blue", "green", "red", "nir"], pol=["vv", "vh"])
    back = open_cube(write_cube(ds, tmp_path / "c.zarr"))
    assert list(back.band.values) == ["B02", "B03", "B04", "B08"]
    assert list(back.pol.values) == ["VV", "VH"]


def test_refuses_a_cube_no_verb_could_read_back(tmp_path: Path) -> None:
    # Issue 17, 11: validated before anything is written, so nothing is left behind.
    ds = small_cube()
    bad = {
        "unsorted dates": ds.isel(time=[1, 0, 2]),
        "repeated dates": ds.assign_coords(time=ds.indexes["time"][[0, 0, 2]]),
        "no CRS": ds.drop_vars("spatial_ref"),
    }
    errors = (cloudfill_errors.TimeAxisError, cloudfill_errors.MissingCRSError)
    for name, cube in bad.items():
        with pytest.raises(errors):
            write_cube(cube, tmp_path / f"{name}.zarr")
        assert not (tmp_path / f"{name}.zarr").exists(), name
    assert not list(tmp_path.iterdir())


# --- reads: a window touches only its chunks; a chunk that does not decode is named -------


@pytest.fixture
def chunk_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of every chunk or document read from a local zarr store, in order."""
    from zarr.storage import LocalStore

    reads: list[str] = []
    original = LocalStore.get

    async def counted(self: LocalStore, key: str, *args: object, **kwargs: object) -> object:
        reads.append(key)
        return await original(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", counted)
    return reads


@pytest.mark.parametrize("chunks", ["auto", {}])
def test_window_read_touches_only_its_chunks(
    tmp_path: Path, chunk_reads: list[str], chunks: object
) -> None:
    # 4 x 4 stored chunks per date; "auto" merges them into one dask block. A read of one
    # window must still read only the stored chunks under it: dask fuses the slice into the
    # zarr read. A custom getter around the read (an earlier corrupt-chunk check) broke that
    # and loaded every chunk of the block.
    path = write_cube(small_cube(ny=64, nx=64), tmp_path / "c.zarr", chunks={"y": 16, "x": 16})
    ds = open_cube(path, chunks=chunks)
    if chunks == "auto":
        assert ds.s2.data.numblocks[2:] == (1, 1)  # the premise: one block spans the window
    chunk_reads.clear()
    window = ds.s2.isel(time=1, y=slice(8, 24), x=slice(16, 32)).values
    assert window.shape == (4, 16, 16)
    s2_chunks = sorted(k for k in chunk_reads if k.startswith("s2/c/"))
    assert s2_chunks == ["s2/c/1/0/0/1", "s2/c/1/0/1/1"]


@pytest.mark.parametrize("codec", ["zstd", "gzip", "blosc"], ids=["zstd", "gzip(zlib)", "blosc"])
def test_corrupt_chunk_is_a_source_error_naming_it(tmp_path: Path, codec: str) -> None:
    import zarr

    from cloudfill.cube.corrupt import reading

    compressor = {
        "zstd": zarr.codecs.ZstdCodec(),
        "gzip": zarr.codecs.GzipCodec(),
        "blosc": zarr.codecs.BloscCodec(),
    }[codec]
    path = tmp_path / "c.zarr"
    data = np.arange(2 * 8 * 8, dtype="float32").reshape(2, 8, 8)
    xr.Dataset({"v": (("t", "y", "x"), data)}).to_zarr(
        path,
        zarr_format=3,
        consolidated=False,
        encoding={"v": {"chunks": (1, 4, 4), "compressors": [compressor]}},
    )
    chunk = path / "v" / "c" / "1" / "0" / "1"
    chunk.write_bytes(b"not what the codec wrote")
    ds = xr.open_zarr(path, chunks="auto", consolidated=False)
    with pytest.raises(SourceError) as caught, reading(path):
        ds.v.compute()
    message = str(caught.value)
    assert "variable 'v', chunk (1, 0, 1)" in message, message
    assert f"(file {chunk.resolve()})" in message and "does not decode" in message
    # the healthy chunks still read, and an error raised elsewhere stays what it is
    with reading(path):
        assert ds.v.isel(t=0).values.sum() == data[0].sum()
    with pytest.raises(RuntimeError, match="not a chunk"), reading(path):
        raise RuntimeError("not a chunk")


def test_corrupt_chunk_message_without_frames_names_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A distributed worker's traceback keeps code names, not frame variables: the message
    # then names the store the computation reads.
    from cloudfill.cube import corrupt

    path = write_cube(small_cube(), tmp_path / "c.zarr")
    (path / "s2" / "c" / "0" / "0" / "0" / "0").write_bytes(b"garbage")
    monkeypatch.setattr(corrupt, "_locate", lambda frames: None)
    with pytest.raises(SourceError, match=f"a chunk of {path} does not decode"):
        with corrupt.reading(path):
            open_cube(path).s2.compute()


@pytest.mark.parametrize("name", ["c.tif", "c.NC", "c.h5"])
def test_refuses_a_file_name_of_another_format(tmp_path: Path, name: str) -> None:
    with pytest.raises(ParameterError, match="writes a zarr store"):
        write_cube(small_cube(), tmp_path / name)
    assert not (tmp_path / name).exists()


def test_a_file_is_no_cube_and_the_error_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "scene.nc"
    path.write_bytes(b"CDF\x01")
    with pytest.raises(SourceError, match="it is a file.*make-cube"):
        open_cube(path)
