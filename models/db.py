"""Database engines and sessions, created lazily, once per process.

SQLite (the embedded default) is opened in WAL mode with a busy timeout so several worker
processes can write the same file; a new file gets 16 KB pages, where memory records of ~2 KB
waste little of a page (a 4 KB page holds one such row and leaves the rest empty). PostgreSQL
is used by URL. The schema is owned by Alembic: ``init_db`` upgrades the database to the newest
migration. After a fork, ``dispose_engines`` drops the connections inherited from the parent
(called from ``worker_process_init``).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

_engines: dict[tuple[int, str], Engine] = {}
_lock = threading.RLock()
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA page_size=16384")  # only a new, empty file takes it (before WAL)
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def get_engine(url: str) -> Engine:
    """The engine for ``url`` in this process (a new one after fork)."""
    key = (os.getpid(), url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(
                    url, connect_args={"check_same_thread": False, "timeout": 30}
                )
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                engine = create_engine(url, pool_pre_ping=True)
            _engines[key] = engine
        return engine


def dispose_engines() -> None:
    """Forget engines inherited across a fork without closing the parent's connections."""
    with _lock:
        for (pid, _url), engine in list(_engines.items()):
            if pid != os.getpid():
                engine.dispose(close=False)
                del _engines[(pid, _url)]


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Any:
    """An Alembic Config pointing at the packaged migrations and ``url``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def init_db(url: str) -> None:
    """Create or upgrade the schema to the newest migration (idempotent)."""
    from alembic import command

    with _lock:
        command.upgrade(alembic_config(url), "head")
