"""The Redis transport, with two faults fixed: losing Redis never kills a worker or a message.

When a worker's connection to Redis breaks, kombu closes the channel and, on close, tries to
put the worker's unacknowledged messages back on their queues. With Redis gone that restore
cannot work, and in kombu 5.7 it raises ``AttributeError`` (the closed connection has no
parameters left to reconnect with), which Celery reports as an "Unrecoverable error" and the
worker exits. Here a restore that fails is logged and left alone: the messages stay in Redis's
unacknowledged set, their leases lapse, and the watchdog puts them back
(:mod:`sale.broker.leases`). Likewise a message that finishes after the reconnect is
acknowledged on a channel whose connection is gone (kombu raises ``AttributeError`` again):
here the acknowledgement goes through the channel's own spare connection pool, and a rejection
is left to the watchdog. A message a worker has just taken from its queue (BRPOP) is stored as
unacknowledged in a second write; with Redis restarting in between, that write is tried again
until Redis is back (up to a minute) instead of dropping the message, which would then be on
no queue and in no worker. ``create_app`` selects this transport for ``redis://`` brokers.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sale.broker.capture import active_capture

log = logging.getLogger(__name__)


#: How long a worker keeps trying to store a message it has taken as unacknowledged while
#: Redis is out of reach (a restart), and how long it waits between tries.
APPEND_WAIT_S = 60.0
APPEND_RETRY_S = 0.5


class QoS(kombu_redis.QoS):  # type: ignore[misc]
    """kombu's Redis QoS whose restore on close survives a lost connection."""

    def append(self, message: Any, delivery_tag: str) -> None:
        """Store a message just taken from its queue as unacknowledged, trying again while
        Redis is out of reach: BRPOP has already removed it from the queue, so if this write
        fails the message exists only in this worker's memory."""
        deadline = time.monotonic() + APPEND_WAIT_S
        while True:
            try:
                super().append(message, delivery_tag)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                if time.monotonic() >= deadline:
                    raise
                log.warning("message %s taken but not stored as unacknowledged yet (%s: %s); "
                            "trying again", delivery_tag, type(exc).__name__, exc)  # fmt: skip
                time.sleep(APPEND_RETRY_S)  # Redis is restarting: wait for it to take writes

    def restore_unacked(self, client: Any = None) -> None:
        """Restore this channel's unacknowledged messages, or leave them to the watchdog."""
        try:
            super().restore_unacked(client)
        except (AttributeError, RedisConnectionError, RedisTimeoutError, OSError) as exc:
            count = len(self._delivered)
            self._delivered.clear()
            log.warning(
                "%d unacknowledged message(s) not restored on close (%s: %s); the watchdog "
                "re-dispatches them when their leases lapse",
                count,
                type(exc).__name__,
                exc,
            )

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge; on a channel closed by a lost connection, through its spare pool."""
        try:
            super().ack(delivery_tag)
        except AttributeError:
            client = redis.Redis(connection_pool=self.channel.spare_pool)
            pipe = client.pipeline()
            pipe.zrem(self.unacked_index_key, delivery_tag)
            pipe.hdel(self.unacked_key, delivery_tag)
            pipe.execute()
            virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """Reject; on a channel closed by a lost connection, leave the message to the
        watchdog (it is still unacknowledged in Redis, and its lease lapses)."""
        try:
            super().reject(delivery_tag, requeue=requeue)
        except AttributeError:
            log.warning("message %s left to the watchdog (its channel closed)", delivery_tag)
            virtual.QoS.ack(self, delivery_tag)


class Channel(kombu_redis.Channel):  # type: ignore[misc]
    """kombu's Redis channel with :class:`QoS`, a spare connection pool of its own, and
    publish batches that :func:`sale.broker.capture.captured_publishes` can take over."""

    QoS = QoS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spare_pool = self._get_pool()

    def create_publish_batch(self, max_size: int) -> Any:
        """kombu's Redis publish batch, or, while a capture is active, the capture."""
        return active_capture(self) or super().create_publish_batch(max_size)


class Transport(kombu_redis.Transport):  # type: ignore[misc]
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
