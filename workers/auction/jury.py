"""The jury: anonymised presentation of bids, and strict parsing of the scores a juror returns.

Each juror sees the bids in its own shuffled order under the labels A, B, C, …; the order is
derived from (seed, job, juror, round), so a redelivered jury task shows the same order and the
order is recorded. With ``jury_debias = "rotate"`` juror i instead sees one job-level order
rotated by i, so across the jury every bid takes every position as evenly as the pool allows.
Small models wrap JSON in code fences or surround it with prose, so the parser extracts the
first JSON object from the reply and then validates it strictly: exactly the presented labels
as keys, integers 0–5 as values. Anything else is a ``JuryParseError``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sale.errors import JuryParseError

MIN_SCORE = 0
MAX_SCORE = 5


def label(index: int) -> str:
    """A, B, …, Z, AA, AB, … for index 0, 1, …"""
    out = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        out = chr(ord("A") + rem) + out
    return out


@dataclass(frozen=True)
class Presented:
    """One bid as a juror saw it."""

    label: str
    bid_id: int
    agent: str
    plan: str


def presentation_order(
    bids: Sequence[tuple[int, str, str]], *, seed: int, job_id: str, juror: str, round_: str
) -> list[Presented]:
    """Shuffle ``(bid_id, agent, plan)`` deterministically for this juror and label them."""
    digest = hashlib.sha256(f"{seed}:{job_id}:{juror}:{round_}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    ordered = sorted(bids, key=lambda b: b[0])
    rng.shuffle(ordered)
    return [Presented(label(i), b[0], b[1], b[2]) for i, b in enumerate(ordered)]


def rotated_order(
    bids: Sequence[tuple[int, str, str]], *, seed: int, job_id: str, round_: str, index: int
) -> list[Presented]:
    """Juror number ``index`` sees one job-level shuffled order rotated left by ``index``.

    Position debiasing (``jury_debias = "rotate"``): over n consecutive jurors each bid sits at
    each position exactly once (a Latin square), so a juror's preference for a position cannot
    favour one bid across the jury; with fewer jurors than bids, no bid holds a position twice.
    The base order is shuffled per (seed, job, round), not per juror, so juror 0 does not always
    see the bids by id.
    """
    base = presentation_order(bids, seed=seed, job_id=job_id, juror="", round_=round_)
    if not base:
        return []
    shift = index % len(base)
    turned = base[shift:] + base[:shift]
    return [Presented(label(i), p.bid_id, p.agent, p.plan) for i, p in enumerate(turned)]


def render_bids(presented: Sequence[Presented]) -> str:
    """The bids block of a jury prompt."""
    return "\n\n".join(f"PLAN {p.label}:\n{p.plan.strip()}" for p in presented)


def example_object(labels: Sequence[str]) -> str:
    """A syntactically valid example reply for these labels."""
    return json.dumps({lab: (3 + i) % 6 for i, lab in enumerate(labels)})


def _json_objects(text: str) -> list[object]:
    decoder = json.JSONDecoder()
    found: list[object] = []
    pos = text.find("{")
    while pos != -1:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            pos = text.find("{", pos + 1)
            continue
        found.append(obj)
        pos = text.find("{", end)
    return found


def parse_scores(reply: str, labels: Sequence[str]) -> dict[str, int]:
    """Extract and validate ``{label: score}`` from a juror's reply."""
    objects = [o for o in _json_objects(reply) if isinstance(o, dict)]
    if not objects:
        raise JuryParseError("no JSON object in the reply", reply)
    expected = set(labels)
    problems = []
    for obj in objects:
        keys = {str(k).strip() for k in obj}
        if keys != expected:
            problems.append(f"keys {sorted(keys)} instead of {sorted(expected)}")
            continue
        scores: dict[str, int] = {}
        for key, value in obj.items():
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"score for {key} is {value!r}, not an integer")
                break
            if not MIN_SCORE <= value <= MAX_SCORE:
                problems.append(f"score for {key} is {value}, outside {MIN_SCORE}-{MAX_SCORE}")
                break
            scores[str(key).strip()] = value
        else:
            return scores
    raise JuryParseError("; ".join(problems), reply)
