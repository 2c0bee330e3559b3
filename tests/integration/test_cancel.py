"""Cancellation through Celery: the embedded worker on a real redis-server (the ``stack``
fixture), then real `sale worker` processes (scripts/bench/cluster.py) with `sale cancel`, a
SIGKILLed worker and its restart. The request is in the database, so whichever worker holds
the job honours it, even one started after the request."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sale.models.db import session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Bid, Execution, ExecutionStep, MemoryRecord, StatusEvent
from sale.scripts.bench.cluster import SALE, Cluster, job_rows, wait_terminal
from sale.workers.cancel import cancel
from sale.workers.canvas import build_pipeline, submit
from sale.workers.context import AuctionContext
from sale.workers.jobs import create_job
from sale.workers.llm.types import LLMResult
from sqlmodel import col, select

from tests.conftest import SCRIPTED_POOL
from tests.integration.conftest import wait
from tests.integration.test_faults import ENV, spec, wait_for_lease


class Spy:
    """The model caller of the stack behind a record of every call that reached it, and an
    event set when the first execution call of ``job`` starts."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, float]] = []  # (prompt head, stage, cost)
        self.executing = threading.Event()
        self.marker = ""

    def __call__(self, agent: Any, messages: Any, **kw: Any) -> LLMResult:
        text = "\n".join(str(m.get("content") or "") for m in messages)
        if self.marker and self.marker in text and kw["stage"] == "execute":
            self.executing.set()
        result: LLMResult = self.inner(agent, messages, **kw)
        if self.marker and self.marker in text:
            self.calls.append((agent.name, kw["stage"], result.cost_usd))
        return result


@pytest.fixture
def spy(stack: AuctionContext, monkeypatch: pytest.MonkeyPatch) -> Iterator[Spy]:
    found = Spy(stack.llm)
    monkeypatch.setattr(stack, "llm", found)
    yield found


def test_a_job_cancelled_mid_execution_stops_within_one_call_and_keeps_its_spend(
    stack: AuctionContext, spy: Spy
) -> None:
    spy.marker = "cancel-mid-execution"
    job_id = submit(spec(f"{spy.marker} large.slow=execute:2 large.tools=3"), stack, agent="large")
    assert spy.executing.wait(timeout=90), "the execution never started"
    assert cancel(job_id, stack).outcome == "requested"  # while its first call is in flight

    summary = wait(job_id)
    assert summary["status"] == "cancelled", summary
    with session_scope(stack.db_url) as s:
        (execution,) = s.exec(select(Execution).where(Execution.job_id == job_id)).all()
        steps = s.exec(
            select(ExecutionStep)
            .where(ExecutionStep.execution_id == execution.id)
            .order_by(col(ExecutionStep.index))
        ).all()
        events = [e.status for e in s.exec(select(StatusEvent).where(StatusEvent.job_id == job_id))]
        records = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).all()
    # The call in flight finished; the next one was refused: one of the four calls was made.
    assert [st.role for st in steps if st.role == "assistant"] == ["assistant"]
    assert steps[-1].role == "error" and "job cancelled" in (steps[-1].content or "")
    assert execution.stop_reason == "job_stopped" and execution.self_check is None
    assert [stage for _, stage, _ in spy.calls] == ["execute"]
    assert summary["cost_usd"] == pytest.approx(sum(c for *_, c in spy.calls))
    assert execution.cost_usd == pytest.approx(spy.calls[0][2])
    assert "updating" not in events and events[-1] == "cancelled"
    assert records == []  # the memory update never ran


def test_a_queued_job_cancelled_before_any_worker_takes_it_never_starts(
    stack: AuctionContext, spy: Spy
) -> None:
    spy.marker = "cancel-queued"
    task = TaskSpec.model_validate(spec(spy.marker))
    job_id = create_job(stack, task, "cancel-queued-job")  # stored, not yet sent
    assert cancel(job_id, stack).outcome == "cancelled"
    build_pipeline(job_id).apply_async()  # the worker takes it after the cancel

    summary = wait(job_id)
    assert summary["status"] == "cancelled"
    assert spy.calls == []
    with session_scope(stack.db_url) as s:
        assert s.exec(select(Bid).where(Bid.job_id == job_id)).all() == []


# --- real `sale worker` processes -----------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster", env_extra=dict(ENV)) as c:
        yield c


def sale_cancel(c: Cluster, *job_ids: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SALE, "cancel", *job_ids], env=c.env(), capture_output=True, text=True, timeout=60
    )


def test_sale_cancel_reaches_real_workers_before_and_after_a_worker_restart(
    cluster: Cluster,
) -> None:
    # Queued with no worker running, cancelled, and only then a worker starts.
    queued = cluster.submit(spec("large.slow=execute:3"), agent="large")
    done = sale_cancel(cluster, queued)
    assert done.returncode == 0 and "cancelled (it was queued: never started)" in done.stdout
    cluster.start_worker("control")
    cluster.start_worker("large")

    # Running: cancelled while its worker is in its first call, then that worker is SIGKILLed
    # before it could see the request, and a new one takes the stage over.
    running = cluster.submit(spec("large.slow=execute:3 large.tools=3"), agent="large")
    wait_for_lease(cluster, "sale.execute", running)
    done = sale_cancel(cluster, running)
    assert done.returncode == 0 and "cancel requested (executing)" in done.stdout, done.stderr
    cluster.kill_worker("large")
    cluster.start_worker("large")

    assert wait_terminal(cluster.db_url, [queued, running], timeout=120) == {
        queued: "cancelled",
        running: "cancelled",
    }
    first, second = job_rows(cluster.db_url, queued), job_rows(cluster.db_url, running)
    assert first["bids"] == [] and first["executions"] == []
    assert first["reason"] == "cancelled by request before it started"
    # The killed worker stored nothing; its successor made no call and stopped the job.
    assert second["executions"] == [] and second["memory_records"] == 0
    assert second["reason"].startswith("cancelled by request at sale.execute; spent US$0")

    again = sale_cancel(cluster, running)
    assert again.returncode == 0 and again.stdout.strip() == f"{running} is already cancelled"
    listed = subprocess.run(
        [SALE, "jobs", "--status", "cancelled", "--json"],
        env=cluster.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert {r["job_id"] for r in rows} == {queued, running}
    assert all(r["agent"] == "large" and r["kind"] == "coding" for r in rows)


def test_sale_cancel_of_an_unknown_id_is_one_line_and_exit_2(tmp_path: Path) -> None:
    # A wide terminal, so the one message is one line (rich wraps at the terminal's width).
    env = dict(os.environ, COLUMNS="400", SALE_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
               SALE_POOL_FILE=str(SCRIPTED_POOL), SALE_STATE_DIR=str(tmp_path))  # fmt: skip
    done = subprocess.run(
        [SALE, "cancel", "no-such-job"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no job no-such-job" in lines[0] and "Traceback" not in done.stderr
