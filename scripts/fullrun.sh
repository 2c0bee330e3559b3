#!/usr/bin/env bash
# The full run (docs/evaluating.md, docs/results/full-run-stop2/): every method
# on 30 test and 15 train tasks of a benchmark, SALE over 2 orders, on the real local pool.
# Resumable on this machine or another: the run records are kept in the repository
# (docs/results/full-run-stop2/<bench>.runs.jsonl, --records), so a stopped run goes on from
# there, and the tables are rewritten as it goes. Both benchmarks may run side by side (each in
# its own work directory); the model servers are shared (`sale models up --parallel 2` first
# serves two requests per model at a time). Usage:
#   ./scripts/fullrun.sh humaneval|search [WORK_DIR] [extra sale eval options, e.g. --report-only]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?usage: scripts/fullrun.sh humaneval|search [WORK_DIR] [sale eval options]}
case "$bench" in
  humaneval|search) ;;
  *) echo "unknown benchmark $bench: humaneval or search" >&2; exit 2 ;;
esac
work=${2:-$HOME/sale-eval/$bench}
shift $(( $# > 1 ? 2 : 1 ))
out=docs/results/full-run-stop2
SALE=${SALE:-.venv/bin/sale}
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true HF_HUB_OFFLINE=1
exec "$SALE" eval --bench "$bench" --limit 30 --train-limit 15 --orders 2 --methods all \
  --work-dir "$work" --records "$out/$bench.runs.jsonl" --out "$out" "$@"
