"""A job's ``max_cost_usd`` through Celery (the embedded worker on a real redis-server): it is
checked before every call of the job, bids and jury included, so a job whose next call could
pass it stops there, failed with that reason, and never spends past it. A pool's daily budget
refuses a job sent as a signature in a user's canvas too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sale.models.db import session_scope
from sale.models.tables import Bid, Execution, MemoryRecord
from sale.workers.canvas import sale_signature, submit
from sale.workers.context import AuctionContext
from sale.workers.views import job_view
from sqlmodel import select

from sale.errors import DailyBudgetError
from tests.conftest import SCRIPTED_POOL
from tests.integration.conftest import swapped_context, wait
from tests.scripts.cli.test_daily_budget import add_spend

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
    view = job_view(stack, job_id)
    assert view["status_reason"].startswith(f"budget: max_cost_usd US${limit:.6f} would be passed")
    assert "can cost up to" in view["status_reason"]
    assert 0 < view["cost_usd"] <= limit  # the calls made are recorded, and within the limit
    assert view["usage"]["bid"]["cost_usd"] > 0
    with session_scope(stack.db_url) as s:
        assert s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).all() == []


def test_a_signature_applied_once_the_daily_budget_is_spent_starts_no_job(
    stack: AuctionContext, tmp_path: Path
) -> None:
    pool_file = tmp_path / "pool.toml"
    pool_file.write_text("daily_budget_usd = 0.01\n" + SCRIPTED_POOL.read_text())
    with swapped_context(stack, f"sqlite:///{tmp_path / 'budget.db'}", pool_file) as ctx:
        made_early = sale_signature(spec(1.0))  # the day's budget is not spent yet
        add_spend(ctx.db_url, "spent", ctx.pool.path, 0.02, datetime.now(UTC))
        with pytest.raises(DailyBudgetError, match="daily_budget_usd"):
            sale_signature(spec(1.0))  # refused at once, as submit() is
        job_id = made_early.apply_async().id
        summary = wait(job_id)
        assert summary["status"] == "failed" and summary["cost_usd"] == 0, summary
        view = job_view(ctx, job_id)
        assert view["status_reason"].startswith(f"daily budget: pool {ctx.pool.path} spent")
        assert view["status_reason"].endswith("the job was not started")
        with session_scope(ctx.db_url) as s:
            assert s.exec(select(Bid).where(Bid.job_id == job_id)).all() == []
            assert s.exec(select(Execution).where(Execution.job_id == job_id)).all() == []
