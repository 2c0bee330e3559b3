"""Moving the auction memory between databases (sale.workers.memory.transfer, `sale memory`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sale.models.db import init_db, session_scope
from sale.models.tables import Job, MemoryRecord
from sale.workers.memory.retrieval import MemoryEntry, build_pairs, nearest
from sale.workers.memory.transfer import export_memory, import_memory
from sqlmodel import col, select


def fake_embed(texts: list[str]) -> list[list[float]]:
    """A deterministic unit vector per text (stands in for the embedder)."""
    return [[1.0, 0.0] if "add" in t else [0.0, 1.0] for t in texts]


def _db(tmp_path: Path, name: str) -> str:
    url = f"sqlite:///{tmp_path / name}.db"
    init_db(url)
    return url


def _record(url: str, job_id: str, text: str, verdict: str) -> None:
    bids = [
        {"agent": "small", "round": "first", "status": "ok", "plan": f"plan for {text}",
         "auction_label": "lose", "verified_label": None},
        {"agent": "large", "round": "first", "status": "ok", "plan": "the big plan",
         "auction_label": "win", "verified_label": "win" if verdict == "passed" else "lose"},
    ]  # fmt: skip
    with session_scope(url) as s:
        s.add(Job(id=job_id, kind="coding", prompt=text, spec={}, pool_path="", status="done"))
        s.flush()
        s.add(
            MemoryRecord(
                job_id=job_id, kind="coding", task_text=text, embedding=fake_embed([text])[0],
                bids=bids, attempts=[{"attempt": 0, "agent": "large", "verdict": verdict}],
                award_agent="large", award_round="first", provisional_agent="large",
                verdict=verdict, total_tokens=900, total_cost_usd=0.002,
            )
        )  # fmt: skip


def _entries(url: str) -> list[MemoryEntry]:
    with session_scope(url) as s:
        rows = s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id))).all()
        return [MemoryEntry(r.id or 0, r.embedding, r.bids, r.verdict) for r in rows]


def test_an_exported_memory_imports_into_another_database_as_it_was(tmp_path: Path) -> None:
    source = _db(tmp_path, "source")
    _record(source, "j1", "add two numbers", "passed")
    _record(source, "j0", "gone", "failed")
    _record(source, "j2", "find the capital", "failed")
    with session_scope(source) as s:  # ids with a gap: 1, 3
        s.delete(s.exec(select(MemoryRecord).where(MemoryRecord.job_id == "j0")).one())
    exported = export_memory(source)
    assert [r["job_id"] for r in exported] == ["j1", "j2"]
    assert "embedding" not in exported[0] and exported[0]["bids"][1]["auction_label"] == "win"
    json.dumps(exported)  # JSON-ready

    target = _db(tmp_path, "target")
    assert import_memory(target, exported, fake_embed) == 2
    assert import_memory(target, exported, fake_embed) == 0  # one record per job
    assert export_memory(target) == exported
    # Retrieval sees the same memory: the same records in the same order, same vectors.
    before, after = _entries(source), _entries(target)
    assert [(list(e.embedding), e.bids, e.verdict) for e in after] == [
        (list(e.embedding), e.bids, e.verdict) for e in before
    ]
    assert [e.record_id for e in after] == [1, 2]  # numbered by the target database
    near = nearest([1.0, 0.0], after, 1)
    assert near[0].bids[0]["plan"] == "plan for add two numbers"
    # Refinement reads the imported memory as it read the original: the same pairs.
    pairs = build_pairs("small", near, "auction", 2)
    assert [(p.losing_agent, p.winning_agent, p.losing_plan) for p in pairs] == [
        ("small", "large", "plan for add two numbers")
    ]
    assert pairs == build_pairs("small", nearest([1.0, 0.0], before, 1), "auction", 2)
    # Restoring a database of one's own keeps the ids, gaps included.
    kept = _db(tmp_path, "kept")
    with_ids = [{**r, "id": i} for r, i in zip(exported, (1, 3), strict=True)]
    assert import_memory(kept, with_ids, fake_embed, keep_ids=True) == 2
    assert [e.record_id for e in _entries(kept)] == [1, 3]
    with session_scope(target) as s:
        job = s.exec(select(Job).where(Job.id == "j2")).one()
    assert (job.status, job.verdict, job.kind) == ("done", "failed", "coding")


def test_a_bad_record_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    source = _db(tmp_path, "source")
    _record(source, "j1", "add two numbers", "passed")
    good = export_memory(source)[0]
    broken = {k: v for k, v in good.items() if k not in ("bids", "verdict")} | {"job_id": "j9"}
    target = _db(tmp_path, "target")
    with pytest.raises(ValueError, match=r"mem.jsonl line 2: .*lacks bids, verdict"):
        import_memory(target, [good, broken], fake_embed, ["mem.jsonl line 1", "mem.jsonl line 2"])
    with pytest.raises(ValueError, match="record 1: created_at 'yesterday' is not an ISO"):
        import_memory(target, [{**good, "created_at": "yesterday"}], fake_embed)
    with pytest.raises(ValueError, match="record 1: a memory record is a JSON object"):
        import_memory(target, [["not", "a", "record"]], fake_embed)
    assert export_memory(target) == []


def test_sale_memory_export_then_import_moves_the_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sale.workers.memory.embed
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    monkeypatch.setattr(sale.workers.memory.embed, "minilm_embed", fake_embed)
    pool = ["--pool", "broker/pools/scripted.toml"]
    source = _db(tmp_path, "source")
    _record(source, "j1", "add two numbers", "passed")
    _record(source, "j2", "find the capital", "failed")
    dump = tmp_path / "memory.jsonl"
    monkeypatch.setenv("SALE_DATABASE_URL", source)
    res = CliRunner().invoke(app, ["memory", "export", str(dump), *pool])
    assert res.exit_code == 0, res.output
    assert len(dump.read_text().splitlines()) == 2

    target = _db(tmp_path, "target")
    monkeypatch.setenv("SALE_DATABASE_URL", target)
    res = CliRunner().invoke(app, ["memory", "import", str(dump), *pool])
    assert res.exit_code == 0, res.output
    assert "imported 2 memory records" in " ".join(res.output.split())
    assert export_memory(target) == export_memory(source)

    bad = tmp_path / "bad.jsonl"
    bad.write_text(dump.read_text().splitlines()[0] + "\n{not json\n")
    res = CliRunner().invoke(app, ["memory", "import", str(bad), *pool])
    assert res.exit_code != 0 and "bad.jsonl line 2: not valid JSON" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["memory", "import", str(tmp_path / "none.jsonl"), *pool])
    assert res.exit_code != 0 and "sale memory export" in " ".join(res.output.split())
