"""No API key leaves its variable: a pool agent whose key sits in SALE_TEST_KEY runs a job
through real Celery workers on a real redis-server, and the key is then searched for in the
captured logs, every row of every table of the database, every task message as published
(args, kwargs and the reprs Flower shows), every key and value left in Redis (results,
queues), and the job's `sale show --json` view: zero hits. A provider
error that echoes the key reaches the error, and so the database and logs, redacted."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.signals import before_task_publish
from sale.broker.pool import Agent
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sale.workers.llm import provider
from sale.workers.llm.provider import call_model
from sale.workers.views import job_view
from sqlalchemy import create_engine, inspect, text

from sale.errors import PermanentModelError
from tests.conftest import SCRIPTED_POOL
from tests.integration.conftest import swapped_context, wait
from tests.integration.test_pipeline import coding_spec


@pytest.fixture(scope="module")
def key() -> str:
    return f"sk-test-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def keyed_stack(
    stack: AuctionContext, tmp_path_factory: pytest.TempPathFactory, key: str
) -> Iterator[AuctionContext]:
    """The session's workers with an API key variable on every agent of the scripted pool and a
    database of their own."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SALE_TEST_KEY", key)
    tmp: Path = tmp_path_factory.mktemp("secrets")
    pool_file = tmp / "pool.toml"
    pool_file.write_text(
        SCRIPTED_POOL.read_text().replace(
            'model = "scripted/', 'api_key_env = "SALE_TEST_KEY"\nmodel = "scripted/'
        )
    )
    try:
        with swapped_context(stack, f"sqlite:///{tmp / 'sale.db'}", pool_file) as ctx:
            assert all(a.api_key_env == "SALE_TEST_KEY" for a in ctx.pool.agents)
            yield ctx
    finally:
        mp.undo()


def test_an_api_key_appears_in_no_log_row_message_result_or_view(
    keyed_stack: AuctionContext, key: str, caplog: pytest.LogCaptureFixture, redis_url: str
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    provider_calls = 0
    real_completion = provider.configure_litellm().completion

    def spy(**kwargs: Any) -> Any:  # the key does reach the provider, and only there
        nonlocal provider_calls
        provider_calls += 1
        seen.append(kwargs.get("api_key", ""))
        return real_completion(**kwargs)

    published: list[str] = []

    def capture(body: Any = None, headers: Any = None, **_: Any) -> None:
        # What Flower shows of a task: its args/kwargs (and their reprs in the headers).
        published.append(repr(body) + repr(headers))

    mp = pytest.MonkeyPatch()
    mp.setattr(provider.configure_litellm(), "completion", spy)
    before_task_publish.connect(capture, weak=False)
    try:
        job_id = submit(coding_spec(), keyed_stack)
        summary = wait(job_id)
    finally:
        before_task_publish.disconnect(capture)
        mp.undo()
    assert summary["status"] == "done", summary
    assert provider_calls > 0 and set(seen) == {key}
    assert len(published) > 5 and not [message for message in published if key in message]
    assert key not in repr(summary)

    logs = "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert logs and key not in logs
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # the most verbose level

    engine = create_engine(keyed_stack.db_url)
    rows = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            rows += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    assert len(rows) > 10 and not [row for row in rows if key in row]

    # Every key and value in the session's Redis database: this job's and all before it.
    client = redis.Redis.from_url(redis_url)
    dumped = []
    for name in client.scan_iter():
        kind = client.type(name)
        if kind == b"string":
            dumped.append(client.get(name) or b"")
        elif kind == b"list":
            dumped += client.lrange(name, 0, -1)
        elif kind == b"hash":
            dumped += [k + b"=" + v for k, v in client.hgetall(name).items()]
        elif kind == b"set":
            dumped += list(client.smembers(name))
        elif kind == b"zset":
            dumped += [m for m, _ in client.zrange(name, 0, -1, withscores=True)]
        dumped.append(name)
    assert dumped and not [item for item in dumped if key.encode() in item]

    shown = json.dumps(job_view(keyed_stack, job_id))
    assert job_id in shown and key not in shown


def test_a_provider_error_that_echoes_the_key_is_redacted(
    monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("SALE_TEST_KEY", key)
    agent = Agent(
        name="a",
        model="openai/x",
        input_price=0,
        output_price=1,
        queue="sale.agent.a",
        api_key_env="SALE_TEST_KEY",
    )

    def echo(**kwargs: Any) -> Any:
        raise ValueError(f"Incorrect API key provided: {kwargs['api_key']}")

    monkeypatch.setattr(provider.configure_litellm(), "completion", echo)
    with pytest.raises(PermanentModelError) as info:
        call_model(agent, [{"role": "user", "content": "hi"}], stage="bid", max_tokens=8)
    assert key not in str(info.value) and "[redacted]" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
