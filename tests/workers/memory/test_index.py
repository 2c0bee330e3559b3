"""The memory index (sale.workers.memory.index) against exact search on synthetic memories:
the same records as the exact cosine search over every record, exactly below the size
threshold and with recall >= 0.95 through the HNSW graph; filters by award round and by agent;
records written by another process picked up at the next query; a memory emptied and refilled;
each agent's outcome totals equal to those over every record; and the verified award's choice
from the index equal to the one from every outcome."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sale.models.db import init_db, session_scope
from sale.models.tables import Job, MemoryRecord
from sale.scripts.bench.memory_data import Shape, bulk_insert, vectors
from sale.workers.auction.chains import ChainParams, award_chain, award_chain_from
from sale.workers.auction.estimates import EstimatorParams, totals
from sale.workers.jobs import memory_entry
from sale.workers.memory import index as memory
from sale.workers.memory.index import MemoryIndex, forget_indexes, nearest_records
from sale.workers.memory.retrieval import nearest_with_similarity
from sale.workers.stages.awarding import NO_AUCTION
from sale.workers.stages.verified import memory_outcomes
from sqlmodel import col, select

SHAPE = Shape(dim=384, per_cluster=40, seed=3)


@pytest.fixture
def url(tmp_path: Path) -> str:
    db = f"sqlite:///{tmp_path / 'memory.db'}"
    init_db(db)
    forget_indexes()
    return db


def every_record(url: str) -> list[MemoryRecord]:
    with session_scope(url) as s:
        return list(s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id))))


def exact(
    url: str, query: list[float], k: int, exclude: tuple[str, ...] = (), agent: str | None = None
) -> list[tuple[int, float]]:
    """The old retrieval: every record of the kind, cosine over all of them."""
    records = [r for r in every_record(url) if r.award_round not in exclude]
    if agent is not None:
        records = [r for r in records if agent in {a["agent"] for a in verified(r)}]
    near = nearest_with_similarity(query, [memory_entry(r) for r in records], k)
    return [(e.record_id, sim) for e, sim in near]


def verified(r: MemoryRecord) -> list[dict[str, str]]:
    return [a for a in r.attempts if a["verdict"] in ("passed", "failed")]


def queries(n: int, total: int) -> list[list[float]]:
    return [[float(x) for x in v] for v in vectors(n, SHAPE, total, seed=99)]


def test_below_the_threshold_the_index_returns_exactly_the_exact_search(url: str) -> None:
    bulk_insert(url, 300, SHAPE)
    index = MemoryIndex(url)
    for q in queries(20, 300):
        for exclude in ((), NO_AUCTION):
            got = [(h.record_id, h.similarity) for h in index.search("coding", q, 8, exclude)]
            want = exact(url, q, 8, exclude)
            assert [i for i, _ in got] == [i for i, _ in want]
            assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-6)
        got_agent = [h.record_id for h in index.search("coding", q, 5, agent="large")]
        assert got_agent == [i for i, _ in exact(url, q, 5, agent="large")]
    assert index.search("search", queries(1, 300)[0], 8) == []  # another kind: nothing
    assert index.search("coding", [1.0, 0.0], 8) == []  # another dimension: never near


def test_through_the_graph_recall_is_high_and_similarities_exact(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory, "EXACT_MAX", 100)  # the graph from 100 records on
    bulk_insert(url, 1500, SHAPE)
    with session_scope(url) as s:  # an agent with outcomes in 30 records only
        for r in s.exec(select(MemoryRecord).where(col(MemoryRecord.id) % 50 == 0)):
            r.attempts = [{**a, "agent": "solo"} for a in r.attempts]
            s.add(r)
    index = MemoryIndex(url)
    found = total = 0
    for q in queries(40, 1500):
        for exclude in ((), NO_AUCTION):
            hits = index.search("coding", q, 8, exclude)
            want = dict(exact(url, q, 8, exclude))
            assert len(hits) == 8
            found += sum(h.record_id in want for h in hits)
            total += len(want)
            for h in hits:  # re-scored exactly, ordered by (similarity, id)
                if h.record_id in want:
                    assert h.similarity == pytest.approx(want[h.record_id], abs=1e-6)
            sims = [h.similarity for h in hits]
            assert sims == sorted(sims, reverse=True)
        # A filter that leaves few records (an agent in few of them) is searched exactly.
        solo = [h.record_id for h in index.search("coding", q, 8, agent="solo")]
        assert solo == [i for i, _ in exact(url, q, 8, agent="solo")] and len(solo) == 8
        assert index.search("coding", q, 8, agent="nobody") == []
    assert found / total >= 0.95
    assert index._spaces[("coding", 384)]._graph is not None


def test_a_record_written_by_another_process_is_found_at_the_next_query(url: str) -> None:
    bulk_insert(url, 50, SHAPE)
    index = MemoryIndex(url)
    q = queries(1, 60)[0]
    assert index.search("coding", q, 8) and index.search("coding", q, 8, NO_AUCTION)
    assert index.max_id == 50
    # Another process writes ten more records; the next query reads only those.
    script = (
        "from sale.scripts.bench.memory_data import Shape, bulk_insert;"
        f"bulk_insert({url!r}, 10, Shape(dim=384, per_cluster=40, seed=3), start=51)"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert index.sync() == 10 and index.max_id == 60
    assert index.sync() == 0
    for exclude in ((), NO_AUCTION):  # the kept filter of left-out rounds covers the new ones
        got = [h.record_id for h in index.search("coding", q, 8, exclude)]
        assert got == [i for i, _ in exact(url, q, 8, exclude)]
        assert any(i > 50 for i in got)


def test_an_id_committed_after_a_higher_one_is_still_found(url: str) -> None:
    bulk_insert(url, 10, SHAPE)
    bulk_insert(url, 1, SHAPE, start=12)  # 11 is still being written elsewhere
    index = MemoryIndex(url)
    assert index.sync() == 11 and index.max_id == 12
    bulk_insert(url, 1, SHAPE, start=11)
    assert index.sync() == 1 and index.count("coding") == 12


def test_a_memory_emptied_and_refilled_is_read_again(url: str) -> None:
    bulk_insert(url, 40, SHAPE)
    q = queries(1, 40)[0]
    assert len(nearest_records(url, "coding", q, 8)) == 8
    with session_scope(url) as s:
        for r in s.exec(select(MemoryRecord)):
            s.delete(r)
        s.flush()
        for job in s.exec(select(Job)):
            s.delete(job)
    bulk_insert(url, 40, Shape(dim=384, per_cluster=40, seed=4), start=1)  # same ids, new rows
    got = nearest_records(url, "coding", q, 8)
    assert [r.id for r, _ in got] == [i for i, _ in exact(url, q, 8)]
    with session_scope(url) as s:  # fewer records than before: the highest id went down
        for r in s.exec(select(MemoryRecord).where(col(MemoryRecord.id) > 5)):
            s.delete(r)
    got = nearest_records(url, "coding", q, 8)
    assert [r.id for r, _ in got] == [i for i, _ in exact(url, q, 8)] and len(got) == 5


def test_outcome_totals_are_those_over_every_record(url: str) -> None:
    bulk_insert(url, 200, SHAPE)
    by_agent, jobs = MemoryIndex(url).outcome_totals("coding")
    outcomes, want_jobs = memory_outcomes(every_record(url))
    want = totals(outcomes)
    assert jobs == want_jobs == 200
    assert by_agent.keys() == want.keys()
    for agent, t in want.items():
        got = by_agent[agent]
        assert (got.passes, got.attempts, got.checked, got.accepted) == (
            t.passes,
            t.attempts,
            t.checked,
            t.accepted,
        )
        assert got.cost_sum == pytest.approx(t.cost_sum) and got.tokens_sum == t.tokens_sum


def test_the_verified_award_from_the_index_is_the_one_from_every_outcome(url: str) -> None:
    bulk_insert(url, 400, SHAPE)
    outcomes, _ = memory_outcomes(every_record(url))
    prices = {"small": 0.03, "medium": 0.12, "large": 0.36}
    params = ChainParams(EstimatorParams(k=5))
    by_agent, _ = MemoryIndex(url).outcome_totals("coding")
    for q in queries(10, 400):
        near = {}
        for agent in prices:
            found = nearest_records(url, "coding", q, 5, agent=agent)
            near[agent] = [
                (a["verdict"] == "passed", sim)
                for r, sim in found
                for a in verified(r)
                if a["agent"] == agent
            ][:5]
        got, got_views, _ = award_chain_from(by_agent, near, prices, params, max_len=3)
        want, want_views, _ = award_chain(outcomes, q, prices, params, max_len=3)
        assert got.chain == want.chain
        assert [v.p_pass for v in got_views] == pytest.approx([v.p_pass for v in want_views])
        assert [v.cost for v in got_views] == pytest.approx([v.cost for v in want_views])


def test_records_without_an_embedding_are_counted_but_never_near(url: str) -> None:
    bulk_insert(url, 5, SHAPE)
    with session_scope(url) as s:
        r = s.exec(select(MemoryRecord).where(MemoryRecord.id == 3)).one()
        r.embedding = []
        s.add(r)
    index = MemoryIndex(url)
    assert index.count("coding") == 4
    assert 3 not in {h.record_id for h in index.search("coding", queries(1, 5)[0], 8)}
    assert index.outcome_totals("coding")[1] == 5


def test_a_zero_query_gives_the_oldest_records(url: str) -> None:
    bulk_insert(url, 20, SHAPE)
    hits = MemoryIndex(url).search("coding", [0.0] * 384, 3)
    assert [(h.record_id, h.similarity) for h in hits] == [(1, 0.0), (2, 0.0), (3, 0.0)]
    assert np.isfinite([h.similarity for h in hits]).all()
