"""Auction memory retrieval and the contrastive pairs a cheaper agent refines its bid from.

Retrieval is cosine similarity between task embeddings (stored unit-norm), k nearest first; an
empty memory or one with fewer than k records simply returns what there is. Each memory record
carries two labels per bid: ``auction_label`` (the awarded bid won, the others lost: the paper)
and ``verified_label`` (a plan whose execution passed won, an awarded plan that failed lost, the
others are unlabelled). ``memory_label`` picks which one builds pairs; ``verified`` falls back
to the auction labels for a record without a verdict. With ``memory_shortcut`` on,
:func:`shortcut_agent` decides whether the nearest records agree on one cheapest passing agent
strongly enough to skip the auction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

LabelMode = Literal["auction", "verified"]


@dataclass(frozen=True)
class MemoryEntry:
    """What retrieval needs of one memory record."""

    record_id: int
    embedding: Sequence[float]
    bids: Sequence[dict[str, Any]]
    verdict: str


@dataclass(frozen=True)
class Pair:
    """A (losing plan, winning plan) pair from one past job."""

    record_id: int
    losing_agent: str
    losing_plan: str
    winning_agent: str
    winning_plan: str


def nearest(query: Sequence[float], entries: Sequence[MemoryEntry], k: int) -> list[MemoryEntry]:
    """The ``k`` entries most cosine-similar to ``query``, most similar first."""
    return [e for e, _sim in nearest_with_similarity(query, entries, k)]


def nearest_with_similarity(
    query: Sequence[float], entries: Sequence[MemoryEntry], k: int
) -> list[tuple[MemoryEntry, float]]:
    """(entry, cosine similarity) of the ``k`` entries nearest ``query``, most similar first.

    Entries whose embedding is not of the query's length (written with ``SALE_EMBEDDER=none``,
    or by another embedder) are never near.
    """
    entries = [e for e in entries if len(e.embedding) == len(query)]
    if not entries or k <= 0:
        return []
    q = np.asarray(query, dtype=np.float64)
    matrix = np.asarray([e.embedding for e in entries], dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1) * (np.linalg.norm(q) or 1.0)
    sims = matrix @ q / np.where(norms == 0, 1.0, norms)
    # Stable order on ties: by similarity, then by record id (older first).
    order = sorted(range(len(entries)), key=lambda i: (-sims[i], entries[i].record_id))
    return [(entries[i], float(sims[i])) for i in order[:k]]


def cheapest_passing_agent(entry: MemoryEntry, prices: Mapping[str, float]) -> str | None:
    """The cheapest agent whose executed bid passed in this record, else None.

    A bid executed and passed when its ``verified_label`` is ``win`` (the label says exactly
    that, whatever ``memory_label`` builds pairs from); direct bids are never labelled. Agents
    no longer in ``prices`` (the pool) do not count; ties go to the first name.
    """
    if entry.verdict != "passed":
        return None
    passed = {
        str(b["agent"])
        for b in entry.bids
        if b.get("verified_label") == "win" and b.get("status", "ok") == "ok"
    }
    priced = [a for a in passed if a in prices]
    return min(priced, key=lambda a: (prices[a], a)) if priced else None


def shortcut_agent(
    near: Sequence[tuple[MemoryEntry, float]],
    prices: Mapping[str, float],
    threshold: float,
    min_records: int,
) -> tuple[str, list[int]] | None:
    """The agent memory is confident about, and the records that say so, or None.

    Confident: at least ``min_records`` of ``near`` have similarity >= ``threshold``, each of
    them has a verdict (passed or failed), and in each the cheapest agent whose executed bid
    passed (:func:`cheapest_passing_agent`) is one and the same agent. A failed record, or one
    where no pool agent's bid passed, breaks the agreement.
    """
    close = [e for e, sim in near if sim >= threshold]
    if threshold <= 0 or len(close) < min_records:
        return None
    if any(e.verdict not in ("passed", "failed") for e in close):
        return None
    agents = {cheapest_passing_agent(e, prices) for e in close}
    if len(agents) != 1:
        return None
    (agent,) = agents
    return (agent, [e.record_id for e in close]) if agent is not None else None


def bid_labels(
    bids: Sequence[dict[str, Any]],
    award_index: int | None,
    verdict: str,
    executed: dict[int, str] | None = None,
) -> list[tuple[str, str | None]]:
    """(auction_label, verified_label) for each bid of a finished job.

    ``executed`` maps the index of every bid that executed (the award, then self-check
    fallbacks) to its own execution's verdict; by default only the award executed, with the
    job's ``verdict``. A bid whose execution passed is a verified winner, one whose execution
    failed a verified loser; when some execution passed, the bids never executed lose too.
    """
    if executed is None:
        executed = {award_index: verdict} if award_index is not None else {}
    someone_passed = verdict == "passed" or "passed" in executed.values()
    labels: list[tuple[str, str | None]] = []
    for i, _bid in enumerate(bids):
        auction = "win" if i == award_index else "lose"
        verified: str | None = None
        if executed.get(i) == "passed":
            verified = "win"
        elif executed.get(i) == "failed":
            verified = "lose"
        elif i not in executed and someone_passed:
            verified = "lose"  # another plan was executed and passed: these did not win it
        labels.append((auction, verified))
    return labels


def _label(bid: dict[str, Any], mode: LabelMode, verdict: str) -> str | None:
    if mode == "verified" and verdict in ("passed", "failed"):
        value = bid.get("verified_label")
    else:
        value = bid.get("auction_label")
    return value if value in ("win", "lose") else None


def build_pairs(
    agent: str, entries: Sequence[MemoryEntry], mode: LabelMode, max_pairs: int
) -> list[Pair]:
    """(losing, winning) pairs, one side written by ``agent``, nearest records first."""
    pairs: list[Pair] = []
    for entry in entries:
        if len(pairs) >= max_pairs:
            break
        usable = [b for b in entry.bids if b.get("status", "ok") == "ok" and b.get("plan")]
        winners = [b for b in usable if _label(b, mode, entry.verdict) == "win"]
        losers = [b for b in usable if _label(b, mode, entry.verdict) == "lose"]
        for win in winners:
            for lose in losers:
                if agent not in (win["agent"], lose["agent"]) or win["agent"] == lose["agent"]:
                    continue
                pairs.append(
                    Pair(entry.record_id, lose["agent"], lose["plan"], win["agent"], win["plan"])
                )
                break  # one pair per record keeps the prompt short and varied
            else:
                continue
            break
    return pairs


def render_pairs(pairs: Sequence[Pair]) -> str:
    """The pairs block of the refine prompt."""
    blocks = []
    for n, p in enumerate(pairs, 1):
        blocks.append(
            f"PAST JOB {n}\nLOSING PLAN:\n{p.losing_plan.strip()}\n"
            f"WINNING PLAN:\n{p.winning_plan.strip()}"
        )
    return "\n\n".join(blocks)
