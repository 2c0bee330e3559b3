"""The lease watchdog's decisions on a real redis-server: which unacknowledged messages have
lost their worker, that of two watchdogs only one re-dispatches a message, that nothing is
judged right after a Redis restart, and the delivery count behind the redelivery cap."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from sale.broker.leases import (
    LEASE_PREFIX,
    Guard,
    count_delivery,
    delivery_key,
    lapsed_tags,
    lease_value,
)

INDEX, UNACKED = "test:unacked_index", "test:unacked"


@pytest.fixture
def url(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/7"  # a database of its own on the shared server


@pytest.fixture
def client(url: str) -> Iterator[Any]:
    c = redis.Redis.from_url(url)
    c.flushdb()
    yield c
    c.flushdb()


def deliver(client: Any, tag: str, at: float, task: str = "sale.execute") -> None:
    """What kombu's Redis transport writes when a worker takes a message."""
    payload = {"headers": {"task": task, "argsrepr": "('job1',)"}}
    client.zadd(INDEX, {tag: at})
    client.hset(UNACKED, tag, json.dumps([payload, "ex", "rk"]))


def test_a_message_without_a_lease_delivered_over_a_ttl_ago_has_lapsed(client: Any) -> None:
    deliver(client, "old-unleased", at=100.0)
    deliver(client, "old-leased", at=100.0)
    deliver(client, "fresh", at=195.0)  # its worker may not have leased it yet
    client.set(LEASE_PREFIX + "old-leased", lease_value("sale.bid", "t1", ["job1"], "w@h"))

    assert lapsed_tags(client, INDEX, ttl_s=10, now=200.0) == ["old-unleased"]


def test_of_two_watchdogs_only_one_redispatches_a_lapsed_message(client: Any, url: str) -> None:
    deliver(client, "lost", at=1.0)
    restored: list[tuple[str, str]] = []
    guards = [
        Guard(
            url,
            f"w{i}@h",
            0,  # any age counts; and Redis has been up long enough
            1,
            lambda tag, i=i: restored.append((f"w{i}", tag)),
            unacked_index=INDEX,
            unacked=UNACKED,
        )
        for i in range(2)
    ]

    assert guards[0].scan() == ["lost"]
    assert guards[1].scan() == []  # the message is still unacked here: the claim holds
    assert restored == [("w0", "lost")]


def test_nothing_is_judged_until_redis_has_been_up_a_whole_ttl(client: Any, url: str) -> None:
    deliver(client, "lost", at=1.0)
    uptime = int(client.info("server")["uptime_in_seconds"])
    guard = Guard(
        url, "w@h", uptime + 3600, 1, lambda _tag: None, unacked_index=INDEX, unacked=UNACKED
    )

    assert guard.scan() == []


def test_the_heartbeat_leases_held_messages_and_releases_acknowledged_ones(
    client: Any, url: str
) -> None:
    class Message:
        def __init__(self, tag: str) -> None:
            self.delivery_tag = tag

    class Request:
        def __init__(self, tag: str) -> None:
            self.message, self.name, self.id = Message(tag), "sale.bid", f"id-{tag}"
            self.args, self.acknowledged = ["job1", "small"], False

    guard = Guard(url, "w@h", 30, 1, lambda _tag: None)
    held = [Request("a"), Request("b")]
    for req in held:
        guard.hold(req)
    guard._renew()
    assert json.loads(client.get(LEASE_PREFIX + "a"))["job_id"] == "job1"
    assert 0 < client.pttl(LEASE_PREFIX + "b") <= 30_000

    held[0].acknowledged = True
    guard._renew()
    assert client.exists(LEASE_PREFIX + "a") == 0 and client.exists(LEASE_PREFIX + "b") == 1


def test_a_request_dropped_on_a_reconnect_is_released_and_one_running_is_not(
    client: Any, url: str
) -> None:
    """Celery drops a countdown (retry) request when its connection breaks; its message stays
    unacknowledged, so its lease must lapse for the watchdog to deliver it again."""
    from celery.worker.state import active_requests

    class Channel:
        closed = False

    class Message:
        def __init__(self, tag: str) -> None:
            self.delivery_tag, self.channel = tag, Channel()

    class Request:
        def __init__(self, tag: str) -> None:
            self.message, self.name, self.id = Message(tag), "sale.execute", f"id-{tag}"
            self.args, self.acknowledged = ["job1", 0], False

    guard = Guard(url, "w@h", 30, 1, lambda _tag: None)
    waiting, running = Request("w"), Request("r")
    for req in (waiting, running):
        guard.hold(req)
    guard._renew()
    assert client.exists(LEASE_PREFIX + "w") == client.exists(LEASE_PREFIX + "r") == 1
    active_requests.add(running)
    try:
        waiting.message.channel.closed = running.message.channel.closed = True  # reconnect
        guard._renew()
        assert client.exists(LEASE_PREFIX + "w") == 0  # the watchdog re-dispatches it
        assert client.exists(LEASE_PREFIX + "r") == 1  # still running here
    finally:
        active_requests.discard(running)


def test_each_start_of_a_delivery_is_counted_apart_from_other_stages(url: str) -> None:
    first = delivery_key("job1", "sale.judge", ["job1", "first"], 0)
    refined = delivery_key("job1", "sale.judge", ["job1", "refined"], 0)
    retried = delivery_key("job1", "sale.judge", ["job1", "first"], 1)

    assert [count_delivery(url, first) for _ in range(3)] == [1, 2, 3]
    assert count_delivery(url, refined) == 1
    assert count_delivery(url, retried) == 1
