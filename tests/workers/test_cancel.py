"""Cancellation and the model-call gate, on the stage functions called directly (no Celery): a
temporary SQLite memory and the scripted pool behind the real litellm call site."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sale.broker.pool import load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Bid, Job, StatusEvent
from sale.workers import jobs
from sale.workers.auction.weights import load_weights
from sale.workers.cancel import cancel, stop_point
from sale.workers.context import AuctionContext
from sale.workers.gate import model_caller
from sale.workers.llm.provider import call_model
from sale.workers.llm.types import LLMResult
from sale.workers.stages import bidding
from sqlmodel import select

from sale.errors import BudgetExceededError, JobCancelledError, JobNotFoundError
from tests.conftest import SCRIPTED_POOL


@pytest.fixture
def ctx(tmp_path: Path) -> AuctionContext:
    url = f"sqlite:///{tmp_path}/t.db"
    init_db(url)
    settings = Settings(database_url=url, pool_file=SCRIPTED_POOL, state_dir=tmp_path)
    return AuctionContext(
        settings=settings,
        pool=load_pool(SCRIPTED_POOL),
        weights=load_weights(None),
        llm=call_model,
        embed=lambda texts: [[1.0, 0.0] for _ in texts],
    )


def new_job(ctx: AuctionContext, job_id: str, **limits: Any) -> str:
    spec = TaskSpec.model_validate({"kind": "coding", "prompt": "Add.", "limits": limits})
    return jobs.create_job(ctx, spec, job_id)


def status_of(ctx: AuctionContext, job_id: str) -> tuple[str, str | None]:
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.status, job.status_reason


def test_a_queued_job_is_cancelled_at_once_and_its_start_stops(ctx: AuctionContext) -> None:
    new_job(ctx, "q")
    done = cancel("q", ctx)
    assert (done.outcome, done.status) == ("cancelled", "cancelled")
    assert status_of(ctx, "q") == ("cancelled", "cancelled by request before it started")
    summary = stop_point(ctx, "q", "sale.job")
    assert summary is not None and summary["status"] == "cancelled"
    with session_scope(ctx.db_url) as s:
        events = [e.status for e in s.exec(select(StatusEvent).where(StatusEvent.job_id == "q"))]
    assert events == ["queued", "cancelled"]


def test_a_running_job_is_only_marked_at_its_next_stage(ctx: AuctionContext) -> None:
    new_job(ctx, "r")
    jobs.set_status(ctx, "r", "bidding")
    assert stop_point(ctx, "r", "sale.bid") is None
    done = cancel("r", ctx)
    assert (done.outcome, done.status) == ("requested", "bidding")
    assert cancel("r", ctx).outcome == "already_requested"
    assert status_of(ctx, "r")[0] == "bidding"  # the worker holding it decides when
    summary = stop_point(ctx, "r", "sale.judge")
    assert summary is not None and summary["status"] == "cancelled"
    status, reason = status_of(ctx, "r")
    assert status == "cancelled"
    assert reason == "cancelled by request at sale.judge; spent US$0.000000 (0 tokens)"


def test_cancelling_a_finished_job_changes_nothing(ctx: AuctionContext) -> None:
    new_job(ctx, "f")
    jobs.set_status(ctx, "f", "done", "verdict passed")
    done = cancel("f", ctx)
    assert (done.outcome, done.message) == ("finished", "f is already done")
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "f")
        assert job is not None and job.cancel_requested_at is None and job.status == "done"


def test_an_unknown_id_is_job_not_found(ctx: AuctionContext) -> None:
    with pytest.raises(JobNotFoundError, match="no job 'nope'"):
        cancel("nope", ctx)


def test_after_a_cancel_the_gate_refuses_the_next_call_and_the_bid_records_it(
    ctx: AuctionContext,
) -> None:
    new_job(ctx, "g")
    jobs.set_status(ctx, "g", "bidding")
    bidding.run_bid(ctx, "g", "small", "first", None)  # before the cancel: a paid bid
    cancel("g", ctx)
    with pytest.raises(JobCancelledError):
        model_caller(ctx, "g")(ctx.pool.get("medium"), [], stage="bid", max_tokens=8)
    bidding.run_bid(ctx, "g", "medium", "first", None)
    with session_scope(ctx.db_url) as s:
        bids = {b.agent: b for b in s.exec(select(Bid).where(Bid.job_id == "g"))}
    assert bids["small"].status == "ok" and bids["small"].cost_usd > 0
    assert bids["medium"].status == "failed" and bids["medium"].cost_usd == 0
    assert "job cancelled: bid call not made" in (bids["medium"].error or "")


def test_a_call_that_could_pass_max_cost_fails_the_job_before_it_is_made(
    ctx: AuctionContext,
) -> None:
    # large: US$0.36 per million tokens; 256 output tokens alone can cost ~US$0.0000922.
    new_job(ctx, "b", max_cost_usd=0.00005)
    jobs.set_status(ctx, "b", "bidding")
    small_bid = bidding.run_bid(ctx, "b", "small", "first", None)  # small fits the budget
    large_bid = bidding.run_bid(ctx, "b", "large", "first", None)
    with session_scope(ctx.db_url) as s:
        small, large = s.get(Bid, small_bid), s.get(Bid, large_bid)
        assert small is not None and large is not None
    assert small.status == "ok"
    assert large.status == "failed" and large.cost_usd == 0
    status, reason = status_of(ctx, "b")
    assert status == "failed"
    assert reason is not None and reason.startswith("budget: max_cost_usd US$0.000050 would be")
    assert "the next bid call of large can cost up to" in reason
    # The job has failed: no further call of any agent is made for it.
    with pytest.raises(Exception, match="job failed"):
        model_caller(ctx, "b")(ctx.pool.get("small"), [], stage="jury", max_tokens=8)
    assert stop_point(ctx, "b", "sale.judge") is not None


def test_the_budget_counts_every_call_in_the_jobs_ledger(ctx: AuctionContext) -> None:
    new_job(ctx, "e", max_cost_usd=0.0001)
    jobs.set_status(ctx, "e", "executing")
    gate = model_caller(ctx, "e")
    small = ctx.pool.get("small")  # US$0.03 per million: 1,000 tokens cost US$0.00003
    gate(small, [{"role": "user", "content": "x"}], stage="execute", max_tokens=1000)
    earlier = LLMResult("", 0, 0, None, cost_usd=0.00008, latency_s=0.0, model="m")
    jobs.insert_once(ctx, jobs.paid_call("e", "execute", "small", earlier))  # earlier steps
    with pytest.raises(BudgetExceededError):
        gate(small, [{"role": "user", "content": "x"}], stage="execute", max_tokens=1000)
