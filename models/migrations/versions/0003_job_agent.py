"""direct jobs name their agent on the job row

``job.agent`` is the pool agent a direct job (``--agent``) runs on, NULL for a job that goes
through the auction (every existing row keeps NULL: a direct job written before this revision
is not told apart). `sale run` uses it to adopt the unfinished jobs of a stopped run of the same
tasks instead of submitting them again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 10:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.add_column(
            sa.Column("agent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("job") as batch_op:
        batch_op.drop_column("agent")
