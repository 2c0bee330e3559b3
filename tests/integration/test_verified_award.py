"""The verified award (SALE_AWARD=verified) through real Celery on a real redis-server: a cold
start runs the auction; a memory of verified outcomes (here seeded with direct jobs, whose
executions count) picks the chain, the execution escalates along it on a failed self-check, and
every job writes one memory record with its chain and each attempt's verdict."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sale.models.db import session_scope
from sale.models.tables import MemoryRecord
from sale.workers.auction.chains import award_chain
from sale.workers.auction.estimates import EstimatorParams
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sale.workers.stages.verified import chain_params, memory_outcomes
from sale.workers.views import job_view
from sqlmodel import select

from tests.integration.conftest import swapped_context, wait
from tests.integration.test_pipeline import (
    EXAMPLES_PROMPT,
    _counts,
    coding_spec,
    model_calls,
    published,
)


@contextmanager
def fresh_memory(stack: AuctionContext, tmp: Path, **settings: Any) -> Iterator[AuctionContext]:
    """The stack's workers on an empty database of their own, with these settings."""
    with swapped_context(stack, f"sqlite:///{tmp / 'verified.db'}", **settings) as ctx:
        yield ctx


def direct(stack: AuctionContext, agent: str, solves: bool, n: int) -> None:
    """``n`` direct jobs on ``agent`` of the examples task, passing or failing."""
    for i in range(n):
        directive = "" if solves else f"{agent}.solve=fail"
        spec = coding_spec(directive, prompt=f"{EXAMPLES_PROMPT}\n# variant {i}")
        assert wait(submit(spec, stack, agent=agent))["status"] == "done"


def records(stack: AuctionContext) -> list[MemoryRecord]:
    with session_scope(stack.db_url) as s:
        return list(s.exec(select(MemoryRecord).where(MemoryRecord.kind == "coding")))


@pytest.fixture
def verified(stack: AuctionContext, tmp_path: Path) -> Iterator[AuctionContext]:
    # award_k=0: each agent's rate on the kind alone. The directives that steer the scripted
    # agents are part of the prompt text, so with neighbours the nearest past jobs would be
    # those with the same directive (see the end of the chain test).
    with fresh_memory(stack, tmp_path, award="verified", award_min_records=5, award_k=0) as ctx:
        yield ctx


def test_a_cold_start_runs_the_auction(verified: AuctionContext) -> None:
    job_id = submit(coding_spec(prompt=EXAMPLES_PROMPT), verified)
    assert wait(job_id)["status"] == "done"
    view = job_view(verified, job_id)
    assert view["mode"] == "auction" and view["chain"] is None
    assert "bidding" in [h["status"] for h in view["history"]]
    assert any(
        n.startswith("verified award: cold start (0 verified coding job(s)") for n in view["notes"]
    )
    (record,) = records(verified)
    assert record.chain is None and record.attempts[0]["verdict"] == "passed"


def test_memory_picks_the_chain_and_a_failed_self_check_escalates_along_it(
    verified: AuctionContext,
) -> None:
    # The memory, from direct jobs: small always fails; medium passes half; large 3 of 5.
    direct(verified, "small", False, 5)
    direct(verified, "medium", True, 6)
    direct(verified, "medium", False, 6)
    direct(verified, "large", True, 3)
    direct(verified, "large", False, 2)
    seeded = records(verified)
    assert len(seeded) == 22 and all(r.chain is None for r in seeded)
    outcomes, jobs = memory_outcomes(seeded)
    assert jobs == 22 and len(outcomes) == 22
    assert all(o.cost_usd is not None and o.cost_usd > 0 for o in outcomes)

    with published() as sent, model_calls(verified) as calls:
        job_id = submit(coding_spec("medium.solve=fail", prompt=EXAMPLES_PROMPT), verified)
        assert wait(job_id)["status"] == "done"
    view = job_view(verified, job_id)
    # small is barred (0 of 5), medium's check told passes from failures: medium, then large.
    assert view["mode"] == "verified" and view["chain"] == ["medium", "large"]
    assert view["award"] == {"agent": "medium", "round": "verified", "score": 0.0}
    assert [(b["agent"], b["round"], b["tokens"]) for b in view["bids"]] == [
        ("medium", "verified", 0),
        ("large", "verified", 0),
    ]
    assert view["jury_calls"] == [] and view["usage"]["bid"] == {"tokens": 0, "cost_usd": 0.0}
    assert [h["status"] for h in view["history"]] == [
        "queued",
        "executing",
        "updating",
        "done",
    ]
    attempts = [
        (e["attempt"], e["agent"], e["self_check"], e["verdict"]) for e in view["executions"]
    ]
    assert attempts == [(0, "medium", "failed", "failed"), (1, "large", "passed", "passed")]
    assert view["verdict"] == "passed"
    assert sorted(calls) == [("large", "execute"), ("medium", "execute")]  # no bid, no jury
    assert (
        "self-check of medium failed (attempt 0): fallback 1 to large (verified bid)"
        in view["notes"]
    )
    note = next(n for n in view["notes"] if n.startswith("verified award: chain"))
    assert (
        "not tried first: small" in note and "from 22 verified attempts of 22 coding jobs" in note
    )
    mine = [(task, queue) for task, queue, args in sent if args and args[0] == job_id]
    assert ("sale.execute", "sale.agent.medium") in mine
    assert ("sale.execute", "sale.agent.large") in mine
    assert not {t for t, _ in mine} & {"sale.bid", "sale.jury", "sale.judge", "sale.score"}
    # The pure award on the same memory chooses the same chain; with neighbours (k=5) the
    # nearest medium jobs are those that carried this job's failure directive, so medium is
    # left out.
    query = _embedding(verified, job_id)
    prices = {a.name: a.output_price for a in verified.pool.agents}
    params = chain_params(verified)
    choice, _, _ = award_chain(outcomes, query, prices, params, max_len=3)
    assert choice.chain == ("medium", "large")
    near, views, _ = award_chain(
        outcomes, query, prices, replace(params, estimator=EstimatorParams(k=5)), max_len=3
    )
    assert near.chain == ("large",)
    assert {v.name: round(v.p_pass, 2) for v in views}["medium"] < 0.2

    # One memory record, with the chain and each attempt's verdict; redelivery adds nothing.
    from sale.workers.tasks import execute_plan, start_job, update_job_memory

    before = _counts(verified, job_id)
    for r in (
        start_job.apply_async((job_id,), queue="sale.control"),
        execute_plan.apply_async((job_id, 1), queue="sale.agent.large"),
        update_job_memory.apply_async((job_id,), queue="sale.control"),
    ):
        r.get(timeout=60)
    assert _counts(verified, job_id) == before
    with session_scope(verified.db_url) as s:
        (record,) = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).all()
    assert record.chain == ["medium", "large"] and record.award_round == "verified"
    assert [(a["agent"], a["self_check"], a["verdict"]) for a in record.attempts] == [
        ("medium", "failed", "failed"),
        ("large", "passed", "passed"),
    ]
    assert all(b["verified_label"] is None for b in record.bids)  # no auction: unlabelled
    assert len(records(verified)) == 23


def _embedding(ctx: AuctionContext, job_id: str) -> list[float]:
    from sale.workers.jobs import job_embedding

    return job_embedding(ctx, job_id)
