"""Alembic migrations 0002 (execution attempts), 0003 (a direct job's agent), 0004 (a verified
award's chain), 0005 (packed float32 embeddings), 0007 (float16 embeddings, deflated task text, bids
and attempts) and 0009 (int8 embeddings) on databases that already hold rows, up and back down.

The same test runs on SQLite (the embedded default, where the execution table is rebuilt in
batch mode) and on a throwaway PostgreSQL server (skipped locally without one, like
test_postgres.py).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from sale.models.db import alembic_config, get_engine
from sqlalchemy.exc import IntegrityError

T0 = datetime(2025, 1, 1, tzinfo=UTC)
HEAD = "0009"
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
        assert version == HEAD
        assert [r["chain"] for r in _rows(conn, "award")] == [None]
        assert [r["chain"] for r in _rows(conn, "memoryrecord")] == [None]
        conn.execute(_table(conn, "award").update().values(chain=["small", "large"]))
        assert [r["chain"] for r in _rows(conn, "award")] == [["small", "large"]]
    command.downgrade(cfg, "0003")
    with engine.connect() as conn:
        assert "chain" not in {c.name for c in _table(conn, "award").columns}
        assert "chain" not in {c.name for c in _table(conn, "memoryrecord").columns}
        assert len(_rows(conn, "award")) == 1 and len(_rows(conn, "memoryrecord")) == 1


def _record(conn: sa.Connection, row_id: int, embedding: Any, **values: Any) -> None:
    """A memory record of job j<row_id> (its job too) with this embedding (and these values)."""
    job = dict(kind="coding", prompt="p", spec={}, pool_path="", notes=[], created_at=T0)
    _insert(conn, "job", id=f"j{row_id}", status="done", updated_at=T0, **job)
    record = dict(
        task_text="p",
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
    _insert(conn, "memoryrecord", id=row_id, job_id=f"j{row_id}", kind="coding",
            embedding=embedding, **(record | values))  # fmt: skip


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

    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        back = {r["id"]: r["embedding"] for r in _rows(conn, "memoryrecord")}
    assert back[2] == [] and back[4] == [1.0] * 384
    assert back[3] == pytest.approx(vectors[3]) and back[1] == pytest.approx(vectors[1])
    command.upgrade(cfg, "head")


def test_upgrade_from_0006_stores_float16_embeddings_and_deflated_text_and_json(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import numpy as np
    from sale.models import types
    from sale.models.db import session_scope
    from sale.models.tables import MemoryRecord
    from sqlmodel import col, select

    migration = importlib.import_module(
        "sale.models.migrations.versions.0007_compact_memory_records"
    )
    monkeypatch.setattr(migration, "BATCH", 2)  # several batches from five rows
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0006")
    engine = get_engine(empty_url)
    unit = np.random.default_rng(0).standard_normal(384)
    unit /= np.linalg.norm(unit)
    plan = "1. Restate the task: écrire « add » — 2. Test it.\n" * 20
    records = {
        1: dict(embedding=[0.6, 0.8], task_text="def add(a, b):\n    ...", bids=[], attempts=[]),
        2: dict(embedding=[], task_text="", bids=[{"agent": "small", "jury": {}}], attempts=[]),
        3: dict(
            embedding=unit.tolist(),
            task_text="Which city is the capital? " * 30,
            bids=[
                {"bid_id": 7, "agent": "small", "plan": plan, "entropy": 0.3512832964074281,
                 "jury": {"medium": 4}, "gamma": {"medium": 4.0}, "score": None},
                {"bid_id": 8, "agent": "large", "plan": plan[::-1], "cost": 1e-09},
            ],
            attempts=[{"attempt": 0, "bid_id": 7, "verdict": "passed", "cost_usd": 5.004e-05}],
        ),
        4: dict(embedding=[1.0] * 384, task_text="t", bids=[{"a": [1, [2, {"b": None}]]}],
                attempts=[{"attempt": 0}, {"attempt": 1}]),
        5: dict(embedding=[0.0, 1.0], task_text="∑ 😀", bids=[{}], attempts=[]),
    }  # fmt: skip
    with engine.begin() as conn:
        for row_id, r in records.items():
            packed = np.asarray(r["embedding"], dtype="<f4").tobytes()
            _record(conn, row_id, packed, **{k: v for k, v in r.items() if k != "embedding"})
        before = _rows(conn, "memoryrecord")
    command.upgrade(cfg, "0007")
    with engine.connect() as conn:
        rows = {r["id"]: r for r in _rows(conn, "memoryrecord")}
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0007"
    for row_id, r in records.items():
        row = rows[row_id]
        f16 = np.asarray(r["embedding"], dtype="<f2").tobytes()
        assert bytes(row["embedding"]) == f16 and len(f16) == 2 * len(r["embedding"])
        assert types.inflate(row["task_text"]).decode() == r["task_text"]
        assert types.load_json(row["bids"]) == r["bids"]
        assert types.load_json(row["attempts"]) == r["attempts"]
        assert (row["award_agent"], row["verdict"]) == ("small", "passed")  # the rest untouched
    # Record 3: its bids' repeated plan and keys deflate to a small part of the JSON.
    assert len(bytes(rows[3]["bids"])) < len(json.dumps(records[3]["bids"])) / 5
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("memoryrecord")}
    for name in ("embedding", "task_text", "bids", "attempts"):
        assert isinstance(columns[name]["type"], sa.LargeBinary), name
        assert not columns[name]["nullable"], name
    indexes = {i["name"]: i["column_names"] for i in sa.inspect(engine).get_indexes("memoryrecord")}
    assert "ix_memoryrecord_kind" not in indexes
    assert indexes["ix_memoryrecord_kind_id"] == ["kind", "id"]

    # The ORM gives back the text and JSON that went in; the embedding reads back as float16
    # values (the ORM's column is int8 from 0009 on).
    with session_scope(empty_url) as s:
        read = {r.id: r for r in s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id)))}
    f16 = {i: types.unpack(row["embedding"]).tolist() for i, row in rows.items()}
    for row_id, r in records.items():
        got = read[row_id]
        assert (got.task_text, got.bids, got.attempts) == (r["task_text"], r["bids"], r["attempts"])
        assert f16[row_id] == pytest.approx(r["embedding"], abs=1e-3)
    assert f16[2] == [] and f16[1] == [0.60009765625, 0.7998046875]

    command.downgrade(cfg, "0006")
    with engine.connect() as conn:
        back = _rows(conn, "memoryrecord")
        indexes = {i["name"] for i in sa.inspect(conn).get_indexes("memoryrecord")}
        default = {c["name"]: c for c in sa.inspect(conn).get_columns("memoryrecord")}
    assert "ix_memoryrecord_kind" in indexes and default["attempts"]["default"] is not None
    for old, new in zip(before, back, strict=True):
        f16 = np.frombuffer(bytes(old["embedding"]), dtype="<f4").astype("<f2").astype("<f4")
        assert bytes(new["embedding"]) == f16.tobytes()
        assert {k: v for k, v in new.items() if k != "embedding"} == {
            k: v for k, v in old.items() if k != "embedding"
        }
    command.upgrade(cfg, "head")


def test_upgrade_from_0007_gives_every_paid_row_one_ledger_row_with_its_totals(
    empty_url: str,
) -> None:
    from sale.models.db import session_scope
    from sale.workers.jobs import job_usage

    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0007")
    engine = get_engine(empty_url)
    bids = ((1, "small", "first", 10, 20, 0.001), (2, "small", "refined", 5, 7, 0.0005),
            (3, "large", "direct", 0, 0, 0.0))  # fmt: skip
    with engine.begin() as conn:
        _job(conn, "j1")
        _job(conn, "j2")  # no calls: no ledger rows
        for bid_id, agent, round_, tokens_in, tokens_out, cost in bids:
            _insert(conn, "bid", id=bid_id, job_id="j1", agent=agent, round=round_, status="ok",
                    memory_pairs=[], created_at=T0, latency_s=0.0, tokens_in=tokens_in,
                    tokens_out=tokens_out, cost_usd=cost)  # fmt: skip
        _insert(conn, "jurycall", id=1, job_id="j1", juror="large", round="first", target="all",
                status="ok", order=[], retried=False, created_at=T0,
                **{**USAGE, "tokens_in": 100, "tokens_out": 3, "cost_usd": 0.002})  # fmt: skip
        for attempt, agent, cost in ((0, "tiny", 0.0001), (1, "small", 0.004)):
            _execution(conn, attempt + 1, agent, attempt=attempt, verdict="passed",
                       tokens_in=150, tokens_out=20, cost_usd=cost)  # fmt: skip
    command.upgrade(cfg, "0008")
    with engine.connect() as conn:
        ledger = _rows(conn, "modelcall")
    assert [(r["call_id"], r["job_id"], r["stage"], r["agent"]) for r in ledger] == [
        ("bid-1", "j1", "bid", "small"),
        ("bid-2", "j1", "refine", "small"),
        ("jury-1", "j1", "jury", "large"),
        ("execution-1", "j1", "execute", "tiny"),
        ("execution-2", "j1", "execute", "small"),
    ]
    assert all(r["created_at"].replace(tzinfo=UTC) == T0 for r in ledger)
    with session_scope(empty_url) as s:
        usage = job_usage(s, "j1")
        assert job_usage(s, "j2") == {st: (0, 0.0) for st in ("bid", "jury", "refine", "execute")}
    assert usage == {
        "bid": (30, pytest.approx(0.001)),
        "refine": (12, pytest.approx(0.0005)),
        "jury": (103, pytest.approx(0.002)),
        "execute": (340, pytest.approx(0.0041)),
    }
    with pytest.raises(IntegrityError), engine.begin() as conn:  # one row per call id
        _insert(conn, "modelcall", call_id="bid-1", job_id="j1", stage="bid", agent="small",
                tokens_in=1, tokens_out=1, cost_usd=0.1, created_at=T0)  # fmt: skip

    command.downgrade(cfg, "0007")
    assert "modelcall" not in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert len(_rows(conn, "bid")) == 3  # the stage rows keep what they held


def test_upgrade_from_0008_stores_int8_embeddings_with_a_scale(
    empty_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    import numpy as np
    from sale.models import types
    from sale.models.db import session_scope
    from sale.models.tables import MemoryRecord
    from sale.workers.memory.index import MemoryIndex
    from sqlmodel import col, select

    migration = importlib.import_module("sale.models.migrations.versions.0009_int8_embeddings")
    monkeypatch.setattr(migration, "BATCH", 2)  # several batches from six rows
    cfg = alembic_config(empty_url)
    command.upgrade(cfg, "0008")
    engine = get_engine(empty_url)
    unit = np.random.default_rng(0).standard_normal(384)
    unit /= np.linalg.norm(unit)
    vectors = {1: [0.6, 0.8], 2: [], 3: unit.tolist(), 4: [1.0] * 384, 5: [0.0, -2.0, 1e3],
               6: [0.0, 0.0]}  # fmt: skip
    stored = {"task_text": types.deflate(b"p"), "bids": types.dump_json([{"agent": "small"}]),
              "attempts": types.dump_json([])}  # fmt: skip
    with engine.begin() as conn:
        for row_id, vector in vectors.items():
            _record(conn, row_id, types.pack(vector), **stored)
        before = _rows(conn, "memoryrecord")
    command.upgrade(cfg, "0009")
    with engine.connect() as conn:
        rows = _rows(conn, "memoryrecord")
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    assert version == "0009"
    for old, new in zip(before, rows, strict=True):
        want = types.pack_int8(types.unpack(old["embedding"]))
        assert bytes(new["embedding"]) == want
        assert len(want) == (4 + len(vectors[old["id"]]) if vectors[old["id"]] else 0)
        assert {k: v for k, v in new.items() if k != "embedding"} == {
            k: v for k, v in old.items() if k != "embedding"
        }
    columns = {c["name"]: c for c in sa.inspect(engine).get_columns("memoryrecord")}
    assert isinstance(columns["embedding"]["type"], sa.LargeBinary)
    assert not columns["embedding"]["nullable"]

    # The ORM reads the values back within half a step of the scale; the index finds them.
    with session_scope(empty_url) as s:
        read = {r.id: r for r in s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id)))}
    for row_id, vector in vectors.items():
        step = max((abs(x) for x in vector), default=0.0) / 127
        assert read[row_id].embedding == pytest.approx(vector, abs=step / 2 + 1e-3 * step + 1e-3)
    assert read[2].embedding == [] and read[6].embedding == [0.0, 0.0]
    (hit,) = MemoryIndex(empty_url).search("coding", unit.tolist(), 1)
    assert hit.record_id == 3 and hit.similarity == pytest.approx(1.0, abs=1e-4)

    command.downgrade(cfg, "0008")
    with engine.connect() as conn:
        back = _rows(conn, "memoryrecord")
    for old, new, int8 in zip(before, back, rows, strict=True):
        assert bytes(new["embedding"]) == types.pack(types.unpack_int8(int8["embedding"]))
        assert len(bytes(new["embedding"])) == 2 * len(vectors[old["id"]])
        assert {k: v for k, v in new.items() if k != "embedding"} == {
            k: v for k, v in old.items() if k != "embedding"
        }
    command.upgrade(cfg, "head")
