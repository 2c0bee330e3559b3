"""The memory index: the k nearest memory records of a kind without reading every record.

One :class:`MemoryIndex` per database in a process (:func:`memory_index`). On first use it reads
each record's id, kind, int8 embedding (:mod:`sale.models.types`), award round, award
agent, verdict and attempts (never the bids or the task text) and keeps, per kind and embedding
dimension, a space of unit-normalised float32 vectors with each record's round and the agents that
have a verified outcome in it; per kind, each agent's running
:class:`~sale.workers.auction.estimates.AgentTotals` (what the verified award needs besides the
neighbours). Before every query it reads only the records above the highest id it has seen, so a
record another worker process wrote is found at the next query; ids missing below that for less than
:data:`GAP_SETTLE_S` are asked for again (on PostgreSQL a transaction may commit a lower id after a
higher one). A space of up to :data:`EXACT_MAX` vectors is searched exactly (one float32 matrix
product, faster than a graph at that size); a larger one by a faiss HNSW graph (inner product on
unit vectors), built once from the stored vectors and grown with each new record. Filters (award
rounds left out, an agent that must have an outcome) apply during the search; one that leaves at
most :data:`EXACT_MAX` vectors is searched exactly. Which records a set of left-out rounds allows is
kept per space and extended with each new record, not worked out per query. The candidates
(:data:`OVERSAMPLE` per result) are re-scored in float64 and ordered by (similarity desc, record
id), as the exact search orders them. The database stays the only source of truth: a returned id the
database no longer has, or a highest id that went down (a memory emptied and refilled), makes the
index rebuild.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sale.models.db import session_scope
from sale.models.tables import MemoryRecord
from sale.models.types import int8_dim, unpack_int8_rows
from sale.workers.auction.estimates import AgentTotals, Outcome
from sqlalchemy import LargeBinary, func, type_coerce
from sqlalchemy import select as sql_select
from sqlmodel import col, select

log = logging.getLogger(__name__)

#: Largest space (or filtered part of one) searched exactly; above it, the HNSW graph.
EXACT_MAX = 4096
#: HNSW graph: neighbours per node, and the breadth of its construction and search.
HNSW_M = 48
EF_CONSTRUCTION = 128
EF_SEARCH = 384
#: Candidates re-scored exactly per result asked for (at least MIN_CANDIDATES).
OVERSAMPLE = 4
MIN_CANDIDATES = 32
#: Sets of award rounds left out whose filter each space keeps (refinement asks for one).
MAX_ROUND_FILTERS = 8
#: Records read per query while syncing.
SYNC_BATCH = 5000
#: Missing ids below the highest seen that are asked for again, and for how long (seconds).
MAX_GAPS = 1024
GAP_SETTLE_S = 60.0

F32 = npt.NDArray[np.float32]
Mask = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class Hit:
    """One retrieved record: its id and its cosine similarity to the query."""

    record_id: int
    similarity: float


def record_outcomes(
    attempts: Sequence[Mapping[str, Any]] | None,
    award_agent: str,
    verdict: str,
    embedding: Sequence[float] = (),
) -> list[Outcome]:
    """The verified outcomes of one memory record: each attempt that ran and has a verdict (a
    record from before attempts were listed: its award's agent with the job's verdict)."""
    listed = attempts or [{"agent": award_agent, "verdict": verdict, "status": "done"}]
    out = []
    for a in listed:
        if a.get("verdict") not in ("passed", "failed") or a.get("status") == "failed":
            continue
        check, cost, tokens = a.get("self_check"), a.get("cost_usd"), a.get("tokens")
        out.append(
            Outcome(
                embedding,
                str(a["agent"]),
                a["verdict"] == "passed",
                None if check is None else check == "passed",
                None if cost is None else float(cost),
                None if tokens is None else int(tokens),
            )
        )
    return out


def _faiss() -> Any:
    """faiss, imported on first use (its stubs do not cover the HNSW search parameters)."""
    import faiss

    return faiss


def _grown(array: npt.NDArray[Any], need: int) -> npt.NDArray[Any]:
    """``array`` with room for ``need`` rows (capacity doubles)."""
    if len(array) >= need:
        return array
    bigger = np.zeros((max(need, 2 * len(array), 64), *array.shape[1:]), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger


class _Space:
    """The vectors of one kind and one embedding dimension, with each record's labels."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.n = 0
        self.ids = np.zeros(0, dtype=np.int64)
        self.rounds = np.zeros(0, dtype=np.int16)
        self.agents: dict[int, Mask] = {}  # agent code -> has a verified outcome in the record
        self._without: dict[frozenset[int], Mask] = {}  # round codes left out -> allowed
        self._flat: F32 = np.zeros((0, dim), dtype=np.float32)  # until the graph exists
        self._graph: Any = None

    def add(
        self, ids: Sequence[int], vectors: F32, rounds: Sequence[int], agents: list[set[int]]
    ) -> None:
        start, end = self.n, self.n + len(ids)
        self.ids = _grown(self.ids, end)
        self.ids[start:end] = ids
        self.rounds = _grown(self.rounds, end)
        self.rounds[start:end] = rounds
        for code in {c for row in agents for c in row}:
            self.agents.setdefault(code, np.zeros(0, dtype=np.bool_))
        for code, mask in self.agents.items():
            grown = _grown(mask, end)
            grown[start:end] = [code in row for row in agents]
            self.agents[code] = grown
        for key, mask in self._without.items():
            grown = _grown(mask, end)
            grown[start:end] = ~np.isin(self.rounds[start:end], list(key))
            self._without[key] = grown
        if self._graph is not None:
            self._graph.add(vectors)
        else:
            self._flat = _grown(self._flat, end)
            self._flat[start:end] = vectors
        self.n = end
        if self._graph is None and self.n > EXACT_MAX:
            self._build_graph()

    def _build_graph(self) -> None:
        faiss = _faiss()
        began = time.perf_counter()
        graph = faiss.IndexHNSWFlat(self.dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = EF_CONSTRUCTION
        graph.add(np.ascontiguousarray(self._flat[: self.n]))
        self._graph = graph
        self._flat = np.zeros((0, self.dim), dtype=np.float32)
        log.info(
            "memory index: HNSW graph of %d vectors (%d dims) built in %.1f s",
            self.n,
            self.dim,
            time.perf_counter() - began,
        )

    def without_rounds(self, rounds: Collection[int]) -> Mask:
        """Which records are of none of the award rounds ``rounds`` (codes): kept per set of
        rounds and extended as records are added, since a pass over every record's round at
        each query costs more than the graph search (~10 ms at a million records)."""
        key = frozenset(rounds)
        mask = self._without.get(key)
        if mask is None:
            if len(self._without) >= MAX_ROUND_FILTERS:
                self._without.clear()
            mask = self._without[key] = ~np.isin(self.rounds[: self.n], list(key))
        return mask[: self.n]

    def vectors(self) -> F32:
        """The unit vectors, one row per record (a view; valid until the next add)."""
        if self._graph is None:
            return self._flat[: self.n]
        faiss = _faiss()
        storage = faiss.downcast_index(self._graph.storage)
        flat: F32 = faiss.rev_swig_ptr(storage.get_xb(), self.n * self.dim)
        return flat.reshape(self.n, self.dim)

    def search(self, q: F32, k: int, allowed: Mask | None) -> list[tuple[int, float]]:
        """(record id, similarity) of the ``k`` allowed records nearest unit vector ``q``."""
        want = max(OVERSAMPLE * k, MIN_CANDIDATES)
        count = self.n if allowed is None else int(allowed.sum())
        if count == 0 or k <= 0:
            return []
        vectors = self.vectors()
        if not q.any():  # a zero query is equally far from everything: the oldest records
            positions = np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
            order = np.argsort(self.ids[positions], kind="stable")[:k]
            return [(int(self.ids[positions[i]]), 0.0) for i in order]
        if self._graph is None or count <= EXACT_MAX:
            positions = np.arange(self.n) if allowed is None else np.flatnonzero(allowed)
            sims32 = vectors[positions] @ q
            if len(positions) > want:
                # Every position at least as near as the want-th (ties at the edge included).
                edge = np.partition(sims32, len(sims32) - want)[len(sims32) - want]
                positions = positions[sims32 >= edge - 1e-6]
        else:
            positions = self._graph_search(q, want, allowed, count)
        sims = vectors[positions].astype(np.float64) @ q.astype(np.float64)
        ids = self.ids[positions]
        order = np.lexsort((ids, -sims))[:k]
        return [(int(ids[i]), float(sims[i])) for i in order]

    def _graph_search(
        self, q: F32, want: int, allowed: Mask | None, count: int
    ) -> npt.NDArray[np.int64]:
        faiss = _faiss()
        params = faiss.SearchParametersHNSW()
        # A filter that passes a fraction of the graph needs a wider search to find as many.
        widen = 1 if allowed is None else min(8, max(1, self.n // max(count, 1)))
        params.efSearch = max(EF_SEARCH, want) * widen
        if allowed is not None:
            bitmap = np.packbits(allowed[: self.n], bitorder="little")
            selector = faiss.IDSelectorBitmap(bitmap)
            params.sel = selector  # `selector` and `bitmap` stay alive through the search
        _, found = self._graph.search(q.reshape(1, -1), want, params=params)
        labels: npt.NDArray[np.int64] = found[0]
        return labels[labels >= 0]


class MemoryIndex:
    """The memory records of one database, indexed for top-k retrieval (module docstring)."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self.max_id = 0
        self._gaps: dict[int, float] = {}  # missing id -> when first missed (monotonic)
        self._spaces: dict[tuple[str, int], _Space] = {}
        self._totals: dict[str, dict[str, AgentTotals]] = {}
        self._jobs: dict[str, int] = {}
        self._rounds: dict[str, int] = {}
        self._agents: dict[str, int] = {}

    def rebuild(self) -> None:
        """Forget everything read; the next query reads the memory again."""
        with self._lock:
            self._reset()

    def sync(self) -> int:
        """Read the records written since the last sync; returns how many were added."""
        table = MemoryRecord.__table__  # type: ignore[attr-defined]
        c = table.c
        columns = (
            c.id,
            c.kind,
            type_coerce(c.embedding, LargeBinary()),
            c.award_round,
            c.award_agent,
            c.verdict,
            c.attempts,
        )
        added = 0
        with self._lock, session_scope(self.db_url) as s:
            conn = s.connection()
            top = conn.execute(sql_select(func.max(c.id))).scalar() or 0
            if top < self.max_id:
                log.info("memory index: the memory of %s shrank; rebuilding", self.db_url)
                self._reset()
            now = time.monotonic()
            if self._gaps:
                rows = conn.execute(sql_select(*columns).where(c.id.in_(sorted(self._gaps)))).all()
                for row in rows:
                    self._gaps.pop(row[0], None)
                added += self._add(rows)
                self._gaps = {i: t for i, t in self._gaps.items() if now - t < GAP_SETTLE_S}
            seen = self.max_id
            while True:
                query = sql_select(*columns).where(c.id > self.max_id).order_by(c.id)
                rows = conn.execute(query.limit(SYNC_BATCH)).all()
                if not rows:
                    break
                added += self._add(rows)
                self.max_id = int(rows[-1][0])
            if self.max_id > seen:
                low = max(seen, self.max_id - MAX_GAPS)
                have = set(
                    conn.execute(sql_select(c.id).where(c.id > low, c.id <= self.max_id)).scalars()
                )
                for missing in set(range(low + 1, self.max_id + 1)) - have:
                    self._gaps.setdefault(missing, now)
        return added

    def _code(self, codes: dict[str, int], name: str) -> int:
        return codes.setdefault(name, len(codes))

    def _add(self, rows: Iterable[Any]) -> int:
        batches: dict[tuple[str, int], list[tuple[int, bytes, int, set[int]]]] = {}
        n = 0
        for rid, kind, blob, award_round, award_agent, verdict, attempts in rows:
            n += 1
            outcomes = record_outcomes(attempts, award_agent, verdict)
            by_agent = self._totals.setdefault(kind, {})
            for o in outcomes:
                by_agent[o.agent] = by_agent.get(o.agent, AgentTotals()).plus(o)
            self._jobs[kind] = self._jobs.get(kind, 0) + bool(outcomes)
            blob = bytes(blob or b"")
            dim = int8_dim(blob)
            if dim == 0:
                continue  # no embedding (SALE_EMBEDDER=none): counted, never near
            agents = {self._code(self._agents, o.agent) for o in outcomes}
            entry = (int(rid), blob, self._code(self._rounds, award_round), agents)
            batches.setdefault((kind, dim), []).append(entry)
        for (kind, dim), entries in batches.items():
            vectors = unpack_int8_rows(b"".join(e[1] for e in entries), dim)
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            unit = (vectors / np.where(norms == 0, 1.0, norms)).astype(np.float32)
            space = self._spaces.setdefault((kind, dim), _Space(dim))
            space.add(
                [e[0] for e in entries], unit, [e[2] for e in entries], [e[3] for e in entries]
            )
        return n

    def search(
        self,
        kind: str,
        query: Sequence[float],
        k: int,
        exclude_rounds: Collection[str] = (),
        agent: str | None = None,
    ) -> list[Hit]:
        """The ``k`` records of ``kind`` nearest ``query``, nearest first (ties: older first):
        none of an award round in ``exclude_rounds``; with ``agent``, only records where that
        agent has a verified outcome. Records embedded with another dimension are never near."""
        self.sync()
        with self._lock:
            space = self._spaces.get((kind, len(query)))
            if space is None or k <= 0:
                return []
            allowed: Mask | None = None
            rounds = [self._rounds[r] for r in exclude_rounds if r in self._rounds]
            if rounds:
                allowed = space.without_rounds(rounds)
            if agent is not None:
                code = self._agents.get(agent)
                mask = space.agents.get(code) if code is not None else None
                if mask is None:
                    return []
                allowed = mask[: space.n] if allowed is None else allowed & mask[: space.n]
            q = np.asarray(query, dtype=np.float64)
            norm = np.linalg.norm(q)
            unit = (q / norm if norm else q).astype(np.float32)
            return [Hit(rid, sim) for rid, sim in space.search(unit, k, allowed)]

    def outcome_totals(self, kind: str) -> tuple[dict[str, AgentTotals], int]:
        """(each agent's totals over the kind's verified outcomes, how many records have one)."""
        self.sync()
        with self._lock:
            return dict(self._totals.get(kind, {})), self._jobs.get(kind, 0)

    def count(self, kind: str, exclude_rounds: Collection[str] = ()) -> int:
        """How many records of ``kind`` with an embedding the memory holds, none of an award
        round in ``exclude_rounds`` (after a sync)."""
        self.sync()
        with self._lock:
            rounds = [self._rounds[r] for r in exclude_rounds if r in self._rounds]
            return sum(
                int(sp.n - np.isin(sp.rounds[: sp.n], rounds).sum()) if rounds else sp.n
                for (k, _dim), sp in self._spaces.items()
                if k == kind
            )

    def memory_bytes(self) -> int:
        """Bytes held by the vectors, the graph links and the labels (an estimate)."""
        with self._lock:
            total = 0
            for sp in self._spaces.values():
                total += sp.n * (sp.dim * 4 + 8 + 2 + len(sp.agents))
                if sp._graph is not None:
                    total += sp.n * HNSW_M * 2 * 4  # level-0 links; upper levels are ~1/M of it
            return total


_indexes: dict[tuple[int, str], MemoryIndex] = {}
_indexes_lock = threading.Lock()


def memory_index(db_url: str) -> MemoryIndex:
    """This process's index of the memory at ``db_url`` (a new one after fork)."""
    key = (os.getpid(), db_url)
    with _indexes_lock:
        index = _indexes.get(key)
        if index is None:
            for stale in [k for k in _indexes if k[0] != key[0]]:
                del _indexes[stale]
            index = _indexes[key] = MemoryIndex(db_url)
        return index


def forget_indexes(db_url: str | None = None) -> None:
    """Drop this process's index of ``db_url`` (every index: None); rebuilt on next use."""
    with _indexes_lock:
        for key in [k for k in _indexes if db_url is None or k[1] == db_url]:
            del _indexes[key]


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        return float("nan")
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = float(np.linalg.norm(x) * np.linalg.norm(y))
    return float(x @ y / norms) if norms else 0.0


def nearest_records(
    db_url: str,
    kind: str,
    query: Sequence[float],
    k: int,
    exclude_rounds: Collection[str] = (),
    agent: str | None = None,
) -> list[tuple[MemoryRecord, float]]:
    """(record, similarity) of the ``k`` nearest records (:meth:`MemoryIndex.search`), read
    from the database by id; the only records this reads in full."""
    index = memory_index(db_url)
    for _ in range(2):
        hits = index.search(kind, query, k, exclude_rounds, agent)
        if not hits:
            return []
        ids = [h.record_id for h in hits]
        with session_scope(db_url) as s:
            rows = {
                r.id: r for r in s.exec(select(MemoryRecord).where(col(MemoryRecord.id).in_(ids)))
            }
        if len(rows) == len(ids) and all(
            abs(_cosine(query, rows[h.record_id].embedding) - h.similarity) < 1e-4 for h in hits
        ):
            break
        # A record gone, or another under the same id (a memory emptied and refilled).
        log.info("memory index: the memory of %s changed under the index; rebuilding", db_url)
        index.rebuild()
    return [(rows[h.record_id], h.similarity) for h in hits if h.record_id in rows]
