"""Synthetic auction memories for the retrieval benchmark and the memory index's tests.

Records are shaped like the ones workers/stages/updating.py writes, and like the 890 real
records in docs/results/*/runs.jsonl in size and in how well they deflate: a task text of a few
hundred characters; a 384-dim unit embedding drawn around one of many cluster centres (tasks of
a family lie close together, as MiniLM places them); by award round (mostly ``first`` or
``refined``, partly ``verified`` or ``direct``, the rounds retrieval for refinement leaves out):
three first-round bids with plans of ~1,000 characters (256 tokens, in three agents' styles,
restating the task) and a refined one, each with tokens, entropy, jury scores, score terms and
labels; the generic verified bids; or none for a direct job; one or two execution attempts
(agent, self-check, verdict, tokens, cost). Queries are fresh draws from the same clusters.
:func:`bulk_insert` writes them with one ``executemany`` per batch inside one transaction
(never through the ORM, the values encoded by the column types), each record with a minimal
job row of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sale.models.db import get_engine
from sale.models.tables import MemoryRecord
from sale.models.types import DeflatedJSON, DeflatedText, Int8Vector

AGENTS = (("small", 0.03), ("medium", 0.12), ("large", 0.36))
ROUNDS = ("first", "first", "first", "refined", "refined", "verified", "direct")
JURORS = ("small", "medium")
_VOCABULARY = (
    "the to a of and is in that it will for each with list number string return if this "
    "function input value be we use as step are by an on or not output all case first tool "
    "check can values from test result then should which code given one example elements find "
    "empty two order element integer loop sum sandbox python search answer write length count "
    "sorted index range character words characters numbers characters digits prime even odd "
    "positive negative zero key dictionary pair maximum minimum average filter map split join "
    "reverse unique duplicate substring prefix suffix vowel palindrome factorial fibonacci "
    "binary decimal base convert parse format city country capital author year population "
    "river book wrote born largest smallest oldest document page open read look verify result "
    "edge pitfalls handle docstring examples expected simplest approach iterate compare store"
)
#: The words plans and tasks are drawn from (Zipf-weighted, the commonest first).
WORDS = tuple(_VOCABULARY.split())
OPENINGS = (
    "To solve this task, I will break it down into several steps:\n",
    "1. **Understand the Task**: ",
    "### Step 1: Break Down the Task\n- **Identify the Task**: ",
)
VERIFIED_PLAN = (
    "1. Read the task and restate what the answer must be. 2. Work it out step by step with "
    "the tools. 3. Check your answer with the tools where you can and fix what is wrong. "
    "4. Give the final answer."
)
_ZIPF = 1.0 / np.arange(1, len(WORDS) + 1)
_ZIPF /= _ZIPF.sum()


def _words(rng: np.random.Generator, n: int) -> str:
    return " ".join(WORDS[i] for i in rng.choice(len(WORDS), n, p=_ZIPF))


def task_text(rng: np.random.Generator, rid: int) -> str:
    """A task of 100-450 characters: a sentence or two and a signature."""
    name = "_".join(WORDS[i] for i in rng.integers(20, len(WORDS), 2))
    body = _words(rng, int(rng.integers(14, 60)))
    return f"Task {rid}: {body}.\n\ndef {name}(values: list[int]) -> int:\n    ..."


def plan_text(rng: np.random.Generator, task: str, style: int, chars: int) -> str:
    """A plan of about ``chars`` characters in one agent's style: steps that restate parts of
    the task and say what to do, the smallest agent repeating itself as small models do."""
    task_words = task.split()
    steps: list[str] = []
    out = OPENINGS[style]
    while len(out) < chars:
        if style == 0 and steps and rng.random() < 0.4:
            step = steps[int(rng.integers(0, len(steps)))]  # a loop of the same sentence
        elif rng.random() < 0.3:
            at = int(rng.integers(0, max(1, len(task_words) - 8)))
            step = "The task is to " + " ".join(task_words[at : at + int(rng.integers(5, 12))])
        else:
            step = "I will " + _words(rng, int(rng.integers(6, 18)))
        steps.append(step)
        out += f"{len(steps)}. {step}.\n"
    return out[:chars]


@dataclass(frozen=True)
class Shape:
    """How a synthetic memory is drawn: dimension, records per cluster, spread, seed."""

    dim: int = 384
    per_cluster: int = 200
    spread: float = 0.35  # noise norm around a unit centre (cosine to the centre ~0.94)
    seed: int = 0


def _centres(n: int, shape: Shape) -> npt.NDArray[np.float32]:
    rng = np.random.default_rng(shape.seed)
    centres = rng.standard_normal((max(1, n // shape.per_cluster), shape.dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres.astype(np.float32)


def vectors(
    n: int, shape: Shape, total: int | None = None, seed: int = 1
) -> npt.NDArray[np.float32]:
    """``n`` unit vectors around the clusters of a memory of ``total`` records (default n)."""
    centres = _centres(total or n, shape)
    rng = np.random.default_rng(shape.seed * 1000 + seed)
    which = rng.integers(0, len(centres), n)
    noise = rng.standard_normal((n, shape.dim)).astype(np.float32)
    noise *= shape.spread / np.sqrt(shape.dim)
    out = centres[which] + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out.astype(np.float32)


def _bid(
    rng: np.random.Generator, bid_id: int, agent: int, award_round: str, plan: str
) -> dict[str, Any]:
    """One auctioned bid as workers/stages/updating.py writes it (labels set by the caller)."""
    name, price = AGENTS[agent]
    jurors = JURORS[: int(rng.integers(1, len(JURORS) + 1))]
    value = float(rng.random())
    return {
        "bid_id": bid_id,
        "agent": name,
        "round": award_round,
        "status": "ok",
        "plan": plan,
        "tokens": 256,
        "entropy": float(rng.random()) * 0.5,
        "jury": {j: int(rng.integers(0, 6)) for j in jurors},
        "gamma": {j: float(rng.integers(0, 6)) for j in jurors},
        "cost": price * 256 / 1e6 / 0.36,
        "value": value,
        "score": value - float(rng.random()),
        "auction_label": None,
        "verified_label": None,
    }


def _bids(
    rng: np.random.Generator, rid: int, task: str, award_round: str, award: int, passed: bool
) -> list[dict[str, Any]]:
    """The bids of one record: none for a direct job, the generic verified bid(s) for a
    verified award, else three first-round bids with plans of ~1,000 characters (256 tokens)
    and a refined one (the winner of a refined award)."""
    first_id = 4 * rid
    if award_round == "direct":
        return []
    if award_round == "verified":
        return [
            {"bid_id": first_id + i, "agent": AGENTS[award + i][0], "round": "verified",
             "status": "ok", "plan": VERIFIED_PLAN, "tokens": 0, "entropy": None, "jury": {},
             "gamma": {}, "cost": None, "value": None, "score": None, "auction_label": None,
             "verified_label": None}
            for i in range(min(2, len(AGENTS) - award))
        ]  # fmt: skip
    plans = [plan_text(rng, task, i, int(rng.integers(700, 1250))) for i in range(len(AGENTS))]
    bids = [_bid(rng, first_id + i, i, "first", plans[i]) for i in range(len(AGENTS))]
    # Refinement revises one first-round plan (the winner's, in a refined award).
    who = award if award_round == "refined" else int(rng.integers(0, len(AGENTS)))
    revised = plans[who][: len(plans[who]) // 2] + plan_text(rng, task, who, 500)
    bids.append(_bid(rng, first_id + len(AGENTS), who, "refined", revised))
    winner = len(bids) - 1 if award_round == "refined" else award
    for i, bid in enumerate(bids):
        bid["auction_label"] = "win" if i == winner else "lose"
        bid["verified_label"] = ("win" if passed else "lose") if i == winner else "lose"
    return bids


def _attempts(
    rng: np.random.Generator, rid: int, award_round: str, award: int
) -> tuple[list[dict[str, Any]], str]:
    """The award's execution, then a self-check fallback to the next larger agent."""
    attempts: list[dict[str, Any]] = []
    for n, i in enumerate(range(award, len(AGENTS))):
        agent, price = AGENTS[i]
        passed = bool(rng.random() < 0.35 + 0.25 * i)
        tokens = int(rng.integers(800, 4000))
        check = "passed" if passed == (rng.random() < 0.8) else "failed"
        attempts.append(
            {
                "attempt": n,
                "bid_id": None if award_round == "direct" else 4 * rid + i,
                "agent": agent,
                "round": award_round if award_round in ("direct", "verified") else "first",
                "status": "done",
                "self_check": check,
                "verdict": "passed" if passed else "failed",
                "tokens": tokens,
                "cost_usd": price * tokens / 1e6,
            }
        )
        if check == "passed" or n == 1:
            break
    return attempts, str(attempts[-1]["verdict"])


def rows(
    start: int, n: int, shape: Shape, kind: str = "coding", total: int | None = None
) -> Iterator[dict[str, Any]]:
    """Records ``start`` … ``start + n - 1`` (ids and job ids) of a synthetic memory of
    ``total`` records (default ``start + n``), as the ORM's values (the embedding an array)."""
    total = total or (start + n)
    rng = np.random.default_rng(shape.seed * 7919 + start)
    embedded = vectors(n, shape, total, seed=10_000 + start)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for j in range(n):
        rid = start + j
        award = int(rng.integers(0, len(AGENTS)))
        award_round = ROUNDS[int(rng.integers(0, len(ROUNDS)))]
        attempts, verdict = _attempts(rng, rid, award_round, award)
        task = task_text(rng, rid)
        yield {
            "id": rid,
            "job_id": f"synthetic-{rid:022d}",  # 32 characters, as a job id (uuid4 hex)
            "kind": kind,
            "task_text": task,
            "embedding": embedded[j],
            "bids": _bids(rng, rid, task, award_round, award, verdict == "passed"),
            "attempts": attempts,
            "award_agent": AGENTS[award][0],
            "award_round": award_round,
            "provisional_agent": AGENTS[award][0],
            "chain": None,
            "verdict": verdict,
            "total_tokens": sum(a["tokens"] for a in attempts),
            "total_cost_usd": sum(a["cost_usd"] for a in attempts),
            "created_at": now,
        }


#: Records per executemany (and per draw of embeddings).
BATCH = 20_000
#: The column types whose stored form is not the Python value (packed, deflated).
STORED = (Int8Vector, DeflatedText, DeflatedJSON)
COLUMNS = (
    "id",
    "job_id",
    "kind",
    "task_text",
    "embedding",
    "bids",
    "attempts",
    "award_agent",
    "award_round",
    "provisional_agent",
    "chain",
    "verdict",
    "total_tokens",
    "total_cost_usd",
    "created_at",
)


def float32_vectors(n: int, shape: Shape, batch: int = BATCH) -> Iterator[npt.NDArray[np.float32]]:
    """The float32 embeddings of records 1 … n as :func:`bulk_insert` drew them (before they
    were stored as int8), ``batch`` rows at a time: what exact search is measured against."""
    for first in range(1, n + 1, batch):
        yield vectors(min(batch, n + 1 - first), shape, n, seed=10_000 + first)


def bulk_insert(
    db_url: str, n: int, shape: Shape, start: int = 1, batch: int = BATCH, kind: str = "coding"
) -> None:
    """Insert records ``start`` … ``start + n - 1`` of a memory of ``start + n - 1`` records,
    ``batch`` at a time with ``executemany``, in one transaction."""
    table = MemoryRecord.__table__  # type: ignore[attr-defined]
    sqlite = db_url.startswith("sqlite")
    mark = "?" if sqlite else "%s"
    sql = (
        f"INSERT INTO {table.name} ({', '.join(COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(COLUMNS))})"
    )
    # Each record's job, as small as a job row gets (the foreign key holds).
    job_sql = (
        "INSERT INTO job (id, kind, prompt, spec, pool_path, status, notes, created_at, "
        f"updated_at) VALUES ({mark}, {mark}, 'p', '{{}}', '', 'done', '[]', {mark}, {mark})"
    )
    engine = get_engine(db_url)
    # Values as the column types store them (packed, deflated), as the ORM would bind them.
    bind = [table.c[c].type.bind_processor(engine.dialect) for c in COLUMNS]
    encode = [
        b if isinstance(table.c[c].type, STORED) else None
        for c, b in zip(COLUMNS, bind, strict=True)
    ]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        total = start + n - 1
        for first in range(start, start + n, batch):
            size = min(batch, start + n - first)
            values = [
                tuple(r[c] if e is None else e(r[c]) for c, e in zip(COLUMNS, encode, strict=True))
                for r in rows(first, size, shape, kind, total)
            ]
            stamp = values[0][-1].isoformat(sep=" ")
            cur.executemany(job_sql, [(v[1], kind, stamp, stamp) for v in values])
            cur.executemany(sql, [(*v[:-1], stamp) for v in values])
        if not sqlite:  # explicit ids leave the id sequence behind: the ORM's next id
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"(SELECT MAX(id) FROM {table.name}))"
            )
        raw.commit()
        cur.close()
    finally:
        raw.close()
