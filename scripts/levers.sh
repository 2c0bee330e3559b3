#!/usr/bin/env bash
# The lever rows (docs/evaluating.md, docs/results/levers/): one `sale eval` per lever,
# on the first 10 test tasks over 2 orders, most telling lever first. Each run adds one lever to
# --methods; finished rows stay in the work directory and in the records copy OUT_DIR/<bench>.runs.jsonl
# (committed), so a stopped run is resumed by running this again, on this machine or another.
# After each row, OUT_DIR/README.md puts both benchmarks' rows side by side, each against its base.
# The rows have a work directory of their own: a 10-task `sale` order 1 is another stream than the
# 30-task run's, with the same record keys. Its single-agent runs and train auctions are the full
# run's: the records copy starts as a copy of the full run's. Usage:
#   ./scripts/levers.sh humaneval|search [WORK_DIR] [OUT_DIR]
# LEVERS_REVERSE=1 runs the rows last first: a second stream on another work directory and
# OUT_DIR (its records copy seeded from this one's) meets the first from the other end; stop it
# where they meet and merge its jobs with `sale eval --report-only --work-dir WORK_DIR --records
# OUT_DIR2/<bench>.runs.jsonl ...` (records the work directory lacks are restored from the copy).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:?usage: scripts/levers.sh humaneval|search [WORK_DIR] [OUT_DIR]}
work=${2:-$HOME/sale-eval/$bench-levers}
out=${3:-docs/results/levers}
records=$out/$bench.runs.jsonl
full=docs/results/full-run-stop2/$bench.runs.jsonl
if [ ! -f "$records" ]; then
  [ -f "$full" ] || { echo "no $full: run the full run first (docs/evaluating.md)" >&2; exit 2; }
  mkdir -p "$out" && cp "$full" "$records"
fi
# A lever that does not act on the memory runs on `sale-nomem` (memoryless: one order stands
# for every order, so a row is 10 jobs instead of 20, and its difference to `sale-nomem` is the
# lever's alone); a lever of the memory or of the published mechanism runs on `sale`. Three
# levers need no live row here: `plan_mode=generic` and `self_check_fallback=0` are replayed from
# the `sale-nomem` jobs (`auction-router`, `sale-nomem-nofallback`, in every report), and the
# repeat stop from the recorded traces (scripts/evals/replay_stop.py). The first row combines the
# two auction levers that cut cost (no jurors, short bids). `sale` itself is a row: the
# shuffled order of the 10-task run is a stream of its own (see above). The memory shortcut has
# no row: on these test tasks it cannot fire at any threshold above 0.42 (no task has 3 others
# more similar; `python -m sale.scripts.evals.shortcut_reach`), so its row would be `sale`'s jobs again.
base=single,random,knn,classifier,cascade,oracle,oracle-small,auction-router,sale-nomem-nofallback
base=$base,sale-nomem
# A row of auction settings alone also gets its generic-plan twin, replayed from its auctions
# (`auction-router+X`, no job of its own; scripts/evals/runner.py: ROUTER_SETTINGS).
twin() { echo "sale-nomem+$1,auction-router+$1"; }
# The second row is the candidate default those two rows pointed to (the first
# rows run, on 2026-11-27): SALE with its memory, no jury, short bids, and on coding the generic plan.
cheap=weights=nojury+bid_max_tokens=128  # the first row's auction settings, in three rows
common=(
  "$(twin $cheap)"
  sale+$cheap+coding_plan_mode=generic
  sale-nomem+plan_mode=guidance sale sale+mechanism=paper
)
tail=(
  "$(twin weights=handset)"
  "$(twin weights=handset+jury_debias=standardize+jury_degenerate=abstain)"
  "$(twin weights=handset+jury_debias=rotate)" "$(twin bid_max_tokens=128)"
  "$(twin weights=nojury)" sale-nomem+task_first_prompts=true
  "$(twin self_check_escalation=ranking)"
)
case "$bench" in
  humaneval) levers=("${common[@]}" "${tail[@]}" sale-nomem+self_check_smoke=true) ;;
  search) levers=("${common[@]}" sale-nomem+search_answer_types=true "${tail[@]}") ;;
  *) echo "unknown benchmark $bench: humaneval or search" >&2; exit 2 ;;
esac
# Last, the shipped default run live (docs/design.md and README, "How the auction works"): the first row
# with the generic plan, i.e. its replayed twin checked job by job. `scripts/candidates.sh` runs
# the same row on all 30 test tasks; its jobs on these 10 are the same jobs (same train split,
# same fit, memoryless, order 0), so they are taken from its records when there, not run again.
default_row=sale-nomem+$cheap+plan_mode=generic
candidates=docs/results/candidates/$bench.runs.jsonl
if [ -f "$candidates" ] && ! grep -qF "\"method\": \"$default_row\"" "$records"; then
  grep -F "\"method\": \"$default_row\"" "$candidates" >> "$records" || true
fi
levers+=("$default_row")
if [ "${LEVERS_REVERSE:-0}" = 1 ]; then
  reversed=()
  for ((i = ${#levers[@]} - 1; i >= 0; i--)); do reversed+=("${levers[i]}"); done
  levers=("${reversed[@]}")
fi
SALE=${SALE:-.venv/bin/sale}
PYTHON=${PYTHON:-.venv/bin/python}
methods=$base
for lever in "${levers[@]}"; do
  methods=$methods,$lever
  echo "== $bench: $lever" >&2
  "$SALE" eval --bench "$bench" --limit 10 --train-limit 15 --orders 2 --work-dir "$work" \
    --records "$records" --methods "$methods" --out "$out"
  "$PYTHON" -m sale.scripts.evals.levers_table "$out"  # both benchmarks' rows side by side
done
