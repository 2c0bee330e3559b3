"""Execution: the winner runs its own plan. One executor per job kind, behind one interface.

This first version is a single model turn (the plan in the system prompt, the task as the user
message); the tool-using agent loops slot in behind the same ``Executor`` interface. The result
carries every step so the trace is stored whatever the executor does.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.schemas import TaskSpec
from workers.errors import ModelCallError, TransientModelError
from workers.llm import LLMCall
from workers.pool import Agent
from workers.prompts import render

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S | re.I)
_ANSWER = re.compile(r"^\s*ANSWER\s*:\s*(.+?)\s*$", re.M | re.I)


@dataclass
class Step:
    """One recorded step of a trace."""

    role: str
    content: str | None
    tool_name: str | None = None
    tool_args: dict[str, Any] | None = None
    observation: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0


@dataclass
class ExecutionOutcome:
    """What an executor produced."""

    answer: str | None
    steps: list[Step] = field(default_factory=list)
    stop_reason: str = "final_answer"
    error: str | None = None

    @property
    def tokens_in(self) -> int:
        """Input tokens over all steps."""
        return sum(s.tokens_in for s in self.steps)

    @property
    def tokens_out(self) -> int:
        """Output tokens over all steps."""
        return sum(s.tokens_out for s in self.steps)

    @property
    def cost_usd(self) -> float:
        """US$ over all steps."""
        return sum(s.cost_usd for s in self.steps)


class Executor(Protocol):
    """Runs a plan for a job; never raises for a model failure (it records it)."""

    def __call__(
        self, spec: TaskSpec, plan: str, agent: Agent, llm: LLMCall, max_tokens: int
    ) -> ExecutionOutcome: ...


def extract_code(reply: str, spec: TaskSpec) -> str:
    """The program to test: the last fenced code block (else the reply), completed from the
    prompt when the model wrote only a function body or left out the prompt's imports."""
    blocks = _FENCE.findall(reply)
    code = max(blocks, key=len) if blocks else reply
    code = code.strip("\n")
    if spec.entry_point and re.search(rf"^\s*def\s+{re.escape(spec.entry_point)}\s*\(", code, re.M):
        imports = [
            line
            for line in spec.prompt.splitlines()
            if re.match(r"^(from\s+\S+\s+import\s|import\s)", line)
        ]
        return "\n".join([*imports, code]) if imports else code
    if spec.entry_point:
        # A bare body continues the prompt, as in HumanEval's completion convention.
        return spec.prompt + code
    return code


def extract_answer(reply: str) -> str:
    """The short answer of a search reply: the ANSWER: line, else the last non-empty line."""
    found = _ANSWER.findall(reply)
    if found:
        return str(found[-1]).strip()
    lines = [ln.strip() for ln in reply.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _single_turn(
    spec: TaskSpec, plan: str, agent: Agent, llm: LLMCall, max_tokens: int
) -> tuple[ExecutionOutcome, str | None]:
    system = render("execute_system", kind=spec.kind, plan=plan)
    user = render(f"execute_{spec.kind}", prompt=spec.prompt)
    outcome = ExecutionOutcome(answer=None)
    outcome.steps.append(Step(role="system", content=system))
    outcome.steps.append(Step(role="user", content=user))
    started = time.perf_counter()
    try:
        result = llm(
            agent,
            [{"role": "system", "content": system}, {"role": "user", "content": user}],
            stage="execute",
            max_tokens=max_tokens,
        )
    except TransientModelError:
        raise  # the task layer retries the whole execution
    except ModelCallError as exc:
        outcome.steps.append(
            Step(role="error", content=str(exc), latency_s=time.perf_counter() - started)
        )
        outcome.stop_reason = "model_error"
        outcome.error = str(exc)
        return outcome, None
    outcome.steps.append(
        Step(
            role="assistant",
            content=result.text,
            tokens_in=result.tokens_in,
            tokens_out=result.tokens_out,
            cost_usd=result.cost_usd,
            latency_s=result.latency_s,
        )
    )
    return outcome, result.text


def execute_coding(
    spec: TaskSpec, plan: str, agent: Agent, llm: LLMCall, max_tokens: int
) -> ExecutionOutcome:
    """Single-turn coding executor: the answer is the program."""
    outcome, reply = _single_turn(spec, plan, agent, llm, max_tokens)
    if reply is not None:
        outcome.answer = extract_code(reply, spec)
    return outcome


def execute_search(
    spec: TaskSpec, plan: str, agent: Agent, llm: LLMCall, max_tokens: int
) -> ExecutionOutcome:
    """Single-turn search executor (no tools yet): the answer is the ANSWER: line."""
    outcome, reply = _single_turn(spec, plan, agent, llm, max_tokens)
    if reply is not None:
        outcome.answer = extract_answer(reply)
    return outcome


EXECUTORS: dict[str, Executor] = {"coding": execute_coding, "search": execute_search}
