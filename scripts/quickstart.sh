#!/usr/bin/env bash
# Installs embedtune into ./.venv and runs the main job on the sample collection it ships:
# BM25, two local models and their hybrids with BM25, compared side by side (offline, cached);
# the table is printed, and embedtune-report/ gets comparison.json, comparison.png and the
# recommended strategy.toml (the cheapest within noise of the winner). Then it is built into
# ./embedtune-index and searched once.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
embedtune compare --models local:all-MiniLM-L6-v2,local:all-mpnet-base-v2 --bm25 --hybrid rrf,convex
SAMPLE=$(python -c 'from importlib import resources; print(resources.files("embedtune") / "data" / "sample")')
embedtune index "$SAMPLE" --strategy embedtune-report/strategy.toml --store embedtune-index
embedtune search "how long do we keep postgres backups" --store embedtune-index -k 3
