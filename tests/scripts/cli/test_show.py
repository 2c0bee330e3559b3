"""The text form of `sale show`, rendered from hand-made job views (the `job_view` shape)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from sale.scripts.cli.show import answered_by, render, winner_cell


def _step(index: int, role: str, tool: str | None = None, obs: str | None = None) -> dict[str, Any]:
    return {
        "index": index,
        "role": role,
        "content": f"{role} says {index}",
        "tool_name": tool,
        "tool_args": {"code": "print(1)"} if tool else None,
        "observation": obs,
    }


def _attempt(n: int, agent: str, check: str | None, verdict: str) -> dict[str, Any]:
    return {
        "attempt": n,
        "agent": agent,
        "status": "done",
        "stop_reason": "final_answer",
        "tokens": 700 + n,
        "self_check": check,
        "self_check_detail": "AssertionError on example 2" if check == "failed" else None,
        "verdict": verdict,
        "steps": [_step(0, "system"), _step(1, "assistant", "run_python", "1")],
    }


def _bid(agent: str, score: float) -> dict[str, Any]:
    return {
        "agent": agent,
        "round": "first",
        "status": "ok",
        "tokens": 120,
        "entropy": 0.3,
        "jury": {"a": 4},
        "cost": 0.1,
        "value": 0.3 - score,
        "score": score,
    }


def _view(mode: str, **extra: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "job_id": "j1",
        "name": "HumanEval/14",
        "kind": "coding",
        "status": "done",
        "status_reason": None,
        "verdict": "passed",
        "mode": mode,
        "bids": [],
        "provisional_winner": None,
        "award": None,
        "execution": None,
        "executions": [],
        "notes": [],
        "cost_usd": 0.00123,
        "tokens": 2000,
        "auction_tokens": 600,
        "usage": {
            "bid": {"tokens": 600, "cost_usd": 0.0001},
            "jury": {"tokens": 0, "cost_usd": 0.0},
            "execute": {"tokens": 1400, "cost_usd": 0.0011},
        },
    }
    view.update(extra)
    return view


def _text(view: dict[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    render(view, console)
    out = console.file.getvalue()
    assert isinstance(out, str)
    return out


def test_an_auction_with_a_fallback_shows_both_attempts_and_the_hand_over() -> None:
    first = _attempt(0, "smollm2-135m", "failed", "failed")
    second = _attempt(1, "qwen2.5-coder-0.5b", "passed", "passed")
    text = _text(
        _view(
            "auction",
            bids=[_bid("smollm2-135m", -1.0), _bid("qwen2.5-coder-0.5b", -0.5)],
            provisional_winner="smollm2-135m",
            award={"agent": "smollm2-135m", "round": "first", "score": -1.0},
            execution=second,
            executions=[first, second],
            notes=["self-check of smollm2-135m failed (attempt 0): fallback 1 to the 0.5b"],
        )
    )
    assert "provisional winner: smollm2-135m; award: smollm2-135m (first bid, score -1.000)" in text
    first_line = "execution 0 by smollm2-135m: done, stop final_answer, 700 tokens, self-check fail"
    assert first_line in text
    assert "AssertionError on example 2" in text
    assert "execution 1 by qwen2.5-coder-0.5b" in text and "self-check passed" in text
    assert text.index("execution 0") < text.index("execution 1")
    assert 'run_python({"code": "print(1)"})' in text
    assert "note: self-check of smollm2-135m failed" in text
    assert "auction 600; bid 600, execute 1400" in text  # a stage with no tokens is left out
    assert "-1.000" in text and "entropy" in text  # the bids table


def test_a_direct_job_names_its_agent_and_shows_no_bids_table() -> None:
    ex = _attempt(0, "qwen2.5-coder-1.5b", None, "passed")
    text = _text(
        _view(
            "direct",
            bids=[_bid("qwen2.5-coder-1.5b", 0.0)],
            award={"agent": "qwen2.5-coder-1.5b", "round": "direct", "score": 0.0},
            execution=ex,
            executions=[ex],
        )
    )
    assert "direct job on qwen2.5-coder-1.5b: no auction" in text
    assert "provisional winner" not in text and "entropy" not in text
    assert "self-check" not in text  # no self-check ran
    assert "execution 0 by qwen2.5-coder-1.5b" in text


def test_a_shortcut_and_an_unawarded_job_say_so() -> None:
    shortcut = _text(
        _view("shortcut", award={"agent": "qwen2.5-coder-0.5b", "round": "shortcut", "score": 0.1})
    )
    assert "memory shortcut to qwen2.5-coder-0.5b" in shortcut
    pending = _text(_view("auction", status="bidding", verdict=None))
    assert "award: none yet" in pending and "bidding" in pending


def test_the_run_table_names_every_agent_that_executed_and_who_answered() -> None:
    first = _attempt(0, "qwen2.5-coder-0.5b", "failed", "failed")
    second = _attempt(1, "smollm2-135m", "failed", "failed")
    third = _attempt(2, "qwen2.5-coder-1.5b", "passed", "passed")
    award = {"agent": "qwen2.5-coder-0.5b", "round": "first", "score": -1.0}
    view = _view("auction", award=award, executions=[first, second, third])
    assert winner_cell(view) == "qwen2.5-coder-0.5b → smollm2-135m → qwen2.5-coder-1.5b"
    assert answered_by(view) == "qwen2.5-coder-1.5b"
    plain = _view("auction", award=award, executions=[first])
    assert winner_cell(plain) == "qwen2.5-coder-0.5b" and answered_by(plain) == award["agent"]
    assert winner_cell(_view("auction")) == "-" and answered_by(_view("auction")) is None
