"""memory records: a float16 embedding, the task text, bids and attempts deflated

A memory record took ~5 KB on disk (SQLite, with its indexes): a float32 embedding (1,536 bytes
for 384 dimensions) and the task text, bids (with their plans) and attempts as plain text and
JSON. ``embedding`` becomes float16 bytes (768 bytes); ``task_text``, ``bids`` and ``attempts``
become binary columns holding a format byte and raw deflate (:mod:`sale.models.types`; no query
filters on them). ``ix_memoryrecord_kind`` goes: ``ix_memoryrecord_kind_id`` (kind, id) serves
every query by kind. Existing rows are converted in batches of ids, so a large memory is never
held in memory at once. Downgrading converts back (float32 values of the float16 ones).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 21:00:00
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op
from sale.models import types

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
_F32 = np.dtype("<f4")
_COLUMNS = ("embedding", "task_text", "bids", "attempts")
_STORED: dict[str, sa.types.TypeEngine[Any]] = {name: sa.LargeBinary() for name in _COLUMNS}
_PLAIN: dict[str, sa.types.TypeEngine[Any]] = {
    "embedding": sa.LargeBinary(),
    "task_text": sa.Text(),
    "bids": sa.JSON(),
    "attempts": sa.JSON(),
}


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value  # a driver handing back text


_PACK: dict[str, Callable[[Any], Any]] = {
    "embedding": lambda v: types.pack(np.frombuffer(bytes(v or b""), dtype=_F32)),
    "task_text": lambda v: types.deflate(str(v).encode()),
    "bids": lambda v: types.dump_json(_json(v)),
    "attempts": lambda v: types.dump_json(_json(v)),
}
_UNPACK: dict[str, Callable[[Any], Any]] = {
    "embedding": lambda v: types.unpack(v).astype(_F32).tobytes(),
    "task_text": lambda v: types.inflate(v).decode(),
    "bids": types.load_json,
    "attempts": types.load_json,
}


def _convert(
    source: dict[str, sa.types.TypeEngine[Any]],
    target: dict[str, sa.types.TypeEngine[Any]],
    convert: dict[str, Callable[[Any], Any]],
) -> None:
    """Fill column ``<name>_new`` from ``<name>`` for every converted column, row by row,
    ``BATCH`` ids at a time."""
    bind = op.get_bind()
    rid = sa.column("id", sa.Integer())
    old = [sa.column(name, source[name]) for name in _COLUMNS]
    new = [sa.column(f"{name}_new", target[name]) for name in _COLUMNS]
    table = sa.table("memoryrecord", rid, *old, *new)
    update = (
        table.update()
        .where(rid == sa.bindparam("rid"))
        .values({c.name: sa.bindparam(f"v_{c.name}") for c in new})
    )
    last = 0
    while True:
        rows = bind.execute(sa.select(rid, *old).where(rid > last).order_by(rid).limit(BATCH)).all()
        if not rows:
            return
        values = [
            {"rid": row[0]}
            | {
                f"v_{name}_new": convert[name](value)
                for name, value in zip(_COLUMNS, row[1:], strict=True)
            }
            for row in rows
        ]
        bind.execute(update, values)
        last = rows[-1][0]


def _swap(
    source: dict[str, sa.types.TypeEngine[Any]],
    target: dict[str, sa.types.TypeEngine[Any]],
    convert: dict[str, Callable[[Any], Any]],
) -> None:
    """Add a ``<name>_new`` column of the target type for every converted column, fill it, drop
    the old one and give the new one its name."""
    with op.batch_alter_table("memoryrecord") as batch_op:
        for name in _COLUMNS:
            batch_op.add_column(sa.Column(f"{name}_new", target[name], nullable=True))
    _convert(source, target, convert)
    with op.batch_alter_table("memoryrecord") as batch_op:
        for name in _COLUMNS:
            batch_op.drop_column(name)
            batch_op.alter_column(
                f"{name}_new", new_column_name=name, existing_type=target[name], nullable=False
            )


def upgrade() -> None:
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.drop_index("ix_memoryrecord_kind")
    _swap(_PLAIN, _STORED, _PACK)


def downgrade() -> None:
    _swap(_STORED, _PLAIN, _UNPACK)
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.alter_column("attempts", existing_type=sa.JSON(), server_default="[]")
        batch_op.create_index("ix_memoryrecord_kind", ["kind"], unique=False)
