"""What an execution produces: the recorded ``Step`` and ``ExecutionOutcome``, the
``Executor`` interface the executing stage calls, and the answer extractors shared by the
loop, the tools and the verdict. The executors themselves (one per job kind, both the agent
loop) are in :mod:`sale.workers.agent.loop`. The result carries every step so the trace is
stored whatever the executor does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sale.broker.pool import Agent
from sale.models.schemas import TaskSpec
from sale.workers.llm.types import LLMCall
from sale.workers.prompts import DEFAULT_STYLE, PromptStyle

_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.S | re.I)
# Small models write the next tool call into the final code block ("# Action: run_tests" then
# "run_tests()"); such top-level lines name agent tools, not program code, and would raise
# NameError when the program runs.
_TOOL_LINE = re.compile(
    r"^(?:#\s*)?(?:Action\s*:.*|Final Answer\s*:?\s*|(?:run_tests|run_python)\s*\(.*\)\s*)$",
    re.M | re.I,
)
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
    """Runs a plan for a job; raises only TransientModelError (retried by the task), records
    every other model failure. ``progress`` (optional) hears (step number, last tool);
    ``style`` lays out the prompts."""

    def __call__(
        self,
        spec: TaskSpec,
        plan: str,
        agent: Agent,
        llm: LLMCall,
        max_tokens: int,
        *,
        progress: Callable[[int, str | None], None] | None = None,
        style: PromptStyle = DEFAULT_STYLE,
    ) -> ExecutionOutcome: ...


def extract_code(reply: str, spec: TaskSpec) -> str:
    """The program to test: the longest fenced code block (else the reply), completed from the
    prompt when the model wrote only a function body or left out the prompt's imports."""
    blocks = _FENCE.findall(reply)
    code = max(blocks, key=len) if blocks else reply
    code = _TOOL_LINE.sub("", code).strip("\n")
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
