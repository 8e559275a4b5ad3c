"""despeckle / median_filter: equal to scipy at any chunking, NaN rule, errors, GPU."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.ndimage as ndi
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import cloudfill
from cloudfill.errors import DimensionError, DTypeError, MissingVariableError, ParameterError
from cloudfill.preprocess import SIZES, despeckle, median_filter
from cloudfill.preprocess._median_cpu import median_valid_numba
from cloudfill.preprocess._median_network import CE, MIN, median_network


def scipy_reference(image: np.ndarray, size: int) -> np.ndarray:
    flat = image.reshape(-1, *image.shape[-2:])
    out = np.stack([ndi.median_filter(a, size=size, mode="reflect") for a in flat])
    return out.reshape(image.shape)


def nan_reference(image: np.ndarray, size: int) -> np.ndarray:
    """The documented NaN rule, written the slow, obvious way."""
    h = size // 2
    padded = np.pad(image, h, mode="symmetric")
    out = np.empty_like(image)
    for i, j in np.ndindex(*image.shape):
        if np.isnan(image[i, j]):
            out[i, j] = np.nan
            continue
        window = padded[i : i + size, j : j + size].ravel()
        valid = np.sort(window[~np.isnan(window)])
        out[i, j] = valid[(valid.size - 1) // 2]
    return out


def on_backend(image: np.ndarray, size: int, backend: str, chunks: tuple[int, ...]) -> np.ndarray:
    if backend == "numpy":
        return np.asarray(median_filter(image, size))
    result = median_filter(da.from_array(image, chunks=chunks), size)
    assert isinstance(result, da.Array)
    return result.compute()


# Values with many ties (small integer set) as well as arbitrary float32, infinities included.
VALUES = st.one_of(
    st.floats(width=32, allow_nan=False, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 2.0, -3.5]),
)


@st.composite
def images_and_chunks(draw: st.DrawFn) -> tuple[np.ndarray, int, tuple[int, ...]]:
    size = draw(st.sampled_from(SIZES))
    shape = (
        draw(st.integers(1, 2)),
        draw(st.integers(1, 40)),
        draw(st.integers(1, 40)),
    )
    ties = draw(st.booleans())
    elements = st.sampled_from([0.0, 1.0, 2.0, -3.5]) if ties else VALUES
    image = draw(hnp.arrays(np.float32, shape, elements=elements))
    # Any chunk size, but at most ~8 chunks per axis to keep dask's overhead out of the test.
    chunks = tuple(draw(st.integers(max(1, n // 8), n)) for n in shape)
    return image, size, chunks


@pytest.mark.parametrize("backend", ["numpy", "dask"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=images_and_chunks())
def test_median_filter_equals_scipy(backend: str, case) -> None:
    image, size, chunks = case
    result = on_backend(image, size, backend, chunks)
    # assert_array_equal treats 0.0 and -0.0 as equal, the one documented difference.
    np.testing.assert_array_equal(result, scipy_reference(image, size))


@pytest.mark.parametrize("size", SIZES)
def test_large_random_image_float32_and_float64(size: int) -> None:
    rng = np.random.default_rng(size)
    image = rng.normal(-12, 4, (2, 150, 173)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(image, size), scipy_reference(image, size))
    as64 = image.astype(np.float64)
    np.testing.assert_array_equal(median_filter(as64, size), scipy_reference(as64, size))
    chunked = median_filter(da.from_array(image, chunks=(1, 37, 64)), size).compute()
    np.testing.assert_array_equal(chunked, scipy_reference(image, size))


@pytest.mark.parametrize("size", SIZES)
def test_network_kernel_for_every_size(size: int) -> None:
    # float32 3x3 / 5x5 normally go to OpenCV: check the network kernel on its own too.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 6, (61, 70)).astype(np.float32)  # heavy ties
    padded = np.pad(image, size // 2, mode="symmetric")
    expected = ndi.median_filter(image, size, mode="reflect")
    np.testing.assert_array_equal(median_valid_numba(padded, size, threads=2), expected)


@pytest.mark.parametrize("size", SIZES)
def test_network_selects_the_median(size: int) -> None:
    net = median_network(size)
    rng = np.random.default_rng(size)
    windows = rng.normal(size=(size, size, 4000))
    windows[..., :1000] = rng.integers(0, 3, (size, size, 1000))
    columns = np.sort(windows, axis=0)  # what the column sort produces
    wires = {i * size + j: columns[i, j].copy() for i in range(size) for j in range(size)}
    for kind, a, b in net.ops:
        lo, hi = np.minimum(wires[a], wires[b]), np.maximum(wires[a], wires[b])
        if kind in (CE, MIN):
            wires[a] = lo
        if kind != MIN:
            wires[b] = hi
    expected = np.median(windows.reshape(size * size, -1), axis=0)
    np.testing.assert_array_equal(wires[net.output], expected)


@pytest.mark.parametrize("size", [3, 5, 11])
@pytest.mark.parametrize("chunks", [None, (7, 9), (10, 1), (30, 2)])
def test_nan_rule(size: int, chunks: tuple[int, int] | None) -> None:
    rng = np.random.default_rng(3)
    image = rng.normal(size=(30, 41)).astype(np.float32)
    image[rng.random(image.shape) < 0.08] = np.nan
    image[5:10, 12:25] = np.nan  # a no-data hole wider than the window
    image[0, :] = np.nan  # and along an edge
    expected = nan_reference(image, size)
    data = image if chunks is None else da.from_array(image, chunks=chunks)
    result = np.asarray(median_filter(data, size))
    np.testing.assert_array_equal(result, expected)
    np.testing.assert_array_equal(np.isnan(result), np.isnan(image))


def test_windows_without_nan_still_equal_scipy() -> None:
    rng = np.random.default_rng(4)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    image[40, 40] = np.nan
    result = median_filter(image, 7)
    reference = ndi.median_filter(image, 7, mode="reflect")
    far = np.ones(image.shape, bool)
    far[37:44, 37:44] = False
    np.testing.assert_array_equal(result[far], reference[far])


def test_all_nan_stays_nan() -> None:
    image = np.full((2, 20, 20), np.nan, np.float32)
    assert np.isnan(median_filter(image, 5)).all()
    assert np.isnan(median_filter(da.from_array(image, chunks=(1, 7, 7)), 5).compute()).all()


def test_small_chunks_are_merged_not_wrong() -> None:
    image = np.random.default_rng(5).normal(size=(25, 31)).astype(np.float32)
    result = median_filter(da.from_array(image, chunks=(2, 3)), 11)
    assert min(result.chunks[0]) >= 5 and min(result.chunks[1]) >= 5
    np.testing.assert_array_equal(result.compute(), scipy_reference(image, 11))


def s1_cube(dtype: str = "float32", chunks: dict | None = None) -> xr.Dataset:
    rng = np.random.default_rng(6)
    ds = xr.Dataset(
        {
            "s1": (
                ("s1_time", "pol", "y", "x"),
                rng.normal(-12, 3, (3, 2, 33, 29)).astype(dtype),
                {"units": "dB", "long_name": "backscatter"},
            ),
            "dem": (("y", "x"), rng.normal(500, 50, (33, 29)).astype("float32")),
        },
        coords={"pol": ["VV", "VH"], "y": np.arange(33.0), "x": np.arange(29.0)},
    )
    return ds.chunk(chunks) if chunks else ds


@pytest.mark.parametrize("chunks", [None, {"s1_time": 1, "y": 10, "x": 8}])
def test_despeckle_dataset(chunks: dict | None) -> None:
    ds = s1_cube(chunks=chunks)
    out = despeckle(ds, size=7)
    assert out.s1.dims == ds.s1.dims
    assert out.s1.attrs["units"] == "dB" and out.s1.attrs["long_name"] == "backscatter"
    assert out.s1.attrs["despeckle"].startswith("median 7x7")
    assert isinstance(out.s1.data, da.Array) == (chunks is not None)  # lazy stays lazy
    xr.testing.assert_identical(out.dem, ds.dem)
    expected = scipy_reference(np.asarray(ds.s1.values), 7)
    np.testing.assert_array_equal(out.s1.values, expected)


def test_despeckle_other_dim_order() -> None:
    ds = s1_cube()
    flipped = ds.assign(s1=ds.s1.transpose("y", "x", "pol", "s1_time"))
    out = despeckle(flipped, 5)
    assert out.s1.dims == ("y", "x", "pol", "s1_time")
    np.testing.assert_array_equal(out.s1.transpose(*ds.s1.dims).values, despeckle(ds, 5).s1.values)


def test_accessor_despeckle_casts_integer_s1() -> None:
    ds = s1_cube(dtype="int16")
    out = ds.cloudfill.despeckle(size=3)
    assert out.s1.dtype == np.float32
    expected = scipy_reference(ds.s1.values.astype(np.float32), 3)
    np.testing.assert_array_equal(out.s1.values, expected)


@pytest.mark.parametrize("size", [0, 1, 2, 4, 12, 13, -3, 5.0, True, "5"])
def test_bad_size(size) -> None:
    with pytest.raises(ParameterError, match="odd integer in 3..11"):
        despeckle(s1_cube(), size=size)


def test_bad_inputs() -> None:
    with pytest.raises(DTypeError, match="int16"):
        despeckle(s1_cube(dtype="int16"), 5)
    with pytest.raises(MissingVariableError, match="'s1'"):
        despeckle(s1_cube().drop_vars("s1"), 5)
    with pytest.raises(DimensionError, match="'x'"):
        despeckle(s1_cube().isel(x=0), 5)
    with pytest.raises(DimensionError):
        median_filter(np.zeros(5, np.float32), 3)


def test_exported() -> None:
    assert cloudfill.despeckle is despeckle


CUDA_ON_CPU = """
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>
struct Dim3 { unsigned x, y, z; };
static Dim3 blockIdx, threadIdx, blockDim = {32, 8, 1};
#define __device__
#define __forceinline__ inline
#define __global__
#include "kernel.cu"
int main(int argc, char** argv) {
    int H = atoi(argv[1]), W = atoi(argv[2]), top = atoi(argv[3]), left = atoi(argv[4]);
    int Ho = atoi(argv[5]), Wo = atoi(argv[6]), h = K / 2;
    std::vector<T> src((size_t)2 * H * W), dst((size_t)2 * Ho * Wo);
    FILE* f = fopen("in.bin", "rb"); fread(src.data(), sizeof(T), src.size(), f); fclose(f);
    for (unsigned z = 0; z < 2; ++z)
    for (unsigned by = 0; by < (unsigned)(Ho + 7) / 8; ++by)
    for (unsigned bx = 0; bx < (unsigned)(Wo + 31) / 32; ++bx)
    for (unsigned ty = 0; ty < 8; ++ty)
    for (unsigned tx = 0; tx < 32; ++tx) {
        blockIdx = {bx, by, z}; threadIdx = {tx, ty, 0};
        FUNC(src.data(), dst.data(), H, W, Ho, Wo, h - top, h - left);
    }
    f = fopen("out.bin", "wb"); fwrite(dst.data(), sizeof(T), dst.size(), f); fclose(f);
}
"""


@pytest.mark.parametrize(
    ("size", "dtype"), [(3, "float32"), (7, "float64"), (9, "float32"), (11, "float32")]
)
def test_cuda_source_on_cpu(size: int, dtype: str, tmp_path) -> None:
    """The generated CUDA kernel, compiled as C++ with thread indices looped over on the CPU:
    checks its logic (network, reflect edges, halo offsets, NaN rule) without a GPU."""
    import shutil
    import subprocess

    from cloudfill.preprocess._median_gpu import _cuda_source

    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("no g++ to compile the CUDA source for the CPU")
    ctype = {"float32": "float", "float64": "double"}[dtype]
    (tmp_path / "kernel.cu").write_text(_cuda_source(size, ctype))
    (tmp_path / "main.cpp").write_text(CUDA_ON_CPU)
    defines = [f"-DK={size}", f"-DT={ctype}", f"-DFUNC=cf_median_{size}"]
    subprocess.run(
        [compiler, "-O0", "-w", *defines, "main.cpp", "-o", "kernel"], cwd=tmp_path, check=True
    )
    rng = np.random.default_rng(size)
    h = size // 2
    for shape, (top, bottom, left, right) in [
        ((23, 41), (h, h, h, h)),  # a whole image
        ((30, 20), (0, h, h, 0)),  # a dask block with halos on top and right
        ((3, 2), (h, h, h, h)),  # smaller than the window
    ]:
        image = rng.normal(size=(2, *shape)).astype(dtype)
        image[1][rng.random(shape) < 0.15] = np.nan
        image.tofile(tmp_path / "in.bin")
        out_shape = (shape[0] + top + bottom - 2 * h, shape[1] + left + right - 2 * h)
        args = [str(v) for v in (*shape, top, left, *out_shape)]
        subprocess.run([str(tmp_path / "kernel"), *args], cwd=tmp_path, check=True)
        result = np.fromfile(tmp_path / "out.bin", dtype=dtype).reshape(2, *out_shape)
        for plane in range(2):
            padded = np.pad(image[plane], ((top, bottom), (left, right)), mode="symmetric")
            expected = nan_reference(padded, size)[h : h + out_shape[0], h : h + out_shape[1]]
            np.testing.assert_array_equal(result[plane], expected)


@pytest.mark.gpu
@pytest.mark.parametrize("size", SIZES)
def test_gpu_equals_scipy(size: int) -> None:
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(size)
    image = rng.normal(size=(2, 70, 83)).astype(np.float32)
    expected = scipy_reference(image, size)
    on_gpu = median_filter(cp.asarray(image), size)
    assert isinstance(on_gpu, cp.ndarray)
    np.testing.assert_array_equal(on_gpu.get(), expected)
    chunked = median_filter(da.from_array(cp.asarray(image), chunks=(1, 30, 20)), size)
    assert isinstance(chunked._meta, cp.ndarray)
    np.testing.assert_array_equal(chunked.compute().get(), expected)


@pytest.mark.gpu
def test_gpu_nan_rule() -> None:
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(8)
    image = rng.normal(size=(30, 41)).astype(np.float32)
    image[rng.random(image.shape) < 0.1] = np.nan
    np.testing.assert_array_equal(
        median_filter(cp.asarray(image), 5).get(), nan_reference(image, 5)
    )
