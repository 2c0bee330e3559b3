"""The auction memory on a real PostgreSQL server (the production database), not only SQLite.

The Alembic migration runs (twice) against a throwaway server from ``postgres_url``; then whole
jobs go through the task bodies (the stage modules of workers/), called directly as in
tests/workers/test_service.py, with the scripted test-double pool behind the real litellm call
site and a fake fixed-vector embedder. What is specific to PostgreSQL here: JSON columns come back
as the lists and nested dicts that went in, and the unique constraints settle two deliveries of
one task that race each other (the IntegrityError path), which SQLite's single writer hides.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sale.broker.pool import Agent, load_pool
from sale.broker.settings import Settings
from sale.models.db import get_engine, init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import (
    Award,
    Bid,
    Execution,
    ExecutionStep,
    Job,
    JuryCall,
    JuryScore,
    MemoryRecord,
    ModelCall,
    StatusEvent,
)
from sale.models.types import load_json
from sale.workers import jobs
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext
from sale.workers.llm.provider import call_model
from sale.workers.llm.types import LLMResult
from sale.workers.stages import awarding, bidding, judging
from sale.workers.stages import executing as attempts
from sale.workers.stages import updating as memory_update
from sqlalchemy import inspect, text
from sqlmodel import SQLModel, col, func, select

from tests.conftest import AUCTION_HISTORY, SCRIPTED_POOL

AGENTS = ("small", "medium", "large")
TABLES: tuple[type[SQLModel], ...] = (
    Job,
    StatusEvent,
    Bid,
    JuryCall,
    JuryScore,
    Award,
    Execution,
    ExecutionStep,
    MemoryRecord,
    ModelCall,
)
TABLE_NAMES = {str(t.__tablename__) for t in TABLES}
ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
VECTOR = [1.0, 0.0, 0.0]


def fake_embed(texts: list[str]) -> list[list[float]]:
    """Fixed unit vectors: every job is the nearest neighbour of every other."""
    return [list(VECTOR) for _ in texts]


@pytest.fixture
def pg_url(postgres_url: str) -> str:
    """The migrated test database with every auction table emptied."""
    init_db(postgres_url)
    tables = ", ".join(f'"{name}"' for name in sorted(TABLE_NAMES))
    with get_engine(postgres_url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    return postgres_url


def make_ctx(
    url: str, state_dir: Path, llm: Callable[..., LLMResult] = call_model
) -> AuctionContext:
    # refinement on (off by default): these tests read the memory back
    settings = Settings(database_url=url, pool_file=SCRIPTED_POOL, state_dir=state_dir, refine=True)
    return AuctionContext(
        settings=settings,
        pool=load_pool(SCRIPTED_POOL),
        weights=load_weights(None),
        llm=llm,
        embed=fake_embed,
    )


@pytest.fixture
def ctx(pg_url: str, tmp_path: Path) -> AuctionContext:
    return make_ctx(pg_url, tmp_path)


def coding_spec(
    directives: str = "", prompt: str = "Write add(a, b) returning the sum."
) -> TaskSpec:
    return TaskSpec(
        kind="coding",
        prompt=f"{prompt}\n[[scripted {directives}]]\n[[solution]]\n{ADD}[[/solution]]\n",
        tests=ADD_TESTS,
        entry_point="add",
    )


def row_counts(url: str) -> dict[str, int]:
    with session_scope(url) as s:
        return {
            str(t.__tablename__): s.exec(select(func.count()).select_from(t)).one() for t in TABLES
        }


def run_job(ctx: AuctionContext, job_id: str, spec: TaskSpec) -> dict[str, Any]:
    """Every stage of one job in pipeline order, as the Celery tasks call them; returns ids."""
    jobs.create_job(ctx, spec, job_id)
    jobs.set_status(ctx, job_id, "bidding")
    bids = {a: bidding.run_bid(ctx, job_id, a, "first", None) for a in AGENTS}
    jobs.set_status(ctx, job_id, "judging")
    calls = {j: judging.run_jury(ctx, job_id, j, "first", "all") for j in AGENTS}
    outcome = awarding.score_first_round(ctx, job_id)
    refined = {}
    if outcome.refiners:
        jobs.set_status(ctx, job_id, "refining")
        refined = {
            a: bidding.run_bid(ctx, job_id, a, "refined", ids)
            for a, ids in outcome.refiners.items()
        }
        for juror, target in judging.jury_targets(ctx, job_id, "refined"):
            judging.run_jury(ctx, job_id, juror, "refined", target)
    award = awarding.decide_award(ctx, job_id)
    jobs.set_status(ctx, job_id, "executing")
    execution = attempts.run_execution(ctx, job_id)
    jobs.set_status(ctx, job_id, "updating")
    record = memory_update.update_memory(ctx, job_id)
    return {
        "bids": bids,
        "calls": calls,
        "outcome": outcome,
        "refined": refined,
        "award": award,
        "execution": execution,
        "record": record,
    }


# --- schema -------------------------------------------------------------------------------


def test_init_db_twice_builds_the_schema_on_postgres(postgres_url: str) -> None:
    engine = get_engine(postgres_url)
    with engine.begin() as conn:  # start from an empty database, whatever ran before
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    init_db(postgres_url)
    init_db(postgres_url)  # idempotent: already at head, nothing to do
    schema = inspect(engine)
    assert set(schema.get_table_names()) == TABLE_NAMES | {"alembic_version"}
    with engine.connect() as conn:
        versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert versions == ["0009"]
    # The natural keys that make redelivered tasks idempotent exist on the server.
    unique = {
        table: {tuple(u["column_names"]) for u in schema.get_unique_constraints(table)}
        for table in TABLE_NAMES
    }
    assert ("job_id", "agent", "round") in unique["bid"]
    assert ("job_id", "juror", "round", "target") in unique["jurycall"]
    assert ("jury_call_id", "bid_id") in unique["juryscore"]
    assert ("job_id", "status") in unique["statusevent"]
    assert ("execution_id", "index") in unique["executionstep"]
    assert ("call_id",) in unique["modelcall"]  # one ledger row per paid call
    for table in ("award", "memoryrecord"):
        assert ("job_id",) in unique[table], table
    # One execution per (job, attempt): self-check fallbacks add attempts (migration 0002).
    assert unique["execution"] == {("job_id", "attempt")}
    columns = {
        c["name"]: str(c["type"]) for c in schema.get_columns("memoryrecord") if c["name"] != "id"
    }
    # Embeddings as packed bytes (int8 since migration 0009), task text, bids and attempts
    # deflated (migration 0007).
    assert {columns[c] for c in ("embedding", "task_text", "bids", "attempts")} == {"BYTEA"}


# --- a whole job --------------------------------------------------------------------------


def test_a_whole_job_through_the_task_bodies_on_postgres(ctx: AuctionContext) -> None:
    job = "pg-job-1"
    ids = run_job(ctx, job, coding_spec("large.tools=2"))
    # Scripted qualities small 1 < medium 2 < large 3: large wins, nobody has memory to refine.
    assert ids["outcome"].provisional_agent == "large" and ids["refined"] == {}
    assert (ids["award"].agent, ids["award"].round) == ("large", "first")

    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
        events = s.exec(
            select(StatusEvent).where(StatusEvent.job_id == job).order_by(col(StatusEvent.id))
        ).all()
        bids = {b.id: b for b in s.exec(select(Bid).where(Bid.job_id == job)) if b.id}
        calls = s.exec(select(JuryCall).where(JuryCall.job_id == job)).all()
        scores = s.exec(select(JuryScore).where(JuryScore.job_id == job)).all()
        execution = s.get(Execution, ids["execution"])
        steps = s.exec(
            select(ExecutionStep)
            .where(ExecutionStep.execution_id == ids["execution"])
            .order_by(col(ExecutionStep.index))
        ).all()
        record = s.get(MemoryRecord, ids["record"])
    assert stored is not None and execution is not None and record is not None
    assert (stored.status, stored.verdict, stored.embedding) == ("done", "passed", VECTOR)
    assert [e.status for e in events] == AUCTION_HISTORY
    assert sorted(b.agent for b in bids.values()) == sorted(AGENTS)
    assert all(b.status == "ok" and b.memory_pairs == [] for b in bids.values())
    assert len(calls) == 3 and all(c.status == "ok" for c in calls)
    for call in calls:  # JSON list of dicts, in presentation order
        assert [o["label"] for o in call.order] == ["A", "B", "C"]
        assert {o["bid_id"] for o in call.order} == set(bids)
        assert all(bids[o["bid_id"]].agent == o["agent"] for o in call.order)
    assert len(scores) == 9
    assert (execution.agent, execution.status, execution.verdict) == ("large", "done", "passed")
    assert [st.index for st in steps] == list(range(len(steps)))
    tool_steps = [st for st in steps if st.tool_name is not None]
    assert [st.tool_name for st in tool_steps] == ["run_python", "run_tests", "final_answer"]
    assert all(isinstance(st.tool_args, dict) for st in tool_steps)  # a JSON object
    assert tool_steps[-1].tool_args == {"answer": execution.answer}

    # The memory record, read back from the server.
    assert (record.job_id, record.kind, record.verdict) == (job, "coding", "passed")
    assert (record.award_agent, record.award_round, record.provisional_agent) == (
        "large",
        "first",
        "large",
    )
    assert record.embedding == VECTOR
    jury = {b: {sc.juror: sc.score for sc in scores if sc.bid_id == b} for b in bids}
    assert [item["bid_id"] for item in record.bids] == sorted(bids)
    for item in record.bids:
        bid = bids[item["bid_id"]]
        assert item["jury"] == jury[item["bid_id"]] and set(item["jury"]) == set(AGENTS)
        assert (item["agent"], item["round"], item["status"]) == (bid.agent, "first", "ok")
        assert (item["plan"], item["tokens"]) == (bid.plan, bid.tokens_out)
        assert [item["entropy"], item["cost"], item["value"], item["score"]] == pytest.approx(
            [bid.entropy, bid.cost_term, bid.value, bid.score]
        )
        winner = bid.agent == "large"
        assert item["auction_label"] == item["verified_label"] == ("win" if winner else "lose")
    expected_tokens = (
        sum(b.tokens_in + b.tokens_out for b in bids.values())
        + sum(c.tokens_in + c.tokens_out for c in calls)
        + execution.tokens_in
        + execution.tokens_out
    )
    assert record.total_tokens == expected_tokens > 0
    assert record.total_cost_usd > execution.cost_usd > 0
    # Stored as deflated JSON that decodes to the lists and nested dicts that went in; the
    # embedding as a float32 scale and one int8 per dimension.
    with get_engine(ctx.db_url).connect() as conn:
        size, bids = conn.execute(
            text("SELECT octet_length(embedding), bids FROM memoryrecord WHERE id = :id"),
            {"id": ids["record"]},
        ).one()
    assert size == 4 + len(record.embedding)
    assert load_json(bids) == record.bids and isinstance(record.bids[0]["jury"], dict)
    assert len(record.embedding) > 0

    # Redelivered tasks find their rows: same ids, not one row more.
    before = row_counts(ctx.db_url)
    assert before == {
        "job": 1,
        "statusevent": 6,
        "bid": 3,
        "jurycall": 3,
        "juryscore": 9,
        "award": 1,
        "execution": 1,
        "executionstep": len(steps),
        "memoryrecord": 1,
        # The ledger: 3 bids, 3 jury calls and one call per reply of the execution.
        "modelcall": 6 + sum(1 for st in steps if st.role == "assistant"),
    }
    for agent, bid_id in ids["bids"].items():
        assert bidding.run_bid(ctx, job, agent, "first", None) == bid_id
    for juror, call_id in ids["calls"].items():
        assert judging.run_jury(ctx, job, juror, "first", "all") == call_id
    assert awarding.decide_award(ctx, job).id == ids["award"].id
    assert attempts.run_execution(ctx, job) == ids["execution"]
    assert memory_update.update_memory(ctx, job) == ids["record"]
    assert row_counts(ctx.db_url) == before


def test_a_second_job_refines_from_the_first_jobs_memory_on_postgres(
    ctx: AuctionContext,
) -> None:
    seed = run_job(ctx, "pg-seed", coding_spec(prompt="Write add(a, b) that adds two integers."))
    # small and medium are strictly cheaper than the provisional winner (large) and the seed's
    # memory holds a (losing, winning) pair for each: both refine; small's refined plan wins.
    ids = run_job(ctx, "pg-job-2", coding_spec("small.refine=5 medium.refine=1"))
    assert ids["outcome"].provisional_agent == "large"
    assert ids["outcome"].refiners == {"small": [seed["record"]], "medium": [seed["record"]]}
    assert (ids["award"].agent, ids["award"].round) == ("small", "refined")
    with session_scope(ctx.db_url) as s:
        refined = s.exec(select(Bid).where(Bid.job_id == "pg-job-2", Bid.round == "refined")).all()
        record = s.get(MemoryRecord, ids["record"])
    assert {b.agent: b.memory_pairs for b in refined} == {
        "small": [seed["record"]],
        "medium": [seed["record"]],
    }
    assert record is not None and record.award_round == "refined"
    assert [(b["agent"], b["round"]) for b in record.bids] == [
        ("small", "first"),
        ("medium", "first"),
        ("large", "first"),
        ("small", "refined"),
        ("medium", "refined"),
    ]
    assert row_counts(ctx.db_url)["memoryrecord"] == 2


# --- racing deliveries --------------------------------------------------------------------


class RacingLLM:
    """The real call site, but each thread's first call waits until both threads are there.

    Both deliveries have then passed their "is the row already there?" check, so both insert
    and the unique constraint has to pick one: the IntegrityError path, deterministically.
    """

    def __init__(self) -> None:
        self.barrier = threading.Barrier(2, timeout=60)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, agent: Agent, messages: list[dict[str, str]], **kwargs: Any) -> LLMResult:
        with self._lock:
            self.calls[kwargs["stage"]] += 1
        if not getattr(self._local, "waited", False):
            self._local.waited = True
            self.barrier.wait()
        return call_model(agent, messages, **kwargs)


def race(fn: Callable[[], int]) -> list[int]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = [pool.submit(fn) for _ in range(2)]
        return [f.result(timeout=120) for f in futures]


def test_two_racing_deliveries_of_one_bid_leave_one_row(pg_url: str, tmp_path: Path) -> None:
    setup = make_ctx(pg_url, tmp_path)
    jobs.create_job(setup, coding_spec(), "pg-race-bid")
    llm = RacingLLM()
    racing = make_ctx(pg_url, tmp_path, llm)
    ids = race(lambda: bidding.run_bid(racing, "pg-race-bid", "medium", "first", None))
    assert llm.calls == Counter({"bid": 2})  # both got past the existence check
    assert ids[0] == ids[1]
    with session_scope(pg_url) as s:
        rows = s.exec(select(Bid)).all()
    assert [(b.id, b.agent, b.round, b.status) for b in rows] == [(ids[0], "medium", "first", "ok")]


def test_two_racing_deliveries_of_one_jury_call_leave_one_set_of_scores(
    pg_url: str, tmp_path: Path
) -> None:
    setup = make_ctx(pg_url, tmp_path)
    job = jobs.create_job(setup, coding_spec(), "pg-race-jury")
    for agent in AGENTS:
        bidding.run_bid(setup, job, agent, "first", None)
    llm = RacingLLM()
    racing = make_ctx(pg_url, tmp_path, llm)
    ids = race(lambda: judging.run_jury(racing, job, "small", "first", "all"))
    assert llm.calls == Counter({"jury": 2})
    assert ids[0] == ids[1]
    with session_scope(pg_url) as s:
        calls = s.exec(select(JuryCall)).all()
        scores = s.exec(select(JuryScore)).all()
    assert [c.id for c in calls] == [ids[0]]
    assert len(scores) == 3 and {sc.jury_call_id for sc in scores} == {ids[0]}
