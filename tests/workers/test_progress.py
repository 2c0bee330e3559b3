"""A stage's published state on a real Redis result backend: what ``AsyncResult`` reads (with
Celery's extended fields), and that it never hides a task's final result."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from sale.workers.progress import publish, store_state


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    app = Celery("progress-test", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(result_extended=True, worker_send_task_events=False)
    yield app
    app.close()


def running(app: Celery, task_id: str, job_id: str) -> Any:
    """A stage task as it runs in a worker: its request pushed."""

    @app.task(bind=True, name="sale.bid", shared=False)
    def bid(self: Any) -> None:
        """A stand-in for the bid stage."""

    bid.push_request(id=task_id, task="sale.bid", args=[job_id, "small", "first", None], kwargs={},
                     is_eager=False, hostname="small@host", retries=0)  # fmt: skip
    return bid


def test_a_published_state_reads_as_celerys_custom_state(app: Celery) -> None:
    task_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    task = running(app, task_id, job_id)
    try:
        publish(task, "BIDDING", job_id, agent="small")
    finally:
        task.pop_request()
    result = app.AsyncResult(task_id)
    assert result.state == "BIDDING"
    assert result.info == {"job_id": job_id, "agent": "small"}
    assert result.name == "sale.bid" and result.args == [job_id, "small", "first", None]


def test_a_state_published_after_success_leaves_the_result(app: Celery) -> None:
    task_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    app.backend.store_result(task_id, {"job_id": job_id, "status": "done"}, "SUCCESS")
    task = running(app, task_id, job_id)
    try:
        assert store_state(task, "UPDATING", {"job_id": job_id}) is False
        publish(task, "UPDATING", job_id)
    finally:
        task.pop_request()
    result = app.AsyncResult(task_id)
    assert result.state == "SUCCESS"
    assert result.result == {"job_id": job_id, "status": "done"}
