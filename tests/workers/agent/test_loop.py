"""Tests for sale.workers.agent.loop: the text action parser on malformed model outputs, and the
agent
loop driven by an injected fake model (scripted LLMResults in sequence): tool traces, every
limit with its stop reason (and the invalid-actions guard), recorded steps and sums,
corrections, errors, progress, and the scripted test double's ``P.tools=N`` directive. Native
tool calls are tested in test_native_tools.py with the same fake model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sale.broker.pool import Agent
from sale.models.schemas import Limits, TaskSpec
from sale.workers.agent.loop import (
    EXECUTORS,
    FINAL,
    MAX_INVALID_ACTIONS,
    Action,
    parse_action,
    parse_actions,
    run_agent,
)
from sale.workers.agent.tools import CodingTools, SearchTools, Tool, Toolbox
from sale.workers.llm.scripted import scripted_reply
from sale.workers.llm.types import LLMCall, LLMResult, Message, ToolCall
from sale.workers.prompts import PromptStyle
from sale.workers.search.index import BM25Index, Document

from sale.errors import PermanentModelError, TransientModelError

pytestmark = pytest.mark.timeout(120)

CODING = ("run_python", "run_tests")
SEARCH = ("search", "open")
AGENT = Agent(name="a", model="fake/a", input_price=1.0, output_price=2.0, queue="sale.agent.a")
PROMPT = 'def add(a, b):\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """\n'
ADD = "def add(a, b):\n    return a + b"


# --- the action parser ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        # the documented format
        ("Action: run_python\n```python\nprint(1)\n```", Action("tool", "run_python", "print(1)")),
        # wrong case everywhere, a fence language in capitals, prose around
        (
            "Let me try.\nACTION:  Run_Python\n```PYTHON\nprint(2)\n```\nThat should work.",
            Action("tool", "run_python", "print(2)"),
        ),
        # missing fence: the code is the text after the action line, up to an imagined result
        (
            "Action: run_python\n    x = 3\n    print(x)\nObservation: 3",
            Action("tool", "run_python", "x = 3\nprint(x)"),
        ),
        # code in brackets, aliases, a fence on the action's line, an Action Input line
        ("Action: python[print(4)]", Action("tool", "run_python", "print(4)")),
        (
            "Action: run_tests ```python\ndef add(a, b): return a + b\n```",
            Action("tool", "run_tests", "def add(a, b): return a + b"),
        ),
        ("Action: run_tests", Action("tool", "run_tests", "")),  # tests the last code
        # two actions: the first counts
        (
            "Action: run_python\n```python\nprint(5)\n```\nAction: run_tests\n```python\nx\n```",
            Action("tool", "run_python", "print(5)"),
        ),
        (
            "Action: run_python\n```python\nprint(6)\n```\nObservation: 6\nFinal Answer:\n"
            "```python\ndef add(a, b): return 0\n```",
            Action("tool", "run_python", "print(6)"),
        ),
        # a bare fence (python, unlabelled) with no action is the final code
        ("```python\ndef add(a, b):\n    return a + b\n```\nDone!", Action("final", FINAL, ADD)),
        ("```\ndef add(a, b):\n    return a + b\n```", Action("final", FINAL, ADD)),
        ("Here it is:\ndef add(a, b):\n    return a + b\n", Action("final", FINAL, ADD)),
        # Final Answer with a code fence, in markdown bold, any fence language
        ("**Final Answer:**\n```py\n" + ADD + "\n```\nHope it helps.", Action("final", FINAL, ADD)),
        ("final answer:\n```python3\n" + ADD + "\n```", Action("final", FINAL, ADD)),
        # the order small coder models prefer: the block, then its action line (also as the
        # block's last lines, commented or not); a lone "Final Answer" line
        (f"```python\n{ADD}\n```\nAction: run_tests", Action("tool", "run_tests", ADD)),
        (
            f"```python\n{ADD}\n\n# Action: run_tests\n# Final Answer\n```",
            Action("tool", "run_tests", ADD),
        ),
        (f"```python\n{ADD}\nAction: run_python\n```", Action("tool", "run_python", ADD)),
        (
            f"```python\n{ADD}\n\n# Action: run_tests\nrun_tests()\n```",
            Action("tool", "run_tests", ADD),
        ),
        # an action line inside the block ends it, whatever follows
        (
            f"```python\n{ADD}\n\nAction: run_tests\nFinal Answer: def add(a, b):\n    pass\n```",
            Action("tool", "run_tests", ADD),
        ),
        (
            "```python\nFinal Answer: def add(a, b):\n    return a + b\n```",
            Action("final", FINAL, ADD),
        ),
        (f"```python\n{ADD}\n```\n\nFinal Answer", Action("final", FINAL, ADD)),
        (f"```python\n{ADD}\n```\nFinal Answer:", Action("final", FINAL, ADD)),
        # an action marker inside a code fence does not count
        (
            "```python\ns = 'Action: run_tests'\n```\nAction: run_python\n```python\nprint(7)\n```",
            Action("tool", "run_python", "print(7)"),
        ),
        # nothing usable
        ("", Action("invalid", problem="the reply was empty")),
        ("  \n\t ", Action("invalid", problem="the reply was empty")),
        ("I would loop over the pairs.", Action("invalid", problem="no action was found in it")),
        ('```json\n{"a": 1}\n```', Action("invalid", problem="no action was found in it")),
        (
            "Action: write_file[x.py]",
            Action(
                "invalid", problem="unknown tool 'write_file'; the tools are run_python, run_tests"
            ),
        ),
    ],
)
def test_parse_coding_replies(reply: str, expected: Action) -> None:
    assert parse_action(reply, "coding", CODING) == expected


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Action: search[Eiffel Tower]", Action("tool", "search", "Eiffel Tower")),
        ("action : SEARCH [ tallest tower ]  ", Action("tool", "search", "tallest tower")),
        (
            "Thought: hm.\nAction 2: Search[Colorado orogeny]",
            Action("tool", "search", "Colorado orogeny"),
        ),
        ("search[the Seine]\nthen I will open it", Action("tool", "search", "the Seine")),
        ('Action: open("Pelé")', Action("tool", "open", "Pelé")),
        ("Action: open: Paris", Action("tool", "open", "Paris")),
        (
            'Action: search\nAction Input: "capital of France"',
            Action("tool", "search", "capital of France"),
        ),
        ("Action: search[a]\nAction: open[b]", Action("tool", "search", "a")),  # first wins
        ("search: cattle", Action("tool", "search", "cattle")),
        ("Open(Lyon)\nNote: it is a city", Action("tool", "open", "Lyon")),
        ("Note: I need more facts.", Action("invalid", problem="no action was found in it")),
        ("Final Answer: Paris\nI found it on the Paris page.", Action("final", FINAL, "Paris")),
        ("I am sure.\n**Final Answer:** *Paris*", Action("final", FINAL, "Paris")),
        ("ANSWER: 1889", Action("final", FINAL, "1889")),
        ("Action: finish[Paris]", Action("final", FINAL, "Paris")),
        ("Action: Final Answer: Rome", Action("final", FINAL, "Rome")),
        ("Final Answer:", Action("invalid", problem="the Final Answer was empty")),
        ("The answer is Paris.", Action("invalid", problem="no action was found in it")),
        ("items[0] is the answer", Action("invalid", problem="no action was found in it")),
        (
            "Action: run_python[1]",
            Action("invalid", problem="unknown tool 'run_python'; the tools are search, open"),
        ),
    ],
)
def test_parse_search_replies(reply: str, expected: Action) -> None:
    assert parse_action(reply, "search", SEARCH) == expected


def test_parse_actions_lists_every_action_in_order() -> None:
    reply = f"```python\n{ADD}\n```\nAction: run_tests\nFinal Answer"
    assert parse_actions(reply, "coding", CODING) == [
        Action("tool", "run_tests", ADD),
        Action("final", FINAL, ADD),
    ]
    assert parse_actions("Action: fly[x]\nno action here", "search", SEARCH) == []


# --- the loop -------------------------------------------------------------------------------


Reply = str | Exception | tuple[ToolCall, ...]


class FakeLLM:
    """Returns scripted replies in sequence (an exception in the list is raised, a tuple of
    tool calls is a reply with no text making them) and records every call's messages,
    max_tokens and stage, and the tools offered."""

    def __init__(
        self,
        replies: list[Reply],
        tokens: tuple[int, int] = (100, 10),
        cost: float = 0.001,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        self.replies = list(replies)
        self.tokens = tokens
        self.cost = cost
        self.on_call = on_call
        self.calls: list[tuple[list[Message], int, str]] = []
        self.tools: list[list[dict[str, Any]] | None] = []

    def __call__(
        self,
        agent: Agent,
        messages: list[Message],
        *,
        stage: str,
        max_tokens: int,
        logprobs: bool = False,
        top_logprobs: int = 5,
        timeout: float = 300.0,
        tools: list[dict[str, Any]] | None = None,
    ) -> LLMResult:
        self.calls.append(([dict(m) for m in messages], max_tokens, stage))
        self.tools.append(tools)
        if self.on_call:
            self.on_call()
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        if isinstance(reply, tuple):
            return LLMResult("", *self.tokens, None, self.cost, 0.5, agent.model, reply)
        return LLMResult(reply, *self.tokens, None, self.cost, 0.5, agent.model)


def fake_tools(log: list[tuple[str, str]] | None = None) -> Toolbox:
    def tool(name: str, argument: str) -> Tool:
        def run(value: str) -> str:
            if log is not None:
                log.append((name, value))
            return f"{name} saw {len(value)} chars"

        return Tool(name, argument, name, run)

    return Toolbox(
        "coding", {"run_python": tool("run_python", "code"), "run_tests": tool("run_tests", "code")}
    )


def spec(**limits: Any) -> TaskSpec:
    return TaskSpec(
        kind="coding",
        prompt=PROMPT,
        tests="def check(c):\n    assert c(1, 2) == 3\n",
        entry_point="add",
        limits=Limits(**limits),
    )


RUN_ADD = f"Action: run_python\n```python\n{ADD}\nprint(add(2, 3))\n```"


def test_coding_trace_runs_code_in_the_sandbox_then_answers() -> None:
    llm = FakeLLM([RUN_ADD, f"The output is right.\nFinal Answer:\n```python\n{ADD}\n```"])
    box = CodingTools(spec()).toolbox()
    outcome = run_agent(spec(), "1. write add 2. run it", AGENT, llm, 256, toolbox=box)
    assert outcome.stop_reason == "final_answer" and outcome.error is None
    assert outcome.answer == ADD
    roles = [s.role for s in outcome.steps]
    assert roles == ["system", "user", "assistant", "assistant"]
    run, final = outcome.steps[2], outcome.steps[3]
    assert run.tool_name == "run_python"
    assert run.tool_args == {"code": f"{ADD}\nprint(add(2, 3))"}
    assert run.observation == "exit code 0\nstdout:\n5"
    assert final.tool_name == FINAL and final.tool_args == {"answer": ADD}
    # The model saw the observation and its remaining budget in the second call.
    second = llm.calls[1][0]
    assert second[-2] == {"role": "assistant", "content": RUN_ADD}
    assert second[-1]["role"] == "user"
    assert (
        second[-1]["content"] == "Observation:\nexit code 0\nstdout:\n5\n\nYou have 7 steps left."
    )
    assert all(stage == "execute" for _, _, stage in llm.calls)


def test_prompts_hold_tools_format_and_plan_and_put_the_task_first() -> None:
    llm = FakeLLM([f"```python\n{ADD}\n```"])
    run_agent(spec(), "MY PLAN: add them", AGENT, llm, 256, toolbox=fake_tools())
    system, user = llm.calls[0][0]
    assert system["role"] == "system" and user["role"] == "user"
    assert "- run_python: run_python" in system["content"]
    assert '"Action: run_tests"' in system["content"] and '"Final Answer"' in system["content"]
    assert system["content"].endswith("YOUR PLAN (follow it):\nMY PLAN: add them")
    assert user["content"].startswith("TASK (coding):\n" + PROMPT)


def test_steps_record_tokens_costs_and_latency_and_the_outcome_sums_them() -> None:
    llm = FakeLLM(
        [RUN_ADD, "Action: run_tests", f"```python\n{ADD}\n```"], tokens=(120, 30), cost=0.25
    )
    outcome = run_agent(spec(max_cost_usd=5.0), "plan", AGENT, llm, 256, toolbox=fake_tools())
    model_steps = outcome.steps[2:]
    assert [(s.tokens_in, s.tokens_out, s.cost_usd) for s in model_steps] == [(120, 30, 0.25)] * 3
    assert all(s.latency_s >= 0 for s in model_steps)
    assert (outcome.tokens_in, outcome.tokens_out) == (360, 90)
    assert outcome.cost_usd == pytest.approx(0.75)
    # "Action: run_tests" alone tested the code written before.
    assert model_steps[1].tool_args == {"code": f"{ADD}\nprint(add(2, 3))"}


def test_unparsable_reply_gets_a_correction_and_counts_as_a_step() -> None:
    llm = FakeLLM(["I think I should add them.", f"Final Answer:\n```python\n{ADD}\n```"])
    outcome = run_agent(spec(), "plan", AGENT, llm, 256, toolbox=fake_tools())
    bad = outcome.steps[2]
    assert bad.tool_name is None and bad.content == "I think I should add them."
    assert bad.observation is not None
    assert bad.observation.startswith("Your reply could not be used: no action was found in it.")
    assert llm.calls[1][0][-1]["content"].startswith("Observation:\nYour reply could not be used")
    assert outcome.answer == ADD and len(llm.calls) == 2


def test_final_answer_without_code_keeps_the_last_program_or_asks_again() -> None:
    llm = FakeLLM(["Final Answer: it is done", RUN_ADD, "Final Answer: the function above."])
    outcome = run_agent(spec(), "plan", AGENT, llm, 256, toolbox=fake_tools())
    assert outcome.steps[2].observation is not None
    assert "the Final Answer held no code" in outcome.steps[2].observation
    assert outcome.answer == f"{ADD}\nprint(add(2, 3))"
    assert outcome.stop_reason == "final_answer"


def test_a_repeated_action_is_not_run_again_and_a_final_answer_after_it_wins() -> None:
    ran: list[tuple[str, str]] = []
    code_first = f"```python\n{ADD}\n```\nAction: run_tests"
    llm = FakeLLM([code_first, code_first, code_first + "\nFinal Answer"])
    outcome = run_agent(spec(), "plan", AGENT, llm, 64, toolbox=fake_tools(ran))
    assert ran == [("run_tests", ADD)]  # run once
    again, final = outcome.steps[3:]
    assert again.tool_name == "run_tests" and again.observation == (
        "You already ran run_tests on exactly this in step 1, so it was not run again. Its "
        "result was:\nrun_tests saw 31 chars\nChange your input, or reply with Final Answer."
    )
    assert final.tool_name == FINAL and outcome.answer == ADD
    assert outcome.stop_reason == "final_answer"


def test_run_tests_alone_again_and_again_is_a_repeat_of_the_last_program() -> None:
    ran: list[tuple[str, str]] = []
    task = TaskSpec(
        kind="coding",
        prompt="import math\n" + PROMPT,
        tests="assert add(1, 2) == 3",
        entry_point="add",
    )
    llm = FakeLLM([f"```python\n{ADD}\n```\nAction: run_tests", "Action: run_tests"])
    outcome = run_agent(task, "plan", AGENT, llm, 64, toolbox=fake_tools(ran))
    completed = f"import math\n{ADD}"  # the candidate: the code completed from the prompt
    assert ran == [("run_tests", ADD), ("run_tests", completed)]
    assert [s.tool_args for s in outcome.steps[4:6]] == [{"code": completed}] * 2
    assert all(
        (s.observation or "").startswith("You already ran run_tests on exactly this in step 2")
        for s in outcome.steps[4:-1]
    )
    assert outcome.stop_reason == "max_steps" and outcome.answer == completed


def test_repeat_stop_ends_a_trace_that_only_repeats_itself_keeping_its_candidate() -> None:
    code_first = f"```python\n{ADD}\n```\nAction: run_tests"
    llm = FakeLLM([code_first])  # the same reply forever, as a model stuck at temperature 0
    stuck = PromptStyle(repeat_stop=2)
    outcome = run_agent(
        spec(max_steps=10), "plan", AGENT, llm, 64, toolbox=fake_tools(), style=stuck
    )
    # one run, then two replies in a row that only repeat it
    assert outcome.stop_reason == "repeated_actions" and len(llm.calls) == 3
    assert outcome.answer == ADD
    assert outcome.steps[-1].content == (
        "stopped by repeated_actions: used 2 replies in a row that only repeated an action "
        "already run; kept the last candidate answer"
    )
    # off (the default): the same model runs on to its step limit
    outcome = run_agent(
        spec(max_steps=6), "plan", AGENT, FakeLLM([code_first]), 64, toolbox=fake_tools()
    )
    assert outcome.stop_reason == "max_steps"


def test_repeat_stop_counts_only_repeats_in_a_row() -> None:
    first = f"```python\n{ADD}\n```\nAction: run_tests"
    other = "Action: run_python\n```python\nprint(1)\n```"
    # repeat, new action, repeat, repeat: the new action resets the count
    llm = FakeLLM([first, first, other, first, first, first])
    style = PromptStyle(repeat_stop=2)
    outcome = run_agent(
        spec(max_steps=10), "plan", AGENT, llm, 64, toolbox=fake_tools(), style=style
    )
    assert outcome.stop_reason == "repeated_actions" and len(llm.calls) == 5


def test_after_a_repeated_action_the_next_new_one_counts() -> None:
    box = SearchTools(BM25Index.build(DOCS)).toolbox()
    question = TaskSpec(kind="search", prompt="Capital of France?")
    again = "Action: search[capital of France]\nAction: open[Paris]\nFinal Answer: Lyon"
    llm = FakeLLM(["Action: search[capital of France]", again, "Final Answer: Paris"])
    outcome = run_agent(question, "plan", AGENT, llm, 64, toolbox=box)
    assert [s.tool_name for s in outcome.steps[2:]] == ["search", "open", FINAL]
    assert outcome.steps[3].observation == "Paris\nParis is the capital of France."
    assert outcome.answer == "Paris"


@pytest.mark.parametrize(
    ("limits", "tokens", "cost", "calls", "reason"),
    [
        ({"max_steps": 2}, (100, 10), 0.001, 2, "max_steps"),
        ({"max_tokens": 250}, (100, 10), 0.001, 3, "max_tokens"),  # 110, 220, 330 ≥ 250
        ({"max_cost_usd": 1.0}, (100, 10), 0.4, 3, "max_cost_usd"),  # 0.4, 0.8, 1.2 ≥ 1
    ],
)
def test_each_limit_stops_the_trace_with_its_reason(
    limits: dict[str, Any], tokens: tuple[int, int], cost: float, calls: int, reason: str
) -> None:
    llm = FakeLLM([RUN_ADD], tokens=tokens, cost=cost)
    outcome = run_agent(spec(**limits), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert outcome.stop_reason == reason
    assert len(llm.calls) == calls
    assert outcome.steps[-1].role == "stop"
    assert outcome.steps[-1].content is not None
    assert outcome.steps[-1].content.startswith(f"stopped by {reason}: used ")
    assert outcome.steps[-1].content.endswith("kept the last candidate answer")
    # The best candidate so far: the last code that defined the entry point.
    assert outcome.answer == f"{ADD}\nprint(add(2, 3))"
    assert outcome.error is None


def test_max_tokens_also_caps_each_call_by_the_remaining_budget() -> None:
    llm = FakeLLM([RUN_ADD], tokens=(100, 10))
    run_agent(spec(max_tokens=250), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert [max_tokens for _, max_tokens, _ in llm.calls] == [64, 64, 30]


def test_max_seconds_is_checked_between_steps_on_the_injected_clock() -> None:
    now = [1000.0]

    def tick() -> None:
        now[0] += 10.0  # each model call takes ten (fake) seconds

    llm = FakeLLM([RUN_ADD], on_call=tick)
    outcome = run_agent(
        spec(max_seconds=25), "plan", AGENT, llm, 64, toolbox=fake_tools(), clock=lambda: now[0]
    )
    assert outcome.stop_reason == "max_seconds" and len(llm.calls) == 3
    assert outcome.steps[-1].content is not None
    assert "the 25 s wall-time limit" in outcome.steps[-1].content


def test_last_step_tells_the_model_to_answer() -> None:
    llm = FakeLLM([RUN_ADD])
    outcome = run_agent(spec(max_steps=2), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert llm.calls[1][0][-1]["content"].endswith(
        "This is your last step: reply with your Final Answer now."
    )
    assert outcome.stop_reason == "max_steps"


def test_a_limit_without_any_candidate_keeps_no_answer() -> None:
    llm = FakeLLM(["Action: run_python\n```python\nprint('hello')\n```"])
    outcome = run_agent(spec(max_steps=1), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "max_steps" and outcome.answer is None
    assert outcome.steps[-1].content == "stopped by max_steps: used 1 of 1 steps; kept no answer"


def test_transient_model_error_propagates_out_of_the_loop() -> None:
    error = TransientModelError("a", "fake/a", "503")
    llm = FakeLLM([RUN_ADD, error])
    with pytest.raises(TransientModelError) as raised:
        run_agent(spec(), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert raised.value is error


def test_permanent_model_error_is_recorded() -> None:
    first = FakeLLM([PermanentModelError("a", "fake/a", "bad request")])
    outcome = run_agent(spec(), "plan", AGENT, first, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "model_error" and outcome.answer is None
    assert outcome.error == "agent 'a' (fake/a): bad request"
    assert outcome.steps[-1].role == "error"
    # Mid-trace (e.g. the context window is full): the candidate is judged, not lost.
    later = FakeLLM([RUN_ADD, PermanentModelError("a", "fake/a", "context length exceeded")])
    outcome = run_agent(spec(), "plan", AGENT, later, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "model_error" and outcome.error is None
    assert outcome.answer == f"{ADD}\nprint(add(2, 3))"
    assert outcome.steps[-1].content == "agent 'a' (fake/a): context length exceeded"


def test_progress_hears_every_step_and_cannot_break_the_loop() -> None:
    heard: list[tuple[int, str | None]] = []

    def progress(step: int, tool: str | None) -> None:
        heard.append((step, tool))
        raise RuntimeError("flower is down")

    llm = FakeLLM([RUN_ADD, "hmm", f"```python\n{ADD}\n```"])
    outcome = run_agent(spec(), "plan", AGENT, llm, 64, toolbox=fake_tools(), progress=progress)
    assert heard == [(1, "run_python"), (2, None), (3, FINAL)]
    assert outcome.answer == ADD


def test_text_agents_are_offered_no_native_tools() -> None:
    llm = FakeLLM([f"```python\n{ADD}\n```"])
    run_agent(spec(), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert llm.tools == [None]


@pytest.mark.parametrize(
    "junk",
    [
        ["I am thinking.", "Still thinking.", "Hmm."],
        # a Final Answer with no code and no program run before counts as unusable too
        ["Final Answer: done", "I would loop.", "Final Answer: see above"],
    ],
)
def test_three_unusable_replies_in_a_row_stop_the_trace(junk: list[Reply]) -> None:
    llm = FakeLLM([*junk, f"```python\n{ADD}\n```"])
    outcome = run_agent(spec(max_steps=10), "plan", AGENT, llm, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "invalid_actions" and len(llm.calls) == 3
    assert outcome.answer is None and outcome.error is None
    assert outcome.steps[-1].content == (
        "stopped by invalid_actions: used 3 replies in a row without a usable action; "
        "kept no answer"
    )


def test_invalid_actions_guard_keeps_the_last_program_and_counts_only_runs_in_a_row() -> None:
    replies: list[Reply] = ["junk", RUN_ADD, "junk", "junk", "junk", "junk"]
    llm = FakeLLM(replies)
    outcome = run_agent(spec(max_steps=10), "plan", AGENT, llm, 64, toolbox=fake_tools())
    # The tool action after the first junk reply reset the count: 1 + 1 + 3 calls.
    assert outcome.stop_reason == "invalid_actions" and len(llm.calls) == 5
    assert outcome.answer == f"{ADD}\nprint(add(2, 3))"
    assert outcome.steps[-1].content is not None
    assert outcome.steps[-1].content.endswith("kept the last candidate answer")


def test_the_invalid_actions_limit_is_a_parameter() -> None:
    llm = FakeLLM(["junk"])
    outcome = run_agent(
        spec(max_steps=10), "plan", AGENT, llm, 64, toolbox=fake_tools(), max_invalid=5
    )
    assert outcome.stop_reason == "invalid_actions" and len(llm.calls) == 5
    assert MAX_INVALID_ACTIONS == 3


DOCS = [
    Document("Eiffel Tower", "Eiffel Tower", "The Eiffel Tower is in Paris. It opened in 1889."),
    Document("Paris", "Paris", "Paris is the capital of France."),
    Document("Lyon", "Lyon", "Lyon is a city in France."),
]


def test_search_trace_on_a_small_in_memory_backend() -> None:
    box = SearchTools(BM25Index.build(DOCS)).toolbox()
    question = TaskSpec(kind="search", prompt="When did the Eiffel Tower open?", answer="1889")
    llm = FakeLLM(
        [
            "Thought: search first.\nAction: search[Eiffel Tower opened]",
            "Action: open[Eiffel Tower]",
            "Final Answer: 1889",
        ]
    )
    outcome = run_agent(question, "search then open", AGENT, llm, 64, toolbox=box)
    assert outcome.answer == "1889" and outcome.stop_reason == "final_answer"
    search, open_ = outcome.steps[2], outcome.steps[3]
    assert search.tool_args == {"query": "Eiffel Tower opened"}
    assert search.observation is not None
    assert search.observation.startswith("1. Eiffel Tower: ")
    assert open_.tool_args == {"title": "Eiffel Tower"}
    assert open_.observation == "Eiffel Tower\nThe Eiffel Tower is in Paris. It opened in 1889."
    assert llm.calls[0][0][1]["content"].startswith("TASK (search):\nWhen did the Eiffel Tower")


def test_search_limit_keeps_the_last_free_text_answer() -> None:
    question = TaskSpec(kind="search", prompt="Capital?", limits=Limits(max_steps=2))
    llm = FakeLLM(["Action: search[capital]", "It is Paris."])
    box = SearchTools(BM25Index.build(DOCS)).toolbox()
    outcome = run_agent(question, "plan", AGENT, llm, 64, toolbox=box)
    assert outcome.stop_reason == "max_steps" and outcome.answer == "It is Paris."


# --- the executors and the scripted test double ---------------------------------------------


def scripted_llm(profile: str) -> LLMCall:
    """A model answering like the scripted provider, without going through litellm."""

    def call(
        agent: Agent,
        messages: list[Message],
        *,
        stage: str,
        max_tokens: int,
        logprobs: bool = False,
        top_logprobs: int = 5,
        timeout: float = 300.0,
        tools: list[dict[str, Any]] | None = None,
    ) -> LLMResult:
        reply = scripted_reply(profile, stage, messages)
        return LLMResult(reply.text, reply.prompt_tokens, len(reply.tokens), None, 0.0, 0.0, "s")

    return call


def test_executors_take_a_bare_scripted_fence_or_answer_line_as_final() -> None:
    task = f"Add.\n[[solution]]\n{ADD}\n[[/solution]]"
    coding = TaskSpec(kind="coding", prompt=task, tests="assert add(1, 2) == 3", entry_point="add")
    outcome = EXECUTORS["coding"](coding, "plan", AGENT, scripted_llm("small"), 64)
    assert outcome.answer == ADD and len(outcome.steps) == 3
    question = TaskSpec(kind="search", prompt="Capital?\n[[solution]]\nParis\n[[/solution]]")
    outcome = EXECUTORS["search"](question, "plan", AGENT, scripted_llm("small"), 64)
    assert outcome.answer == "Paris" and outcome.stop_reason == "final_answer"


def test_scripted_tools_directive_runs_tools_in_the_sandbox_before_answering() -> None:
    task = f"{PROMPT}[[scripted small.tools=2]]\n[[solution]]\n{ADD}\n[[/solution]]"
    coding = TaskSpec(kind="coding", prompt=task, tests="assert add(1, 2) == 3", entry_point="add")
    heard: list[tuple[int, str | None]] = []
    outcome = EXECUTORS["coding"](
        coding, "plan", AGENT, scripted_llm("small"), 64, progress=lambda n, t: heard.append((n, t))
    )
    assert heard == [(1, "run_python"), (2, "run_tests"), (3, FINAL)]
    steps = outcome.steps[2:]
    assert steps[0].observation == "exit code 0\nstdout:\nscripted check"
    # add(2, 3) == 5 is the prompt's one example.
    assert (
        steps[1].observation
        == "1 of 1 examples passed. Reply with Final Answer to submit this code."
    )
    assert outcome.answer == ADD
    # Another profile has no directive: it answers at once.
    assert len(EXECUTORS["coding"](coding, "plan", AGENT, scripted_llm("large"), 64).steps) == 3


def test_scripted_search_tool_action_is_a_search_for_the_question() -> None:
    messages = [
        {"role": "system", "content": "tools"},
        {"role": "user", "content": "TASK (search):\nWho built it?\n[[scripted small.tools=1]]"},
    ]
    first = scripted_reply("small", "execute", messages).text
    assert parse_action(first, "search", SEARCH) == Action("tool", "search", "Who built it?")
    messages += [
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Observation: x"},
    ]
    assert scripted_reply("small", "execute", messages).text == "ANSWER: pass"


# --- plan as guidance: a failing final answer goes back once -------------------------------

SUB = "def add(a, b):\n    return a - b"


def _final(code: str) -> str:
    return f"Final Answer:\n```python\n{code}\n```"


def test_guidance_sends_a_final_answer_that_fails_the_examples_back_once() -> None:
    llm = FakeLLM([_final(SUB), _final(ADD)])
    box = CodingTools(spec()).toolbox()
    style = PromptStyle(plan_mode="guidance")
    outcome = run_agent(spec(), "1. subtract", AGENT, llm, 256, toolbox=box, style=style)
    assert outcome.answer == ADD and outcome.stop_reason == "final_answer"
    checked, final = outcome.steps[2], outcome.steps[3]
    assert checked.tool_name == "run_tests" and checked.tool_args == {"code": SUB}
    assert checked.observation is not None and "fails the examples" in checked.observation
    assert "AssertionError" in checked.observation or "add(2, 3)" in checked.observation
    assert final.tool_name == FINAL and final.tool_args == {"answer": ADD}
    assert llm.calls[1][0][-1]["content"].startswith("Observation:\nYour Final Answer fails")


def test_guidance_revises_only_once_and_follow_mode_never_checks() -> None:
    box = CodingTools(spec()).toolbox()
    llm = FakeLLM([_final(SUB), _final(SUB), _final(ADD)])
    style = PromptStyle(plan_mode="guidance")
    outcome = run_agent(spec(), "plan", AGENT, llm, 256, toolbox=box, style=style)
    assert outcome.answer == SUB and len(llm.calls) == 2  # the second failing answer stands
    llm = FakeLLM([_final(SUB), _final(ADD)])
    outcome = run_agent(spec(), "plan", AGENT, llm, 256, toolbox=box)
    assert outcome.answer == SUB and len(llm.calls) == 1
    # A passing final answer, or a job without examples, is accepted as it is.
    llm = FakeLLM([_final(ADD)])
    assert run_agent(spec(), "p", AGENT, llm, 256, toolbox=box, style=style).answer == ADD
    bare = spec().model_copy(update={"prompt": "def add(a, b):\n    pass\n"})
    llm = FakeLLM([_final(SUB), _final(ADD)])
    tools = CodingTools(bare).toolbox()
    assert tools.check is None
    assert run_agent(bare, "p", AGENT, llm, 256, toolbox=tools, style=style).answer == SUB
