"""Every paid call is recorded once: a transient model error in the middle of an execution
retries the execution, and the calls the cut-short try already made stay in the job's cost
(one ``retried`` step opens the trace), through real Celery on a real redis-server."""

from __future__ import annotations

import pytest
from sale.broker.pool import Agent
from sale.models.db import session_scope
from sale.models.tables import Execution, ExecutionStep, MemoryRecord
from sale.workers.agent.loop import run_agent
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sale.workers.jobs import job_totals
from sale.workers.llm.provider import call_model
from sqlmodel import select

from sale.errors import TransientModelError
from tests.integration.conftest import wait
from tests.integration.test_pipeline import coding_spec


def test_the_loop_reports_what_a_try_paid_before_its_transient_error(
    stack: AuctionContext,
) -> None:
    from sale.models.schemas import TaskSpec

    agent: Agent = stack.pool.get("large")
    spec = TaskSpec.model_validate(coding_spec("large.tools=2 large.flaky=execute:1"))
    with pytest.raises(TransientModelError) as raised:
        run_agent(spec, "plan", agent, call_model, 256)
    paid = raised.value.paid
    assert paid is not None and paid["calls"] == 1
    assert paid["cost_usd"] > 0 and paid["tokens_out"] > 0


def test_a_transient_error_mid_execution_keeps_the_paid_steps_in_the_cost(
    stack: AuctionContext,
) -> None:
    job_id = submit(coding_spec("large.tools=2 large.flaky=execute:2"), stack)
    assert wait(job_id)["status"] == "done"
    with session_scope(stack.db_url) as s:
        execution = s.exec(select(Execution).where(Execution.job_id == job_id)).one()
        steps = s.exec(
            select(ExecutionStep)
            .where(ExecutionStep.execution_id == execution.id)
            .order_by(ExecutionStep.index)  # type: ignore[arg-type]
        ).all()
        record = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).one()
        _tokens, total = job_totals(s, job_id)
    retried = [st for st in steps if st.role == "retried"]
    assert len(retried) == 1 and retried[0].index == 0
    assert retried[0].content is not None and retried[0].content.startswith("2 paid model call")
    assert retried[0].cost_usd > 0
    assert execution.cost_usd == pytest.approx(sum(st.cost_usd for st in steps))
    # The successful try alone: three calls (two tool steps and the answer).
    fresh = [st for st in steps if st.role == "assistant"]
    assert len(fresh) == 3
    assert execution.cost_usd > sum(st.cost_usd for st in fresh)
    assert record.total_cost_usd == pytest.approx(total)
