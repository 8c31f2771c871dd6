#!/usr/bin/env bash
# Installs everything (see install.sh) and runs the whole test suite, slow tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ulimit -s 32768 2>/dev/null || true   # Holoscan asks for a larger stack
exec .venv/bin/python -m pytest "$@"
