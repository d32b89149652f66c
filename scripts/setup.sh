#!/usr/bin/env bash
# Create .venv and install endolight with its test tools. torch is pinned to the 2.13.0 CPU
# build first: a bare `torch` requirement could pull a multi-GB CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q -e ".[test]"
