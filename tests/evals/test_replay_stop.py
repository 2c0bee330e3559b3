"""Tests for sale.scripts.evals.replay_stop: recorded replies fed back through the real agent loop
(with the real coding tools and verdict) under a repeat stop, and a SALE job's recorded
fallbacks followed only while the self-check says what it said then."""

from __future__ import annotations

from typing import Any

import pytest
import typer
from sale.broker.pool import Agent, Pool
from sale.models.schemas import TaskSpec
from sale.models.tables import Bid, ExecutionStep
from sale.scripts.evals.replay_stop import (
    Recorded,
    ReplayExhausted,
    ReplayModel,
    check_replayable,
    replay_job,
    replay_outcome,
)
from sale.scripts.evals.store import RunStore

pytestmark = pytest.mark.timeout(120)

AGENT = Agent(name="a", model="fake/a", input_price=1.0, output_price=2.0, queue="sale.agent.a")
PROMPT = 'def add(a, b):\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """\n'
ADD = "def add(a, b):\n    return a + b"
WRONG = "def add(a, b):\n    return a - b"
SPEC = TaskSpec(
    kind="coding",
    prompt=PROMPT,
    tests="def check(candidate):\n    assert candidate(1, 2) == 3\n",
    entry_point="add",
)


def reply(text: str, cost: float = 1e-6) -> ExecutionStep:
    return ExecutionStep(
        execution_id=1, index=0, role="assistant", content=text, tokens_in=100, tokens_out=10,
        cost_usd=cost, latency_s=0.5,
    )  # fmt: skip


def recorded(texts: list[str], answer: str | None, check: bool | None = None) -> Recorded:
    return Recorded(
        job_id="j", task_id="t", attempt=0, bid_id=1, agent="a", spec=SPEC, plan="plan",
        answer=answer, self_check=check, replies=[reply(t) for t in texts], record={},
    )  # fmt: skip


def test_the_replay_model_answers_with_the_recorded_replies_in_order() -> None:
    llm = ReplayModel([reply("one"), reply("two", cost=2e-6)])
    first = llm(AGENT, [], stage="execute", max_tokens=64)
    second = llm(AGENT, [], stage="execute", max_tokens=64)
    assert (first.text, second.text, second.cost_usd, second.model) == (
        "one",
        "two",
        2e-6,
        "fake/a",
    )
    with pytest.raises(ReplayExhausted):
        llm(AGENT, [], stage="execute", max_tokens=64)


def test_a_stop_cuts_the_recorded_loop_and_the_kept_candidate_is_judged() -> None:
    tested = f"```python\n{ADD}\n```\nAction: run_tests"
    # the model ran its right code, repeated it, then wrote a wrong final answer
    texts = [tested, tested, tested, f"Final Answer:\n```python\n{WRONG}\n```"]
    uncut = replay_outcome(recorded(texts, WRONG), AGENT, stop=3)
    assert not uncut["cut"] and uncut["faithful"] and not uncut["passed"]
    assert (
        uncut["cost_usd"] == pytest.approx(4e-6) and uncut["self_check"] is False
    )  # 2 - 3 is not 5
    cut = replay_outcome(recorded(texts, WRONG), AGENT, stop=1)
    assert cut["cut"] and cut["faithful"] is None and cut["stop_reason"] == "repeated_actions"
    assert cut["passed"] and cut["self_check"] is True  # the candidate it kept: the right code
    assert cut["cost_usd"] == pytest.approx(2e-6) and cut["tokens"] == 220
    assert cut["wall_s"] == 1.0  # the two recorded calls' latencies, not the replay's timing
    # an uncut replay that does not end with the recorded answer says so
    assert replay_outcome(recorded(texts, ADD), AGENT, stop=3)["faithful"] is False


SMALL = Agent(name="s", model="fake/s", input_price=0.1, output_price=0.2, queue="sale.agent.s")
BIG = Agent(name="b", model="fake/b", input_price=9.0, output_price=9.0, queue="sale.agent.b")
POOL = Pool(path="pool.toml", agents=(SMALL, AGENT, BIG))
RIGHT = f"Final Answer:\n```python\n{ADD}\n```"
WRONG_FINAL = f"Final Answer:\n```python\n{WRONG}\n```"
TESTED = f"```python\n{ADD}\n```\nAction: run_tests"


def bid(bid_id: int, agent: str) -> Bid:
    return Bid(id=bid_id, job_id="j", agent=agent, round="first", status="ok")


def executed(bid_id: int, agent: str, texts: list[str], answer: str) -> Recorded:
    rec = recorded(texts, answer)
    rec.bid_id, rec.agent = bid_id, agent
    return rec


def test_a_sale_job_falls_back_as_the_job_would_and_says_when_it_cannot_know() -> None:
    ranked = [bid(1, "a"), bid(2, "s"), bid(3, "b")]  # best first
    runs = {1: executed(1, "a", [WRONG_FINAL], WRONG), 3: executed(3, "b", [RIGHT], ADD)}
    # "up": after a's failed check, only a pricier agent's bid: b's, which executed
    out: dict[str, Any] = replay_job(ranked, runs, POOL, stop=1, fallbacks=2, escalation="up")
    assert not out["unknown"] and out["passed"] and out["agent"] == "b"
    assert out["cost_usd"] == pytest.approx(2e-6) and len(out["executions"]) == 2
    # "ranking": the next-best bid is s's, which never executed: unknown
    out = replay_job(ranked, runs, POOL, stop=1, fallbacks=2, escalation="ranking")
    assert out["unknown"] and "passed" not in out
    # no fallback left: a's failed answer stands
    out = replay_job(ranked, runs, POOL, stop=1, fallbacks=0)
    assert not out["unknown"] and not out["passed"] and out["agent"] == "a"
    # the stop turns a's looping run into a pass: the job ends there, without b's cost
    runs[1] = executed(1, "a", [TESTED, TESTED, WRONG_FINAL], WRONG)
    out = replay_job(ranked, runs, POOL, stop=1, fallbacks=2)
    assert out["passed"] and out["agent"] == "a" and out["cut"] == 1
    assert out["cost_usd"] == pytest.approx(2e-6)
    # the best bid never executed (as when other weights rank the bids): unknown
    assert replay_job([bid(2, "s"), *ranked], runs, POOL, stop=1, fallbacks=2)["unknown"]


def test_bids_rank_by_their_recorded_scores_or_rescored_without_the_jury() -> None:
    from sale.scripts.evals.replay_stop import Auction, ranked_bids
    from sale.workers.auction.weights import Weights

    small, big = bid(1, "s"), bid(2, "b")
    small.score, small.entropy, small.tokens_out = -0.5, 0.2, 100
    big.score, big.entropy, big.tokens_out = -0.9, 0.6, 100  # the jury favoured the big one
    auction = Auction("j", "coding", [small, big], 0.01, 50, executions={})
    assert [b.agent for b in ranked_bids(auction, POOL, None)] == ["b", "s"]
    # without jurors: V = w_h · H, C = w_c · price · tokens; the big agent's price now outweighs
    weights = Weights(version="t", w_c=0.001, w_h=1.0, jurors={"s": 0.0, "a": 0.0, "b": 0.0})
    # s: 0.001 * 0.2 * 100 - 0.2 = -0.18; b: 0.001 * 9 * 100 - 0.6 = 0.3
    assert [b.agent for b in ranked_bids(auction, POOL, weights)] == ["s", "b"]


def test_runs_recorded_under_a_stop_replay_only_under_one_as_tight(tmp_path: Any) -> None:
    store = RunStore(tmp_path / "runs.jsonl")
    base = {"method": "single:a", "order": 0, "split": "test"}
    store.add({**base, "task_id": "old"})  # recorded before runs carried their stop: none
    for stop in (0, 1, 3):
        check_replayable(store, stop)  # a run without a stop replays under any stop
    store.add({**base, "task_id": "new", "repeat_stop": 2})
    check_replayable(store, 1)
    check_replayable(store, 2)
    for looser in (0, 3):
        with pytest.raises(typer.BadParameter, match=r"SALE_REPEAT_STOP=2.*between 1 and 2"):
            check_replayable(store, looser)


def test_runs_without_a_trace_here_are_named_and_nothing_is_made_of_none(tmp_path: Any) -> None:
    from sale.scripts.evals.replay_stop import main
    from typer.testing import CliRunner

    work = tmp_path / "search"
    store = RunStore(work / "runs.jsonl")
    store.add({"method": "single:a", "order": 0, "split": "test", "task_id": "t", "job_id": "j",
               "status": "done", "bench": "search", "repeat_stop": 2,
               "carried_over": "restored from x.runs.jsonl"})  # fmt: skip
    app = typer.Typer()
    app.command()(main)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["--work-dir", str(work), "--stop", "2", "--out", str(out)])
    said = " ".join(res.output.split())
    assert res.exit_code == 1 and "1 of 1 single-agent runs have no trace" in said
    assert "nothing to replay" in said and not out.exists()
