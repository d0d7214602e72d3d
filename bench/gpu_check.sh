#!/usr/bin/env bash
# The first GPU session's checks in one command (<= 8 minutes on one H100/H200):
#   bash bench/gpu_check.sh                          # writes docs/results/gpu/*.json, prints a summary
#   bash bench/gpu_check.sh --dry-run --out /tmp/gc  # tiny sizes on the CPU (what tests/test_gpu_check.py runs)
# The Python is bench/gpu_check.py (see its docstring); this wrapper picks the interpreter and
# bounds the whole run in time.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -n "${PYTHON:-}" ]]; then py="$PYTHON"
elif [[ -x .venv/bin/python ]]; then py=.venv/bin/python
else py=python3
fi
export PATH="$(dirname "$py"):$PATH"  # the recipe-search CLI next to the interpreter
if [[ " $* " == *" --dry-run "* ]]; then  # one torch thread per process on the CPU, as the search's trials
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
fi
exec timeout --signal=INT --kill-after=20 "${GPU_CHECK_TIMEOUT:-480}" "$py" bench/gpu_check.py "$@"
