"""A job from submit to memory record through real Celery on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from sale.models.db import session_scope
from sale.models.tables import Bid, Execution, ExecutionStep, Job, JuryCall, JuryScore, MemoryRecord
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sale.workers.memory.retrieval import MemoryEntry, build_pairs
from sale.workers.stages.awarding import DIRECT_PLAN
from sale.workers.views import job_view
from sqlmodel import func, select

from sale.errors import UnknownAgentError
from tests.conftest import AUCTION_HISTORY
from tests.integration.conftest import swapped_context, wait

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = (
    "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
)


def coding_spec(
    directives: str = "", prompt: str = "Write add(a, b) returning the sum."
) -> dict[str, Any]:
    return {
        "kind": "coding",
        "prompt": f"{prompt}\n[[scripted {directives}]]\n[[solution]]\n{ADD}[[/solution]]\n",
        "tests": ADD_TESTS,
        "entry_point": "add",
    }


def test_job_runs_from_submit_to_memory_record(stack: AuctionContext, tmp_path: Path) -> None:
    # An empty memory: with earlier jobs on record, refinement may add a round.
    with swapped_context(stack, f"sqlite:///{tmp_path / 'first.db'}") as ctx:
        job_id = submit(coding_spec(), ctx)
        summary = wait(job_id)
        view = job_view(ctx, job_id)
        assert summary["job_id"] == job_id and summary["status"] == "done"
        assert view["status"] == "done"
        assert [h["status"] for h in view["history"]] == AUCTION_HISTORY
        first = [b for b in view["bids"] if b["round"] == "first"]
        assert sorted(b["agent"] for b in first) == ["large", "medium", "small"]
        for bid in first:
            assert bid["entropy"] is not None and 0 < bid["entropy"] < 1
            assert set(bid["jury"]) == {"small", "medium", "large"}
            assert abs(bid["score"] - (bid["cost"] - bid["value"])) < 1e-12
        # Default scripted qualities are small 2 < medium 3 < large 4: the jury picks large.
        assert view["provisional_winner"] == "large"
        assert view["award"]["agent"] == "large" and view["award"]["round"] == "first"
        assert view["execution"]["agent"] == "large"
        assert view["verdict"] == "passed"
        assert view["memory_record_id"] is not None
        assert view["cost_usd"] > view["execution"]["cost_usd"] > 0
        assert len(view["jury_calls"]) == 3 and all(c["status"] == "ok" for c in view["jury_calls"])


def test_refined_bid_outbids_the_provisional_winner(stack: AuctionContext) -> None:
    # A first job puts (small's losing plan, large's winning plan) into memory...
    seed = submit(coding_spec(prompt="Write add(a, b) that adds two integers."), stack)
    assert wait(seed)["status"] == "done"
    # ...so on a similar job small, strictly cheaper than the provisional winner, refines.
    job_id = submit(coding_spec("small.refine=5 medium.refine=1"), stack)
    assert wait(job_id)["status"] == "done"
    view = job_view(stack, job_id)
    refined = {b["agent"]: b for b in view["bids"] if b["round"] == "refined"}
    assert set(refined) == {"small", "medium"}  # large is not cheaper than itself
    assert refined["small"]["memory_pairs_from"], "refinement must cite memory records"
    assert view["provisional_winner"] == "large"
    assert view["award"] == {
        "agent": "small",
        "round": "refined",
        "score": refined["small"]["score"],
    }
    assert view["execution"]["agent"] == "small"
    assert "refining" in [h["status"] for h in view["history"]]


def test_failing_agent_becomes_a_failed_bid_and_the_auction_goes_on(stack: AuctionContext) -> None:
    job_id = submit(coding_spec("medium.fail=bid small.transient=bid:1"), stack)
    assert wait(job_id)["status"] == "done"
    view = job_view(stack, job_id)
    bids = {b["agent"]: b for b in view["bids"] if b["round"] == "first"}
    assert (
        bids["medium"]["status"] == "failed" and "scripted bid failure" in bids["medium"]["error"]
    )
    assert bids["small"]["status"] == "ok"  # one transient error, retried by Celery
    assert view["verdict"] == "passed"


def test_a_model_unreachable_through_every_retry_is_marked_as_such(stack: AuctionContext) -> None:
    from sale.scripts.evals.runner import retries_spent

    from sale.errors import RETRIES_SPENT

    job_id = submit(coding_spec("medium.fail=bid large.transient=bid:99"), stack)
    assert wait(job_id)["status"] == "done"  # the auction goes on without the bid
    view = job_view(stack, job_id)
    bids = {b["agent"]: b for b in view["bids"] if b["round"] == "first"}
    assert bids["large"]["status"] == "failed"
    assert bids["large"]["error"].startswith(RETRIES_SPENT)  # infrastructure, not the model
    assert not bids["medium"]["error"].startswith(RETRIES_SPENT)  # a permanent error
    # `sale eval` stores no result of a job that ran without a model it needed.
    assert (retries_spent(view) or "").startswith(f"bid of large: {RETRIES_SPENT}")


def test_junk_juror_abstains_and_is_reported(stack: AuctionContext) -> None:
    job_id = submit(coding_spec("large.junk=jury"), stack)
    assert wait(job_id)["status"] == "done"
    view = job_view(stack, job_id)
    calls = {c["juror"]: c for c in view["jury_calls"] if c["round"] == "first"}
    assert calls["large"]["status"] == "abstained" and calls["large"]["retried"]
    assert calls["small"]["status"] == "ok"
    for bid in view["bids"]:
        assert "large" not in bid["jury"]


def test_every_bid_failing_fails_the_job_with_a_reason(stack: AuctionContext) -> None:
    job_id = submit(coding_spec("small.fail=bid medium.fail=bid large.fail=bid"), stack)
    wait(job_id)
    view = job_view(stack, job_id)
    assert view["status"] == "failed"
    assert "every bid failed" in view["status_reason"]
    assert view["memory_record_id"] is None


def _counts(ctx: AuctionContext, job_id: str) -> tuple[int, ...]:
    with session_scope(ctx.db_url) as s:
        per_job = [
            s.exec(select(func.count()).select_from(t).where(t.job_id == job_id)).one()
            for t in (Bid, JuryCall, JuryScore, Execution, MemoryRecord)
        ]
        return (*per_job, s.exec(select(func.count()).select_from(ExecutionStep)).one())


def test_redelivered_messages_leave_one_set_of_rows(stack: AuctionContext) -> None:
    from sale.workers.tasks import collect_bid, execute_plan, judge_bids, update_job_memory

    job_id = submit(coding_spec(), stack)
    assert wait(job_id)["status"] == "done"
    before = _counts(stack, job_id)
    cost_before = job_view(stack, job_id)["cost_usd"]
    # The same task messages again, through the broker to the worker.
    results = [
        collect_bid.apply_async((job_id, "small", "first", None), queue="sale.agent.small"),
        judge_bids.apply_async((job_id, "medium", "first", "all"), queue="sale.agent.medium"),
        execute_plan.apply_async((job_id,), queue="sale.agent.large"),
        update_job_memory.apply_async((job_id,), queue="sale.control"),
    ]
    for r in results:
        r.get(timeout=60)
    assert _counts(stack, job_id) == before
    assert job_view(stack, job_id)["cost_usd"] == cost_before


def test_unexpected_error_reaches_the_pipeline_error_callback(
    stack: AuctionContext, monkeypatch: Any
) -> None:
    import sale.workers.tasks

    def broken_award(ctx: AuctionContext, job_id: str) -> Any:
        raise RuntimeError("award store unavailable")

    monkeypatch.setattr(sale.workers.tasks, "decide_award", broken_award)
    job_id = submit(coding_spec(), stack)
    wait(job_id)
    view = job_view(stack, job_id)
    assert view["status"] == "failed"
    assert "RuntimeError: award store unavailable" in view["status_reason"]
    assert view["execution"] is None and view["memory_record_id"] is None


def test_per_bid_jury_mode_scores_every_bid_in_its_own_call(stack: AuctionContext) -> None:
    original = stack.settings
    stack.settings = original.model_copy(update={"jury_mode": "per_bid"})
    try:
        job_id = submit(coding_spec(prompt="Per-bid jury: write add(a, b)."), stack)
        assert wait(job_id)["status"] == "done"
    finally:
        stack.settings = original
    view = job_view(stack, job_id)
    first = [c for c in view["jury_calls"] if c["round"] == "first"]
    assert len(first) == 9  # 3 jurors x 3 bids, one call each
    assert all(len(c["order"]) == 1 for c in first)
    for bid in view["bids"]:
        assert set(bid["jury"]) == {"small", "medium", "large"}


def test_sale_signature_composes_in_a_user_canvas(stack: AuctionContext) -> None:
    from sale.workers.canvas import sale_signature

    first = sale_signature(coding_spec(prompt="Canvas job one: write add(a, b)."))
    second = sale_signature(coding_spec(prompt="Canvas job two: write add(a, b)."))
    result = (first | second).apply_async()
    summary = result.get(timeout=120)
    assert summary["status"] == "done" and summary["memory_record_id"] is not None
    one = job_view(stack, first.options["task_id"])
    two = job_view(stack, summary["job_id"])
    assert one["status"] == "done" and two["job_id"] == second.options["task_id"]
    assert one["updated_at"] <= two["created_at"]  # the chain ran the jobs in order


@contextmanager
def published() -> Iterator[list[tuple[str, str, list[Any]]]]:
    """Every task message sent meanwhile, from any thread: (task name, routing key, args)."""
    sent: list[tuple[str, str, list[Any]]] = []

    def record(sender: str, body: Any, routing_key: str, **_kw: Any) -> None:
        sent.append((sender, routing_key, list(body[0])))

    before_task_publish.connect(record, weak=False)
    try:
        yield sent
    finally:
        before_task_publish.disconnect(record)


@contextmanager
def model_calls(ctx: AuctionContext) -> Iterator[list[tuple[str, str]]]:
    """(agent, stage) of every model call the workers make meanwhile."""
    calls: list[tuple[str, str]] = []
    real = ctx.llm

    def counting(agent: Any, messages: Any, **kw: Any) -> Any:
        calls.append((agent.name, kw["stage"]))
        return real(agent, messages, **kw)

    ctx.llm = counting
    try:
        yield calls
    finally:
        ctx.llm = real


def test_direct_job_runs_on_the_named_agent_without_an_auction(stack: AuctionContext) -> None:
    with published() as sent, model_calls(stack) as calls:
        job_id = submit(coding_spec(prompt="Direct job: write add(a, b)."), stack, agent="small")
        summary = wait(job_id)
    assert summary["status"] == "done"
    view = job_view(stack, job_id)
    assert [h["status"] for h in view["history"]] == ["queued", "executing", "updating", "done"]
    assert view["mode"] == "direct"
    with session_scope(stack.db_url) as s:  # the job row names its agent (a rerun adopts it)
        assert s.get(Job, job_id).agent == "small"
    assert [(b["agent"], b["round"], b["plan"], b["tokens"]) for b in view["bids"]] == [
        ("small", "direct", DIRECT_PLAN, 0)
    ]
    assert view["jury_calls"] == [] and view["provisional_winner"] is None
    assert view["award"] == {"agent": "small", "round": "direct", "score": 0.0}
    assert "direct: assigned to small, no auction" in view["notes"]
    assert view["execution"]["agent"] == "small" and view["execution"]["steps"]
    assert view["verdict"] == "passed" and view["memory_record_id"] is not None
    assert set(calls) == {("small", "execute")}
    assert view["auction_tokens"] == 0 and view["auction_cost_usd"] == 0
    assert view["tokens"] == view["execution_tokens"] > 0
    assert view["auction_seconds"] is not None and view["execution_seconds"] is not None
    mine = [(task, queue) for task, queue, args in sent if args and args[0] == job_id]
    assert ("sale.execute", "sale.agent.small") in mine
    assert ("sale.update", "sale.control") in mine
    assert not {task for task, _q in mine} & {"sale.bid", "sale.jury", "sale.judge", "sale.score"}


def test_redelivered_direct_start_leaves_one_set_of_rows(stack: AuctionContext) -> None:
    from sale.workers.tasks import start_job

    job_id = submit(coding_spec(prompt="Direct again: write add(a, b)."), stack, agent="medium")
    assert wait(job_id)["status"] == "done"
    before = _counts(stack, job_id)
    start_job.apply_async((job_id, None, "medium"), queue="sale.control").get(timeout=60)
    assert _counts(stack, job_id) == before
    assert before[:3] == (1, 0, 0)  # one direct bid, no jury call, no jury score
    assert job_view(stack, job_id)["status"] == "done"


def _job_count(ctx: AuctionContext) -> int:
    with session_scope(ctx.db_url) as s:
        return int(s.exec(select(func.count()).select_from(Job)).one())


def test_direct_job_for_an_unknown_agent_fails_fast_and_writes_nothing(
    stack: AuctionContext,
) -> None:
    from sale.workers.canvas import sale_signature

    jobs_before = _job_count(stack)
    with published() as sent:
        with pytest.raises(UnknownAgentError, match=r"'nobody'.*small, medium, large"):
            submit(coding_spec(), stack, agent="nobody")
        with pytest.raises(UnknownAgentError, match="nobody"):
            sale_signature(coding_spec(), agent="nobody")
    assert sent == []
    assert _job_count(stack) == jobs_before


def test_refinement_off_awards_the_provisional_winner_despite_memory_pairs(
    stack: AuctionContext,
) -> None:
    seed = submit(coding_spec(prompt="Write add(a, b) that adds two integers."), stack)
    assert wait(seed)["status"] == "done"
    with session_scope(stack.db_url) as s:
        records = s.exec(select(MemoryRecord).where(MemoryRecord.kind == "coding")).all()
        entries = [MemoryEntry(r.id or 0, r.embedding, r.bids, r.verdict) for r in records]
    assert build_pairs("small", entries, stack.settings.memory_label, 4), "memory has pairs"
    original = stack.settings
    stack.settings = original.model_copy(update={"refine": False})
    try:
        job_id = submit(coding_spec("small.refine=5 medium.refine=1"), stack)
        assert wait(job_id)["status"] == "done"
    finally:
        stack.settings = original
    view = job_view(stack, job_id)
    assert [b for b in view["bids"] if b["round"] == "refined"] == []
    assert "refining" not in [h["status"] for h in view["history"]]
    assert view["award"]["agent"] == "large" and view["award"]["round"] == "first"
    assert "refinement off (SALE_REFINE=false)" in view["notes"]
    assert view["usage"]["refine"] == {"tokens": 0, "cost_usd": 0.0}


def test_memory_shortcut_gives_the_job_to_the_agent_memory_agrees_on(
    stack: AuctionContext,
) -> None:
    # Three earlier auctions of this task: small's plan scores best, so the cheapest agent wins
    # each, and its execution passes.
    spec = coding_spec("small.bid=5", prompt="Shortcut: small solved this before; write add(a, b).")
    for _ in range(3):
        seed = wait(submit(spec, stack))
        assert (seed["award"]["agent"], seed["verdict"]) == ("small", "passed")
    original = stack.settings
    stack.settings = original.model_copy(update={"memory_shortcut": 0.99})
    try:
        with published() as sent, model_calls(stack) as calls:
            job_id = submit(spec, stack)
            assert wait(job_id)["status"] == "done"
    finally:
        stack.settings = original
    assert sorted(calls) == [("small", "bid"), ("small", "execute")]  # one bid, no jury
    view = job_view(stack, job_id)
    assert [h["status"] for h in view["history"]] == [
        "queued",
        "bidding",
        "executing",
        "updating",
        "done",
    ]
    assert view["mode"] == "shortcut" and view["award"]["round"] == "shortcut"
    assert [(b["agent"], b["round"]) for b in view["bids"]] == [("small", "shortcut")]
    assert view["jury_calls"] == [] and view["verdict"] == "passed"
    assert any(n.startswith("memory shortcut: small") for n in view["notes"])
    mine = {task for task, _q, args in sent if args and args[0] == job_id}
    assert "sale.shortcut" in mine and not mine & {"sale.jury", "sale.judge", "sale.score"}


EXAMPLES_PROMPT = 'def add(a, b):\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """'


def test_failed_self_check_falls_back_to_the_next_bid_on_its_queue(
    stack: AuctionContext,
) -> None:
    from sale.workers.tasks import execute_plan

    original = stack.settings
    stack.settings = original.model_copy(
        update={"self_check_fallback": 1, "self_check_escalation": "ranking"}
    )
    try:
        with published() as sent, model_calls(stack) as calls:
            job_id = submit(coding_spec("large.solve=fail", prompt=EXAMPLES_PROMPT), stack)
            assert wait(job_id)["status"] == "done"
        # Redelivered execute messages, one per attempt, find their rows.
        before = _counts(stack, job_id)
        for attempt, queue in ((0, "sale.agent.large"), (1, "sale.agent.medium")):
            execute_plan.apply_async((job_id, attempt), queue=queue).get(timeout=60)
        assert _counts(stack, job_id) == before
    finally:
        stack.settings = original
    view = job_view(stack, job_id)
    attempts = [
        (e["attempt"], e["agent"], e["self_check"], e["verdict"]) for e in view["executions"]
    ]
    assert attempts == [(0, "large", "failed", "failed"), (1, "medium", "passed", "passed")]
    assert view["award"]["agent"] == "large"
    assert view["execution"]["agent"] == "medium" and view["verdict"] == "passed"
    assert before[3] == 2  # two Execution rows
    assert sorted(a for a, stage in calls if stage == "execute") == ["large", "medium"]
    assert view["execution_tokens"] == sum(e["tokens"] for e in view["executions"])
    # The winner executed on its queue, the fallback on the fallback agent's, then the update.
    mine = [(task, queue, args[1:]) for task, queue, args in sent if args and args[0] == job_id]
    executes = [m for m in mine if m[0] == "sale.execute"]
    assert executes == [
        ("sale.execute", "sale.agent.large", []),
        ("sale.execute", "sale.agent.medium", [1]),
    ]
    assert mine.index(executes[-1]) < mine.index(("sale.update", "sale.control", []))
    with session_scope(stack.db_url) as s:
        record = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).one()
    assert [(a["agent"], a["self_check"]) for a in record.attempts] == [
        ("large", "failed"),
        ("medium", "passed"),
    ]
