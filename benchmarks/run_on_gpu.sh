#!/usr/bin/env bash
# The GPU checks, from the repository root of a machine with a CUDA GPU, CuPy and a CUDA
# build of torch: `bash benchmarks/run_on_gpu.sh OUT [bench|tests|all]`. Writes the machine's
# description, bench_synthesize on the GPU (fp32 on NumPy chunks; bf16 fast path on CuPy
# chunks) and the GPU tests' log to OUT. Figures go to benchmarks/RESULTS.md by hand.
# A machine without cloudfill's dependencies needs them first (e.g. wheels installed with
# `pip install --no-deps --target DIR` and DIR on PYTHONPATH; pystac needs its pystac-core and
# pystac-ext-* packages too, or tests/test_stac.py is not collected).
set -u
out=${1:-gpu-results}
what=${2:-all}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ "$what" != tests ]; then
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        echo "cpus: $(nproc)"
        python3 -c "import torch, cupy, numpy, pandas, xarray, dask
print('torch', torch.__version__, 'cupy', cupy.__version__, 'numpy', numpy.__version__,
      'pandas', pandas.__version__, 'xarray', xarray.__version__, 'dask', dask.__version__)"
    } 2>&1 | tee "$out/machine.txt"
    python3 benchmarks/bench_synthesize.py --device cuda 2>&1 | tee "$out/bench_cuda_fp32.txt"
    python3 benchmarks/bench_synthesize.py --device cuda --fast --cupy 2>&1 |
        tee "$out/bench_cuda_fast_cupy.txt"
fi
if [ "$what" != bench ]; then
    python3 -m pytest -m gpu -q -rs -p no:cacheprovider tests 2>&1 | tee "$out/gpu_tests.txt"
fi
