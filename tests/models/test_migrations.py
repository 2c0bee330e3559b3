"""Alembic migrations 0002 (execution attempts), 0003 (a direct job's agent), 0004 (a
verified award's chain) and 0005 (packed float32 embeddings) on databases that already hold rows.

The same test runs on SQLite (the embedded default, where the execution table is rebuilt in
batch mode) and on a throwaway PostgreSQL server (skipped locally without one, like
test_postgres.py).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sale.models.db import alembic_config, get_engine
from sqlalchemy.exc import IntegrityError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
USAGE = {"tokens_in": 0, "tokens_out": 0, "cost_usd": 0.0, "latency_s": 0.0}


def _table(conn: sa.Connection, name: str) -> sa.Table:
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def _insert(conn: sa.Connection, name: str, **values: Any) -> None:
    conn.execute(_table(conn, name).insert().values(**values))


def _execution(conn: sa.Connection, row_id: int, agent: str, **values: Any) -> None:
    """An execution row of job j1 (bid 1, no usage unless given)."""
    row = {"job_id": "j1", "bid_id": 1, "status": "done", "created_at": T0, **USAGE, **values}
    _insert(conn, "execution", id=row_id, agent=agent, **row)


def _job(conn: sa.Connection, job_id: str) -> None:
    """A finished coding job with the columns every schema version has."""
    _insert(conn, "job", id=job_id, kind="coding", prompt="p", spec={}, pool_path="",
            status="done", notes=[], created_at=T0, updated_at=T0)  # fmt: skip


def _rows(conn: sa.Connection, name: str) -> list[dict[str, Any]]:
    table = _table(conn, name)
    return [dict(r._mapping) for r in conn.execute(table.select().order_by(table.c.id))]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url: str = request.getfixturevalue("postgres_url")
    with get_engine(url).begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    return url


def test_upgrade_from_0001_keeps_rows_and_keys_executions_by_attempt(empty_url: str) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0001")
    engine = get_engine(empty_url)
    with engine.begin() as conn:
        _job(conn, "j1")
        for bid_id, agent in ((1, "small"), (2, "large")):
            _insert(
                conn,
                "bid",
                id=bid_id,
                job_id="j1",
                agent=agent,
                round="first",
                status="ok",
                memory_pairs=[],
                created_at=T0,
                **USAGE,
            )
        _execution(
            conn, 1, "small", answer="def f(): pass", verdict="passed", tokens_in=10, tokens_out=20
        )
        _insert(conn, "executionstep", id=1, execution_id=1, index=0, role="assistant", **USAGE)
        _insert(
            conn,
            "memoryrecord",
            id=1,
            job_id="j1",
            kind="coding",
            task_text="p",
            embedding=[1.0],
            bids=[{"agent": "small"}],
            award_agent="small",
            award_round="first",
            provisional_agent="small",
            verdict="passed",
            total_tokens=33,
            total_cost_usd=0.5,
            created_at=T0,
        )

    command.upgrade(cfg, "0002")

    with engine.connect() as conn:
        (execution,) = _rows(conn, "execution")
        (step,) = _rows(conn, "executionstep")
        (record,) = _rows(conn, "memoryrecord")
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0002"
    assert (execution["id"], execution["job_id"], execution["agent"], execution["answer"]) == (
        1,
        "j1",
        "small",
        "def f(): pass",
    )
    assert (execution["attempt"], execution["self_check"], execution["verdict"]) == (
        0,
        None,
        "passed",
    )
    assert (execution["tokens_in"], execution["tokens_out"]) == (10, 20)
    assert step["execution_id"] == 1
    assert record["attempts"] == [] and record["bids"] == [{"agent": "small"}]
    unique = {
        tuple(u["column_names"]) for u in sa.inspect(engine).get_unique_constraints("execution")
    }
    assert unique == {("job_id", "attempt")}

    # A second attempt of the job is allowed now; a second row for one attempt is not.
    with engine.begin() as conn:
        _execution(conn, 2, "large", attempt=1, bid_id=2, verdict="passed", self_check="passed")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _execution(conn, 3, "small", attempt=1, verdict="failed")
    # Foreign keys are enforced again after the rebuild (SQLite switches them off around it).
    with pytest.raises(IntegrityError), engine.begin() as conn:
        _insert(conn, "executionstep", id=2, execution_id=99, index=0, role="assistant", **USAGE)

    # Downgrading keeps one execution per job: the last attempt.
    command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        kept = _rows(conn, "execution")
        steps = _rows(conn, "executionstep")
    assert [(e["id"], e["agent"]) for e in kept] == [(2, "large")]
    assert "attempt" not in kept[0]
    assert steps == []  # the dropped attempt's steps went with it
    command.upgrade(cfg, "head")


def test_upgrade_from_0002_gives_every_job_an_empty_agent(empty_url: str) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0002")
    engine = get_engine(empty_url)
    with engine.begin() as conn:
        job = dict(kind="coding", prompt="p", spec={}, pool_path="", notes=[], created_at=T0)
        _insert(conn, "job", id="j1", status="done", updated_at=T0, **job)
    command.upgrade(cfg, "0003")
    with engine.begin() as conn:
        _insert(conn, "job", id="j2", status="queued", updated_at=T0, agent="small", **job)
        rows = {r["id"]: r["agent"] for r in _rows(conn, "job")}
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0003" and rows == {"j1": None, "j2": "small"}
    command.downgrade(cfg, "0002")
    with engine.connect() as conn:
        assert "agent" not in {c.name for c in _table(conn, "job").columns}
        assert len(_rows(conn, "job")) == 2


def test_upgrade_from_0003_gives_every_award_and_record_an_empty_chain(empty_url: str) -> None:
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0003")
    engine = get_engine(empty_url)
    with engine.begin() as conn:
        _job(conn, "j1")
        _insert(
            conn,
            "bid",
            id=1,
            job_id="j1",
            agent="small",
            round="first",
            status="ok",
            memory_pairs=[],
            created_at=T0,
            **USAGE,
        )
        award = dict(bid_id=1, agent="small", round="first", score=0.0, created_at=T0)
        _insert(
            conn,
            "award",
            id=1,
            job_id="j1",
            provisional_agent="small",
            provisional_score=0.0,
            **award,
        )
        _insert(
            conn,
            "memoryrecord",
            id=1,
            job_id="j1",
            kind="coding",
            task_text="p",
            embedding=[1.0],
            bids=[],
            attempts=[],
            award_agent="small",
            award_round="first",
            provisional_agent="small",
            verdict="passed",
            total_tokens=0,
            total_cost_usd=0.0,
            created_at=T0,
        )
    command.upgrade(cfg, "head")
    with engine.begin() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        assert version == "0006"
        assert [r["chain"] for r in _rows(conn, "award")] == [None]
        assert [r["chain"] for r in _rows(conn, "memoryrecord")] == [None]
        conn.execute(_table(conn, "award").update().values(chain=["small", "large"]))
        assert [r["chain"] for r in _rows(conn, "award")] == [["small", "large"]]
    command.downgrade(cfg, "0003")
    with engine.connect() as conn:
        assert "chain" not in {c.name for c in _table(conn, "award").columns}
        assert "chain" not in {c.name for c in _table(conn, "memoryrecord").columns}
        assert len(_rows(conn, "award")) == 1 and len(_rows(conn, "memoryrecord")) == 1


def _record(conn: sa.Connection, row_id: int, embedding: list[float]) -> None:
    """A memory record of job j<row_id> (its job too) with this embedding."""
    job = dict(kind="coding", prompt="p", spec={}, pool_path="", notes=[], created_at=T0)
    _insert(conn, "job", id=f"j{row_id}", status="done", updated_at=T0, **job)
    _insert(
        conn,
        "memoryrecord",
        id=row_id,
        job_id=f"j{row_id}",
        kind="coding",
        task_text="p",
        embedding=embedding,
        bids=[{"agent": "small"}],
        attempts=[],
        award_agent="small",
        award_round="first",
        provisional_agent="small",
        verdict="passed",
        total_tokens=0,
        total_cost_usd=0.0,
        created_at=T0,
    )


def test_upgrade_from_0004_packs_every_embedding_as_float32_bytes(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import numpy as np

    migration = importlib.import_module("sale.models.migrations.versions.0005_packed_embeddings")
    monkeypatch.setattr(migration, "BATCH", 2)  # several batches from five rows
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0004")
    engine = get_engine(empty_url)
    vectors = {1: [0.6, 0.8], 2: [], 3: [0.1, -0.2, 0.3], 4: [1.0] * 384, 5: [0.0, 1.0]}
    with engine.begin() as conn:
        for row_id, vector in vectors.items():
            _record(conn, row_id, vector)
    command.upgrade(cfg, "0005")
    with engine.connect() as conn:
        rows = _rows(conn, "memoryrecord")
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0005"
    stored = {r["id"]: bytes(r["embedding"]) for r in rows}
    assert stored == {i: np.asarray(v, dtype="<f4").tobytes() for i, v in vectors.items()}
    assert len(stored[4]) == 384 * 4 and stored[2] == b""
    assert [r["bids"] for r in rows] == [[{"agent": "small"}]] * 5  # the rest untouched
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("memoryrecord")}
    assert isinstance(columns["embedding"]["type"], sa.LargeBinary)
    assert not columns["embedding"]["nullable"]
    indexes = {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("memoryrecord")}
    assert indexes["ix_memoryrecord_kind_id"] == ["kind", "id"]

    # The ORM reads the packed bytes as floats (float32 values).
    from sale.models.db import session_scope
    from sale.models.tables import MemoryRecord
    from sqlmodel import col, select

    with session_scope(empty_url) as s:
        read = {
            r.id: r.embedding for r in s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id)))
        }
    assert read[1] == pytest.approx([0.6, 0.8]) and read[2] == [] and len(read[4]) == 384

    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        back = {r["id"]: r["embedding"] for r in _rows(conn, "memoryrecord")}
    assert back[2] == [] and back[4] == [1.0] * 384
    assert back[3] == pytest.approx(vectors[3]) and back[1] == pytest.approx(vectors[1])
    command.upgrade(cfg, "head")
