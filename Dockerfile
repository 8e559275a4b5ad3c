# syntax=docker/dockerfile:1
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
