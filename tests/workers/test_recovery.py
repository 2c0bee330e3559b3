"""Which errors are the broker's (deliver the stage again) and which are the job's own."""

from __future__ import annotations

import pytest
from celery.exceptions import ChordError, Reject
from kombu import Connection, Producer
from redis.exceptions import ConnectionError as RedisConnectionError
from sale.workers.recovery import closed_channel_error, is_transport_error


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
