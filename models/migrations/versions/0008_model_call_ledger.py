"""the ledger: one row per paid model call

A job's tokens and cost were the sums of its bid, jury-call and execution rows, which a stage
writes when it ends: a worker killed between a paid call and the end of its stage lost that call
from the record. ``modelcall`` holds one row per call, written as the provider answers, and a
job's usage is read from it. Existing jobs keep their figures: every bid, jury call and
execution row that used tokens or cost gets one ledger row of its totals (``call_id`` names the
row it came from: ``bid-<id>``, ``jury-<id>``, ``execution-<id>``). Downgrading drops the
ledger; the stage rows still hold what they held.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, call id prefix, the stage of its calls: a SQL expression over the row)
_SOURCES = (
    ("bid", "bid", "CASE WHEN round = 'refined' THEN 'refine' ELSE 'bid' END", "agent"),
    ("jurycall", "jury", "'jury'", "juror"),
    ("execution", "execution", "'execute'", "agent"),
)


def upgrade() -> None:
    op.create_table(
        "modelcall",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("job_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
        sa.Column("agent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("tokens_in", sa.Integer(), nullable=False),
        sa.Column("tokens_out", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("call_id"),
    )
    with op.batch_alter_table("modelcall") as batch_op:
        batch_op.create_index("ix_modelcall_job_id", ["job_id"], unique=False)
        batch_op.create_index("ix_modelcall_created_at", ["created_at"], unique=False)
    for table, prefix, stage, agent in _SOURCES:
        op.execute(
            "INSERT INTO modelcall (call_id, job_id, stage, agent, tokens_in, tokens_out, "
            "cost_usd, created_at) "
            f"SELECT '{prefix}-' || CAST(id AS VARCHAR(20)), job_id, {stage}, {agent}, "
            f"tokens_in, tokens_out, cost_usd, created_at FROM {table} "
            "WHERE tokens_in + tokens_out > 0 OR cost_usd > 0 ORDER BY id"
        )


def downgrade() -> None:
    with op.batch_alter_table("modelcall") as batch_op:
        batch_op.drop_index("ix_modelcall_created_at")
        batch_op.drop_index("ix_modelcall_job_id")
    op.drop_table("modelcall")
