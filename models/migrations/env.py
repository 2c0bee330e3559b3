"""Alembic environment: runs the packaged migrations against the configured URL."""

from __future__ import annotations

import sale.models.tables  # noqa: F401  (registers the tables on SQLModel.metadata)
from alembic import context
from sale.models.db import get_engine
from sqlmodel import SQLModel

target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    """Run migrations with a connection from the project's engine factory."""
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None
    sqlite = url.startswith("sqlite")
    with get_engine(url).connect() as connection:
        if sqlite:
            # Batch mode rebuilds a table by dropping it, which a foreign key pointing at it
            # forbids while enforcement is on (SQLite's documented procedure: switch it off
            # around the rebuild). The pragma is a no-op inside a transaction, so it comes first.
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=sqlite,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                connection.exec_driver_sql("PRAGMA foreign_keys=ON")


run_migrations_online()
