#!/usr/bin/env bash
# Installs embedtune into ./.venv and runs the main job on the sample collection it ships:
# BM25, two local models and their hybrids with BM25, compared side by side (offline, cached);
# the table is printed, and embedtune-report/ gets comparison.json and comparison.png.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
embedtune compare --models local:all-MiniLM-L6-v2,local:all-mpnet-base-v2 --bm25 --hybrid rrf,convex
