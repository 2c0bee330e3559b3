"""Synthetic auction memories for the retrieval benchmark and the memory index's tests.

Records are shaped like real ones: a task text of a few hundred characters; a 384-dim unit
embedding drawn around one of many cluster centres (tasks of a family lie close together, as
MiniLM places them); three first-round bids with plans, tokens, entropy, jury scores, score
terms and labels; one or two execution attempts (agent, self-check, verdict, tokens, cost); an
award round mostly ``first`` or ``refined`` and partly ``verified`` or ``direct`` (rounds that
retrieval for refinement leaves out). Queries are fresh draws from the same clusters.
:func:`bulk_insert` writes them with one ``executemany`` per batch inside one transaction
(never through the ORM), each record with a minimal job row of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
from sale.models.db import get_engine
from sale.models.tables import MemoryRecord
from sale.models.types import pack

AGENTS = (("small", 0.03), ("medium", 0.12), ("large", 0.36))
ROUNDS = ("first", "first", "first", "refined", "refined", "verified", "direct")
PLAN = (
    "1. Restate what the function must return for each input, including the edge cases in "
    "the docstring. 2. Write the simplest loop that does it, with the tools to check. 3. Run "
    "the examples; fix what fails. 4. Give the final code. Pitfalls: empty input, off-by-one."
)


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


def _bids(rng: np.random.Generator, award: int, passed: bool) -> list[dict[str, Any]]:
    bids = []
    for i, (agent, price) in enumerate(AGENTS):
        tokens = int(rng.integers(60, 240))
        won = i == award
        bids.append(
            {
                "bid_id": None,
                "agent": agent,
                "round": "first",
                "status": "ok",
                "plan": PLAN,
                "tokens": tokens,
                "entropy": round(float(rng.random()) * 0.5, 4),
                "jury": {a: int(rng.integers(0, 6)) for a, _ in AGENTS},
                "gamma": {a: round(float(rng.random()), 3) for a, _ in AGENTS},
                "cost": price * tokens / 1e6,
                "value": round(float(rng.random()), 4),
                "score": round(float(rng.random()) - 0.5, 4),
                "auction_label": "win" if won else "lose",
                "verified_label": ("win" if passed else "lose") if won else None,
            }
        )
    return bids


def _attempts(rng: np.random.Generator, award: int) -> tuple[list[dict[str, Any]], str]:
    attempts: list[dict[str, Any]] = []
    for n, i in enumerate(range(award, len(AGENTS))):
        agent, price = AGENTS[i]
        passed = bool(rng.random() < 0.35 + 0.25 * i)
        tokens = int(rng.integers(800, 4000))
        check = "passed" if passed == (rng.random() < 0.8) else "failed"
        attempts.append(
            {
                "attempt": n,
                "bid_id": None,
                "agent": agent,
                "round": "first",
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
    ``total`` records (default ``start + n``), as column values for an insert."""
    total = total or (start + n)
    rng = np.random.default_rng(shape.seed * 7919 + start)
    embedded = vectors(n, shape, total, seed=10_000 + start)
    now = datetime(2026, 12, 1, tzinfo=UTC)
    for j in range(n):
        rid = start + j
        award = int(rng.integers(0, len(AGENTS)))
        attempts, verdict = _attempts(rng, award)
        award_round = ROUNDS[int(rng.integers(0, len(ROUNDS)))]
        yield {
            "id": rid,
            "job_id": f"synthetic-{rid}",
            "kind": kind,
            "task_text": f"Task {rid}: write a function that " + "does the thing; " * 20,
            "embedding": pack(embedded[j]),
            "bids": json.dumps(_bids(rng, award, verdict == "passed")),
            "attempts": json.dumps(attempts),
            "award_agent": AGENTS[award][0],
            "award_round": award_round,
            "provisional_agent": AGENTS[award][0],
            "chain": None,
            "verdict": verdict,
            "total_tokens": sum(a["tokens"] for a in attempts),
            "total_cost_usd": sum(a["cost_usd"] for a in attempts),
            "created_at": now.isoformat(sep=" "),
        }


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


def bulk_insert(
    db_url: str, n: int, shape: Shape, start: int = 1, batch: int = 20_000, kind: str = "coding"
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
    raw = get_engine(db_url).raw_connection()
    try:
        cur = raw.cursor()
        total = start + n - 1
        for first in range(start, start + n, batch):
            size = min(batch, start + n - first)
            values = [tuple(r[c] for c in COLUMNS) for r in rows(first, size, shape, kind, total)]
            cur.executemany(job_sql, [(v[1], kind, v[-1], v[-1]) for v in values])
            cur.executemany(sql, values)
        raw.commit()
        cur.close()
    finally:
        raw.close()
