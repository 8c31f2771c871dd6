#!/usr/bin/env bash
# Installs everything (see install.sh), generates the embedded synthetic study and runs
# the whole app on it, printing the result and where the SR is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
ulimit -s 32768 2>/dev/null || true   # Holoscan asks for a larger stack
exec .venv/bin/python -m app demo "$@"
