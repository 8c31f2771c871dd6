# The container a site deploys: the MONAI Deploy application (`python -m app`, MAP
# conventions) and the DICOM node (`python -m app serve`).
#
#   docker build -t tsc-epilepsy-outcome:0.1.0 .
#   # with HD-BET weights fetched at build time (check the weights' licence first; SHA-256 required; see docs/deployment.md):
#   docker build --build-arg HDBET_WEIGHTS_URL='https://zenodo.org/records/14445620/files/release_v1.5.0.zip?download=1' \
#                --build-arg HDBET_WEIGHTS_SHA256=<sha256 of that zip> -t tsc-epilepsy-outcome:0.1.0 .
#   # GPU hosts: --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
#
# The same install steps (scripts/install.sh) are exercised by CI outside Docker. Run with
# `--ulimit stack=33554432`; full guide (MAP packaging too): docs/deployment.md.
FROM python:3.11-slim-bookworm

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG HDBET_WEIGHTS_URL=""
ARG HDBET_WEIGHTS_SHA256=""
ARG APP_UID=1000

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl unzip ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/tsc
COPY pyproject.toml README.md ./
COPY app ./app
COPY operators ./operators
COPY training ./training
COPY synthetic ./synthetic
RUN pip install --upgrade "pip>25.1" \
 && pip install --index-url "${TORCH_INDEX_URL}" "torch==2.13.0" \
 && pip install .

COPY models ./models
# HD-BET weights are a separate public download (not redistributed here). When a URL is
# given they are fetched, verified and laid out as models/hd_bet/release_2.0.0/...;
# without them the app uses its weight-free brain extraction and says so in every report.
# The checksum is mandatory with the URL: an unverified download must not reach a clinical image.
RUN if [ -n "${HDBET_WEIGHTS_URL}" ]; then \
      if [ -z "${HDBET_WEIGHTS_SHA256}" ]; then \
        echo "HDBET_WEIGHTS_SHA256 is required with HDBET_WEIGHTS_URL (see docs/deployment.md)" >&2; exit 1; \
      fi \
      && curl -fsSL -o /tmp/hdbet.zip "${HDBET_WEIGHTS_URL}" \
      && echo "${HDBET_WEIGHTS_SHA256}  /tmp/hdbet.zip" | sha256sum -c - \
      && mkdir -p models/hd_bet/release_2.0.0 \
      && unzip -q /tmp/hdbet.zip -d models/hd_bet/release_2.0.0 \
      && rm /tmp/hdbet.zip \
      && test -f models/hd_bet/release_2.0.0/dataset.json \
      && test -f models/hd_bet/release_2.0.0/plans.json \
      && test -f models/hd_bet/release_2.0.0/fold_all/checkpoint_final.pth; \
    fi

RUN useradd --create-home --uid "${APP_UID}" tsc \
 && mkdir -p /var/holoscan/input /var/holoscan/output /var/lib/tsc-node \
 && chown -R tsc:tsc /var/holoscan /var/lib/tsc-node
USER tsc

ENV HOLOSCAN_INPUT_PATH=/var/holoscan/input \
    HOLOSCAN_OUTPUT_PATH=/var/holoscan/output \
    HOLOSCAN_MODEL_PATH=/opt/tsc/models \
    MPLCONFIGDIR=/tmp/matplotlib

# DICOM node (`serve`): default C-STORE/C-ECHO port of app/node's configuration.
EXPOSE 11112

# Holoscan asks for a 32 MiB stack; `ulimit -s` must be raised in the shell that execs Python.
ENTRYPOINT ["/bin/sh", "-c", "ulimit -s 32768 2>/dev/null; exec python -m app \"$@\"", "--"]
CMD []
