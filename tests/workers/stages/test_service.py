"""Task bodies (the stage modules of workers/) called directly (no Celery) on a temporary SQLite
memory, the scripted pool behind a counting wrapper of the real litellm call site, and a fake
embedder."""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sale.broker.pool import Agent, load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import (
    Award,
    Bid,
    Execution,
    Job,
    JuryCall,
    JuryScore,
    MemoryRecord,
    ModelCall,
    StatusEvent,
)
from sale.workers import jobs
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext
from sale.workers.llm.provider import call_model
from sale.workers.llm.types import LLMResult
from sale.workers.memory.retrieval import MemoryEntry, build_pairs
from sale.workers.stages import awarding, bidding, judging
from sale.workers.stages import executing as attempts
from sale.workers.stages import updating as memory_update
from sale.workers.views import job_view
from sqlmodel import col, select

from sale.errors import UnknownAgentError
from tests.conftest import SCRIPTED_POOL

AGENTS = ("small", "medium", "large")
# The scripted plan "Plan by <p>: 1. Read the task and restate the goal. 2. Break it into steps
# and handle edge cases. 3. Check the result against the examples. [quality=Q]" is 28 words,
# i.e. 28 output tokens for the scripted provider.
PLAN_TOKENS = 28
PRICES = {"small": 0.03, "medium": 0.12, "large": 0.36}


@dataclass
class CountingLLM:
    """The real call site, counting calls per (agent, stage); can drop log-probabilities."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    strip_logprobs_for: frozenset[str] = frozenset()

    def __call__(
        self,
        agent: Agent,
        messages: list[dict[str, str]],
        *,
        stage: str,
        max_tokens: int,
        logprobs: bool = False,
        top_logprobs: int = 5,
        timeout: float = 300.0,
    ) -> LLMResult:
        self.calls[(agent.name, stage)] += 1
        result = call_model(
            agent,
            messages,
            stage=stage,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            timeout=timeout,
        )
        if agent.name in self.strip_logprobs_for:
            # A provider that returns no log-probabilities.
            return dataclasses.replace(result, top_logprobs=None)
        return result


@dataclass
class FakeEmbed:
    """Fixed unit vectors; retrieval math is tested in test_memory."""

    calls: int = 0

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        return [[1.0, 0.0, 0.0] for _ in texts]


@pytest.fixture
def llm() -> CountingLLM:
    return CountingLLM()


@pytest.fixture
def embed() -> FakeEmbed:
    return FakeEmbed()


@pytest.fixture
def ctx(tmp_path: Path, llm: CountingLLM, embed: FakeEmbed) -> AuctionContext:
    url = f"sqlite:///{tmp_path}/t.db"
    init_db(url)
    # the whole mechanism of design §3, refinement included (off by default)
    settings = Settings(database_url=url, pool_file=SCRIPTED_POOL, state_dir=tmp_path, refine=True)
    return AuctionContext(
        settings=settings,
        pool=load_pool(SCRIPTED_POOL),
        weights=load_weights(None),
        llm=llm,
        embed=embed,
    )


def new_job(ctx: AuctionContext, job_id: str = "job-1", directives: str = "") -> str:
    spec = TaskSpec(kind="coding", prompt=f"Add two numbers. {directives}".strip())
    return jobs.create_job(ctx, spec, job_id)


def bids_of(ctx: AuctionContext, job_id: str) -> dict[str, Bid]:
    with session_scope(ctx.db_url) as s:
        return {b.agent: b for b in s.exec(select(Bid).where(Bid.job_id == job_id))}


# --- jobs and bids ------------------------------------------------------------------------


def test_cancel_unfinished_closes_only_jobs_that_can_no_longer_finish(ctx: AuctionContext) -> None:
    for job_id in ("a", "b", "c"):
        new_job(ctx, job_id)
    jobs.set_status(ctx, "a", "executing")
    jobs.set_status(ctx, "b", "done")
    assert sorted(jobs.unfinished_jobs(ctx.db_url)) == ["a", "c"]
    assert sorted(jobs.cancel_unfinished(ctx.db_url, "orphaned")) == ["a", "c"]
    with session_scope(ctx.db_url) as s:
        got = {j.id: (j.status, j.status_reason) for j in s.exec(select(Job))}
        events = [e.status for e in s.exec(select(StatusEvent).where(StatusEvent.job_id == "a"))]
    assert got == {
        "a": ("cancelled", "orphaned"),
        "b": ("done", None),
        "c": ("cancelled", "orphaned"),
    }
    assert events == ["queued", "executing", "cancelled"]
    assert jobs.cancel_unfinished(ctx.db_url, "orphaned") == []  # nothing left to cancel
    assert jobs.unfinished_jobs(ctx.db_url) == []


def test_a_rerun_adopts_the_unfinished_jobs_of_the_same_tasks_agent_and_pool(
    ctx: AuctionContext,
) -> None:
    add = TaskSpec(kind="coding", prompt="Add two numbers.")
    mul = TaskSpec(kind="coding", prompt="Multiply two numbers.")
    jobs.create_job(ctx, add, "old-done")
    jobs.set_status(ctx, "old-done", "done")
    jobs.create_job(ctx, add, "add-1")
    jobs.set_status(ctx, "add-1", "executing")
    jobs.create_job(ctx, add, "add-2")
    jobs.create_job(ctx, add, "add-direct", agent="small")
    with session_scope(ctx.db_url) as s:
        assert s.get(Job, "add-direct").agent == "small" and s.get(Job, "add-1").agent is None
    specs = [x.model_dump(mode="json") for x in (add, mul, add, add)]
    # Each unfinished auction job of the same spec once, oldest first; a finished one never.
    assert jobs.adoptable_jobs(ctx.db_url, specs, None, ctx.pool.path) == [
        "add-1",
        None,
        "add-2",
        None,
    ]
    assert jobs.adoptable_jobs(ctx.db_url, specs[:1], "small", ctx.pool.path) == ["add-direct"]
    assert jobs.adoptable_jobs(ctx.db_url, specs[:1], "large", ctx.pool.path) == [None]
    assert jobs.adoptable_jobs(ctx.db_url, specs[:1], None, "other/pool.toml") == [None]


def test_create_job_is_idempotent(ctx: AuctionContext) -> None:
    new_job(ctx)
    new_job(ctx)
    with session_scope(ctx.db_url) as s:
        jobs = s.exec(select(Job)).all()
        events = s.exec(select(StatusEvent)).all()
    assert [(j.id, j.status, j.kind) for j in jobs] == [("job-1", "queued", "coding")]
    assert [e.status for e in events] == ["queued"]


def test_run_bid_twice_makes_one_bid_and_one_call(ctx: AuctionContext, llm: CountingLLM) -> None:
    job = new_job(ctx)
    first = bidding.run_bid(ctx, job, "medium", "first", None)
    again = bidding.run_bid(ctx, job, "medium", "first", None)
    assert first == again
    assert llm.calls == Counter({("medium", "bid"): 1})
    with session_scope(ctx.db_url) as s:
        rows = s.exec(select(Bid)).all()
    assert len(rows) == 1
    bid = rows[0]
    assert (bid.id, bid.agent, bid.round, bid.status) == (first, "medium", "first", "ok")
    assert bid.plan is not None and bid.plan.endswith("[quality=2]")
    assert bid.tokens_out == PLAN_TOKENS
    assert bid.entropy is not None and 0.0 < bid.entropy < 1.0
    # The charge is the pool's price over both directions: (in + 28) · 0.12 / 1e6.
    assert bid.cost_usd == pytest.approx((bid.tokens_in + PLAN_TOKENS) * 0.12 / 1e6)


def test_permanent_bid_failure_is_recorded_not_raised(ctx: AuctionContext) -> None:
    job = new_job(ctx, directives="[[scripted small.fail=bid]]")
    bid_id = bidding.run_bid(ctx, job, "small", "first", None)
    bid = bids_of(ctx, job)["small"]
    assert (bid.id, bid.status, bid.plan) == (bid_id, "failed", None)
    assert bid.error is not None and "scripted bid failure" in bid.error


# --- jury ---------------------------------------------------------------------------------


def collect_bids(ctx: AuctionContext, job: str) -> dict[str, Bid]:
    for agent in AGENTS:
        bidding.run_bid(ctx, job, agent, "first", None)
    return bids_of(ctx, job)


def test_run_jury_twice_makes_one_call_and_one_set_of_scores(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    job = new_job(ctx)
    bids = collect_bids(ctx, job)
    call_id = judging.run_jury(ctx, job, "medium", "first", "all")
    assert judging.run_jury(ctx, job, "medium", "first", "all") == call_id
    assert llm.calls[("medium", "jury")] == 1
    with session_scope(ctx.db_url) as s:
        calls = s.exec(select(JuryCall)).all()
        scores = s.exec(select(JuryScore)).all()
    assert len(calls) == 1
    assert (calls[0].status, calls[0].retried) == ("ok", False)
    assert [o["label"] for o in calls[0].order] == ["A", "B", "C"]
    assert sorted(o["agent"] for o in calls[0].order) == sorted(AGENTS)
    # Scripted jurors score the quality written in each plan: small 1, medium 2, large 3.
    by_agent = {next(a for a, b in bids.items() if b.id == sc.bid_id): sc.score for sc in scores}
    assert by_agent == {"small": 1, "medium": 2, "large": 3}
    assert {sc.jury_call_id for sc in scores} == {call_id}


def test_junk_juror_retries_once_then_abstains(ctx: AuctionContext, llm: CountingLLM) -> None:
    job = new_job(ctx, directives="[[scripted small.junk=jury]]")
    collect_bids(ctx, job)
    call_id = judging.run_jury(ctx, job, "small", "first", "all")
    assert llm.calls[("small", "jury")] == 2  # the first try and one strict retry
    with session_scope(ctx.db_url) as s:
        call = s.get(JuryCall, call_id)
        scores = s.exec(select(JuryScore).where(JuryScore.jury_call_id == call_id)).all()
    assert call is not None
    assert (call.status, call.retried) == ("abstained", True)
    assert call.error is not None and "no JSON object" in call.error
    assert call.reply is not None and "--- retry ---" in call.reply
    assert scores == []


# --- scoring ------------------------------------------------------------------------------


def add_bid(ctx: AuctionContext, job: str, agent: str, tokens: int, entropy: float | None) -> int:
    with session_scope(ctx.db_url) as s:
        bid = Bid(
            job_id=job,
            agent=agent,
            round="first",
            status="ok",
            plan=f"plan of {agent}",
            tokens_out=tokens,
            entropy=entropy,
        )
        s.add(bid)
        s.flush()
        assert bid.id is not None
        return bid.id


def add_scores(ctx: AuctionContext, job: str, scores: dict[str, dict[int, int]]) -> None:
    """scores: juror -> {bid id: score}."""
    with session_scope(ctx.db_url) as s:
        for juror, by_bid in scores.items():
            call = JuryCall(job_id=job, juror=juror, round="first", target="all", status="ok")
            s.add(call)
            s.flush()
            assert call.id is not None
            for bid_id, score in by_bid.items():
                s.add(
                    JuryScore(
                        jury_call_id=call.id, job_id=job, bid_id=bid_id, juror=juror, score=score
                    )
                )


def hand_set_auction(ctx: AuctionContext, job: str) -> dict[str, int]:
    small = add_bid(ctx, job, "small", 100, 0.5)
    medium = add_bid(ctx, job, "medium", 100, 0.5)
    large = add_bid(ctx, job, "large", 100, 0.2)
    add_scores(
        ctx,
        job,
        {
            "small": {small: 4, medium: 5, large: 3},
            "medium": {small: 1, medium: 5, large: 3},
            "large": {small: 1, medium: 5, large: 3},
        },
    )
    return {"small": small, "medium": medium, "large": large}


def test_score_first_round_hand_set_bids_with_empty_memory(
    ctx: AuctionContext, llm: CountingLLM, embed: FakeEmbed
) -> None:
    # Default weights: w_c = 0.01, w_h = 1, every juror 1/3 (jury term = mean score).
    # small : C = 0.01·0.03·100 = 0.03; V = 0.5 + (4+1+1)/3 = 2.5; score = −2.47
    # medium: C = 0.01·0.12·100 = 0.12; V = 0.5 + 5       = 5.5; score = −5.38
    # large : C = 0.01·0.36·100 = 0.36; V = 0.2 + 3       = 3.2; score = −2.84
    # Provisional winner medium; small is cheaper and eligible, but the memory is empty.
    job = new_job(ctx)
    hand_set_auction(ctx, job)
    outcome = awarding.score_first_round(ctx, job)
    assert outcome.provisional_agent == "medium"
    assert outcome.refiners == {}
    bids = bids_of(ctx, job)
    expected = {
        "small": (0.03, 2.5, -2.47),
        "medium": (0.12, 5.5, -5.38),
        "large": (0.36, 3.2, -2.84),
    }
    for agent, (c, v, score) in expected.items():
        b = bids[agent]
        assert [b.cost_term, b.value, b.score] == pytest.approx([c, v, score]), agent
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
    assert stored is not None
    assert stored.provisional_winner == "medium"
    assert stored.notes == []
    assert embed.calls == 0  # nothing to retrieve, no embedding needed
    assert sum(llm.calls.values()) == 0


def memory_record(
    ctx: AuctionContext,
    job_id: str,
    award_round: str,
    bids: list[dict[str, str]],
    verdict: str = "passed",
) -> int:
    """A past job and its memory record, awarded to its first bid's agent."""
    with session_scope(ctx.db_url) as s:
        s.add(Job(id=job_id, kind="coding", prompt="Add two numbers.", spec={}, pool_path=""))
        record = MemoryRecord(
            job_id=job_id,
            kind="coding",
            task_text="Add two numbers.",
            embedding=[1.0, 0.0, 0.0],
            bids=bids,
            award_agent=bids[0]["agent"],
            award_round=award_round,
            provisional_agent=bids[0]["agent"],
            verdict=verdict,
            total_tokens=0,
            total_cost_usd=0.0,
        )
        s.add(record)
        s.flush()
        assert record.id is not None
        return record.id


AUCTION_BIDS = [
    {"agent": "large", "round": "first", "plan": "p2", "status": "ok", "verified_label": "win"},
    {"agent": "small", "round": "first", "plan": "p1", "status": "ok", "verified_label": "lose"},
]


def test_score_first_round_sends_cheaper_agents_to_refine_from_memory(
    ctx: AuctionContext, embed: FakeEmbed
) -> None:
    # A past coding job where small lost to large: small has a pair, so it refines.
    bids = [
        {"agent": "large", "plan": "p2", "status": "ok", "auction_label": "win"},
        {"agent": "small", "plan": "p1", "status": "ok", "auction_label": "lose"},
    ]
    record_id = memory_record(ctx, "past-1", "first", bids, verdict="unknown")
    job = new_job(ctx)
    hand_set_auction(ctx, job)
    outcome = awarding.score_first_round(ctx, job)
    assert outcome.provisional_agent == "medium"
    assert outcome.refiners == {"small": [record_id]}
    assert embed.calls == 1


# --- status -------------------------------------------------------------------------------


def test_set_status_moves_forward_only_and_stops_at_terminal(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    assert jobs.set_status(ctx, job, "bidding") is True
    assert jobs.set_status(ctx, job, "judging") is True
    assert jobs.set_status(ctx, job, "judging") is False  # repeat: no-op
    assert jobs.set_status(ctx, job, "bidding") is False  # backwards
    assert jobs.set_status(ctx, job, "queued") is False
    assert jobs.set_status(ctx, job, "executing") is True  # skipping refining is fine
    assert jobs.set_status(ctx, job, "done", "verdict passed") is True
    for later in ("failed", "cancelled", "updating", "done"):
        assert jobs.set_status(ctx, job, later) is False
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
        events = s.exec(
            select(StatusEvent).where(StatusEvent.job_id == job).order_by(col(StatusEvent.id))
        ).all()
    assert stored is not None
    assert (stored.status, stored.status_reason) == ("done", "verdict passed")
    assert [e.status for e in events] == ["queued", "bidding", "judging", "executing", "done"]


def test_fail_job_from_any_non_terminal_status(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    jobs.set_status(ctx, job, "judging")
    jobs.fail_job(ctx, job, "every bid failed")
    jobs.fail_job(ctx, job, "again")  # idempotent: the first reason stays
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
        events = s.exec(select(StatusEvent).where(StatusEvent.status == "failed")).all()
    assert stored is not None
    assert (stored.status, stored.status_reason) == ("failed", "every bid failed")
    assert len(events) == 1


# --- entropy missing ----------------------------------------------------------------------


def run_first_round(ctx: AuctionContext, job: str) -> awarding.FirstRoundOutcome:
    collect_bids(ctx, job)
    for juror in AGENTS:
        judging.run_jury(ctx, job, juror, "first", "all")
    return awarding.score_first_round(ctx, job)


def test_missing_entropy_drops_the_term_and_notes_it(ctx: AuctionContext, llm: CountingLLM) -> None:
    llm.strip_logprobs_for = frozenset({"large"})
    job = new_job(ctx)
    outcome = run_first_round(ctx, job)
    bids = bids_of(ctx, job)
    assert bids["large"].entropy is None
    assert bids["small"].entropy is not None and bids["small"].entropy > 0
    # Without the entropy term V is the jury mean = the scripted quality (1, 2, 3), and
    # C = 0.01 · price · 28: small 0.0084, medium 0.0336, large 0.1008.
    # Scores: small 0.0084 − 1 = −0.9916; medium 0.0336 − 2 = −1.9664; large 0.1008 − 3 = −2.8992
    expected = {"small": -0.9916, "medium": -1.9664, "large": -2.8992}
    for agent, score in expected.items():
        b = bids[agent]
        assert b.cost_term == pytest.approx(0.01 * PRICES[agent] * PLAN_TOKENS)
        assert b.value == pytest.approx(AGENTS.index(agent) + 1)
        assert b.score == pytest.approx(score), agent
    assert outcome.provisional_agent == "large"
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
    assert stored is not None
    assert stored.notes == ["entropy term dropped: a bid came without log-probabilities"]


def test_entropy_is_used_when_every_bid_has_it(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    run_first_round(ctx, job)
    bids = bids_of(ctx, job)
    for agent, b in bids.items():
        assert b.entropy is not None
        # V = 1 · H + quality
        assert b.value == pytest.approx(b.entropy + AGENTS.index(agent) + 1)
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
    assert stored is not None
    assert stored.notes == []


# --- direct jobs ----------------------------------------------------------------------------


def test_assign_direct_stores_a_direct_bid_award_and_note_once(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    job = new_job(ctx)
    award = awarding.assign_direct(ctx, job, "small")
    again = awarding.assign_direct(ctx, job, "small")  # a redelivered start task
    assert again.id == award.id
    with session_scope(ctx.db_url) as s:
        bids = s.exec(select(Bid)).all()
        awards = s.exec(select(Award)).all()
        stored = s.get(Job, job)
    assert len(bids) == 1 and len(awards) == 1
    bid = bids[0]
    assert (bid.agent, bid.round, bid.status, bid.plan) == (
        "small",
        "direct",
        "ok",
        awarding.DIRECT_PLAN,
    )
    assert (bid.tokens_in, bid.tokens_out, bid.cost_usd, bid.entropy) == (0, 0, 0.0, None)
    assert (award.bid_id, award.agent, award.round, award.score) == (bid.id, "small", "direct", 0)
    assert award.provisional_agent == "small"
    assert stored is not None
    assert stored.notes == ["direct: assigned to small, no auction"]
    assert sum(llm.calls.values()) == 0  # no model wrote the plan


def test_assign_direct_to_an_unknown_agent_writes_nothing(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    with pytest.raises(UnknownAgentError, match=r"unknown agent 'nobody'.*small, medium, large"):
        awarding.assign_direct(ctx, job, "nobody")
    with session_scope(ctx.db_url) as s:
        assert s.exec(select(Bid)).all() == []
        assert s.exec(select(Award)).all() == []
        stored = s.get(Job, job)
    assert stored is not None and stored.notes == []


def test_direct_memory_record_is_unlabelled_and_yields_no_pair(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    awarding.assign_direct(ctx, job, "large")
    attempts.record_failed_execution(ctx, job, "model unreachable")
    record_id = memory_update.update_memory(ctx, job)
    with session_scope(ctx.db_url) as s:
        record = s.get(MemoryRecord, record_id)
    assert record is not None and record.award_round == "direct"
    assert [(b["round"], b["auction_label"], b["verified_label"]) for b in record.bids] == [
        ("direct", None, None)
    ]
    entry = MemoryEntry(record_id, record.embedding, record.bids, "passed")
    for agent in AGENTS:
        for mode in ("auction", "verified"):
            assert build_pairs(agent, [entry], mode, 4) == []


def test_direct_records_take_no_retrieval_slot(ctx: AuctionContext) -> None:
    # memory_k = 1 and equal embeddings: retrieval takes the older record first. Without the
    # filter the (older) direct record would fill the slot and small would have no pair.
    ctx.settings = ctx.settings.model_copy(update={"memory_k": 1})
    direct = [{"agent": "small", "round": "direct", "plan": awarding.DIRECT_PLAN, "status": "ok"}]
    memory_record(ctx, "past-direct", "direct", direct)
    auction_id = memory_record(ctx, "past-auction", "first", AUCTION_BIDS)
    job = new_job(ctx)
    hand_set_auction(ctx, job)
    outcome = awarding.score_first_round(ctx, job)
    assert outcome.refiners == {"small": [auction_id]}


def test_refinement_off_sends_nobody_to_refine_despite_memory_pairs(
    ctx: AuctionContext, embed: FakeEmbed
) -> None:
    memory_record(ctx, "past-1", "first", AUCTION_BIDS)
    job = new_job(ctx)
    hand_set_auction(ctx, job)
    ctx.settings = ctx.settings.model_copy(update={"refine": False})
    outcome = awarding.score_first_round(ctx, job)
    assert (outcome.provisional_agent, outcome.refiners) == ("medium", {})
    assert embed.calls == 0  # no retrieval at all
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
    assert stored is not None and stored.notes == ["refinement off (SALE_REFINE=false)"]


def test_refine_setting_reads_sale_refine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SALE_REFINE", raising=False)
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    assert Settings().refine is False  # the default measured by the lever rows
    monkeypatch.setenv("SALE_REFINE", "true")
    assert Settings().refine is True


# --- the job view: usage per stage and wall times -------------------------------------------


def test_job_view_splits_usage_and_times_stages_from_status_events(ctx: AuctionContext) -> None:
    job = new_job(ctx)
    t0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    with session_scope(ctx.db_url) as s:
        queued = s.exec(select(StatusEvent).where(StatusEvent.job_id == job)).one()
        queued.at = t0
        s.add(queued)
        first = Bid(job_id=job, agent="small", round="first", status="ok", plan="p")
        first.tokens_in, first.tokens_out, first.cost_usd = 10, 20, 0.001
        refined = Bid(job_id=job, agent="small", round="refined", status="ok", plan="q")
        refined.tokens_in, refined.tokens_out, refined.cost_usd = 5, 7, 0.0005
        s.add(first)
        s.add(refined)
        s.add(
            JuryCall(
                job_id=job,
                juror="large",
                round="first",
                target="all",
                status="ok",
                tokens_in=100,
                tokens_out=3,
                cost_usd=0.002,
            )
        )
        s.flush()
        assert refined.id is not None
        s.add(
            Execution(
                job_id=job,
                agent="small",
                bid_id=refined.id,
                status="done",
                tokens_in=400,
                tokens_out=60,
                cost_usd=0.01,
            )
        )
        # The job's usage is what its ledger holds: one row per paid call.
        for stage, agent, tokens_in, tokens_out, cost in (
            ("bid", "small", 10, 20, 0.001),
            ("refine", "small", 5, 7, 0.0005),
            ("jury", "large", 100, 3, 0.002),
            ("execute", "small", 150, 20, 0.004),
            ("execute", "small", 250, 40, 0.006),
        ):
            s.add(
                ModelCall(
                    call_id=f"{stage}-{tokens_in}",
                    job_id=job,
                    stage=stage,
                    agent=agent,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost,
                )
            )
    view = job_view(ctx, job)
    assert (view["auction_seconds"], view["execution_seconds"]) == (None, None)
    with session_scope(ctx.db_url) as s:
        s.add(StatusEvent(job_id=job, status="bidding", at=t0 + timedelta(seconds=1)))
        s.add(StatusEvent(job_id=job, status="executing", at=t0 + timedelta(seconds=5.5)))
        s.add(StatusEvent(job_id=job, status="updating", at=t0 + timedelta(seconds=12)))
    view = job_view(ctx, job)
    assert view["auction_seconds"] == pytest.approx(5.5)
    assert view["execution_seconds"] == pytest.approx(6.5)
    assert view["usage"] == {
        "bid": {"tokens": 30, "cost_usd": pytest.approx(0.001)},
        "jury": {"tokens": 103, "cost_usd": pytest.approx(0.002)},
        "refine": {"tokens": 12, "cost_usd": pytest.approx(0.0005)},
        "execute": {"tokens": 460, "cost_usd": pytest.approx(0.01)},
    }
    assert (view["tokens"], view["auction_tokens"], view["execution_tokens"]) == (605, 145, 460)
    assert view["cost_usd"] == pytest.approx(0.0135)
    assert view["auction_cost_usd"] == pytest.approx(0.0035)
    assert view["execution_cost_usd"] == pytest.approx(0.01)
    assert view["mode"] == "auction"
