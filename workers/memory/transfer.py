"""Moving the auction memory between databases: its records as JSON objects, and back.

An exported record holds everything retrieval, refinement pairs, the memory shortcut and
`sale fit` read (the task, every bid with its terms, jury scores and labels, the award, every
execution attempt, the verdict and the totals), but not the task embedding: 384 floats that the
importing side recomputes from the task text with the same embedder, one text at a time as a
worker embeds a job (a batch can round differently). Importing is idempotent (one record per
job) and keeps the given order, so the records get ids in that order, as they did where they
were written; with ``keep_ids`` (restoring a database of one's own) they get the ids they had
(workers already running read such a restore after a restart: their memory index only reads
ids above the highest it has seen).
A job the target database lacks is created for its record, ``done`` with the record's verdict,
so the record's foreign key holds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sale.models.db import session_scope
from sale.models.tables import Job, MemoryRecord
from sale.workers.memory.index import forget_indexes
from sqlmodel import col, select

from sale.errors import InputError, MemoryImportError
from sale.inputs import check_value

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


def _text(most: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, str) and len(v) <= most), f"a string of at most {most} chars"


def _objects(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, dict) for v in value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _amount(value: Any) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(value) and value >= 0


#: What each exported field must be: a check and the words for the error.
_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "job_id": (lambda v: isinstance(v, str) and 0 < len(v) <= 64, "a string of 1-64 chars"),
    "kind": (lambda v: v in ("coding", "search"), "'coding' or 'search'"),
    "task_text": (lambda v: isinstance(v, str) and bool(v.strip()), "a non-empty string"),
    "bids": (_objects, "a list of objects"),
    "attempts": (_objects, "a list of objects"),
    "award_agent": _text(64),
    "award_round": _text(8),
    "provisional_agent": _text(64),
    "verdict": _text(16),
    "total_tokens": (_count, "an integer >= 0"),
    "total_cost_usd": (_amount, "a finite number >= 0"),
    "id": (lambda v: _count(v) and v > 0, "an integer >= 1"),
}


def _checked(item: Any, where: str, keep_ids: bool = False) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise MemoryImportError(
            f"{where}: a memory record is a JSON object, not {type(item).__name__}; export "
            "records with `sale memory export`"
        )
    missing = [name for name in FIELDS if name not in item]
    if keep_ids and "id" not in item:
        missing.append("id")
    if missing:
        raise MemoryImportError(
            f"{where}: the memory record lacks {', '.join(missing)}; export records with "
            "`sale memory export`"
        )
    for name in (*FIELDS, "id") if keep_ids else FIELDS:
        check, wanted = _TYPES[name]
        if not check(item[name]):
            raise MemoryImportError(
                f"{where}: {name} must be {wanted}, got {type(item[name]).__name__}; export "
                "records with `sale memory export`"
            )
    try:
        check_value(item, where)
    except InputError as exc:
        raise MemoryImportError(str(exc)) from exc
    stamp = item.get("created_at")
    if stamp is not None:
        try:
            datetime.fromisoformat(stamp if isinstance(stamp, str) else "?")
        except ValueError:
            raise MemoryImportError(
                f"{where}: created_at {repr(stamp)[:40]} is not an ISO 8601 time (such as "
                "2026-01-31T12:00:00)"
            ) from None
    return item


def _unique(checked: list[dict[str, Any]], names: list[str], key: str, taken: set[Any]) -> None:
    seen = set(taken)
    for item, name in zip(checked, names, strict=True):
        if item[key] in seen:
            raise MemoryImportError(
                f"{name}: {key} {item[key]!r} appears twice (in the file or the database); "
                "import each record once"
            )
        seen.add(item[key])


def import_memory(
    db_url: str,
    items: Iterable[Any],
    embed: Embed,
    where: Sequence[str] | None = None,
    keep_ids: bool = False,
) -> int:
    """Insert the records whose job has none yet, in the given order; returns how many.
    ``where`` names each item for errors (e.g. "file.jsonl line 3"); every item is checked
    (fields, types, nesting, duplicates) before anything is written, so a bad file writes
    nothing and raises MemoryImportError. ``keep_ids``: each record keeps
    the ``id`` it carries (else the database numbers them)."""
    records = list(items)
    names = list(where) if where is not None else [f"record {i + 1}" for i in range(len(records))]
    checked = [_checked(item, name, keep_ids) for item, name in zip(records, names, strict=True)]
    _unique(checked, names, "job_id", set())
    with session_scope(db_url) as s:
        have = set(s.exec(select(MemoryRecord.job_id)).all())
        ids = set(s.exec(select(MemoryRecord.id)).all()) if keep_ids else set()
    pairs = [(i, n) for i, n in zip(checked, names, strict=True) if i["job_id"] not in have]
    todo = [item for item, _ in pairs]
    if keep_ids:
        _unique(todo, [name for _, name in pairs], "id", ids)
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
    if keep_ids:
        # Restored ids may lie below the highest this process's memory index has seen.
        forget_indexes(db_url)
    return len(todo)
