"""verified awards: the escalation chain on the award and in the memory record

``award.chain`` and ``memoryrecord.chain`` hold a verified award's escalation chain (a JSON list
of agents in the order they run, ``SALE_AWARD=verified``); NULL for every existing row and for
an auction's, a direct or a shortcut award. A memory record's ``attempts`` gain ``tokens`` and
``cost_usd`` in the JSON itself (no column): older attempts simply lack them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 13:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("award", "memoryrecord"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("chain", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in ("award", "memoryrecord"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("chain")
