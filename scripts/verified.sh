#!/usr/bin/env bash
# The verified award live on the 30 test tasks, beside every recorded method: the records of
# the candidates run (docs/results/candidates/<bench>.runs.jsonl, copied once into this run's
# own records) stand for every other method, so only `sale-nomem+award=verified` runs jobs (two
# task orders; each order's memory is warm-started with the train split's single-agent runs, as
# the replay `verified-award` is). The replays (`verified-award`, `cascade-top2`) run no job.
# Its own work directory and committed records, so a stopped run goes on from them. Usage:
#   ./scripts/verified.sh humaneval|search [WORK_DIR] [extra sale eval options]
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?usage: scripts/verified.sh humaneval|search [WORK_DIR] [sale eval options]}
case "$bench" in
  humaneval|search) ;;
  *) echo "unknown benchmark $bench: humaneval or search" >&2; exit 2 ;;
esac
work=${2:-$HOME/sale-eval/$bench-verified}
shift $(( $# > 1 ? 2 : 1 ))
out=docs/results/verified
records=$out/$bench.runs.jsonl
if [ ! -f "$records" ]; then
  mkdir -p "$out" && cp "docs/results/candidates/$bench.runs.jsonl" "$records"
fi
cheap=weights=nojury+bid_max_tokens=128
methods="all,cascade-top2,verified-award,sale-nomem+$cheap,auction-router+$cheap"
methods="$methods,sale-nomem+$cheap+plan_mode=generic,sale-nomem+award=verified"
SALE=${SALE:-.venv/bin/sale}
PYTHON=${PYTHON:-.venv/bin/python}
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true HF_HUB_OFFLINE=1
"$SALE" eval --bench "$bench" --limit 30 --train-limit 15 --orders 2 --methods "$methods" \
  --work-dir "$work" --records "$records" --out "$out" "$@"
"$PYTHON" -m sale.scripts.evals.verified_report "$out"
