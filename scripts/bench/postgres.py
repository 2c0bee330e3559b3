"""A throwaway PostgreSQL server for tests and benchmarks: initdb, pg_ctl, gone afterwards.

:func:`throwaway_server` creates a cluster in a temporary directory with Debian's (or any PATH)
``initdb``/``pg_ctl``, starts it on a free loopback port with its unix socket in that directory,
creates one database and yields its SQLAlchemy URL; the cluster is stopped and the directory
removed on exit. initdb refuses to run as root, so the server then runs as the ``postgres`` OS
user that Debian's package creates (:class:`Unavailable` without one). Tests run it without
durability (fsync off); a benchmark that times commits asks for a durable one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sale.models.db import get_engine

INSTALL = "apt-get install -y postgresql  (or scripts/ci_postgres.sh)"


class Unavailable(RuntimeError):
    """This machine cannot run a throwaway server (the message names the fix)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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


def server_user_prefix() -> list[str]:
    """The command prefix that runs the server's tools as a non-root user."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise Unavailable(f"running as root without a `postgres` OS user; {INSTALL}") from None
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


def _start(pg_ctl: list[str], root: Path, durable: bool, listen: str = "127.0.0.1") -> int:
    """Start the server on a free loopback port; returns the port.

    Picking a free port and binding it are two steps, so another process can take the port in
    between: try a few ports before giving up.
    """
    errors = []
    log = root / "server.log"
    for _ in range(3):
        port = _free_port()
        addresses = "127.0.0.1" if listen == "127.0.0.1" else f"127.0.0.1,{listen}"
        options = f"-p {port} -c listen_addresses={addresses} -c unix_socket_directories={root}"
        if not durable:  # pointless for test data; skipping it keeps the tests fast
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        error = _run([*pg_ctl, "-w", "-t", "60", "-l", str(log), "-o", options, "start"], root, log)
        if error is None:
            return port
        errors.append(error)
    raise RuntimeError("PostgreSQL did not start:\n" + "\n".join(errors))


@contextmanager
def throwaway_server(
    database: str, durable: bool = False, listen: str = "127.0.0.1"
) -> Iterator[str]:
    """``postgresql+psycopg://postgres@<listen>:<port>/<database>`` on a throwaway server.

    ``listen``: the address it serves on; other than loopback (a bridge's address, for workers
    in network namespaces) it also trusts that address's /24."""
    bindir = postgres_bindir()
    if bindir is None:
        raise Unavailable(f"PostgreSQL server binaries (initdb, pg_ctl) not found; {INSTALL}")
    import psycopg

    prefix = server_user_prefix()
    # Not pytest's tmp_path: its parent is private to root, and the server user must reach it.
    # Short, too: a unix socket path must stay under ~107 bytes.
    root = Path(tempfile.mkdtemp(prefix="sale-pg-"))
    if prefix:
        shutil.chown(root, user="postgres", group="postgres")
    data = root / "data"
    # Trust authentication: the throwaway cluster listens on loopback and its own socket
    # directory only, holds throwaway data only and lives for one run, so no password is needed.
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
    if listen != "127.0.0.1":
        subnet = ".".join(listen.split(".")[:3]) + ".0/24"
        with open(data / "pg_hba.conf", "a") as hba:
            hba.write(f"host all all {subnet} trust\n")
    try:
        port = _start(pg_ctl, root, durable, listen)
        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f"CREATE DATABASE {database}")
        url = f"postgresql+psycopg://postgres@{listen}:{port}/{database}"
        yield url
        # Close the pooled connections before the server goes away.
        get_engine(url).dispose()
    finally:
        subprocess.run(
            [*pg_ctl, "-m", "fast", "-w", "stop"], cwd=root, capture_output=True, check=False
        )
        shutil.rmtree(root, ignore_errors=True)
