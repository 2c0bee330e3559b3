"""The Redis transport keeps a message a worker has taken while Redis restarts: taking a message
(BRPOP) and storing it as unacknowledged are two writes, and a restart between them must not
drop it. Run on a real redis-server that is really stopped and started again."""

from __future__ import annotations

import threading
from pathlib import Path

import redis
from kombu import Connection, Producer
from sale.scripts.bench.cluster import Cluster


def test_a_message_taken_as_redis_restarts_is_stored_as_unacknowledged_once_it_is_back(
    tmp_path: Path,
) -> None:
    cluster = Cluster(tmp_path / "redis")
    cluster.workdir.mkdir(parents=True)
    cluster.start_redis()
    try:
        with Connection(cluster.broker_url, transport="sale.broker.transport:Transport") as conn:
            channel = conn.channel()
            channel.queue_declare("sale-test-taken")
            Producer(channel).publish({"job": "j1"}, routing_key="sale-test-taken")
            # Taken from its queue (as BRPOP takes it); the second write is still to come.
            message = channel.basic_get("sale-test-taken", no_ack=True)
            assert message is not None and message.payload == {"job": "j1"}
            cluster.stop_redis()
            restart = threading.Timer(1.5, cluster.start_redis)
            restart.start()
            channel.qos.append(message, message.delivery_tag)
            restart.join()
            client = redis.Redis.from_url(cluster.broker_url)
            stored = client.hgetall(channel.qos.unacked_key)
            assert list(stored) == [message.delivery_tag.encode()]
            channel.qos.ack(message.delivery_tag)
            assert client.hlen(channel.qos.unacked_key) == 0
    finally:
        cluster.close()
