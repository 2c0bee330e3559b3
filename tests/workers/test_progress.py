"""A stage's published state on a real Redis result backend: what ``AsyncResult`` reads (with
Celery's extended fields), that it never hides a task's final result, and its task event, sent
in the same round trip when the broker is that Redis too."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from sale.broker.app import REDIS_TRANSPORT
from sale.workers.progress import _prepare_event, publish, store_state


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


def events_heard(redis_url: str, act: Any) -> list[dict[str, Any]]:
    """The task events published on Celery's event exchange while ``act()`` runs."""
    client = redis.Redis.from_url(redis_url)
    listener = client.pubsub()
    listener.psubscribe("*celeryev*")
    assert listener.get_message(timeout=5)["type"] == "psubscribe"
    act()
    heard = []
    while (message := listener.get_message(timeout=1)) is not None:
        envelope = json.loads(message["data"])
        heard.append(json.loads(base64.b64decode(envelope["body"])))
    listener.close()
    return heard


@pytest.mark.parametrize("done", [False, True], ids=["running", "after success"])
def test_the_task_event_goes_out_with_the_state_on_one_redis(redis_url: str, done: bool) -> None:
    app = Celery("progress-events", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(result_extended=True, worker_send_task_events=True,
                    broker_transport=REDIS_TRANSPORT)  # fmt: skip
    task_id, job_id = uuid.uuid4().hex, uuid.uuid4().hex
    if done:
        app.backend.store_result(task_id, {"job_id": job_id}, "SUCCESS")
    task = running(app, task_id, job_id)
    try:
        # kombu prepares the event, but its PUBLISH is left to the state's script
        prepared: list[tuple[str, str]] = []
        fields = {"job_id": job_id}
        act = lambda: prepared.extend(_prepare_event(task, "task-judging", fields))  # noqa: E731
        assert events_heard(redis_url, act) == [] and len(prepared) == 1
        heard = events_heard(redis_url, lambda: publish(task, "JUDGING", job_id, juror="small"))
    finally:
        task.pop_request()
        app.close()
    assert [(e["type"], e["uuid"], e["job_id"], e["juror"]) for e in heard] == [
        ("task-judging", task_id, job_id, "small")
    ]
    assert heard[0]["hostname"] == "small@host"
    assert app.AsyncResult(task_id).state == ("SUCCESS" if done else "JUDGING")
