# syntax=docker/dockerfile:1
# Two targets; `docker build .` builds the last one, the CPU image.

# CUDA image: cloudfill with a CUDA build of torch, CuPy, dask-cuda and RMM; entrypoint
# `cloudfill`. Needs the NVIDIA Container Toolkit on the host (`--gpus all`).
#   docker build --target cuda -t cloudfill:cuda .
#   docker run --rm --gpus all -v $PWD:/data cloudfill:cuda \
#       fill-series /data/cube.zarr --out /data/filled.zarr --cluster cuda --device cuda
# The runtime base supplies the CUDA 12 user-space libraries CuPy loads; torch's wheel
# bundles its own. The host driver must support CUDA 12.8 (R570 or newer).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS cuda
ARG TORCH_SPEC="torch==2.13.0"
# The CUDA flavour of the torch index must match the base image (cu128 for CUDA 12.8).
ARG TORCH_INDEX="https://download.pytorch.org/whl/cu128"
# RMM lets dask-cuda give each worker one memory pool shared by CuPy and torch; set
# RMM_SPEC="" to build without it (workers then use each library's own allocator).
ARG RMM_SPEC="rmm-cu12"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /opt/cloudfill
RUN pip install --index-url "${TORCH_INDEX}" "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY cloudfill ./cloudfill
RUN pip install ".[gpu]" ${RMM_SPEC:+"${RMM_SPEC}"}
# Build machines usually have no GPU: check the packages are there without importing them.
RUN python -c "import importlib.util as u, sys; \
missing = [m for m in ('cloudfill', 'cupy', 'dask_cuda', 'torch') if u.find_spec(m) is None]; \
sys.exit(f'missing: {missing}' if missing else 0)"
WORKDIR /data
ENTRYPOINT ["cloudfill"]
CMD ["--help"]

# CPU image: installs cloudfill with its test extra and runs the test suite by default.
#   docker build --target cpu -t cloudfill:cpu .
#   docker run --rm cloudfill:cpu                      # runs the tests
#   docker run --rm -v $PWD:/data cloudfill:cpu cloudfill info /data/cube.zarr
FROM python:3.11-slim AS cpu
ARG TORCH_SPEC="torch==2.13.0"
# Extra pip arguments for torch, e.g. an index serving CPU-only wheels.
ARG TORCH_PIP_ARGS=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /opt/cloudfill
RUN pip install ${TORCH_PIP_ARGS} "${TORCH_SPEC}"
COPY pyproject.toml README.md ./
COPY cloudfill ./cloudfill
RUN pip install ".[test]"
COPY tests ./tests
COPY examples ./examples
COPY benchmarks ./benchmarks
CMD ["python", "-m", "pytest", "-q"]
