"""Faults with real processes: real redis-server (AOF on), real `sale worker` processes, jobs
sent with `sale submit`; SIGKILL the worker holding a stage, restart Redis mid-job, and judge
the outcome on the database (every job ended, once, fully charged).

The leases are short here (TTL 2 s, watchdog every 0.5 s) and the visibility timeout is ten
hours, so a job that recovers from a killed worker can only have been re-dispatched by the
watchdog. Waits are deadlines on external processes, not timing claims (those are in
docs/benchmarks/faults.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sale.scripts.bench.cluster import Cluster, job_rows, wait_terminal

ADD = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
ENV = {
    "SALE_LEASE_TTL_S": "2",
    "SALE_WATCHDOG_INTERVAL_S": "0.5",
    "SALE_VISIBILITY_TIMEOUT_S": "36000",
    "SALE_REDELIVERY_CAP": "2",
    "SALE_RETRY_BACKOFF_S": "0.05",
    "SALE_RETRY_BACKOFF_MAX_S": "0.1",
}


def spec(directives: str) -> dict[str, Any]:
    return {
        "kind": "coding",
        "prompt": f"Write add(a, b).\n[[scripted {directives}]]\n"
        f"[[solution]]\n{ADD}[[/solution]]\n",
        "tests": TESTS,
        "entry_point": "add",
    }


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with Cluster(tmp_path / "cluster", env_extra=dict(ENV)) as c:
        yield c


def wait_for_lease(c: Cluster, task: str, job_id: str, timeout: float = 90) -> dict[str, Any]:
    """The lease of ``task`` for ``job_id`` once a worker holds it (polling Redis)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for lease in c.leases():
            if lease["task"] == task and lease["job_id"] == job_id:
                return lease
        time.sleep(0.1)  # poll of an external process
    raise AssertionError(f"no worker took {task} of {job_id}")


def assert_once(rows: dict[str, Any], bids: int) -> None:
    assert len(rows["bids"]) == len(set(rows["bids"])) == bids
    assert len(rows["jury_calls"]) == len(set(rows["jury_calls"]))
    assert len(rows["executions"]) == len(set(rows["executions"])) == 1
    assert rows["memory_records"] == 1
    assert rows["record_cost"] == pytest.approx(rows["recorded_cost"])


def test_a_stage_whose_worker_is_killed_is_redispatched_and_the_job_ends_once(
    cluster: Cluster,
) -> None:
    for name in ("control", "small", "medium", "large"):
        cluster.start_worker(name)
    job_id = cluster.submit(spec("large.slow=execute:3"))
    lease = wait_for_lease(cluster, "sale.execute", job_id)
    assert lease["worker"].startswith("large@")
    cluster.kill_worker("large")  # mid-execution: nothing of it is stored yet
    cluster.start_worker("large")

    assert wait_terminal(cluster.db_url, [job_id], timeout=120) == {job_id: "done"}
    rows = job_rows(cluster.db_url, job_id)
    assert_once(rows, bids=3)
    assert rows["executions"] == [(0, "large")]
    logs = " ".join(p.read_text() for p in cluster.log_dir.glob("worker-*.log"))
    assert "sale.execute[('" + job_id + "',)] lost its worker" in logs  # the watchdog's doing


def test_a_job_that_kills_its_worker_every_time_fails_as_a_poison_job(cluster: Cluster) -> None:
    cluster.start_worker("control")
    cluster.start_worker("large")
    job_id = cluster.submit(spec("large.crash=execute"), agent="large")
    deadline = time.monotonic() + 150
    status: dict[str, str] = {}
    while time.monotonic() < deadline:
        status = wait_terminal(cluster.db_url, [job_id], timeout=1)
        if status[job_id] != "executing" and status[job_id] not in ("queued",):
            break
        if not cluster.alive("large"):
            cluster.start_worker("large")  # as a supervisor would
    assert status == {job_id: "failed"}
    rows = job_rows(cluster.db_url, job_id)
    assert "poison job: sale.execute was started 3 times" in rows["reason"]
    assert cluster.started["large"] >= 3


def test_a_redis_restart_mid_job_fails_nothing(cluster: Cluster) -> None:
    for name in ("control", "small", "medium", "large"):
        cluster.start_worker(name)
    job_id = cluster.submit(spec("small.slow=bid:2 medium.slow=bid:2 large.slow=execute:2"))
    wait_for_lease(cluster, "sale.bid", job_id)
    cluster.restart_redis(down_s=3)

    assert wait_terminal(cluster.db_url, [job_id], timeout=150) == {job_id: "done"}
    assert_once(job_rows(cluster.db_url, job_id), bids=3)
    assert all(cluster.alive(n) for n in ("control", "small", "medium", "large"))
