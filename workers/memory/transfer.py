"""Moving the auction memory between databases: its records as JSON objects, and back.

An exported record holds everything retrieval, refinement pairs, the memory shortcut and
`sale fit` read (the task, every bid with its terms, jury scores and labels, the award, every
execution attempt, the verdict and the totals), but not the task embedding: 384 floats that the
importing side recomputes from the task text with the same embedder, one text at a time as a
worker embeds a job (a batch can round differently). Importing is idempotent (one record per
job) and keeps the given order, so the records get ids in that order, as they did where they
were written; with ``keep_ids`` (restoring a database of one's own) they get the ids they had.
A job the target database lacks is created for its record, ``done`` with the record's verdict,
so the record's foreign key holds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sale.models.db import session_scope
from sale.models.tables import Job, MemoryRecord
from sqlmodel import col, select

#: The fields of an exported record (``created_at`` is added as ISO 8601).
FIELDS = (
    "job_id",
    "kind",
    "task_text",
    "bids",
    "attempts",
    "award_agent",
    "award_round",
    "provisional_agent",
    "verdict",
    "total_tokens",
    "total_cost_usd",
)

Embed = Callable[[list[str]], list[list[float]]]


def export_record(record: MemoryRecord, with_id: bool = False) -> dict[str, Any]:
    """One memory record as a JSON-ready object (no embedding; its id with ``with_id``)."""
    out = {name: getattr(record, name) for name in FIELDS}
    out["created_at"] = record.created_at.isoformat()
    if with_id:
        out["id"] = record.id
    return out


def export_memory(db_url: str) -> list[dict[str, Any]]:
    """Every memory record of the database, oldest first."""
    with session_scope(db_url) as s:
        return [
            export_record(r) for r in s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id)))
        ]


def _checked(item: Any, where: str, keep_ids: bool = False) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: a memory record is a JSON object, not {type(item).__name__}")
    missing = [name for name in FIELDS if name not in item]
    if keep_ids and "id" not in item:
        missing.append("id")
    if missing:
        raise ValueError(
            f"{where}: the memory record lacks {', '.join(missing)}; export records with "
            "`sale memory export`"
        )
    stamp = item.get("created_at")
    if stamp is not None:
        try:
            datetime.fromisoformat(str(stamp))
        except ValueError:
            raise ValueError(f"{where}: created_at {stamp!r} is not an ISO 8601 time") from None
    return item


def import_memory(
    db_url: str,
    items: Iterable[Any],
    embed: Embed,
    where: Sequence[str] | None = None,
    keep_ids: bool = False,
) -> int:
    """Insert the records whose job has none yet, in the given order; returns how many.
    ``where`` names each item for errors (e.g. "file.jsonl line 3"); every item is checked
    before anything is written, so a bad file writes nothing. ``keep_ids``: each record keeps
    the ``id`` it carries (else the database numbers them)."""
    records = list(items)
    names = list(where) if where is not None else [f"record {i + 1}" for i in range(len(records))]
    checked = [_checked(item, name, keep_ids) for item, name in zip(records, names, strict=True)]
    with session_scope(db_url) as s:
        have = set(s.exec(select(MemoryRecord.job_id)).all())
    todo = [item for item in checked if item["job_id"] not in have]
    if not todo:
        return 0
    vectors = [embed([str(item["task_text"])])[0] for item in todo]
    with session_scope(db_url) as s:
        jobs = set(s.exec(select(Job.id).where(col(Job.id).in_([i["job_id"] for i in todo]))))
        for item, vector in zip(todo, vectors, strict=True):
            stamp = item.get("created_at")
            created = datetime.fromisoformat(stamp) if stamp else None
            if created is not None and created.tzinfo is None:
                created = created.replace(tzinfo=UTC)  # a time without a zone is UTC
            if item["job_id"] not in jobs:
                s.add(
                    Job(
                        id=item["job_id"],
                        kind=item["kind"],
                        prompt=item["task_text"],
                        spec={"kind": item["kind"], "prompt": item["task_text"]},
                        pool_path="",
                        status="done",
                        status_reason="imported with its memory record",
                        embedding=vector,
                        verdict=item["verdict"],
                    )
                )
                s.flush()
            fields = {name: item[name] for name in FIELDS}
            if keep_ids:
                fields["id"] = int(item["id"])
            record = MemoryRecord.model_validate({**fields, "embedding": vector})
            if created is not None:
                record.created_at = created
            s.add(record)
            s.flush()  # ids in the given order
    return len(todo)
