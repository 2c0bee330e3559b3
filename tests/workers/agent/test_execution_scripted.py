"""Unit tests for sale.workers.agent.outcome's answer extraction, the scripted test-double provider
(sale.workers.llm.scripted) and the litellm call site (sale.workers.llm.provider.call_model) on the
scripted pool."""

from __future__ import annotations

import math

import pytest
from sale.broker.pool import Pool, load_pool
from sale.models.schemas import TaskSpec
from sale.workers.agent.outcome import extract_answer, extract_code
from sale.workers.auction.jury import example_object, parse_scores, presentation_order, render_bids
from sale.workers.llm.provider import call_model
from sale.workers.llm.scripted import scripted_reply
from sale.workers.prompts import render

from sale.errors import JuryParseError, PermanentModelError, TransientModelError
from tests.conftest import SCRIPTED_POOL

# --- extract_code -------------------------------------------------------------------------

PROMPT = (
    "from typing import List\nimport math\n\n\n"
    'def mean(xs: List[float]) -> float:\n    """Mean."""\n'
)
WITH_ENTRY = TaskSpec(
    kind="coding", prompt=PROMPT, tests="assert mean([1, 3]) == 2", entry_point="mean"
)
NO_ENTRY = TaskSpec(kind="coding", prompt="Write a function.")


def test_extract_code_from_a_fenced_python_block() -> None:
    reply = "Here is the code:\n```python\nx = 1\ny = 2\n```\nHope it helps."
    assert extract_code(reply, NO_ENTRY) == "x = 1\ny = 2"


def test_extract_code_takes_the_longest_of_several_blocks() -> None:
    # The longest block comes first here, so "last block" and "longest block" differ.
    reply = (
        "```python\ndef longest():\n    return 'the real program'\n```\n"
        "Usage:\n```py\nlongest()\n```\n"
    )
    assert extract_code(reply, NO_ENTRY) == "def longest():\n    return 'the real program'"


def test_extract_code_without_a_fence_is_the_whole_reply() -> None:
    reply = "\nz = 3\nprint(z)\n\n"
    assert extract_code(reply, NO_ENTRY) == "z = 3\nprint(z)"


def test_extract_code_ignores_non_python_fences() -> None:
    reply = '```json\n{"a": 1}\n```'
    assert extract_code(reply, NO_ENTRY) == reply


def test_full_function_gets_the_prompt_imports() -> None:
    reply = "```python\ndef mean(xs):\n    return math.fsum(xs) / len(xs)\n```"
    code = extract_code(reply, WITH_ENTRY)
    assert code == (
        "from typing import List\nimport math\ndef mean(xs):\n    return math.fsum(xs) / len(xs)"
    )
    namespace: dict[str, object] = {}
    exec(code, namespace)  # the imports make it runnable
    assert namespace["mean"]([1.0, 3.0]) == 2.0  # type: ignore[operator]


def test_full_function_without_prompt_imports_is_left_alone() -> None:
    spec = TaskSpec(kind="coding", prompt="def f(x):\n", tests="assert f(1)", entry_point="f")
    assert (
        extract_code("```python\ndef f(x):\n    return x\n```", spec) == "def f(x):\n    return x"
    )


def test_bare_body_continues_the_prompt() -> None:
    reply = "    return sum(xs) / len(xs)\n"
    code = extract_code(reply, WITH_ENTRY)
    assert code == PROMPT + "    return sum(xs) / len(xs)"
    namespace: dict[str, object] = {}
    exec(code, namespace)
    assert namespace["mean"]([2.0, 4.0]) == 3.0  # type: ignore[operator]


# --- extract_answer -----------------------------------------------------------------------


def test_extract_answer_from_the_answer_line() -> None:
    assert extract_answer("The city on the Seine.\nANSWER: Paris\nThat is all.") == "Paris"


def test_extract_answer_takes_the_last_answer_line_case_insensitively() -> None:
    assert extract_answer("answer: Lyon\nwait, no.\nAnswer :  Paris  ") == "Paris"


def test_extract_answer_falls_back_to_the_last_line() -> None:
    assert extract_answer("I looked it up.\nParis\n\n  ") == "Paris"
    assert extract_answer("") == ""


# --- scripted provider --------------------------------------------------------------------


def say(profile: str, stage: str, prompt: str) -> str:
    reply = scripted_reply(profile, stage, [{"role": "user", "content": prompt}])
    assert reply.fault is None
    return reply.text


def test_default_bid_quality_follows_the_profile_order() -> None:
    # Documented default: 1 + position in (small, medium, large); any other profile → 1.
    assert "[quality=1]" in say("small", "bid", "task")
    assert "[quality=2]" in say("medium", "bid", "task")
    assert "[quality=3]" in say("large", "bid", "task")
    assert "[quality=1]" in say("xl", "bid", "task")


def test_bid_and_refine_directives() -> None:
    prompt = "task [[scripted small.bid=4 medium.refine=0]]"
    assert "[quality=4]" in say("small", "bid", prompt)
    # refine defaults to the bid quality
    refined = say("small", "refine", prompt)
    assert refined.startswith("Refined plan by small")
    assert "[quality=4]" in refined
    assert "[quality=0]" in say("medium", "refine", prompt)
    assert "[quality=2]" in say("medium", "bid", prompt)  # bid keeps its default


def test_fail_directive_is_a_permanent_fault_at_that_stage_only() -> None:
    prompt = "task [[scripted medium.fail=bid]]"
    reply = scripted_reply("medium", "bid", [{"role": "user", "content": prompt}])
    assert reply.fault is not None
    assert reply.fault.transient is False
    assert reply.text == ""
    assert scripted_reply("medium", "jury", [{"role": "user", "content": prompt}]).fault is None
    assert scripted_reply("small", "bid", [{"role": "user", "content": prompt}]).fault is None


def test_transient_directive_fails_n_times_then_answers() -> None:
    messages = [
        {"role": "user", "content": "unique-transient-test-1 [[scripted large.transient=bid:2]]"}
    ]
    faults = [scripted_reply("large", "bid", messages).fault for _ in range(3)]
    assert faults[0] is not None and faults[0].transient
    assert faults[1] is not None and faults[1].transient
    assert faults[2] is None


def test_junk_juror_reply_is_not_parseable() -> None:
    text = say("small", "jury", "PLAN A:\nx [quality=3]\n\n[[scripted small.junk=jury]]")
    with pytest.raises(JuryParseError):
        parse_scores(text, ["A"])


def test_scripted_jury_scores_the_written_qualities() -> None:
    task = "Add two numbers. [[scripted small.bid=4 medium.bid=0 large.bid=5]]"
    bids = [
        (i, agent, say(agent, "bid", task)) for i, agent in enumerate(["small", "medium", "large"])
    ]
    presented = presentation_order(bids, seed=0, job_id="j", juror="medium", round_="first")
    labels = [p.label for p in presented]
    prompt = render(
        "jury",
        kind="coding",
        prompt=task,
        bids=render_bids(presented),
        example=example_object(labels),
    )
    reply = say("medium", "jury", prompt)
    assert reply.startswith("```json")  # like the 1.5B model: fenced JSON
    scores = parse_scores(reply, labels)
    quality = {"small": 4, "medium": 0, "large": 5}
    assert {p.agent: scores[p.label] for p in presented} == quality


def test_execute_returns_the_solution_block() -> None:
    task = "Add.\n[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]"
    text = say("small", "execute", render("execute_coding", prompt=task))
    assert text == "```python\ndef add(a, b):\n    return a + b\n```"
    spec = TaskSpec(kind="coding", prompt=task, tests="assert add(1, 2) == 3", entry_point="add")
    assert extract_code(text, spec) == "def add(a, b):\n    return a + b"


def test_execute_solve_fail_returns_raising_code() -> None:
    task = "Add.\n[[scripted small.solve=fail]]\n[[solution]]\nx = 1\n[[/solution]]"
    text = say("small", "execute", render("execute_coding", prompt=task))
    assert "raise RuntimeError" in text
    assert "x = 1" not in text


def test_search_execute_returns_an_answer_line() -> None:
    task = "Capital of France?\n[[solution]]\nParis\n[[/solution]]"
    text = say("large", "execute", render("execute_search", prompt=task))
    assert text == "ANSWER: Paris"
    assert extract_answer(text) == "Paris"


# --- call_model on the scripted pool ------------------------------------------------------


@pytest.fixture(scope="module")
def scripted_pool() -> Pool:
    return load_pool(SCRIPTED_POOL)


def test_call_model_tokens_logprobs_and_cost(scripted_pool: Pool) -> None:
    large = scripted_pool.get("large")
    messages = [
        {"role": "system", "content": "one two three"},
        {"role": "user", "content": "add two numbers [[scripted large.bid=2]]"},
    ]
    result = call_model(large, messages, stage="bid", max_tokens=64, logprobs=True, top_logprobs=5)
    # Prompt words: one two three add two numbers [[scripted large.bid=2]] → 8.
    # Plan: "Plan by large: 1. Read the task and restate the goal. 2. Break it into steps and
    # handle edge cases. 3. Check the result against the examples. [quality=2]" → 28 words.
    assert result.text.startswith("Plan by large:")
    assert result.text.endswith("[quality=2]")
    assert (result.tokens_in, result.tokens_out) == (8, 28)
    # cost = (8 · 0.36 + 28 · 0.36) / 1e6 = 12.96 / 1e6 = 1.296e-5 US$
    assert result.cost_usd == pytest.approx(1.296e-5)
    assert result.model == "scripted/large"
    assert result.top_logprobs is not None
    assert len(result.top_logprobs) == 28
    for position in result.top_logprobs:
        assert len(position) == 5
        assert position == sorted(position, reverse=True)
        # The scripted distributions are normalised over the five alternatives.
        assert sum(math.exp(lp) for lp in position) == pytest.approx(1.0)


def test_call_model_without_logprobs_and_stage_routing(scripted_pool: Pool) -> None:
    small = scripted_pool.get("small")
    task = "Add.\n[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]"
    messages = [{"role": "user", "content": render("execute_coding", prompt=task)}]
    result = call_model(small, messages, stage="execute", max_tokens=64)
    # The stage reaches the provider: an execute call returns the solution block.
    assert result.text == "```python\ndef add(a, b):\n    return a + b\n```"
    assert result.top_logprobs is None


def test_call_model_maps_scripted_faults(scripted_pool: Pool) -> None:
    medium = scripted_pool.get("medium")
    fail = [{"role": "user", "content": "task [[scripted medium.fail=bid]]"}]
    with pytest.raises(PermanentModelError) as permanent:
        call_model(medium, fail, stage="bid", max_tokens=16)
    assert (permanent.value.agent, permanent.value.model) == ("medium", "scripted/medium")
    assert "scripted bid failure" in str(permanent.value)
    transient = [
        {
            "role": "user",
            "content": "unique-call-model-transient [[scripted medium.transient=jury:1]]",
        }
    ]
    with pytest.raises(TransientModelError):
        call_model(medium, transient, stage="jury", max_tokens=16)
    # Second call: the transient fault is used up.
    assert call_model(medium, transient, stage="jury", max_tokens=16).text.startswith("```json")


def test_extract_code_drops_tool_calls_written_into_the_final_code() -> None:
    # The 0.5B model's habit: the next action inside the fenced final code.
    reply = (
        "```python\ndef truncate_number(number: float) -> float:\n"
        "    return number - int(number)\n\n# Action: run_tests\nrun_tests()\n```"
    )
    spec = TaskSpec(
        kind="coding",
        prompt="def truncate_number(number: float) -> float:\n",
        tests="x",
        entry_point="truncate_number",
    )
    code = extract_code(reply, spec)
    assert "run_tests" not in code and "Action" not in code
    assert code.rstrip().endswith("return number - int(number)")
