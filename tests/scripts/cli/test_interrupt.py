"""A Ctrl-C (or SIGTERM) stops `sale run` and `sale eval` even when the KeyboardInterrupt the
handler raises is lost (Python only prints an exception raised inside an at-fork callback)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest
from sale.scripts.cli import common as cli


@pytest.fixture
def handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cli._SIGNALS.clear()
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
        cli._SIGNALS.clear()


def test_a_signal_is_remembered_so_a_lost_interrupt_still_stops_the_next_check(
    handlers: None,
) -> None:
    cli.stop_if_signalled()  # nothing received: no-op
    cli.interruptible()
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert cli._SIGNALS == [signal.SIGTERM]
    # Had that exception been swallowed, the loops' next check raises it again.
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        cli.stop_if_signalled()


def test_restore_unacked_puts_a_taken_but_unfinished_task_back_on_its_queue(
    redis_url: str,
) -> None:
    import subprocess
    import sys

    from kombu import Connection, Exchange, Queue
    from sale.scripts.local.runtime import restore_unacked

    url = redis_url.rsplit("/", 1)[0] + "/9"  # a database of its own on the shared server
    name = "sale.test.restore"
    queue = Queue(name, Exchange(name), name)
    with Connection(url) as conn:
        conn.default_channel.client.flushdb()
        conn.Producer().publish(
            {"job": 1}, exchange=queue.exchange, routing_key=name, declare=[queue]
        )
    # A worker takes the task without acknowledging it (late ack) and is killed: a clean close
    # would hand it back, a killed process cannot.
    taker = (
        "import os\n"
        "from kombu import Connection, Exchange, Queue\n"
        f"q = Queue({name!r}, Exchange({name!r}), {name!r})\n"
        f"conn = Connection({url!r})\n"
        "m = q(conn.default_channel).get(no_ack=False)\n"
        "assert m is not None and m.payload == {'job': 1}\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", taker], check=True, timeout=60)
    with Connection(url) as conn:
        assert queue(conn.default_channel).get(no_ack=True) is None  # taken, not on the queue
    assert restore_unacked(url) == 1
    with Connection(url) as conn:
        again = queue(conn.default_channel).get(no_ack=True)
        assert again is not None and again.payload == {"job": 1}
    assert restore_unacked(url) == 0  # nothing left to restore


def test_pending_task_ids_sees_queued_and_taken_messages(redis_url: str) -> None:
    import subprocess
    import sys

    from kombu import Connection, Exchange, Queue
    from sale.scripts.local.runtime import pending_task_ids

    url = redis_url.rsplit("/", 1)[0] + "/10"  # a database of its own on the shared server
    name = "sale.test.pending"
    queue = Queue(name, Exchange(name), name)
    with Connection(url) as conn:
        conn.default_channel.client.flushdb()
        producer = conn.Producer()
        for task_id in ("t1", "t2"):
            producer.publish(
                {"job": task_id},
                exchange=queue.exchange,
                routing_key=name,
                declare=[queue],
                headers={"id": task_id},
            )
    assert pending_task_ids(url, [name]) == {"t1", "t2"}
    assert pending_task_ids(url, ["sale.test.other"]) == set()
    taker = (  # takes t1 without acknowledging it, and dies
        "import os\n"
        "from kombu import Connection, Exchange, Queue\n"
        f"q = Queue({name!r}, Exchange({name!r}), {name!r})\n"
        f"m = q(Connection({url!r}).default_channel).get(no_ack=False)\n"
        "assert m is not None\n"
        "os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", taker], check=True, timeout=60)
    assert pending_task_ids(url, [name]) == {"t1", "t2"}  # one waiting, one taken
    with Connection(url) as conn:
        while queue(conn.default_channel).get(no_ack=True) is not None:
            pass
        conn.default_channel.client.delete(conn.default_channel.unacked_key)
    assert pending_task_ids(url, [name]) == set()
