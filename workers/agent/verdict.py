"""The verdict of a job: passed, failed or unknown, computed by the system itself.

Coding jobs that carry tests run them against the answer in the sandbox; search jobs that carry
a reference answer compare it by normalised exact match or token-F1. A job with neither gets
``unknown``, as does a search verdict when the search module is unavailable.
"""

from __future__ import annotations

from dataclasses import dataclass

from sale.models.schemas import TaskSpec


@dataclass(frozen=True)
class Verdict:
    """The verdict and a short human-readable detail."""

    value: str  # "passed" | "failed" | "unknown"
    detail: str


def judge_answer(spec: TaskSpec, answer: str | None) -> Verdict:
    """The verdict of ``answer`` for ``spec``."""
    if spec.kind == "coding":
        if spec.tests is None:
            return Verdict("unknown", "the job carries no tests")
        if not answer:
            return Verdict("failed", "no code was produced")
        from sale.workers.sandbox.runner import run_tests

        result = run_tests(answer, spec.tests, spec.entry_point)
        if result.ok:
            return Verdict("passed", "tests passed in the sandbox")
        why = result.stopped or f"exit code {result.exit_code}"
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        return Verdict("failed", f"tests failed ({why}): " + " | ".join(tail))
    if spec.answer is None:
        return Verdict("unknown", "the job carries no reference answer")
    if not answer:
        return Verdict("failed", "no answer was produced")
    from sale.workers.search.index import answer_verdict, token_f1

    value = answer_verdict(answer, spec.answer)
    return Verdict(value, f"token-F1 {token_f1(answer, spec.answer):.2f} against the reference")
