#!/usr/bin/env bash
# The GPU checks, from the repository root of a machine with a CUDA GPU, CuPy and a CUDA
# build of torch: `bash benchmarks/run_on_gpu.sh OUT [all|tests|bench|fill|train]`. Writes to OUT:
# - machine.txt: the card(s), driver, CPUs and the versions of torch, CUDA, cuDNN, CuPy,
#   dask-cuda and the array stack;
# - gpu_tests.txt: `pytest -m gpu` (tests, or all);
# - bench_cuda_fp32.txt, bench_cuda_fast_cupy.txt: bench_synthesize.py on the GPU, fp32 on
#   NumPy chunks and bf16 on CuPy chunks (bench, or all);
# - fill_cuda_fp32.txt, fill_cuda_bf16.txt: bench_fill_device.py, `fill-series --device cuda`
#   from a zarr store on disk, 4096 px, paper-size generator: (a) forward only, (b) end to
#   end per date, (b)/(a), tiles/s and the share of the card's dense TF32/bf16 peak (fill, or
#   all; the bar: (b)/(a) >= 0.8, one date under 2 s, inference >= 40 % of peak);
# - train_cuda.txt: bench_patch_cache.py on the GPU, steps/s at batch 16 of the default
#   model's training fed from the patch cache (resident on the device) and from the sampler,
#   fp32 and bf16 (train, or all; the bar: >= 20 steps/s at batch 16).
# Each mode fits in one 10-minute call; `all` may not.
# Figures go to benchmarks/RESULTS.md by hand.
# A machine without cloudfill's dependencies needs them first (e.g. wheels installed with
# `pip install --no-deps --target DIR` and DIR on PYTHONPATH; pystac needs its pystac-core and
# pystac-ext-* packages too, or tests/test_stac.py is not collected).
set -u
out=${1:-gpu-results}
what=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    echo "cpus: $(nproc)"
    python3 -c "import torch, numpy, pandas, xarray, dask, distributed, zarr
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cudnn',
      torch.backends.cudnn.version(), 'tf32 conv', torch.backends.cudnn.allow_tf32,
      'tf32 matmul', torch.backends.cuda.matmul.allow_tf32)
print('numpy', numpy.__version__, 'pandas', pandas.__version__, 'xarray', xarray.__version__,
      'dask', dask.__version__, 'distributed', distributed.__version__, 'zarr', zarr.__version__)
for name in ('cupy', 'dask_cuda', 'rmm'):
    try:
        print(name, __import__(name).__version__)
    except ImportError:
        print(name, 'not installed')"
} 2>&1 | tee "$out/machine.txt"
if [ "$what" = all ] || [ "$what" = tests ]; then
    python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt"
fi
if [ "$what" = all ] || [ "$what" = bench ]; then
    python3 benchmarks/bench_synthesize.py --device cuda 2>&1 | tee "$out/bench_cuda_fp32.txt"
    python3 benchmarks/bench_synthesize.py --device cuda --fast --cupy 2>&1 |
        tee "$out/bench_cuda_fast_cupy.txt"
fi
if [ "$what" = all ] || [ "$what" = fill ]; then
    python3 benchmarks/bench_fill_device.py --device cuda --size 4096 2>&1 |
        tee "$out/fill_cuda_fp32.txt"
    python3 benchmarks/bench_fill_device.py --device cuda --size 4096 --fast 2>&1 |
        tee "$out/fill_cuda_bf16.txt"
fi
if [ "$what" = all ] || [ "$what" = train ]; then
    python3 benchmarks/bench_patch_cache.py --device cuda --batches 16 --precision-batches 16 \
        --repeats 20 --shape 1024 --resident 2>&1 | tee "$out/train_cuda.txt"
fi
