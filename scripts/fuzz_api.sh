#!/usr/bin/env bash
# schemathesis' CLI, every check (stateful phase included), against a live server with search jobs
# enabled (a stand-in search: scripts/fuzz_api_server.py). Reads need a store with a promoted
# recipe: give its MLflow SQLite file (default: the embedded store, after `recipe-search run`).
#   bash scripts/fuzz_api.sh [path/to/mlflow.db] [seeds...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DB=${1:-.recipe_search/mlflow.db}; shift || true
SEEDS=${*:-1 2 3}
[ -f "$DB" ] || { echo "no MLflow store at $DB: run recipe-search run first, or pass one" >&2; exit 2; }
work=$(mktemp -d); cp "$DB" "$work/mlflow.db"   # a copy: fuzzing never touches the real store
port=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
status=0
for jobs in 1 200; do   # one job at a time (POST mostly 429), then room for the stateful links
  $PY scripts/fuzz_api_server.py "sqlite:///$work/mlflow.db" "$port" --max-jobs "$jobs" > "$work/server-$jobs.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/healthz" > /dev/null && break; sleep 0.2; done
  for seed in $SEEDS; do
    echo "== --max-jobs $jobs, seed $seed"
    "$(dirname "$PY")/st" run "http://127.0.0.1:$port/openapi.json" -H "Authorization: Bearer fuzz-token" \
      --checks all --max-examples 50 --workers 1 --seed "$seed" > "$work/st-$jobs-$seed.log" 2>&1 || status=1
    grep -E "generated|❌" "$work/st-$jobs-$seed.log" || true
  done
  kill -INT "$pid"; wait "$pid" || true
done
echo "logs: $work"
exit $status
