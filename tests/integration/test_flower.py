"""Flower as a user watches it: a real redis-server, `sale worker --control` and a Celery worker
on the agents' queues (scripted pool), `sale flower` with basic auth; one job submitted with
`sale submit`, then Flower's HTTP API and its Prometheus /metrics read back.

In Flower each bid, juror call and execution is a task of its own; the control stages replace
one another (Celery's ``replace`` keeps the task id), so they share the job's row (its id is the
job id, its name the last stage) and are told apart by their events on /metrics.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from ast import literal_eval
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sale.broker.pool import load_pool

from tests.conftest import ROOT, SCRIPTED_POOL, free_port

USER, PASSWORD = "watcher", "flower-pw"
#: The control stages: one task row in Flower (the job's), one custom state each.
CONTROL_STAGES = {
    "sale.job": "task-bidding",
    "sale.judge": "task-judging",
    "sale.score": "task-scoring",
    "sale.update": "task-updating",
}
#: The stages on the agents' queues: a task row each, one custom state each.
AGENT_STAGES = {"sale.bid": "task-bidding", "sale.jury": "task-judging"}
AGENT_STAGES["sale.execute"] = "task-executing"
SPEC = {
    "kind": "coding",
    "prompt": "Write add(a, b) returning the sum.\n[[scripted ]]\n"
    "[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


@dataclass
class Stack:
    """The running processes and how to reach them."""

    flower_url: str
    env: dict[str, str]
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def log_tail(self) -> str:
        """The end of every child's log, for a failure message."""
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.logs.glob("*.log"))
        )

    def check_alive(self) -> None:
        """Fail at once (with the logs) if a child exited."""
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{name} exited with {proc.returncode}\n{self.log_tail()}")


def _stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """SIGTERM each child's process group, SIGKILL what is left after 15 s."""
    for proc in procs.values():
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs.values():
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def get(stack: Stack, path: str, auth: tuple[str, str] | None = (USER, PASSWORD)) -> Any:
    """GET ``path`` from Flower: (status, body text)."""
    request = urllib.request.Request(stack.flower_url + path)
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def until(stack: Stack, what: str, probe: Callable[[], Any], timeout: float = 60) -> Any:
    """Poll ``probe`` until it returns something truthy; Flower learns of events a moment after
    the workers send them and offers no way to wait for that, so this polls (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stack.check_alive()
        found = probe()
        if found:
            return found
        time.sleep(0.2)  # between polls of an external process, not a test wait
    pytest.fail(f"timed out waiting for {what}\n{stack.log_tail()}")


@pytest.fixture(scope="module")
def flower_stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The control worker, an agents' worker and Flower, as a user starts them."""
    tmp = tmp_path_factory.mktemp("flower")
    logs = tmp / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALE_")}
    env.update(
        # A database of its own: the embedded worker of tests/integration/conftest.py consumes
        # the scripted pool's queues on the session's database 0.
        SALE_BROKER_URL=redis_url.rsplit("/", 1)[0] + "/7",
        SALE_DATABASE_URL=f"sqlite:///{tmp / 'sale.db'}",
        SALE_POOL_FILE=str(SCRIPTED_POOL),
        SALE_STATE_DIR=str(tmp / "state"),
        SALE_FLOWER_BASIC_AUTH=f"{USER}:{PASSWORD}",
        SALE_JURY_MIN_WEIGHT="0",  # call every juror, so the jury stage shows too
        SALE_LOG_LEVEL="WARNING",
    )
    agent_queues = ",".join(a.queue for a in load_pool(SCRIPTED_POOL).agents)
    sale = [sys.executable, "-m", "sale.scripts.cli"]
    port = free_port()
    celery = [sys.executable, "-m", "celery", "-A", "sale.broker.app", "worker"]
    argvs = {
        "control": [*sale, "worker", "--control", "--loglevel", "WARNING"],
        "agents": [*celery, "-Q", agent_queues, "-c", "2", "-n", "agents@%h", "-l", "WARNING"],
        "flower": [*sale, "flower", "--port", str(port)],
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, argv in argvs.items():
            with open(logs / f"{name}.log", "wb") as log:
                procs[name] = subprocess.Popen(
                    argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
        stack = Stack(f"http://127.0.0.1:{port}", env, logs, procs)

        def both_workers_seen() -> bool:
            # Flower's own event state: both workers' heartbeats have reached it, so it is
            # receiving events before the job is sent.
            try:
                status, body = get(stack, "/api/workers?status=true")
            except OSError:
                return False
            alive = json.loads(body) if status == 200 else {}
            names = {n.split("@")[0] for n, up in alive.items() if up}
            return {"control", "agents"} <= names

        until(stack, "Flower to see both workers", both_workers_seen, timeout=90)
        yield stack
    finally:
        _stop(procs)


@pytest.fixture(scope="module")
def finished_job(flower_stack: Stack) -> tuple[str, dict[str, dict[str, Any]]]:
    """One job submitted with `sale submit`, waited for on the result backend, and Flower's
    task list once Flower has seen every one of its tasks end."""
    from celery._state import get_current_app
    from celery.result import AsyncResult
    from sale.broker.app import create_app
    from sale.broker.settings import Settings

    spec_file = flower_stack.logs.parent / "spec.json"
    spec_file.write_text(json.dumps(SPEC))
    submitted = subprocess.run(
        [sys.executable, "-m", "sale.scripts.cli", "submit", str(spec_file)],
        cwd=ROOT, env=flower_stack.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    previous = get_current_app()
    app = create_app(
        Settings(broker_url=flower_stack.env["SALE_BROKER_URL"], pool_file=SCRIPTED_POOL)
    )
    previous.set_current()  # a new app makes itself current; the session's stack stays so
    summary = AsyncResult(job_id, app=app).get(timeout=90, propagate=False)
    assert isinstance(summary, dict) and summary["status"] == "done", summary

    def settled() -> dict[str, dict[str, Any]] | None:
        status, body = get(flower_stack, "/api/tasks")
        tasks: dict[str, dict[str, Any]] = json.loads(body) if status == 200 else {}
        names = {t["name"] for t in tasks.values()}
        ended = all(t["state"] == "SUCCESS" for t in tasks.values())
        job_row = tasks.get(job_id, {})
        done = job_row.get("name") == "sale.update" and job_row.get("state") == "SUCCESS"
        return tasks if done and ended and set(AGENT_STAGES) <= names else None

    tasks = until(flower_stack, "Flower to see the job's tasks end", settled)
    app.close()
    return job_id, tasks


def metric_samples(text: str) -> dict[tuple[str, str], float]:
    """``flower_events_total`` from /metrics as {(task, event type): count}, over workers."""
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "flower_events":
            continue
        for sample in family.samples:
            if sample.name == "flower_events_total":
                key = (sample.labels["task"], sample.labels["type"])
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


def test_every_stage_of_a_job_is_a_task_in_flower_carrying_the_job_id(
    flower_stack: Stack, finished_job: tuple[str, dict[str, dict[str, Any]]]
) -> None:
    job_id, tasks = finished_job
    by_name: dict[str, list[dict[str, Any]]] = {}
    for task in tasks.values():
        by_name.setdefault(task["name"], []).append(task)
    assert set(by_name) == {"sale.update", *AGENT_STAGES}
    pool = load_pool(SCRIPTED_POOL)
    agents = sorted(a.name for a in pool.agents)
    assert sorted(literal_eval(t["args"])[1] for t in by_name["sale.bid"]) == agents
    assert sorted(literal_eval(t["args"])[1] for t in by_name["sale.jury"]) == agents
    for task in tasks.values():
        assert job_id in task["args"], task
        assert job_id in (task["result"] or ""), task
    for task in by_name["sale.bid"] + by_name["sale.jury"] + by_name["sale.execute"]:
        assert task["worker"].startswith("agents@"), task
    # The job's own row: the control stages replaced one another under the job id.
    status, body = get(flower_stack, f"/api/task/info/{job_id}")
    assert status == 200
    info = json.loads(body)
    assert info["name"] == "sale.update" and info["state"] == "SUCCESS"
    assert info["worker"].startswith("control@") and job_id in info["args"]
    assert info["root_id"] == job_id
    status, body = get(flower_stack, f"/api/task/result/{job_id}")
    assert status == 200
    result = json.loads(body)
    assert result["state"] == "SUCCESS" and result["result"]["job_id"] == job_id
    assert result["result"]["status"] == "done"


def test_metrics_count_every_stage_and_its_custom_state(
    flower_stack: Stack, finished_job: tuple[str, dict[str, dict[str, Any]]]
) -> None:
    _job_id, tasks = finished_job
    status, text = get(flower_stack, "/metrics")
    assert status == 200
    assert "flower_events_total" in text and "flower_task_runtime_seconds" in text
    counts = metric_samples(text)
    for stage in CONTROL_STAGES:
        assert counts.get((stage, "task-received"), 0) == 1, stage
        assert counts.get((stage, "task-started"), 0) == 1, stage
    for stage, custom in {**CONTROL_STAGES, **AGENT_STAGES}.items():
        assert counts.get((stage, custom), 0) >= 1, (stage, custom, counts)
    rows = [t["name"] for t in tasks.values()]
    for stage in AGENT_STAGES:
        assert counts.get((stage, "task-succeeded"), 0) == rows.count(stage), stage
    assert counts[("sale.bid", "task-bidding")] == rows.count("sale.bid") == 3


def test_flower_and_its_metrics_need_the_credentials(flower_stack: Stack) -> None:
    for path in ("/api/tasks", "/api/task/info/x", "/metrics", "/tasks"):
        assert get(flower_stack, path, auth=None)[0] == 401, path
        assert get(flower_stack, path, auth=(USER, "wrong"))[0] == 401, path
    assert get(flower_stack, "/api/tasks")[0] == 200
    assert get(flower_stack, "/metrics")[0] == 200
