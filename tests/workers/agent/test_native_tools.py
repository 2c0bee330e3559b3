"""Tests of native function calling: the agent loop with tool calls (observations as ``tool``
messages, bad calls as error observations, the text fallback, the limits and guards), and the
tool calls of a litellm response, end to end through the scripted provider."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from sale.models.schemas import TaskSpec
from sale.workers.agent.loop import EXECUTORS, FINAL, Action, native_action, run_agent
from sale.workers.agent.tools import SearchTools, tool_schemas
from sale.workers.llm.provider import call_model
from sale.workers.llm.types import ToolCall
from sale.workers.prompts import PromptStyle
from sale.workers.search.index import BM25Index

from tests.workers.agent.test_loop import ADD, AGENT, DOCS, PROMPT, FakeLLM, fake_tools, spec

pytestmark = pytest.mark.timeout(120)

NATIVE = replace(AGENT, action_format="native")
SCRIPTED = replace(NATIVE, name="small", model="scripted/small")
FINAL_CODE = f"Here is my solution.\n```python\n{ADD}\n```"


def run_python(code: str, call_id: str = "call_1") -> ToolCall:
    return ToolCall(call_id, "run_python", json.dumps({"code": code}))


def test_native_tool_call_then_observation_then_final_answer() -> None:
    ran: list[tuple[str, str]] = []
    llm = FakeLLM([(run_python("print(1)"),), FINAL_CODE], tokens=(50, 5), cost=0.01)
    outcome = run_agent(spec(), "plan", NATIVE, llm, 64, toolbox=fake_tools(ran))
    assert outcome.stop_reason == "final_answer" and outcome.answer == ADD
    assert llm.tools[0] == fake_tools().schemas() and llm.tools[1] == llm.tools[0]
    assert ran == [("run_python", "print(1)")]
    call, final = outcome.steps[2:]
    # The same recorded shape as a text-format step.
    assert (call.role, call.content, call.tool_name) == ("assistant", "", "run_python")
    assert call.tool_args == {"code": "print(1)"}
    assert call.observation == "run_python saw 8 chars"
    assert (call.tokens_in, call.tokens_out, call.cost_usd) == (50, 5, 0.01)
    assert call.latency_s >= 0
    assert final.tool_name == FINAL and final.tool_args == {"answer": ADD}
    # The model saw its call and the result as a tool message answering it.
    second = llm.calls[1][0]
    assert second[-2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "run_python", "arguments": '{"code": "print(1)"}'},
            }
        ],
    }
    assert second[-1] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "Observation:\nrun_python saw 8 chars\n\nYou have 7 steps left.",
    }


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (ToolCall("c", "run_tests", '{"code": "x = 1"}'), Action("tool", "run_tests", "x = 1")),
        (ToolCall("c", "run_tests", "{}"), Action("tool", "run_tests", "")),  # the last code
        (ToolCall("c", "run_tests", ""), Action("tool", "run_tests", "")),
        (
            ToolCall("c", "run_python", '{"code": "print(1)"'),
            Action(
                "invalid",
                "run_python",
                '{"code": "print(1)"',
                "Error: the arguments of run_python are not valid JSON (Expecting ',' "
                "delimiter: line 1 column 20 (char 19)).",
            ),
        ),
        (
            ToolCall("c", "run_python", '["print(1)"]'),
            Action(
                "invalid",
                "run_python",
                '["print(1)"]',
                'Error: run_python takes one JSON object {"code": "<text>"}.',
            ),
        ),
        (
            ToolCall("c", "run_python", '{"code": 3}'),
            Action(
                "invalid",
                "run_python",
                '{"code": 3}',
                'Error: run_python takes one JSON object {"code": "<text>"}.',
            ),
        ),
        (
            ToolCall("c", "write_file", '{"path": "x"}'),
            Action(
                "invalid",
                "write_file",
                problem="Error: there is no tool 'write_file'; the tools are run_python, "
                "run_tests.",
            ),
        ),
    ],
)
def test_native_action_reads_a_tool_call(call: ToolCall, expected: Action) -> None:
    assert native_action(call, fake_tools()) == expected


def test_malformed_arguments_are_an_error_observation_the_model_sees() -> None:
    ran: list[tuple[str, str]] = []
    broken = ToolCall("call_7", "run_python", '{"code": "print(1)')
    llm = FakeLLM([(broken,), FINAL_CODE])
    outcome = run_agent(spec(), "plan", NATIVE, llm, 64, toolbox=fake_tools(ran))
    assert ran == [] and outcome.answer == ADD
    bad = outcome.steps[2]
    assert bad.tool_name == "run_python"
    assert bad.tool_args == {"arguments": '{"code": "print(1)'}
    assert bad.observation is not None
    assert bad.observation.startswith("Error: the arguments of run_python are not valid JSON")
    tool_message = llm.calls[1][0][-1]
    assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_7"
    assert bad.observation in tool_message["content"]


def test_unknown_tool_is_an_error_observation_and_the_next_call_still_runs() -> None:
    ran: list[tuple[str, str]] = []
    unknown = ToolCall("call_1", "write_file", '{"path": "a.py"}')
    llm = FakeLLM([(unknown, run_python("print(2)", "call_2")), FINAL_CODE], tokens=(40, 4))
    outcome = run_agent(spec(), "plan", NATIVE, llm, 64, toolbox=fake_tools(ran))
    assert ran == [("run_python", "print(2)")]
    bad, good = outcome.steps[2:4]
    assert bad.tool_name == "write_file"
    assert bad.observation == (
        "Error: there is no tool 'write_file'; the tools are run_python, run_tests."
    )
    # One model call, two recorded tool steps: the first carries the call's tokens.
    assert (bad.tokens_in, good.tokens_in, good.content) == (40, 0, None)
    assert good.tool_name == "run_python" and good.observation == "run_python saw 8 chars"
    answers = [m for m in llm.calls[1][0] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in answers] == ["call_1", "call_2"]
    assert outcome.answer == ADD and len(llm.calls) == 2


def test_bad_tool_calls_in_a_row_hit_the_invalid_actions_guard() -> None:
    llm = FakeLLM([(ToolCall("c", "fly", "{}"),)])
    outcome = run_agent(spec(max_steps=10), "plan", NATIVE, llm, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "invalid_actions" and len(llm.calls) == 3
    assert [s.tool_name for s in outcome.steps[2:5]] == ["fly"] * 3


def test_native_repeat_is_not_run_again() -> None:
    ran: list[tuple[str, str]] = []
    llm = FakeLLM([(run_python("print(1)"),), (run_python("print(1)", "call_2"),), FINAL_CODE])
    outcome = run_agent(spec(), "plan", NATIVE, llm, 64, toolbox=fake_tools(ran))
    assert ran == [("run_python", "print(1)")]
    assert outcome.steps[3].observation is not None
    assert outcome.steps[3].observation.startswith("You already ran run_python on exactly this")


def test_native_calls_that_only_repeat_hit_the_repeat_stop() -> None:
    llm = FakeLLM([(run_python("print(1)"),)])  # the same call forever
    style = PromptStyle(repeat_stop=2)
    outcome = run_agent(
        spec(max_steps=10), "plan", NATIVE, llm, 64, toolbox=fake_tools(), style=style
    )
    assert outcome.stop_reason == "repeated_actions" and len(llm.calls) == 3
    # a reply that repeats one call and makes a new one is not only a repeat: it resets the
    # count, so the stop comes after 4 calls, not 3
    mixed = (run_python("print(1)"), run_python("print(2)", "call_2"))
    llm = FakeLLM([(run_python("print(1)"),), mixed, (run_python("print(1)"),)])
    outcome = run_agent(
        spec(max_steps=10), "plan", NATIVE, llm, 64, toolbox=fake_tools(), style=style
    )
    assert outcome.stop_reason == "repeated_actions" and len(llm.calls) == 4


def test_native_limits_still_apply() -> None:
    llm = FakeLLM([(run_python(ADD),)])
    outcome = run_agent(spec(max_steps=2), "plan", NATIVE, llm, 64, toolbox=fake_tools())
    assert outcome.stop_reason == "max_steps" and len(llm.calls) == 2
    assert outcome.answer == ADD  # the last program run that defines the entry point


def test_text_reply_in_native_mode_goes_through_the_text_parser() -> None:
    ran: list[tuple[str, str]] = []
    text_action = f"```python\n{ADD}\n```\nAction: run_tests"
    llm = FakeLLM([text_action, "Final Answer"])
    outcome = run_agent(spec(), "plan", NATIVE, llm, 64, toolbox=fake_tools(ran))
    assert ran == [("run_tests", ADD)]
    assert llm.calls[1][0][-2:] == [
        {"role": "assistant", "content": text_action},
        {
            "role": "user",
            "content": "Observation:\nrun_tests saw 31 chars\n\nYou have 7 steps left.",
        },
    ]
    assert outcome.answer == ADD and outcome.stop_reason == "final_answer"


def test_a_native_reply_without_tool_calls_is_the_answer() -> None:
    box = SearchTools(BM25Index.build(DOCS)).toolbox()
    question = TaskSpec(kind="search", prompt="Capital of France?")
    llm = FakeLLM([(ToolCall("c1", "search", '{"query": "capital of France"}'),), "Paris"])
    outcome = run_agent(question, "plan", NATIVE, llm, 64, toolbox=box)
    assert outcome.steps[2].tool_args == {"query": "capital of France"}
    assert outcome.steps[2].observation is not None
    assert outcome.steps[2].observation.startswith("1. Paris: ")
    assert outcome.answer == "Paris" and outcome.stop_reason == "final_answer"
    # In text mode the same prose is no action.
    text = run_agent(question, "plan", AGENT, FakeLLM(["Paris"]), 64, toolbox=box)
    assert text.stop_reason == "invalid_actions" and text.answer == "Paris"


# --- through litellm: the scripted provider's native tool calls -----------------------------

TASK = f"{PROMPT}[[scripted small.tools=2]]\n[[solution]]\n{ADD}\n[[/solution]]"


def coding(task: str = TASK) -> TaskSpec:
    return TaskSpec(kind="coding", prompt=task, tests="assert add(1, 2) == 3", entry_point="add")


def test_call_model_returns_the_tool_calls_of_a_litellm_response() -> None:
    messages = [{"role": "user", "content": TASK}]
    result = call_model(
        SCRIPTED, messages, stage="execute", max_tokens=64, tools=tool_schemas("coding")
    )
    assert result.text == ""
    assert result.tool_calls == (
        ToolCall("call_0", "run_python", json.dumps({"code": f"{ADD}\nprint('scripted check')"})),
    )
    assert result.tokens_out > 0
    # No tools offered: the same scripted model writes a text action.
    plain = call_model(SCRIPTED, messages, stage="execute", max_tokens=64)
    assert plain.tool_calls == () and plain.text.startswith("Action: run_python")


def test_native_execution_end_to_end_through_litellm() -> None:
    outcome = EXECUTORS["coding"](coding(), "plan", SCRIPTED, call_model, 64)
    assert [s.tool_name for s in outcome.steps[2:]] == ["run_python", "run_tests", FINAL]
    assert [s.content for s in outcome.steps[2:4]] == ["", ""]  # native calls, no text
    assert outcome.steps[2].observation == "exit code 0\nstdout:\nscripted check"
    assert outcome.steps[3].observation == (
        "1 of 1 examples passed. Reply with Final Answer to submit this code."
    )
    assert outcome.answer == ADD and outcome.stop_reason == "final_answer"


@pytest.mark.parametrize(
    ("directive", "observation"),
    [
        ("text", "exit code 0\nstdout:\nscripted check"),  # a provider without tool support
        ("badjson", "Error: the arguments of run_python are not valid JSON"),
    ],
)
def test_scripted_native_directives(directive: str, observation: str) -> None:
    task = TASK.replace("small.tools=2", f"small.tools=1 small.native={directive}")
    outcome = EXECUTORS["coding"](coding(task), "plan", SCRIPTED, call_model, 64)
    first = outcome.steps[2]
    assert first.observation is not None and first.observation.startswith(observation)
    assert (first.content or "").startswith("Action:") == (directive == "text")
    assert outcome.answer == ADD and outcome.stop_reason == "final_answer"
