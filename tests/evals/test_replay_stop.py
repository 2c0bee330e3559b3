"""Tests for scripts.evals.replay_stop: recorded replies fed back through the real agent loop
(with the real coding tools and verdict) under a repeat stop, and a SALE job's recorded
fallbacks followed only while the self-check says what it said then."""

from __future__ import annotations

from typing import Any

import pytest

from models.schemas import TaskSpec
from models.tables import ExecutionStep
from scripts.evals.replay_stop import (
    Recorded,
    ReplayExhausted,
    replay_job,
    replay_llm,
    replay_outcome,
)
from workers.pool import Agent, Pool

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
        job_id="j", task_id="t", attempt=0, agent="a", spec=SPEC, plan="plan",
        answer=answer, self_check=check, replies=[reply(t) for t in texts],
    )  # fmt: skip


def test_the_replay_model_answers_with_the_recorded_replies_in_order() -> None:
    llm = replay_llm([reply("one"), reply("two", cost=2e-6)])
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
    # an uncut replay that does not end with the recorded answer says so
    assert replay_outcome(recorded(texts, ADD), AGENT, stop=3)["faithful"] is False


def test_a_sale_job_follows_its_recorded_fallbacks_only_while_the_check_agrees() -> None:
    pool = Pool(path="pool.toml", agents=(AGENT,))
    tested = f"```python\n{ADD}\n```\nAction: run_tests"
    wrong = f"Final Answer:\n```python\n{WRONG}\n```"
    right = f"Final Answer:\n```python\n{ADD}\n```"
    # attempt 0 failed its check then and now; attempt 1 passed: the recorded chain holds
    chain = [recorded([wrong], WRONG, check=False), recorded([right], ADD, check=True)]
    out: dict[str, Any] = replay_job(chain, pool, stop=1, fallbacks=2)
    assert not out["unknown"] and out["passed"] and out["cost_usd"] == pytest.approx(2e-6)
    assert len(out["executions"]) == 2
    # the stop turns attempt 0 into a pass: the job ends there, without the fallback's cost
    looped = [tested, tested, wrong]
    chain = [recorded(looped, WRONG, check=False), recorded([right], ADD, check=True)]
    out = replay_job(chain, pool, stop=1, fallbacks=2)
    assert out["passed"] and out["cut"] == 1 and out["cost_usd"] == pytest.approx(2e-6)
    # a check that now fails where it passed then: the fallback never ran, so unknown ...
    out = replay_job([recorded([wrong], WRONG, check=True)], pool, stop=1, fallbacks=2)
    assert out["unknown"] and "passed" not in out
    # ... unless no fallback was left to run
    out = replay_job([recorded([wrong], WRONG, check=True)], pool, stop=1, fallbacks=0)
    assert not out["unknown"] and not out["passed"]
