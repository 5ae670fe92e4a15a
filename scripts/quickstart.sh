#!/usr/bin/env bash
# Installs embedtune into ./.venv and runs the main job on the sample collection it ships:
# embed it with all-MiniLM-L6-v2 (offline, cached), then time one call per text against batching.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
embedtune embed src/embedtune/data/sample --model local:all-MiniLM-L6-v2 --over-limit split --out embedtune-out/sample.parquet
embedtune bench batching --model local:all-MiniLM-L6-v2 -n 100
