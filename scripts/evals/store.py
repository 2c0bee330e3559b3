"""The evaluation's run store: one JSON line per finished (method, order, split, task).

Appended and fsynced as each job finishes, so a crash or Ctrl-C loses no finished job and a
rerun skips what is stored. A torn last line (the process died mid-write) is ignored on load.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Key = tuple[str, int, str, str]  # (method, order, split, task_id)


def key_of(record: dict[str, Any]) -> Key:
    """The identity of a run record."""
    return (
        str(record["method"]),
        int(record["order"]),
        str(record["split"]),
        str(record["task_id"]),
    )


class RunStore:
    """Append-only JSONL of run records, keyed by (method, order, split, task_id)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[Key, dict[str, Any]] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                self.records[key_of(record)] = record

    def has(self, method: str, order: int, split: str, task_id: str) -> bool:
        return (method, order, split, task_id) in self.records

    def get(self, method: str, order: int, split: str, task_id: str) -> dict[str, Any] | None:
        return self.records.get((method, order, split, task_id))

    def add(self, record: dict[str, Any]) -> None:
        """Store one finished run durably (a later record with the same key replaces it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, sort_keys=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records[key_of(record)] = record

    def drop(self, keys: list[Key]) -> None:
        """Forget these records: the file is rewritten without them, atomically."""
        for key in keys:
            self.records.pop(key, None)
        self.write_copy(self.path)

    def write_copy(self, path: Path) -> None:
        """Write every record to ``path``, sorted by key, replacing it atomically: a copy of
        the run kept where the work directory is not (e.g. in the repository)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [json.dumps(r, sort_keys=True) + "\n" for _, r in sorted(self.records.items())]
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(lines), encoding="utf-8")
        os.replace(tmp, path)

    def select(
        self, method: str | None = None, split: str | None = None
    ) -> Iterator[dict[str, Any]]:
        for record in self.records.values():
            if method is not None and record["method"] != method:
                continue
            if split is not None and record["split"] != split:
                continue
            yield record
