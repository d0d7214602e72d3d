#!/usr/bin/env bash
# Creates .venv in the repo and installs recipe-search with its test extras.
# torch/torchvision are pinned (2.14.1 / 0.29.1); other versions download gigabytes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e '.[test]'
echo "recipe-search installed in $(pwd)/.venv"
