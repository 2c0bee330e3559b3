"""A Ctrl-C (or SIGTERM) stops `sale run` and `sale eval` even when the KeyboardInterrupt the
handler raises is lost (Python only prints an exception raised inside an at-fork callback)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from scripts import cli


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
    cli._stop_if_signalled()  # nothing received: no-op
    cli._interruptible()
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        os.kill(os.getpid(), signal.SIGTERM)
    assert cli._SIGNALS == [signal.SIGTERM]
    # Had that exception been swallowed, the loops' next check raises it again.
    with pytest.raises(KeyboardInterrupt, match="signal 15"):
        cli._stop_if_signalled()
