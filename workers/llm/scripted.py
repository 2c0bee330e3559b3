"""A deterministic, scripted model: a TEST DOUBLE, never a model.

It answers bid, jury, refine and execute calls from rules, with zero latency and synthetic
log-probabilities, so the orchestration can be tested and its overhead measured without a model
server. Nothing it says carries information about decision quality; it is never the default pool.

The model id is ``scripted/<profile>`` (e.g. ``scripted/small``). What each profile does is
steered by directives inside the task prompt, so tests control an auction's outcome::

    [[scripted small.bid=2 small.refine=5 medium.fail=bid large.junk=jury]]
    [[solution]]
    def add(a, b):
        return a + b
    [[/solution]]

- ``P.bid=Q`` / ``P.refine=Q``: profile P's (refined) plan carries quality Q (0–5); defaults:
  bid quality = 1 + position of the profile in (small, medium, large), refine = bid quality.
- scripted jurors score every plan with the quality written in it (``[quality=Q]``).
- ``P.fail=STAGE``: P raises a permanent error at that stage (bid, jury, refine, execute).
- ``P.transient=STAGE:N``: P raises a transient error the first N times it is called there.
- ``P.junk=jury``: P answers jury calls with prose, never valid JSON (it abstains).
- ``P.slow=STAGE:S``: P takes S seconds (a float) to answer each call at that stage, so a test
  can kill the worker that holds the call.
- ``P.flaky=STAGE:K``: P's call at that stage with K assistant turns already in the
  conversation (an execution's step K) raises a transient error the first time: a try cut
  short after K paid calls.
- ``P.crash=STAGE``: P SIGKILLs its own worker (the whole process group) when called at that
  stage: a poison job.
- ``P.solve=fail``: P's execution returns code that raises; otherwise it returns the solution
  block (or ``ANSWER: <solution>`` for search jobs).
- ``P.tools=N``: P's execution first takes N text-format tool actions, one per agent step
  (counted from the assistant turns already in the conversation): coding alternates
  ``run_python`` (the solution plus a print) and ``run_tests`` (the solution); search runs
  ``search[<first line of the question>]``. Then it answers as above.
- When the execute call offers native tools (``tools=`` schemas), those N actions are native
  tool calls instead (JSON arguments, ids ``call_<step>``) and the answer is a plain reply.
  ``P.native=text``: P ignores the offered tools and writes text actions (a provider without
  tool support); ``P.native=badjson``: P's tool-call arguments are not valid JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

_DIRECTIVES = re.compile(r"\[\[scripted([^\]]*)\]\]")
_SOLUTION = re.compile(r"\[\[solution\]\]\n?(.*?)\n?\[\[/solution\]\]", re.S)
_PLAN = re.compile(
    r"PLAN ([A-Z]+):\n(.*?)(?=\n\nPLAN [A-Z]+:|\n\nReply with|\n\nYour previous|\Z)", re.S
)
_QUALITY = re.compile(r"\[quality=(\d)\]")
_DEFAULT_ORDER = ("small", "medium", "large")

_calls: Counter[str] = Counter()
_calls_lock = threading.Lock()


@dataclass(frozen=True)
class ScriptedFault:
    """An error the provider must raise instead of answering."""

    transient: bool
    message: str


@dataclass(frozen=True)
class ScriptedReply:
    """A scripted answer: text, tokens and per-token top-5 log-probabilities."""

    text: str
    tokens: list[str]
    top_logprobs: list[list[tuple[str, float]]]
    prompt_tokens: int
    fault: ScriptedFault | None = None
    extra: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[tuple[str, str, str], ...] = ()  # (id, name, JSON arguments)


def _directives(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for match in _DIRECTIVES.finditer(text):
        for item in match.group(1).split():
            if "=" in item:
                key, value = item.split("=", 1)
                out[key.strip()] = value.strip()
    return out


def _fake_logprobs(token: str, position: int) -> list[tuple[str, float]]:
    # Deterministic, token-dependent distributions so entropy differs between plans.
    digest = hashlib.sha256(f"{position}:{token}".encode()).digest()
    raw = [1.0 + digest[i] / 32.0 for i in range(5)]
    raw[0] += digest[5] / 16.0
    total = sum(math.exp(r) for r in raw)
    alts = [token, *(f"{token}~{i}" for i in range(1, 5))]
    lps = sorted((r - math.log(total) for r in raw), reverse=True)
    return list(zip(alts, lps, strict=True))


def _reply(text: str, prompt_tokens: int) -> ScriptedReply:
    tokens = text.split()
    return ScriptedReply(
        text=text,
        tokens=tokens,
        top_logprobs=[_fake_logprobs(t, i) for i, t in enumerate(tokens)],
        prompt_tokens=prompt_tokens,
    )


def _quality(directives: dict[str, str], profile: str, key: str) -> int:
    default = _DEFAULT_ORDER.index(profile) + 1 if profile in _DEFAULT_ORDER else 1
    bid = int(directives.get(f"{profile}.bid", default))
    if key == "refine":
        return int(directives.get(f"{profile}.refine", bid))
    return bid


def _question(prompt: str) -> str:
    """The first line of a search task's question."""
    task = prompt.split("TASK (search):", 1)[-1]
    return next((ln for ln in task.splitlines() if ln.strip() and "[[" not in ln), "").strip()


def _tool_action(done: int, answer: str, is_search: bool, prompt: str) -> str:
    """The text-format tool action a scripted agent takes as its ``done``-th step."""
    if is_search:
        return f"Thought: I should look this up.\nAction: search[{_question(prompt)}]"
    if done % 2 == 0:
        return f"Action: run_python\n```python\n{answer}\nprint('scripted check')\n```"
    return f"Action: run_tests\n```python\n{answer}\n```"


def _native_call(
    done: int, answer: str, is_search: bool, prompt: str, bad_json: bool
) -> tuple[str, str]:
    """The native tool call (name, JSON arguments) a scripted agent makes as its ``done``-th
    step: the same actions as :func:`_tool_action`."""
    if is_search:
        name, args = "search", {"query": _question(prompt)}
    elif done % 2 == 0:
        name, args = "run_python", {"code": f"{answer}\nprint('scripted check')"}
    else:
        name, args = "run_tests", {"code": answer}
    text = json.dumps(args)
    return name, text[:-1] if bad_json else text


def scripted_reply(
    profile: str,
    stage: str,
    messages: Sequence[dict[str, Any]],
    *,
    tools: Sequence[str] | None = None,
) -> ScriptedReply:
    """The scripted answer of ``profile`` to a ``stage`` call with these messages; ``tools``
    names the native tools the call offers (None: text actions only)."""
    prompt = "\n".join(str(m.get("content") or "") for m in messages)
    prompt_tokens = len(prompt.split())
    directives = _directives(prompt)
    slow = directives.get(f"{profile}.slow", "")
    if slow.startswith(stage + ":"):
        time.sleep(float(slow.split(":", 1)[1]))
    flaky = directives.get(f"{profile}.flaky", "")
    turns = sum(1 for m in messages if m.get("role") == "assistant")
    if flaky.startswith(stage + ":") and turns == int(flaky.split(":", 1)[1]):
        key = f"{profile}:flaky:{hashlib.sha256(prompt.encode()).hexdigest()}"
        with _calls_lock:
            _calls[key] += 1
            first = _calls[key] == 1
        if first:
            fault = ScriptedFault(True, f"scripted transient at step {turns}")
            return ScriptedReply("", [], [], prompt_tokens, fault)
    if directives.get(f"{profile}.crash") == stage:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    if directives.get(f"{profile}.fail") == stage:
        return ScriptedReply(
            "", [], [], prompt_tokens, ScriptedFault(False, f"scripted {stage} failure")
        )
    transient = directives.get(f"{profile}.transient", "")
    if transient.startswith(stage + ":"):
        times = int(transient.split(":", 1)[1])
        key = f"{profile}:{stage}:{hashlib.sha256(prompt.encode()).hexdigest()}"
        with _calls_lock:
            _calls[key] += 1
            count = _calls[key]
        if count <= times:
            return ScriptedReply(
                "",
                [],
                [],
                prompt_tokens,
                ScriptedFault(True, f"scripted transient {count}/{times}"),
            )
    if stage in ("bid", "refine"):
        q = _quality(directives, profile, stage)
        word = "Refined plan" if stage == "refine" else "Plan"
        text = (
            f"{word} by {profile}: 1. Read the task and restate the goal. 2. Break it into steps "
            f"and handle edge cases. 3. Check the result against the examples. [quality={q}]"
        )
        return _reply(text, prompt_tokens)
    if stage == "jury":
        if directives.get(f"{profile}.junk") == "jury":
            return _reply("def solve():\n    return 42  # I would rather write code", prompt_tokens)
        scores = {}
        for lab, body in _PLAN.findall(prompt):
            found = _QUALITY.search(body)
            scores[lab] = int(found.group(1)) if found else 0
        body = ", ".join(f'"{k}": {v}' for k, v in scores.items())
        return _reply("```json\n{" + body + "}\n```", prompt_tokens)
    if stage == "execute":
        solution = _SOLUTION.search(prompt)
        answer = solution.group(1) if solution else "pass"
        is_search = "TASK (search)" in prompt
        if directives.get(f"{profile}.solve") == "fail":
            answer = "I do not know" if is_search else "raise RuntimeError('scripted wrong answer')"
        steps = int(directives.get(f"{profile}.tools", "0"))
        done = sum(1 for m in messages if m.get("role") == "assistant")
        if done < steps:
            native = directives.get(f"{profile}.native")
            if tools and native != "text":
                name, arguments = _native_call(done, answer, is_search, prompt, native == "badjson")
                tokens = [name, *arguments.split()]
                return ScriptedReply(
                    text="",
                    tokens=tokens,
                    top_logprobs=[_fake_logprobs(t, i) for i, t in enumerate(tokens)],
                    prompt_tokens=prompt_tokens,
                    tool_calls=((f"call_{done}", name, arguments),),
                )
            return _reply(_tool_action(done, answer, is_search, prompt), prompt_tokens)
        if is_search:
            return _reply(f"ANSWER: {answer}", prompt_tokens)
        return _reply(f"```python\n{answer}\n```", prompt_tokens)
    return _reply(f"scripted {profile} reply", prompt_tokens)
