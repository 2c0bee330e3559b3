"""execution attempts: self-check fallbacks

A job may now have several executions (the award's agent, then self-check fallbacks to the
next-best bids): ``execution.attempt`` (0 for the award's execution, which every existing row
is) replaces ``job_id`` as the natural key with ``(job_id, attempt)``; ``self_check`` and
``self_check_detail`` hold the outcome of running the answer on the prompt's own examples; the
memory record lists every attempt (``memoryrecord.attempts``, ``[]`` for existing records).

SQLite cannot alter constraints in place, so the table is rebuilt (batch mode); its unique
constraint on ``job_id`` was created unnamed, so it is named by a naming convention there.
PostgreSQL named it itself; the name is read from the server.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONVENTION = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _job_id_unique() -> str:
    """The name of execution's unique constraint on job_id alone."""
    for uq in sa.inspect(op.get_bind()).get_unique_constraints("execution"):
        if uq["column_names"] == ["job_id"]:
            return uq["name"] or "uq_execution_job_id"  # unnamed (SQLite): the convention's
    raise RuntimeError("execution has no unique constraint on job_id to replace")


def upgrade() -> None:
    name = _job_id_unique()
    with op.batch_alter_table("execution", naming_convention=_CONVENTION) as batch_op:
        batch_op.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("self_check", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(sa.Column("self_check_detail", sa.Text(), nullable=True))
        batch_op.drop_constraint(name, type_="unique")
        batch_op.create_unique_constraint("uq_execution_attempt", ["job_id", "attempt"])
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.add_column(sa.Column("attempts", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    # One execution per job again: keep each job's last attempt (its answer and verdict).
    op.execute(
        "DELETE FROM executionstep WHERE execution_id IN (SELECT e.id FROM execution e "
        "WHERE e.attempt < (SELECT MAX(m.attempt) FROM execution m WHERE m.job_id = e.job_id))"
    )
    op.execute(
        "DELETE FROM execution WHERE attempt < "
        "(SELECT MAX(m.attempt) FROM execution m WHERE m.job_id = execution.job_id)"
    )
    with op.batch_alter_table("memoryrecord") as batch_op:
        batch_op.drop_column("attempts")
    with op.batch_alter_table("execution") as batch_op:
        batch_op.drop_constraint("uq_execution_attempt", type_="unique")
        batch_op.drop_column("self_check_detail")
        batch_op.drop_column("self_check")
        batch_op.drop_column("attempt")
        batch_op.create_unique_constraint("execution_job_id_key", ["job_id"])
