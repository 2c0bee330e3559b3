"""The embedded runtime starts a worker child again when it exits (killed, or out after an
unrecoverable error), and never while the stack stops."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from sale.broker.pool import load_pool
from sale.broker.settings import Settings
from sale.scripts.local.runtime import EmbeddedStack

from tests.conftest import SCRIPTED_POOL

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]


def test_an_exited_worker_is_started_again_and_other_children_are_left_alone(
    tmp_path: Path,
) -> None:
    stack = EmbeddedStack(Settings(state_dir=tmp_path), load_pool(SCRIPTED_POOL))
    try:
        worker = stack._spawn("worker-small", SLEEPER, dict(os.environ))
        redis = stack._spawn("redis", SLEEPER, dict(os.environ))
        assert stack.revive() == []  # nothing exited

        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

        assert stack.revive() == ["worker-small"]
        assert stack.restarts == {"worker-small": 1}
        ((_name, again),) = [(n, p) for n, p in stack.children if n == "worker-small"]
        assert again.pid != worker.pid and again.poll() is None
        assert redis.poll() is None
    finally:
        stack.stop()
    assert stack.children == []
    assert stack.revive() == []  # a stopped stack restarts nothing
