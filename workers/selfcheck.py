"""The self-check of an execution: its answer run against the checks its agent could see.

Only a coding job whose prompt shows examples (:func:`workers.examples.docstring_examples`) can
be self-checked; the hidden ``spec.tests`` never take part (they decide the verdict). The program
is the answer followed by :func:`workers.examples.examples_program`, run in the sandbox with the
agent tools' limits, so the self-check sees exactly what the agent's ``run_tests`` tool shows.
A self-check failure hands the job to the next-best bid (``self_check_fallback``).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.schemas import TaskSpec
from workers.examples import docstring_examples, examples_program
from workers.sandbox import run_python
from workers.tools import TOOL_LIMITS, PythonRunner


@dataclass(frozen=True)
class SelfCheck:
    """The outcome ("passed" | "failed") and a short detail."""

    value: str
    detail: str


def has_visible_checks(spec: TaskSpec) -> bool:
    """True for a coding job whose prompt shows examples its agents may check against."""
    return spec.kind == "coding" and bool(docstring_examples(spec.prompt, spec.entry_point))


def self_check(spec: TaskSpec, answer: str | None, runner: PythonRunner = run_python) -> SelfCheck:
    """Run ``answer`` on the prompt's examples; a job without examples is a ValueError."""
    examples = docstring_examples(spec.prompt, spec.entry_point) if spec.kind == "coding" else []
    if not examples:
        raise ValueError("the job shows no examples to self-check against")
    if not answer:
        return SelfCheck("failed", "no code was produced")
    result = runner(answer + "\n\n" + examples_program(examples), limits=TOOL_LIMITS)
    lines = (result.stdout or result.stderr).strip().splitlines()
    if result.ok:
        return SelfCheck("passed", lines[-1] if lines else "all examples passed")
    why = result.stopped or f"exit code {result.exit_code}"
    return SelfCheck("failed", f"examples failed ({why}): " + " | ".join(lines[-3:]))
