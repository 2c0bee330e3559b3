"""A rate limit shared by real worker processes: three Celery workers on one agent's queue
(plus `sale worker --control`), a real redis-server, and a stub OpenAI-compatible server on
loopback that stands for the provider and counts the requests it receives, with their times.
The agent allows R = 6 requests a minute and 9 direct jobs (one model call each) are sent: the
stub must never see more than R in any 60 seconds, every job must still finish, and each wait
reaches Flower's event stream as the task's WAITING state. The
assertions are on the stub's counts (and the jobs' notes), never on how long anything took.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sale.models.db import session_scope
from sale.models.tables import Job
from sale.scripts.bench.cluster import Cluster, wait_terminal

from tests.integration.test_faults import ENV

RPM = 6
JOBS = 9
ANSWER = "```python\ndef add(a, b):\n    return a + b\n```"


class Provider(ThreadingHTTPServer):
    """The stub provider: answers every chat completion with a final answer, noting when."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[float] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: Provider

    def do_POST(self) -> None:
        with self.server.lock:
            self.server.seen.append(time.monotonic())
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = json.dumps({
            "id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": ANSWER}}],
            "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
        }).encode()  # fmt: skip
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def provider() -> Iterator[Provider]:
    server = Provider()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def most_in_a_minute(times: list[float]) -> int:
    """The most requests the stub saw within any 60 seconds."""
    times = sorted(times)
    return max(sum(1 for u in times if t <= u < t + 60.0) for t in times)


@contextmanager
def task_events(broker_url: str, kind: str) -> Iterator[list[dict[str, Any]]]:
    """The task events of ``kind`` the workers send while the block runs, received as Flower
    receives them (Celery's event receiver on the broker)."""
    from celery._state import get_current_app
    from sale.broker.app import create_app
    from sale.broker.settings import Settings

    previous = get_current_app()
    app = create_app(Settings(broker_url=broker_url))
    previous.set_current()  # a new app makes itself current
    seen: list[dict[str, Any]] = []
    ready = threading.Event()
    conn = app.connection()
    receiver = app.events.Receiver(conn, handlers={kind: seen.append})
    bound = receiver.on_consume_ready

    def on_consume_ready(*args: Any, **kwargs: Any) -> None:
        bound(*args, **kwargs)
        ready.set()  # the event queue is bound: nothing sent from now on is missed

    receiver.on_consume_ready = on_consume_ready  # type: ignore[method-assign]

    def receive() -> None:
        for _ in receiver.consume(limit=None, timeout=None, wakeup=False):
            pass

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    assert ready.wait(30), "the event receiver did not connect"
    try:
        yield seen
    finally:
        receiver.should_stop = True
        thread.join(10)
        conn.release()


def test_three_workers_sharing_an_agent_send_at_most_rpm_in_any_minute(
    provider: Provider, tmp_path: Path
) -> None:
    pool = tmp_path / "pool.toml"
    pool.write_text(
        '[[agents]]\nname = "stub"\nmodel = "openai/stub"\n'
        f'api_base = "http://127.0.0.1:{provider.server_address[1]}/v1"\n'
        f"input_price = 1.0\noutput_price = 1.0\nconcurrency = 2\nrpm = {RPM}\n"
    )
    spec = {"kind": "coding", "prompt": "Write add(a, b).", "entry_point": "add",
            "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n"}  # fmt: skip
    workers: list[subprocess.Popen[bytes]] = []
    # A bound past the window (60 s and a margin): every call over the limit waits in its worker
    # (a WAITING state), none is handed to a task countdown, whatever the timing of the calls.
    env_extra = {**ENV, "SALE_RATE_LIMIT_MAX_WAIT_S": "120"}
    with Cluster(tmp_path / "cluster", pool_file=pool, env_extra=env_extra) as cluster:
        try:
            cluster.start_worker("control")
            env = cluster.env()
            for n in range(3):
                log = open(cluster.log_dir / f"stub-{n}.log", "wb")  # noqa: SIM115
                workers.append(subprocess.Popen(
                    [sys.executable, "-m", "celery", "-A", "sale.broker.app", "worker",
                     "-Q", "sale.agent.stub", "-c", "2", "-n", f"stub{n}@%h", "-l", "INFO"],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))  # fmt: skip
                log.close()
            script = (
                "import json, sys; import sale.broker.app\n"
                "from sale.workers.canvas import submit\n"
                f"spec = json.loads({json.dumps(json.dumps(spec))})\n"
                f"print(' '.join(submit(spec, agent='stub') for _ in range({JOBS})))\n"
            )
            with task_events(env["SALE_BROKER_URL"], "task-waiting") as waits:
                sent = subprocess.run([sys.executable, "-c", script], env=env,
                                      capture_output=True, text=True, timeout=120,
                                      check=False)  # fmt: skip
                assert sent.returncode == 0, sent.stderr
                job_ids = sent.stdout.split()
                assert len(job_ids) == JOBS
                status = wait_terminal(cluster.db_url, job_ids, timeout=240)
        finally:
            for proc in workers:
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        assert status == dict.fromkeys(job_ids, "done"), status
        assert len(provider.seen) == JOBS  # one call a job, none lost, none twice
        assert most_in_a_minute(provider.seen) == RPM  # the limit was reached and held
        with session_scope(cluster.db_url) as s:
            notes = [n for j in job_ids if (job := s.get(Job, j)) for n in job.notes]
        waited = [n for n in notes if n.startswith("rate limit (rpm 6): a execute call of stub")]
        assert len(waited) == JOBS - RPM, notes  # the calls past the minute's six waited
        # Flower sees each wait as the task's WAITING state, with the agent and its limit.
        waiting_jobs = {event["job_id"] for event in waits}
        assert len(waiting_jobs) == JOBS - RPM and waiting_jobs <= set(job_ids), waits
        assert {(e["agent"], e["stage"], e["limit"]) for e in waits} == {
            ("stub", "execute", "rpm 6")
        }
        assert all(e["wait_s"] > 0 for e in waits), waits
