"""The shared rate limiter on a real redis-server: the sliding window of requests and tokens,
the settling of a reservation, a provider's pause, and the gate that turns a pause into a wait
(or past its bound, a retry) and a provider's 429 into a pause for every worker. No sleeps:
the windows are far longer than the test, so every answer is a refusal with its wait."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from sale.broker.limits import MARGIN_S, WINDOW_S, RateLimiter
from sale.broker.pool import load_pool, parse_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Job, ModelCall
from sale.workers import jobs
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext
from sale.workers.gate import model_caller
from sale.workers.llm.provider import call_model
from sale.workers.recovery import TRANSPORT_ERRORS
from sqlmodel import select

from sale.errors import PoolError, RateLimitedError, TransientModelError
from tests.conftest import SCRIPTED_POOL


@pytest.fixture
def limiter(redis_url: str) -> RateLimiter:
    return RateLimiter(redis_url.rsplit("/", 1)[0] + "/5")


def agent_name() -> str:
    return f"a{uuid.uuid4().hex[:8]}"


def test_rpm_grants_r_calls_then_answers_when_the_oldest_leaves(limiter: RateLimiter) -> None:
    name = agent_name()
    grants = [limiter.acquire(name, 3, None, 10) for _ in range(3)]
    assert all(g.granted for g in grants)
    refused = limiter.acquire(name, 3, None, 10)
    assert not refused.granted and refused.reason == "rpm"
    assert 0 < refused.wait_s <= WINDOW_S + MARGIN_S
    assert limiter.in_window(name) == 3  # the refusal took no slot
    assert limiter.acquire(agent_name(), 3, None, 10).granted  # another agent has its own


def test_tpm_counts_reservations_and_settles_them_to_what_was_used(limiter: RateLimiter) -> None:
    name = agent_name()
    first = limiter.acquire(name, None, 1000, 800)
    assert first.granted
    blocked = limiter.acquire(name, None, 1000, 300)
    assert not blocked.granted and blocked.reason == "tpm"
    limiter.settle(name, first.member, 200)  # the call used 200 of the 800 it reserved
    assert limiter.acquire(name, None, 1000, 300).granted
    assert limiter.acquire(name, None, 1000, 2000).granted is False
    # A single call larger than the limit still runs once the window is empty.
    assert limiter.acquire(agent_name(), None, 1000, 2000).granted


def test_a_pause_refuses_every_call_until_it_lapses_and_is_only_extended(
    limiter: RateLimiter,
) -> None:
    name = agent_name()
    limiter.pause(name, 30)
    limiter.pause(name, 5)  # a shorter Retry-After keeps the longer pause
    refused = limiter.acquire(name, None, None, 10)
    assert not refused.granted and refused.reason == "paused"
    assert 20 < refused.wait_s <= 30 and 20 < limiter.paused_for(name) <= 30


@pytest.fixture
def ctx(tmp_path: Path, redis_url: str) -> AuctionContext:
    url = f"sqlite:///{tmp_path}/t.db"
    init_db(url)
    pool = tmp_path / "pool.toml"
    name = agent_name()
    pool.write_text(
        f'[[agents]]\nname = "{name}"\nmodel = "scripted/small"\ninput_price = 0.03\n'
        "output_price = 0.03\nrpm = 1\n"
    )
    settings = Settings(
        database_url=url,
        pool_file=pool,
        state_dir=tmp_path,
        broker_url=redis_url.rsplit("/", 1)[0] + "/5",
        rate_limit_max_wait_s=0,
    )
    return AuctionContext(settings=settings, pool=load_pool(pool), weights=load_weights(None),
                          llm=call_model, embed=lambda t: [[1.0] for _ in t])  # fmt: skip


def notes(ctx: AuctionContext, job_id: str) -> list[str]:
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        assert job is not None
        return list(job.notes)


def test_past_its_bound_the_gate_refuses_with_the_wait_and_notes_it(ctx: AuctionContext) -> None:
    job_id = jobs.create_job(ctx, TaskSpec(kind="coding", prompt="Add."), "rl")
    agent = ctx.pool.agents[0]
    gate = model_caller(ctx, job_id)
    messages = [{"role": "user", "content": "Add."}]
    assert gate(agent, messages, stage="bid", max_tokens=16).text  # the minute's one call
    with pytest.raises(RateLimitedError) as refused:
        gate(agent, messages, stage="jury", max_tokens=16)
    assert 0 < (refused.value.retry_after or 0) <= WINDOW_S + MARGIN_S
    (note,) = notes(ctx, job_id)
    assert note.startswith(f"rate limit (rpm 1): a jury call of {agent.name} would wait past 0 s")


def test_a_provider_429_with_retry_after_pauses_the_agent_for_every_worker(
    ctx: AuctionContext,
) -> None:
    job_id = jobs.create_job(ctx, TaskSpec(kind="coding", prompt="Add."), "p429")
    agent = ctx.pool.agents[0]

    def too_many(agent: Any, messages: Any, **kw: Any) -> Any:
        raise TransientModelError(agent.name, agent.model, "RateLimitError: 429", retry_after=40)

    gate = model_caller(ctx, job_id)
    gate.inner = too_many
    with pytest.raises(TransientModelError, match="429"):
        gate(agent, [], stage="bid", max_tokens=16)
    limiter = RateLimiter(ctx.settings.broker_url or "")
    assert 35 < limiter.paused_for(agent.name) <= 40
    other_worker = model_caller(ctx, job_id)  # any worker: the pause is in Redis
    with pytest.raises(RateLimitedError, match="paused"):
        other_worker(agent, [], stage="bid", max_tokens=16)
    assert f"provider rate limit (429) on {agent.name}: every worker pauses it for 40.0 s" in (
        notes(ctx, job_id)
    )


def test_pool_limits_and_the_daily_budget_are_validated() -> None:
    base = '[[agents]]\nname = "a"\nmodel = "m"\ninput_price = 1\noutput_price = 1\n'
    pool = parse_pool(base + "rpm = 6\ntpm = 1000\n")
    assert (pool.agents[0].rpm, pool.agents[0].tpm, pool.daily_budget_usd) == (6, 1000, None)
    assert parse_pool("daily_budget_usd = 2.5\n" + base).daily_budget_usd == 2.5
    for text, problem in (
        (base + "rpm = 0\n", "field 'rpm': must be >= 1"),
        (base + 'tpm = "many"\n', "field 'tpm': wrong type str, expected int"),
        (base + "rpm = 1.5\n", "field 'rpm': wrong type float, expected int"),
        ("daily_budget_usd = 0\n" + base, "daily_budget_usd must be a number > 0"),
        ('daily_budget_usd = "5"\n' + base, "daily_budget_usd must be a number > 0"),
    ):
        with pytest.raises(PoolError, match=problem):
            parse_pool(text)
    assert load_pool(SCRIPTED_POOL).daily_budget_usd is None


def test_with_redis_out_of_reach_a_call_made_is_kept_and_counted(
    tmp_path: Path, ctx: AuctionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Redis restart between a call's reservation and its settling must not throw the paid
    call away (the stage would run again and pay again, the first call on no record)."""
    import redis

    def restarting(*_: Any) -> None:
        raise redis.ConnectionError("Connection refused")

    job_id = jobs.create_job(ctx, TaskSpec(kind="coding", prompt="Add."), "restart")
    gate = model_caller(ctx, job_id)
    monkeypatch.setattr(RateLimiter, "settle", restarting)
    made = gate(
        ctx.pool.agents[0], [{"role": "user", "content": "Add."}], stage="bid", max_tokens=16
    )
    assert made.text and made.cost_usd > 0
    assert recorded(ctx, job_id) == pytest.approx(made.cost_usd)
    monkeypatch.undo()

    pool = tmp_path / "free.toml"
    pool.write_text(
        '[[agents]]\nname = "free"\nmodel = "scripted/small"\ninput_price = 0.03\n'
        "output_price = 0.03\n"
    )
    gone = socket.socket()
    gone.bind(("127.0.0.1", 0))
    port = gone.getsockname()[1]
    gone.close()  # nothing listens there
    down = AuctionContext(
        settings=ctx.settings.model_copy(update={"broker_url": f"redis://127.0.0.1:{port}/0"}),
        pool=load_pool(pool), weights=ctx.weights, llm=call_model, embed=ctx.embed,
    )  # fmt: skip
    job_id = jobs.create_job(down, TaskSpec(kind="coding", prompt="Add."), "down")
    gate = model_caller(down, job_id)
    messages = [{"role": "user", "content": "Add."}]
    result = gate(down.pool.agents[0], messages, stage="bid", max_tokens=16)
    assert result.text and result.cost_usd > 0
    assert recorded(down, job_id) == pytest.approx(result.cost_usd)
    limited = load_pool(ctx.settings.pool_file).agents[0]  # rpm = 1: no slot, no call
    with pytest.raises(TRANSPORT_ERRORS):
        gate(limited, messages, stage="bid", max_tokens=16)


def recorded(ctx: AuctionContext, job_id: str) -> float:
    """The job's cost as its ledger holds it."""
    with session_scope(ctx.db_url) as s:
        return jobs.job_totals(s, job_id)[1]


@pytest.fixture
def free_ctx(tmp_path: Path, ctx: AuctionContext) -> AuctionContext:
    """The ctx fixture's Redis and database with an agent without limits, short backoffs and a
    10 s bound on waits."""
    pool = tmp_path / "free.toml"
    pool.write_text(
        f'[[agents]]\nname = "{agent_name()}"\nmodel = "scripted/small"\ninput_price = 0.03\n'
        "output_price = 0.03\n"
    )
    update = {"retry_backoff_s": 0.01, "retry_backoff_max_s": 0.02, "rate_limit_max_wait_s": 10}
    return AuctionContext(
        settings=ctx.settings.model_copy(update=update), pool=load_pool(pool),
        weights=ctx.weights, llm=call_model, embed=ctx.embed,
    )  # fmt: skip


def flaky(failures: list[TransientModelError]) -> Any:
    """A model caller that raises the given errors, one per call, then answers."""
    calls: list[int] = []

    def call(agent: Any, messages: Any, **kw: Any) -> Any:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return call_model(agent, messages, **kw)

    call.calls = calls  # type: ignore[attr-defined]
    return call


def test_a_transient_error_is_tried_again_in_the_worker_and_paid_once(
    free_ctx: AuctionContext,
) -> None:
    agent = free_ctx.pool.agents[0]
    job_id = jobs.create_job(free_ctx, TaskSpec(kind="coding", prompt="Add."), "retry")
    gate = model_caller(free_ctx, job_id)
    error = TransientModelError(agent.name, agent.model, "InternalServerError: 500")
    gate.inner = flaky([error, error])
    messages = [{"role": "user", "content": "Add."}]
    result = gate(agent, messages, stage="execute", max_tokens=16)
    assert len(gate.inner.calls) == 3  # two failed tries (unbilled), then the answer
    assert result.cost_usd > 0 and recorded(free_ctx, job_id) == pytest.approx(result.cost_usd)

    gate.inner = flaky([error] * 3)  # SALE_CALL_RETRIES=2: the third failure goes to the task
    with pytest.raises(TransientModelError, match="500"):
        gate(agent, messages, stage="execute", max_tokens=16)
    assert len(gate.inner.calls) == 3
    assert recorded(free_ctx, job_id) == pytest.approx(result.cost_usd)


def test_a_429_within_the_bound_waits_out_the_pause_then_calls_again(
    free_ctx: AuctionContext,
) -> None:
    agent = free_ctx.pool.agents[0]
    job_id = jobs.create_job(free_ctx, TaskSpec(kind="coding", prompt="Add."), "429")
    gate = model_caller(free_ctx, job_id)
    gate.inner = flaky([TransientModelError(agent.name, agent.model, "429", retry_after=1)])
    result = gate(agent, [{"role": "user", "content": "Add."}], stage="bid", max_tokens=16)
    assert result.text and len(gate.inner.calls) == 2
    found = notes(free_ctx, job_id)
    assert any(n.startswith(f"provider rate limit (429) on {agent.name}") for n in found)
    assert any("waited" in n for n in found)  # the second try waited out the shared pause


def test_a_call_the_ledger_cannot_take_yet_is_counted_then_written_before_the_next(
    free_ctx: AuctionContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database out of reach as a call returns: the paid call is kept, counted in the
    budget, and written to the ledger once (its own id) before the next call."""
    from sale.workers import gate as gate_module
    from sqlalchemy.exc import OperationalError

    agent = free_ctx.pool.agents[0]
    job_id = jobs.create_job(free_ctx, TaskSpec(kind="coding", prompt="Add."), "db-down")
    gate = model_caller(free_ctx, job_id)
    messages = [{"role": "user", "content": "Add."}]
    stored = jobs.insert_once

    def unreachable(*_: Any) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(gate_module, "insert_once", unreachable)
    first = gate(agent, messages, stage="bid", max_tokens=16)
    assert [c.cost_usd for c in gate.pending] == [first.cost_usd] and first.cost_usd > 0
    assert recorded(free_ctx, job_id) == 0.0
    monkeypatch.setattr(gate_module, "insert_once", stored)
    second = gate(agent, messages, stage="bid", max_tokens=16)
    assert gate.pending == []
    assert recorded(free_ctx, job_id) == pytest.approx(first.cost_usd + second.cost_usd)
    with session_scope(free_ctx.db_url) as s:
        calls = s.exec(select(ModelCall).where(ModelCall.job_id == job_id)).all()
    assert len(calls) == 2 and len({c.call_id for c in calls}) == 2
