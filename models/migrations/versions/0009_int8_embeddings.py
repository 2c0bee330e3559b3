"""memory records: the embedding as int8 components with a float32 scale

A memory record's float16 embedding took 768 bytes for 384 dimensions, a third of the record
on disk. It becomes one little-endian float32 scale (the largest magnitude over 127) and one
int8 per component (388 bytes; :func:`sale.models.types.pack_int8`). The column stays binary;
only its bytes change, converted in batches of ids so a large memory is never held in memory
at once. The memory index normalises every vector, so the scale keeps the values a caller
reads, not the search. Downgrading converts back to float16 (the values the int8 ones stand
for, rounded to float16).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 02:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op
from sale.models import types

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000


def _convert(convert: Callable[[bytes], bytes]) -> None:
    """Replace every record's embedding bytes with ``convert`` of them, ``BATCH`` ids at a
    time."""
    bind = op.get_bind()
    rid = sa.column("id", sa.Integer())
    embedding = sa.column("embedding", sa.LargeBinary())
    table = sa.table("memoryrecord", rid, embedding)
    update = table.update().where(rid == sa.bindparam("rid")).values(embedding=sa.bindparam("blob"))
    last = 0
    while True:
        query = sa.select(rid, embedding).where(rid > last).order_by(rid).limit(BATCH)
        rows = bind.execute(query).all()
        if not rows:
            return
        values = [{"rid": row[0], "blob": convert(bytes(row[1] or b""))} for row in rows]
        bind.execute(update, values)
        last = rows[-1][0]


def upgrade() -> None:
    _convert(lambda blob: types.pack_int8(types.unpack(blob)))


def downgrade() -> None:
    _convert(lambda blob: types.pack(types.unpack_int8(blob)))
