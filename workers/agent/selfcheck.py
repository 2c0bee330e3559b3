"""The self-check of an execution: its answer run against the checks its agent could see.

A coding job whose prompt shows examples (:func:`sale.workers.agent.examples.docstring_examples`) is
checked on them; the hidden ``spec.tests`` never take part (they decide the verdict). The program
is the answer followed by :func:`sale.workers.agent.examples.examples_program`, run in the sandbox
with the
agent tools' limits, so the self-check sees exactly what the agent's ``run_tests`` tool shows.
A search job's answer (normalised) must occur in what the agent read (its tool observations), and
must not be only words of the question (an answer that repeats the question's subject, e.g.
"Othello" for "What is the nationality of the person who wrote Othello?", answers nothing;
skipped when the question offers a choice with "or"). With ``answer_types`` it must also fit the
kind of answer the question asks for (:func:`answer_type_problem`). It is the check the cascade
baseline uses, FrugalGPT-style; the reference answer never takes part. A self-check failure
hands the job to the next-best bid (``self_check_fallback``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from sale.models.schemas import TaskSpec
from sale.workers.agent.examples import docstring_examples, examples_program
from sale.workers.agent.tools import TOOL_LIMITS, PythonRunner
from sale.workers.sandbox.runner import run_python
from sale.workers.search.index import normalize_answer


@dataclass(frozen=True)
class SelfCheck:
    """The outcome ("passed" | "failed") and a short detail."""

    value: str
    detail: str


def has_visible_checks(spec: TaskSpec, smoke: bool = False) -> bool:
    """True for a search job (grounding) and a coding job whose prompt shows examples, or any
    coding job with ``smoke`` (the answer is run as written)."""
    if spec.kind == "search":
        return True
    if spec.kind != "coding":
        return False
    return smoke or bool(docstring_examples(spec.prompt, spec.entry_point))


def smoke_program(entry_point: str | None) -> str:
    """What follows the answer in a smoke check: the entry point must exist."""
    if not entry_point:
        return 'print("the code runs")\n'
    return (
        f"assert callable(globals().get({entry_point!r})), "
        f'"the answer defines no {entry_point}()"\n'
        'print("the code runs")\n'
    )


def grounded(answer: str | None, observations: Sequence[str]) -> bool:
    """The answer, normalised, is non-empty and occurs in what the agent read."""
    said = normalize_answer(answer or "")
    return bool(said) and said in normalize_answer(" ".join(observations))


def echoes_question(answer: str | None, question: str) -> bool:
    """The answer, normalised, is a run of the question's own words (and the question offers no
    choice: with " or " in it the answer may rightly be one of its words)."""
    said = normalize_answer(answer or "")
    asked = f" {normalize_answer(question)} "
    return bool(said) and " or " not in asked and f" {said} " in asked


_YEAR_Q = re.compile(r"\b(which|what) year\b|\bwhen (was|were|did|is)\b", re.IGNORECASE)
_NATIONALITY_Q = re.compile(r"\bnationality\b", re.IGNORECASE)
_CAPITAL_Q = re.compile(r"\bcapital\b", re.IGNORECASE)
_WHO_Q = re.compile(r"^\s*who\b", re.IGNORECASE)
#: How nationality words end: German, Chinese, English, Israeli, Dutch, Greek, Swiss, Icelandic,
#: Soviet (and Persian, Spanish, Thai, ...).
_NATIONALITY_END = re.compile(r"(an|ese|ish|i|ch|ek|ss|ic|et)$")
_PLACEHOLDERS = {"answer", "final answer", "unknown", "none", "n a", "not found"}
#: How far (characters of normalised text) "capital" may be from a capital answer.
CAPITAL_WINDOW = 150


def answer_type_problem(
    question: str, answer: str | None, observations: Sequence[str]
) -> str | None:
    """What is wrong with the *kind* of a search answer, from the question's form alone (no
    reference answer), or None: a placeholder; a year question whose answer holds no year; a
    nationality that is not one or two capitalised words ending like a nationality; a capital
    that no line the agent read calls a capital within ``CAPITAL_WINDOW`` characters; a "who"
    answer that is not a short name."""
    text = (answer or "").strip().rstrip(".")
    said = normalize_answer(text)
    if said in _PLACEHOLDERS:
        return f"{text!r} is a placeholder, not an answer"
    if _YEAR_Q.search(question) and not re.search(r"\b\d{3,4}\b", text):
        return f"the question asks for a year and {text!r} holds none"
    words = text.split()
    if _NATIONALITY_Q.search(question) and not (
        1 <= len(words) <= 2
        and all(w[:1].isupper() for w in words)
        and _NATIONALITY_END.search(words[-1])
    ):
        return f"the question asks for a nationality and {text!r} is not one"
    if _CAPITAL_Q.search(question):
        # Per line: the tools show one page (or one search hit) per line.
        lines = (normalize_answer(line) for o in observations for line in o.splitlines())
        near = (
            line[max(0, m.start() - CAPITAL_WINDOW) : m.end() + CAPITAL_WINDOW]
            for line in lines
            for m in re.finditer(rf"\b{re.escape(said)}\b", line)
        )
        if not said or not any("capital" in window for window in near):
            return f"the question asks for a capital and nothing read calls {text!r} one"
    if _WHO_Q.search(question) and not (
        1 <= len(words) <= 6 and words[0][:1].isupper() and not re.search(r"\d", text)
    ):
        return f"the question asks who and {text!r} is not a name"
    return None


def search_check(
    question: str, answer: str | None, observations: Sequence[str], answer_types: bool = False
) -> SelfCheck:
    """A search answer's self-check: given, not the question's own words, of the kind asked
    (with ``answer_types``), and grounded."""
    if not (answer or "").strip():
        return SelfCheck("failed", "no answer was given")
    if echoes_question(answer, question):
        return SelfCheck("failed", "the answer only repeats words of the question")
    if answer_types and (problem := answer_type_problem(question, answer, observations)):
        return SelfCheck("failed", problem)
    if grounded(answer, observations):
        return SelfCheck("passed", "the answer occurs in what the agent read")
    read = sum(1 for o in observations if o)
    return SelfCheck("failed", f"the answer occurs in none of the {read} observations")


def self_check(
    spec: TaskSpec,
    answer: str | None,
    runner: PythonRunner = run_python,
    observations: Sequence[str] = (),
    smoke: bool = False,
    answer_types: bool = False,
) -> SelfCheck:
    """Run ``answer`` on the prompt's examples, or for a search job check it with
    :func:`search_check` against ``observations`` (what the agent's tools returned). A coding
    job without examples is run as written with ``smoke`` (a crash fails it), else it is a
    ValueError."""
    if spec.kind == "search":
        return search_check(spec.prompt, answer, observations, answer_types)
    examples = docstring_examples(spec.prompt, spec.entry_point) if spec.kind == "coding" else []
    if not examples and not smoke:
        raise ValueError("the job shows no examples to self-check against")
    if not answer:
        return SelfCheck("failed", "no code was produced")
    if not examples:
        result = runner(answer + "\n\n" + smoke_program(spec.entry_point), limits=TOOL_LIMITS)
        lines = (result.stderr or result.stdout).strip().splitlines()
        if result.ok:
            return SelfCheck("passed", "no examples to check; the code runs as written")
        why = result.stopped or f"exit code {result.exit_code}"
        return SelfCheck(
            "failed", f"no examples; the code fails as written ({why}): " + " | ".join(lines[-3:])
        )
    result = runner(answer + "\n\n" + examples_program(examples), limits=TOOL_LIMITS)
    lines = (result.stdout or result.stderr).strip().splitlines()
    if result.ok:
        return SelfCheck("passed", lines[-1] if lines else "all examples passed")
    why = result.stopped or f"exit code {result.exit_code}"
    return SelfCheck("failed", f"examples failed ({why}): " + " | ".join(lines[-3:]))
