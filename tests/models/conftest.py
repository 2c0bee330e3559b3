"""A real, throwaway PostgreSQL server for the auction-memory tests.

``postgres_url`` creates a cluster in a temporary directory with Debian's (or any PATH)
``initdb``/``pg_ctl``, starts it on a free loopback port with its unix socket in that directory,
creates the ``sale_test`` database and yields its SQLAlchemy URL; the cluster is stopped and the
directory removed at the end of the session. initdb refuses to run as root, and CI runs as root,
so the server then runs as the ``postgres`` OS user that Debian's package creates. Without the
binaries or psycopg the tests skip locally, naming the install command; under CI (``CI`` set) they
fail instead, so a green CI cannot hide a PostgreSQL test that never ran.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sale.models.db import get_engine

from tests.conftest import free_port

DATABASE = "sale_test"
INSTALL_SERVER = "apt-get install -y postgresql  (or scripts/ci_postgres.sh)"
INSTALL_DRIVER = '.venv/bin/pip install "psycopg[binary]>=3.2,<4"  (the `postgres` extra)'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def postgres_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian one."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    for bindir in debian:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    return None


def _as_server_user() -> list[str]:
    """The command prefix that runs the server's tools as a non-root user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        _unavailable(f"running as root without a `postgres` OS user; {INSTALL_SERVER}")
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"]
    return ["su", "postgres", "-s", "/bin/sh", "-c", '"$0" "$@"']


def _run(cmd: list[str], cwd: Path, log: Path | None = None) -> str | None:
    """Run a server tool; None on success, else its output and the server log."""
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return None
    server_log = log.read_text(errors="replace") if log is not None and log.exists() else ""
    return f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout}{done.stderr}{server_log}"


def _start(pg_ctl: list[str], root: Path) -> int:
    """Start the server on a free loopback port; returns the port.

    Picking a free port and binding it are two steps, so another process can take the port in
    between: try a few ports before giving up.
    """
    errors = []
    log = root / "server.log"
    for _ in range(3):
        port = free_port()
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={root} "
            # Durability is pointless for a throwaway cluster; skipping it keeps the tests fast.
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        error = _run([*pg_ctl, "-w", "-t", "60", "-l", str(log), "-o", options, "start"], root, log)
        if error is None:
            return port
        errors.append(error)
    raise RuntimeError("PostgreSQL did not start:\n" + "\n".join(errors))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:<port>/sale_test`` on a throwaway server."""
    bindir = postgres_bindir()
    if bindir is None:
        _unavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL_SERVER}")
    if importlib.util.find_spec("psycopg") is None:
        _unavailable(f"psycopg is not installed; {INSTALL_DRIVER}")
    assert bindir is not None
    import psycopg

    prefix = _as_server_user()
    # Not pytest's tmp_path: its parent is private to root, and the server user must reach it.
    # Short, too: a unix socket path must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="sale-pg-"))
    if prefix:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    # Trust authentication: the throwaway cluster listens on loopback and its own socket
    # directory only, holds test data only and lives for one session, so no password is needed.
    error = _run(
        [
            *prefix,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ],
        cwd=root,
    )
    if error is not None:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(error)
    pg_ctl = [*prefix, str(bindir / "pg_ctl"), "-D", str(data)]
    try:
        port = _start(pg_ctl, root)
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{DATABASE}"
        yield url
        # Close the pooled connections before the server goes away.
        get_engine(url).dispose()
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "fast", "-w", "stop"], cwd=root, capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)
