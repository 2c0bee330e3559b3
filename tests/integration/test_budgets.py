"""A job's ``max_cost_usd`` through Celery (the embedded worker on a real redis-server): it is
checked before every call of the job, bids and jury included, so a job whose next call could
pass it stops there, failed with that reason, and never spends past it."""

from __future__ import annotations

from typing import Any

from sale.models.db import session_scope
from sale.models.tables import MemoryRecord
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sqlmodel import select

from tests.integration.conftest import wait

ADD = "def add(a, b):\n    return a + b\n"


def spec(max_cost_usd: float) -> dict[str, Any]:
    return {
        "kind": "coding",
        "prompt": f"Write add(a, b).\n[[scripted budget]]\n[[solution]]\n{ADD}[[/solution]]\n",
        "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
        "entry_point": "add",
        "limits": {"max_cost_usd": max_cost_usd},
    }


def test_a_job_stops_before_the_call_that_could_pass_its_max_cost(stack: AuctionContext) -> None:
    # The bids fit; a later call cannot (the execution alone may write 768 tokens, at the
    # large agent's US$0.36 per million nearly the whole limit).
    limit = 0.0003
    job_id = submit(spec(limit), stack)
    summary = wait(job_id)

    assert summary["status"] == "failed", summary
    from sale.workers.views import job_view

    view = job_view(stack, job_id)
    assert view["status_reason"].startswith(f"budget: max_cost_usd US${limit:.6f} would be passed")
    assert "can cost up to" in view["status_reason"]
    assert 0 < view["cost_usd"] <= limit  # the calls made are recorded, and within the limit
    assert view["usage"]["bid"]["cost_usd"] > 0
    with session_scope(stack.db_url) as s:
        assert s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).all() == []
