"""The memory shortcut: when the nearest past jobs agree on the cheapest agent that
passed, that agent bids alone and gets the job (no jury, no refinement). The decision rule is
pure (sale.workers.memory.retrieval); the stage functions run directly on a temporary SQLite
memory."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sale.broker.settings import Settings
from sale.models.db import session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Award, Bid, Job, MemoryRecord
from sale.workers import jobs
from sale.workers.context import AuctionContext
from sale.workers.memory.retrieval import MemoryEntry, cheapest_passing_agent, shortcut_agent
from sale.workers.stages import awarding, bidding
from sale.workers.stages import executing as attempts
from sale.workers.stages import updating as memory_update
from sale.workers.views import job_view
from sqlmodel import select

from tests.workers.stages.test_prompt_levers import make_ctx
from tests.workers.stages.test_service import CountingLLM, FakeEmbed, memory_record

PRICES = {"small": 0.03, "medium": 0.12, "large": 0.36}
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
SOLVED = "[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]\n"


def passed_by(*agents: str) -> list[dict[str, Any]]:
    """Bids of a past job in which ``agents`` executed and passed (verified win)."""
    bids = [{"agent": a, "status": "ok", "plan": "p", "verified_label": "win"} for a in agents]
    bids.append({"agent": "large", "status": "ok", "plan": "q", "verified_label": "lose"})
    return bids


def entry(rid: int, bids: list[dict[str, Any]], verdict: str = "passed") -> MemoryEntry:
    return MemoryEntry(rid, [1.0, 0.0], bids, verdict)


# --- the rule -----------------------------------------------------------------------------


def test_cheapest_passing_agent_per_record() -> None:
    assert cheapest_passing_agent(entry(1, passed_by("medium", "small")), PRICES) == "small"
    assert cheapest_passing_agent(entry(1, passed_by("large")), PRICES) == "large"
    assert cheapest_passing_agent(entry(1, passed_by("small"), "failed"), PRICES) is None
    assert cheapest_passing_agent(entry(1, passed_by("gone")), PRICES) is None  # left the pool
    unlabelled = [{"agent": "small", "status": "ok", "plan": "p", "verified_label": None}]
    assert cheapest_passing_agent(entry(1, unlabelled), PRICES) is None


def test_shortcut_needs_enough_close_agreeing_records() -> None:
    agree = [(entry(i, passed_by("small")), 0.95) for i in (1, 2, 3)]
    assert shortcut_agent(agree, PRICES, 0.9, 3) == ("small", [1, 2, 3])
    assert shortcut_agent(agree, PRICES, 0.9, 4) is None  # too few
    assert shortcut_agent(agree, PRICES, 0.96, 1) is None  # none close enough
    assert shortcut_agent(agree, PRICES, 0.0, 1) is None  # off
    far = [*agree[:2], (entry(3, passed_by("small")), 0.5)]
    assert shortcut_agent(far, PRICES, 0.9, 3) is None  # the far one does not count
    assert shortcut_agent(far, PRICES, 0.9, 2) == ("small", [1, 2])
    # A far record that disagrees does not matter either.
    assert shortcut_agent([*agree, (entry(4, passed_by("large")), 0.2)], PRICES, 0.9, 3) == (
        "small",
        [1, 2, 3],
    )


@pytest.mark.parametrize(
    "odd",
    [
        entry(3, passed_by("medium")),  # another agent
        entry(3, passed_by("small"), "failed"),  # the cheap agent failed once
        entry(3, passed_by("small"), "unknown"),  # no verdict
        entry(3, [{"agent": "small", "status": "ok", "plan": "p"}]),  # unlabelled (direct-like)
    ],
)
def test_one_disagreeing_close_record_breaks_the_shortcut(odd: MemoryEntry) -> None:
    near = [(entry(1, passed_by("small")), 0.99), (entry(2, passed_by("small")), 0.99)]
    assert shortcut_agent([*near, (odd, 0.99)], PRICES, 0.9, 3) is None


# --- the stages -----------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> AuctionContext:
    """A fresh memory, the scripted pool behind a call counter, unit embeddings; shortcut on
    (similarity 0.9, three records)."""
    on = make_ctx(tmp_path, CountingLLM(), memory_shortcut=0.9)
    on.embed = FakeEmbed()
    return on


def counter(ctx: AuctionContext) -> Counter[tuple[str, str]]:
    assert isinstance(ctx.llm, CountingLLM)
    return ctx.llm.calls


def past_job(ctx: AuctionContext, job_id: str, bids: list[dict[str, Any]]) -> int:
    return memory_record(ctx, job_id, str(bids[0].get("round", "first")), bids)


def new_job(ctx: AuctionContext, job_id: str = "job-1") -> str:
    spec = TaskSpec(kind="coding", prompt=f"Add two numbers.\n{SOLVED}", tests=TESTS)
    return jobs.create_job(ctx, spec, job_id)


def notes(ctx: AuctionContext, job_id: str) -> list[str]:
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return list(job.notes)


def test_shortcut_decision_names_the_agent_and_the_records(ctx: AuctionContext) -> None:
    ids = [past_job(ctx, f"past-{i}", passed_by("small")) for i in range(3)]
    job = new_job(ctx)
    assert awarding.memory_shortcut(ctx, job) == "small"
    assert notes(ctx, job) == [
        f"memory shortcut: small was the cheapest agent that passed in each of memory records "
        f"{ids} (similarity >= 0.9); no auction"
    ]
    assert awarding.memory_shortcut(ctx, job) == "small"  # a redelivered start: same answer


def test_shortcut_is_off_by_default_and_below_the_minimum(ctx: AuctionContext) -> None:
    for i in range(3):
        past_job(ctx, f"past-{i}", passed_by("small"))
    job = new_job(ctx)
    on = ctx.settings
    ctx.settings = on.model_copy(update={"memory_shortcut": Settings().memory_shortcut})
    assert awarding.memory_shortcut(ctx, job) is None
    assert isinstance(ctx.embed, FakeEmbed) and ctx.embed.calls == 0  # off: no retrieval
    ctx.settings = on
    assert awarding.memory_shortcut(ctx, job) == "small"
    other = new_job(ctx, "job-2")
    ctx.settings = ctx.settings.model_copy(update={"memory_shortcut_min": 4})
    assert awarding.memory_shortcut(ctx, other) is None
    assert notes(ctx, other) == []


def test_direct_jobs_records_do_not_count(ctx: AuctionContext) -> None:
    direct = [{"agent": "small", "round": "direct", "status": "ok", "verified_label": "win"}]
    for i in range(3):
        past_job(ctx, f"direct-{i}", direct)
    past_job(ctx, "past-0", passed_by("small"))
    job = new_job(ctx)
    assert awarding.memory_shortcut(ctx, job) is None  # one auction record, not four


def test_an_auction_under_way_never_takes_the_shortcut(ctx: AuctionContext) -> None:
    for i in range(3):
        past_job(ctx, f"past-{i}", passed_by("small"))
    job = new_job(ctx)
    bidding.run_bid(ctx, job, "large", "first", None)
    assert awarding.memory_shortcut(ctx, job) is None


def test_shortcut_job_one_bid_no_jury_and_a_labelled_record(
    ctx: AuctionContext,
) -> None:
    for i in range(3):
        past_job(ctx, f"past-{i}", passed_by("small"))
    job = new_job(ctx)
    agent = awarding.memory_shortcut(ctx, job)
    assert agent == "small"
    bidding.run_bid(ctx, job, agent, awarding.SHORTCUT, None)
    award = awarding.award_shortcut(ctx, job)
    assert award is not None
    assert awarding.award_shortcut(ctx, job) == award  # idempotent
    attempts.run_execution(ctx, job)
    record_id = memory_update.update_memory(ctx, job)
    assert counter(ctx) == Counter({("small", "bid"): 1, ("small", "execute"): 1})
    with session_scope(ctx.db_url) as s:
        bid = s.exec(select(Bid).where(Bid.job_id == job)).one()
        record = s.get(MemoryRecord, record_id)
    assert (award.agent, award.round, award.bid_id) == ("small", "shortcut", bid.id)
    assert bid.score is not None and award.score == bid.score == award.provisional_score
    assert bid.plan is not None and bid.plan.startswith("Plan by small")  # its own plan
    assert record is not None and record.award_round == "shortcut" and record.verdict == "passed"
    assert [
        (b["agent"], b["round"], b["auction_label"], b["verified_label"]) for b in record.bids
    ] == [("small", "shortcut", "win", "win")]
    view = job_view(ctx, job)
    assert view["mode"] == "shortcut" and view["jury_calls"] == []
    assert view["usage"]["bid"]["tokens"] > 0 and view["usage"]["jury"]["tokens"] == 0


def test_a_failed_shortcut_bid_gets_no_award(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    bidding.record_failed_bid(ctx, job, "small", awarding.SHORTCUT, "model down")
    assert awarding.award_shortcut(ctx, job) is None
    with session_scope(ctx.db_url) as s:
        assert s.exec(select(Award)).all() == []
