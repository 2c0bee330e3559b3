"""Which errors are the broker's (deliver the stage again) and which are the job's own, and
how the starts of a delivered-again stage are counted against the redelivery cap."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
import redis
from celery.app.task import Context
from celery.exceptions import ChordError, Reject
from kombu import Connection, Producer
from redis.exceptions import ConnectionError as RedisConnectionError
from sale.broker.leases import DELIVERY_PREFIX
from sale.workers.recovery import closed_channel_error, count_start, is_transport_error

from sale.errors import AuctionError


def _publish_on_closed_channel(redis_url: str) -> AttributeError:
    """What kombu raises when a publish (a Celery retry, the next stage) uses a channel whose
    connection was torn down, as after a Redis restart."""
    with Connection(redis_url) as conn:
        channel = conn.channel()
        producer = Producer(channel)
        producer.publish({"ping": 1}, routing_key="sale-test-closed")
        channel.close()
        with pytest.raises(AttributeError) as caught:
            producer.publish({"ping": 2}, routing_key="sale-test-closed")
    return caught.value


def test_a_publish_on_a_torn_down_channel_is_a_transport_error(redis_url: str) -> None:
    exc = _publish_on_closed_channel(redis_url)
    assert closed_channel_error(exc)
    assert is_transport_error(exc)


def test_celerys_reject_of_an_unsendable_retry_is_a_transport_error(redis_url: str) -> None:
    # Task.retry wraps a failed publish in Reject(exc, requeue=False); the job must not fail.
    exc = _publish_on_closed_channel(redis_url)
    assert is_transport_error(Reject(exc, requeue=False))
    assert is_transport_error(Reject(RedisConnectionError("Error 111"), requeue=False))


def test_the_jobs_own_errors_are_not_transport_errors() -> None:
    def fails() -> None:
        raise AttributeError("'NoneType' object has no attribute 'client'")

    with pytest.raises(AttributeError) as caught:
        fails()  # the same text, raised in the project's code: a bug, not the broker
    assert not closed_channel_error(caught.value)
    assert not is_transport_error(caught.value)
    assert not is_transport_error(Reject(ValueError("bad plan"), requeue=False))
    assert not is_transport_error(ChordError("Dependency 1 raised ValueError('bad plan')"))
    assert is_transport_error(ChordError("Dependency 1 raised ConnectionError('Error 111')"))


def _stage_task(url: str, task_id: str, redelivered: bool, cap: int = 2) -> Any:
    """What count_start reads of a running stage task: its app's settings and its request."""
    conf = {"broker_url": url, "sale_redelivery_cap": cap}
    request = Context(
        id=task_id,
        args=[task_id, "first"],
        retries=0,
        is_eager=False,
        delivery_info={"redelivered": redelivered},
    )
    app = SimpleNamespace(conf=SimpleNamespace(**conf, get=conf.get))
    return SimpleNamespace(name="sale.judge", request=request, app=app)


def test_a_first_start_is_not_stored_and_redelivered_starts_reach_the_cap(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    task_id = uuid.uuid4().hex
    count_start(_stage_task(redis_url, task_id, redelivered=False), task_id)
    assert client.keys(f"{DELIVERY_PREFIX}{task_id}:*") == []  # no Redis command for it

    # The first start plus one redelivered start: 2 starts, within a cap of 2.
    count_start(_stage_task(redis_url, task_id, redelivered=True), task_id)
    assert len(client.keys(f"{DELIVERY_PREFIX}{task_id}:*")) == 1
    with pytest.raises(AuctionError, match=r"sale\.judge was started 3 times"):
        count_start(_stage_task(redis_url, task_id, redelivered=True), task_id)
