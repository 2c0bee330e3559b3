"""The agent loop: the winner executes its own plan with the tools of the job's kind.

The system prompt holds the tools, the action format and the awarded plan; the user message
starts with the task text. Each step calls the model (stage ``execute``), parses one action,
runs the tool and sends the observation back, until a final answer or a limit of the job's spec:
steps (model calls), tokens (in + out summed over steps), wall seconds (``time.monotonic``,
checked between steps) and US$, and, of the loop itself, ``max_invalid`` replies in a row with
no usable action and (``PromptStyle.repeat_stop``, off by default) replies in a row that only
repeat an action already run (``repeated_actions``). A hit limit becomes the outcome's
``stop_reason`` and a recorded ``stop`` step, and the answer is the best candidate so far (the
last program run that defines the entry point; for search, the last free-text answer). Small
local models do not emit native tool calls reliably, so the default action format is text, read
by :func:`parse_action`: strict about what counts as an action, forgiving about order, case,
markdown and prose. An agent whose pool entry says ``action_format = "native"`` is also offered
the tools as OpenAI function schemas: each tool call it makes is run (a bad one gets an error
observation) and answered with a ``tool`` message, and a reply without tool calls goes through
the text parser, where anything that is no action is its final answer. An unreadable reply costs
a step and gets a short correction; an exact repeat of an earlier tool call is not run again.
With the plan as guidance (``plan_mode = "guidance"``), a coding job's final answer is first run
on the task's own examples (never the hidden tests); if it fails them it goes back to the agent
once, with what failed, and its next final answer is accepted. Transient model errors propagate
(Celery retries the execution); other model errors are recorded.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import textwrap
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from sale.broker.pool import Agent
from sale.models.schemas import TaskSpec
from sale.workers.agent.outcome import (
    ExecutionOutcome,
    Executor,
    Step,
    extract_answer,
    extract_code,
)
from sale.workers.agent.tools import CODE_TOOLS, Toolbox, make_toolbox
from sale.workers.llm.types import LLMCall, Message, ToolCall
from sale.workers.prompts import (
    DEFAULT_STYLE,
    PromptStyle,
    plan_section,
    render,
    task_block,
    task_first,
)

from sale.errors import JobStoppedError, ModelCallError, TransientModelError

log = logging.getLogger(__name__)

FINAL = "final_answer"
MAX_INVALID_ACTIONS = 3
"""Consecutive replies without a usable action that stop a trace (``invalid_actions``): a
model that cannot follow the format would otherwise spend its whole token budget."""
GUIDANCE_REVISIONS = 1
"""With ``plan_mode = "guidance"``: how many final answers that fail the task's own examples
go back to the agent (with what failed) before one is accepted as it is."""
Progress = Callable[[int, str | None], None]
"""Called after each step with (1-based step number, tool name or ``final_answer`` or None)."""

_FENCE = re.compile(r"```(?P<lang>[\w+.-]*)[ \t]*\n?(?P<body>.*?)(?:```|\Z)", re.S)
_PYTHON_LANGS = frozenset({"", "python", "py", "python3", "py3"})
_MARKER = re.compile(
    r"(?P<final>\bfinal[ _]*answer[*_ \t]*:|^[ \t]*[*_]*final[ _]*answer[*_ \t]*$"
    r"|^[ \t]*answer[*_ \t]*:)"
    r"|(?P<action>\baction(?:[ \t]*\d+)?[*_ \t]*:[*_ \t]*`?(?P<name>[A-Za-z_][\w-]*)?)"
    r"|(?P<observation>^[ \t]*observation[ \t]*\d*[ \t]*:)"
    r"|(?P<bare>^[ \t]*(?P<bare_name>[A-Za-z_]\w*)[ \t]*[\[(:])",
    re.I | re.M,
)
# An action line written inside a code block, at its left margin (maybe commented out). Only the
# names the prompt shows count: a line such as `action: str` is a Python annotation.
_INNER_MARKER = re.compile(
    r"^#?[ \t]*(?:action[ \t]*:[ \t]*run_(?:python|tests)\b|run_(?:python|tests)\(\)"
    r"|final[ _]*answer\b)",
    re.I,
)
_ACTION_INPUT = re.compile(r"^[ \t]*action[ \t]+input[*_ \t]*:[ \t]*", re.I | re.M)
_CODE_START = re.compile(r"^(?:async[ \t]+def |def |class |import |from \S+ import |@)", re.M)
_ALIASES = {
    "python": "run_python", "run": "run_python", "run_code": "run_python", "exec": "run_python",
    "execute": "run_python", "python_repl": "run_python", "code": "run_python",
    "test": "run_tests", "tests": "run_tests", "run_test": "run_tests", "check": "run_tests",
    "search_wiki": "search", "wiki": "search", "wikipedia": "search", "lookup": "search",
    "open_page": "open", "open_document": "open", "open_doc": "open", "read": "open",
    "final": FINAL, "finish": FINAL, "answer": FINAL, "submit": FINAL, "final_answer": FINAL,
}  # fmt: skip


@dataclass(frozen=True)
class Action:
    """What a reply asks for: a tool call, a final answer, or nothing usable (and why)."""

    kind: Literal["tool", "final", "invalid"]
    name: str | None = None
    argument: str = ""
    problem: str | None = None


def _canonical(raw: str) -> str:
    name = raw.strip("`*_ ").lower().replace("-", "_")
    return _ALIASES.get(name, name)


def _unquote(text: str) -> str:
    return text.strip().strip("\"'`").strip()


def _inline(line: str) -> str:
    """The argument written on the action's own line: ``[x]``, ``(x)``, ``: x`` or ``x``."""
    s = line.strip().lstrip(":=").strip()
    for open_, close in ("[]", "()"):
        if s.startswith(open_):
            end = s.rfind(close)
            return _unquote(s[1:end] if end > 0 else s[1:])
    return _unquote(s)


def _first_line(text: str) -> str:
    return next((ln.strip() for ln in text.splitlines() if ln.strip()), "")


def code_in(text: str, *, any_language: bool = True) -> str:
    """The code of a reply: its longest fenced block (only python or unlabelled ones unless
    ``any_language``), else the text from its first line that starts like Python code."""
    blocks = [
        m["body"]
        for m in _FENCE.finditer(text)
        if any_language or m["lang"].lower() in _PYTHON_LANGS
    ]
    if blocks:
        return max(blocks, key=len).strip("\n")
    start = _CODE_START.search(text)
    return text[start.start() :].strip("\n") if start else ""


def _argument(region: str, code: bool) -> str:
    line, _, after = region.partition("\n")
    given = _ACTION_INPUT.search(after)
    if code:
        fence = _FENCE.search(region)
        if fence:
            return fence["body"].strip("\n")
        if _inline(line):
            return _inline(line)
        body = after[given.end() :] if given else after
        return textwrap.dedent(body).strip("\n")
    if _inline(line):
        return _inline(line)
    return _unquote(_first_line(after[given.end() :] if given else after))


def _fence_before(text: str, position: int) -> str:
    blocks = list(_FENCE.finditer(text[:position]))
    return blocks[-1]["body"].strip("\n") if blocks else ""


def _final(region: str, kind: str, code_before: str = "") -> Action:
    if kind == "coding":
        return Action("final", FINAL, code_in(region.strip()) or code_before)
    answer = _first_line(region)
    if answer.startswith("[") and answer.endswith("]"):
        answer = answer[1:-1]
    answer = _unquote(answer.strip("*_ "))
    if not answer:
        return Action("invalid", problem="the Final Answer was empty")
    return Action("final", FINAL, answer)


def _lift_markers(text: str) -> str:
    """End a code block at the first action line written inside it (``# Action: run_tests``,
    ``run_tests()``, ``Final Answer: ...``, a habit of small coder models): that line and the
    rest of the block count as written after it."""

    def lift(m: re.Match[str]) -> str:
        lines = m["body"].split("\n")
        cut = next((i for i, line in enumerate(lines) if _INNER_MARKER.match(line)), None)
        if cut is None or not m.group(0).endswith("```"):
            return m.group(0)
        body = "\n".join(lines[:cut]).strip("\n")
        tail = "\n".join(
            line.lstrip("#").strip() if _INNER_MARKER.match(line) else line for line in lines[cut:]
        ).rstrip()
        return (f"```{m['lang']}\n{body}\n```\n" if body.strip() else "") + tail

    return _FENCE.sub(lift, text)


def parse_actions(reply: str, kind: str, tools: Collection[str]) -> list[Action]:
    """Every action written in ``reply``, in order, each read as :func:`parse_action` reads
    the first; names that are no tool are left out."""
    return _scan(_lift_markers(reply.strip()), kind, tools)[0]


def _scan(text: str, kind: str, tools: Collection[str]) -> tuple[list[Action], str | None]:
    fences = [m.span() for m in _FENCE.finditer(text)]
    marks = []
    for m in _MARKER.finditer(text):
        if any(a <= m.start() < b for a, b in fences):
            continue
        name = _canonical(m["name"] or m["bare_name"] or "")
        if m["bare"] and name not in tools and name != FINAL:
            continue  # a line like `items[0]` or `Note:` names no tool: it is prose
        marks.append((m, name))
    actions: list[Action] = []
    unknown: str | None = None
    for i, (m, name) in enumerate(marks):
        end = marks[i + 1][0].start() if i + 1 < len(marks) else len(text)
        start = m.end() - 1 if m["bare"] else m.end()
        region = text[start:end]
        if m["observation"]:
            continue  # it only ends the region of the action before it
        if m["final"] or name == FINAL:
            if (m["name"] or "").lower() == "final":
                region = re.sub(r"^[ \t]*answer[*_ \t]*:?", "", region, flags=re.I)
            if not m["final"]:
                region = _inline(region.partition("\n")[0]) or region
            actions.append(_final(region, kind, _fence_before(text, m.start())))
        elif name in tools:
            argument = _argument(region, name in CODE_TOOLS)
            if name in CODE_TOOLS and not argument.strip():
                argument = _fence_before(text, m.start())  # the code came before its action
            actions.append(Action("tool", name, argument))
        else:
            unknown = unknown or (m["name"] or "nothing")
    return actions, unknown


def parse_action(reply: str, kind: str, tools: Collection[str]) -> Action:
    """The first action in ``reply``; ``tools`` are the tool names of the job's kind.

    Accepted: ``Action: NAME`` followed by a fenced block (code tools) or an argument in
    brackets, parentheses, after a colon, on an ``Action Input:`` line or on the next line;
    ``NAME[arg]``, ``NAME(arg)`` or ``NAME: arg`` at the start of a line; ``Final Answer: ...``
    (also ``ANSWER:`` at the start of a line, ``Action: finish[...]``, a line holding only
    ``Final Answer``). Case, markdown emphasis and prose around are ignored; markers inside
    code fences do not count. A code action or a coding Final Answer with no code after it
    takes the fenced block just before it; an action line inside a fenced block ends the
    block. For coding, a reply with no action but a python (or unlabelled) fence,
    or a line starting like a definition, is the final code.
    """
    text = _lift_markers(reply.strip())
    if not text:
        return Action("invalid", problem="the reply was empty")
    actions, unknown = _scan(text, kind, tools)
    if actions:
        return actions[0]
    if kind == "coding":
        code = code_in(text, any_language=False)
        if code:
            return Action("final", FINAL, code)
    if unknown is not None:
        return Action(
            "invalid", problem=f"unknown tool {unknown!r}; the tools are {', '.join(tools)}"
        )
    return Action("invalid", problem="no action was found in it")


# --- the loop -------------------------------------------------------------------------------


def _is_code(text: str) -> bool:
    try:
        tree = ast.parse(textwrap.dedent(text))
    except SyntaxError:
        return False
    return any(not isinstance(node, ast.Expr) for node in tree.body)


class _Candidate:
    """The best answer so far, used when a limit stops the trace."""

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec
        self.value: str | None = None

    def saw_code(self, code: str) -> None:
        entry = self.spec.entry_point
        if entry is None or re.search(
            rf"^\s*(?:async\s+)?def\s+{re.escape(entry)}\s*\(", code, re.M
        ):
            self.value = extract_code(code, self.spec)

    def saw_prose(self, reply: str) -> None:
        if self.spec.kind == "search" and reply.strip():
            self.value = extract_answer(reply)


def _limit_hit(spec: TaskSpec, steps: int, tokens: int, cost: float, elapsed: float) -> str | None:
    """The first limit reached, named after its field of ``Limits``."""
    limits = spec.limits
    for reason, used, limit in (
        ("max_steps", steps, limits.max_steps),
        ("max_tokens", tokens, limits.max_tokens),
        ("max_cost_usd", cost, limits.max_cost_usd),
        ("max_seconds", elapsed, limits.max_seconds),
    ):
        if used >= limit:
            return reason
    return None


def _budget_note(steps_left: int) -> str:
    if steps_left <= 1:
        return "This is your last step: reply with your Final Answer now."
    return f"You have {steps_left} steps left."


def run_agent(
    spec: TaskSpec,
    plan: str,
    agent: Agent,
    llm: LLMCall,
    max_tokens: int,
    *,
    toolbox: Toolbox | None = None,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    max_invalid: int = MAX_INVALID_ACTIONS,
    style: PromptStyle = DEFAULT_STYLE,
) -> ExecutionOutcome:
    """Run ``agent`` on ``spec`` following ``plan`` until a final answer or a limit.

    ``max_tokens`` caps each model call's output (and never exceeds the job's remaining token
    budget); ``max_invalid`` consecutive replies without a usable action stop the trace
    (``invalid_actions``); ``style`` lays out the prompts (task first, plan as guidance).
    Raises TransientModelError for the caller to retry; records everything else.
    """
    tools = toolbox or make_toolbox(spec)
    outcome = ExecutionOutcome(answer=None)
    section = plan_section(spec.kind, plan, style)
    system = render(f"agent_system_{spec.kind}", tools=tools.describe(), plan_section=section)
    user = render(f"agent_task_{spec.kind}", prompt=spec.prompt)
    if style.task_first:
        system, user = task_first(system, user, task_block(spec.kind, spec.prompt))
    messages: list[Message] = [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
    ]
    outcome.steps += [Step(role="system", content=system), Step(role="user", content=user)]
    schemas = tools.schemas() if agent.action_format == "native" else None
    candidate = _Candidate(spec)
    seen: dict[tuple[str | None, str], tuple[int, str]] = {}  # (tool, argument) -> step, result
    started = clock()
    n = invalid = repeats = 0  # replies in a row without a usable action / only repeating one
    # Plan as guidance: a final answer that fails the checks the agent may see (a coding job's
    # examples) goes back to it once, with what failed, before it is accepted.
    revise = GUIDANCE_REVISIONS if style.plan_mode == "guidance" else 0
    while True:
        used = outcome.tokens_in + outcome.tokens_out
        hit = "invalid_actions" if invalid >= max_invalid else None
        if style.repeat_stop and repeats >= style.repeat_stop:
            hit = "repeated_actions"
        hit = hit or _limit_hit(spec, n, used, outcome.cost_usd, clock() - started)
        if hit is not None:
            outcome.stop_reason = hit
            outcome.answer = candidate.value
            text = _stop_text(hit, spec, n, outcome, invalid, repeats)
            outcome.steps.append(Step(role="stop", content=text))
            log.info("execution of %s stopped: %s after %d steps", spec.name, hit, n)
            return outcome
        remaining = spec.limits.max_tokens - used
        call_started = time.perf_counter()
        try:
            limit = min(max_tokens, remaining)
            if schemas:
                result = llm(agent, messages, stage="execute", max_tokens=limit, tools=schemas)
            else:  # callers' model functions that predate native tools keep working
                result = llm(agent, messages, stage="execute", max_tokens=limit)
        except TransientModelError as exc:
            # The task layer retries the whole execution; the calls already made were paid for.
            exc.paid = {
                "calls": n,
                "tokens_in": outcome.tokens_in,
                "tokens_out": outcome.tokens_out,
                "cost_usd": outcome.cost_usd,
            }
            raise
        except ModelCallError as exc:
            latency = time.perf_counter() - call_started
            outcome.steps.append(Step(role="error", content=str(exc), latency_s=latency))
            # A refused call (a cancelled job, its budget) is no fault of the model.
            outcome.stop_reason = (
                "job_stopped" if isinstance(exc, JobStoppedError) else "model_error"
            )
            outcome.answer = candidate.value
            if outcome.answer is None:  # nothing to judge: the execution failed
                outcome.error = str(exc)
            return outcome
        n += 1
        step = Step(
            role="assistant",
            content=result.text,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost_usd=result.cost_usd,
        )
        budget = _budget_note(spec.limits.max_steps - n)
        if result.tool_calls and schemas:
            steps, repeated = _native_calls(result.tool_calls, step, tools, candidate, seen, n)
            step.latency_s = time.perf_counter() - call_started
            outcome.steps += steps
            invalid = invalid + 1 if all(s.tool_name not in tools.tools for s in steps) else 0
            repeats = repeats + 1 if repeated else 0
            messages.append(_assistant_calls(result.text, result.tool_calls))
            for call, done in zip(result.tool_calls, steps, strict=True):
                observation = render(
                    "agent_observation", observation=done.observation, budget=budget
                )
                messages.append({"role": "tool", "tool_call_id": call.id, "content": observation})
            _report(progress, n, steps[-1].tool_name)
            continue
        # Text mode, or a native agent that answered in text (its provider may not take tools).
        action = parse_action(result.text, spec.kind, tools.tools)
        if action.kind == "tool" and (action.name, action.argument) in seen:
            # A repeat teaches nothing: the first new action written after it is the intent.
            later = parse_actions(result.text, spec.kind, tools.tools)
            action = next((a for a in later if (a.name, a.argument) not in seen), action)
        if action.kind == "invalid" and schemas and result.text.strip():
            # Natively, a reply without tool calls is the answer.
            action = _final(result.text.strip(), spec.kind)
        final: str | None = action.argument if action.kind == "final" else None
        if final is not None and spec.kind == "coding":
            final = extract_code(final, spec) if final and _is_code(final) else candidate.value
            if final is None:
                action = Action("invalid", problem="the Final Answer held no code")
        rejected = None  # guidance: what the agent's own checks found wrong with its answer
        if final is not None and revise and tools.check is not None:
            passed, report = tools.check(final)
            rejected = None if passed else report
        if final is not None and rejected is None:
            outcome.answer = final
            step.tool_name, step.tool_args = FINAL, {"answer": final}
            step.latency_s = time.perf_counter() - call_started
            outcome.steps.append(step)
            _report(progress, n, FINAL)
            return outcome
        if final is not None and rejected is not None:
            # The checks outrank the plan: the answer goes back once, as a run of run_tests.
            revise -= 1
            candidate.value = final
            step.tool_name, step.tool_args = "run_tests", {"code": final}
            step.observation = render(f"agent_revise_{spec.kind}", report=rejected)
            seen[("run_tests", final)] = (n, step.observation)
            repeats = 0
        else:
            repeated = _act(action, step, tools, candidate, seen, n)
            invalid = invalid + 1 if action.kind == "invalid" else 0
            repeats = repeats + 1 if repeated else 0
        step.latency_s = time.perf_counter() - call_started
        outcome.steps.append(step)
        observation = render("agent_observation", observation=step.observation, budget=budget)
        messages.append({"role": "assistant", "content": result.text})
        messages.append({"role": "user", "content": observation})
        _report(progress, n, step.tool_name)


def native_action(call: ToolCall, tools: Toolbox) -> Action:
    """The action a native tool call asks for: its tool and its one string argument, or
    ``invalid`` (unknown tool, arguments that are no JSON object, a non-string argument)."""
    tool = tools.tools.get(call.name)
    if tool is None:
        return Action("invalid", call.name, problem=tools.call(call.name, ""))
    try:
        arguments = json.loads(call.arguments or "{}")
    except json.JSONDecodeError as exc:
        problem = f"the arguments of {call.name} are not valid JSON ({exc})"
        return Action("invalid", call.name, call.arguments, f"Error: {problem}.")
    value = arguments.get(tool.argument, "") if isinstance(arguments, dict) else None
    if not isinstance(value, str):
        problem = f'{call.name} takes one JSON object {{"{tool.argument}": "<text>"}}'
        return Action("invalid", call.name, call.arguments, f"Error: {problem}.")
    return Action("tool", call.name, value)


def _native_calls(
    calls: tuple[ToolCall, ...],
    first: Step,
    tools: Toolbox,
    candidate: _Candidate,
    seen: dict[tuple[str | None, str], tuple[int, str]],
    number: int,
) -> tuple[list[Step], bool]:
    """Run the native tool calls of one reply: one recorded step each, the first being the
    reply's own (its tokens, cost and latency); a bad call's error is its observation. Also
    returns whether every call only repeated an action already run."""
    steps = []
    repeated = bool(calls)
    for i, call in enumerate(calls):
        step = first if i == 0 else Step(role="assistant", content=None)
        action = native_action(call, tools)
        if action.kind == "tool":
            repeated = _act(action, step, tools, candidate, seen, number) and repeated
        else:
            repeated = False
            step.tool_name = call.name[:64] or None  # the column's width; the name is the model's
            step.tool_args = {"arguments": call.arguments}
            step.observation = action.problem
        steps.append(step)
    return steps, repeated


def _assistant_calls(text: str, calls: tuple[ToolCall, ...]) -> Message:
    return {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls
        ],
    }


def _act(
    action: Action,
    step: Step,
    tools: Toolbox,
    candidate: _Candidate,
    seen: dict[tuple[str | None, str], tuple[int, str]],
    number: int,
) -> bool:
    """Run a tool action (or answer an unusable reply with a correction) into ``step``;
    returns whether the action only repeated one already run (answered from ``seen``)."""
    if action.kind == "tool" and action.name is not None:
        argument = action.argument
        if action.name == "run_tests" and not argument.strip() and candidate.value:
            argument = candidate.value  # "Action: run_tests" alone tests the last code
        step.tool_name = action.name
        step.tool_args = {tools.tools[action.name].argument: argument}
        earlier = seen.get((action.name, argument))
        if earlier is not None:
            step.observation = render(
                "agent_repeat", tool=action.name, step=earlier[0], observation=earlier[1]
            )
            return True
        step.observation = tools.call(action.name, argument)
        seen[(action.name, argument)] = (number, step.observation)
        if action.name in CODE_TOOLS and argument != candidate.value:
            # Not again for the candidate itself: completing it from the prompt once more would
            # add the prompt's imports again, and the repeat guard would never see a repeat.
            candidate.saw_code(argument)
        return False
    candidate.saw_prose(step.content or "")
    step.observation = render(
        f"agent_correction_{tools.kind}", problem=action.problem or "no action"
    )
    return False


def _stop_text(
    reason: str,
    spec: TaskSpec,
    steps: int,
    outcome: ExecutionOutcome,
    invalid: int = 0,
    repeats: int = 0,
) -> str:
    limits = spec.limits
    used = {
        "max_steps": f"{steps} of {limits.max_steps} steps",
        "max_tokens": f"{outcome.tokens_in + outcome.tokens_out} of {limits.max_tokens} tokens",
        "max_cost_usd": f"US${outcome.cost_usd:.6f} of US${limits.max_cost_usd:.6f}",
        "max_seconds": f"the {limits.max_seconds:g} s wall-time limit",
        "invalid_actions": f"{invalid} replies in a row without a usable action",
        "repeated_actions": f"{repeats} replies in a row that only repeated an action already run",
    }[reason]
    kept = "the last candidate answer" if outcome.answer is not None else "no answer"
    return f"stopped by {reason}: used {used}; kept {kept}"


def _report(progress: Progress | None, step: int, tool: str | None) -> None:
    if progress is None:
        return
    try:
        progress(step, tool)
    except Exception:  # boundary: a failing progress report must not end the execution
        log.exception("progress callback failed at step %d", step)


def execute_coding(
    spec: TaskSpec,
    plan: str,
    agent: Agent,
    llm: LLMCall,
    max_tokens: int,
    *,
    progress: Callable[[int, str | None], None] | None = None,
    style: PromptStyle = DEFAULT_STYLE,
) -> ExecutionOutcome:
    """Coding executor: the agent loop with ``run_python`` and ``run_tests``; the answer is
    the program."""
    return run_agent(spec, plan, agent, llm, max_tokens, progress=progress, style=style)


def execute_search(
    spec: TaskSpec,
    plan: str,
    agent: Agent,
    llm: LLMCall,
    max_tokens: int,
    *,
    progress: Callable[[int, str | None], None] | None = None,
    style: PromptStyle = DEFAULT_STYLE,
) -> ExecutionOutcome:
    """Search executor: the agent loop with ``search`` and ``open``; the answer is short."""
    return run_agent(spec, plan, agent, llm, max_tokens, progress=progress, style=style)


EXECUTORS: dict[str, Executor] = {"coding": execute_coding, "search": execute_search}
