"""memory records: embeddings as packed float32 bytes; an index on (kind, id)

``memoryrecord.embedding`` was a JSON list of floats (about 8 KB of text for 384 dimensions,
parsed back on every retrieval); it becomes little-endian float32 bytes in a binary column
(``BLOB`` / ``BYTEA``, 1,536 bytes for 384 dimensions; :mod:`sale.models.types`). Existing rows
are converted in batches of ids, so a large memory is never held in memory at once. The index on
``(kind, id)`` lets the memory index read the records of one kind written after the last one it
has seen (``kind = ? AND id > ?``) without scanning the kind. Downgrading converts back to JSON
(float32 values, as stored).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-09 10:00:00
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000
_F32 = np.dtype("<f4")


def _to_bytes(value: Any) -> bytes:
    if isinstance(value, str):  # a driver that hands JSON back as text
        value = json.loads(value)
    return np.asarray(value or [], dtype=_F32).tobytes()


def _to_list(value: Any) -> list[float]:
    return np.frombuffer(bytes(value or b""), dtype=_F32).tolist()


def _convert(
    source: sa.ColumnClause[Any], target: sa.ColumnClause[Any], convert: Callable[[Any], Any]
) -> None:
    """Fill column ``target`` from ``source`` row by row, ``BATCH`` ids at a time."""
    bind = op.get_bind()
    rid = sa.column("id", sa.Integer())
    table = sa.table("memoryrecord", rid, source, target)
    update = (
        table.update().where(rid == sa.bindparam("rid")).values({target.name: sa.bindparam("v")})
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(rid, source).where(rid > last).order_by(rid).limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(update, [{"rid": r, "v": convert(value)} for r, value in rows])
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.add_column(sa.Column("embedding_f32", sa.LargeBinary(), nullable=True))
    _convert(
        sa.column("embedding", sa.JSON()), sa.column("embedding_f32", sa.LargeBinary()), _to_bytes
    )
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.drop_column("embedding")
        batch_op.alter_column(
            "embedding_f32",
            new_column_name="embedding",
            existing_type=sa.LargeBinary(),
            nullable=False,
        )
        batch_op.create_index("ix_memoryrecord_kind_id", ["kind", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.drop_index("ix_memoryrecord_kind_id")
        batch_op.add_column(sa.Column("embedding_json", sa.JSON(), nullable=True))
    _convert(
        sa.column("embedding", sa.LargeBinary()), sa.column("embedding_json", sa.JSON()), _to_list
    )
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.drop_column("embedding")
        batch_op.alter_column(
            "embedding_json", new_column_name="embedding", existing_type=sa.JSON(), nullable=False
        )
