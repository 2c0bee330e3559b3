"""Task events sent in a round trip the caller makes anyway, instead of one of their own.

Inside :func:`captured_publishes`, a fanout message (a task event) that this thread publishes
within a producer's batch (kombu's ``Producer.batch``) on :mod:`sale.broker.transport` is
prepared by kombu as usual, but its final ``PUBLISH`` (topic, payload) is handed to the caller
instead of sent; a stage's event then goes out in the same server-side script that stores its
state (:mod:`sale.workers.progress`). Any other command kombu would send for a message is sent
at once, and a transport that cannot batch publishes as usual, so nothing is lost by asking.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_captured = threading.local()


@contextmanager
def captured_publishes() -> Iterator[list[tuple[str, str]]]:
    """Collect the (topic, payload) of each fanout ``PUBLISH`` this thread's batched publishes
    would send; the caller sends them."""
    sink: list[tuple[str, str]] = []
    _captured.sink = sink
    try:
        yield sink
    finally:
        _captured.sink = None


def active_capture(channel: Any) -> Capture | None:
    """A stand-in for kombu's publish batch on ``channel`` while a capture is active."""
    sink = getattr(_captured, "sink", None)
    return None if sink is None else Capture(channel, sink)


class Capture:
    """Takes the place of kombu's Redis publish batch: routes each message as kombu's does and
    keeps its fanout ``PUBLISH`` commands."""

    def __init__(self, channel: Any, sink: list[tuple[str, str]]) -> None:
        self.channel = channel
        self.sink = sink

    def publish(self, message: Any, **kwargs: Any) -> Any:
        """Route a prepared message; its final Redis commands come to :meth:`add`."""
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        """Keep a fanout ``PUBLISH``; send any other command now."""
        if name == "publish" and len(args) == 2:
            self.sink.append((str(args[0]), str(args[1])))
            return
        with self.channel.conn_or_acquire() as client:
            getattr(client, name)(*args)

    def flush(self) -> None:
        """Nothing is buffered here: the caller sends what was captured."""

    def discard(self) -> None:
        """An aborted batch sends nothing."""
        self.sink.clear()

    def close(self) -> None:
        """Nothing to release."""
