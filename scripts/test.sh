#!/usr/bin/env bash
# Installs embedtune with its test dependencies into ./.venv and runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRA=dev bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -W error -q "$@"
