"""No API key leaves its variable: a pool agent whose key sits in SALE_TEST_KEY runs a job
through real Celery workers on a real redis-server, and the key is then searched for in the
captured logs, every row of every table of the database, every task message as published
(args, kwargs and the reprs Flower shows), every key and value left in Redis (results,
queues), and the job's `sale show --json` view: zero hits. A provider
error that echoes the key reaches the error, and so the database and logs, redacted."""

from __future__ import annotations

import gc
import json
import logging
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from celery.signals import before_task_publish
from sale.broker.app import create_app
from sale.broker.pool import Agent, load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db
from sale.workers.auction.weights import load_weights
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext, set_context
from sale.workers.llm import provider
from sale.workers.llm.provider import call_model
from sale.workers.memory.embed import minilm_embed
from sale.workers.views import job_view
from sqlalchemy import create_engine, inspect, text

from sale.errors import PermanentModelError
from tests.conftest import SCRIPTED_POOL
from tests.integration.conftest import wait
from tests.integration.test_pipeline import coding_spec

KEY_DB = 11  # a redis database of its own, so every key in it belongs to this job


@pytest.fixture(scope="module")
def key() -> str:
    return f"sk-test-{secrets.token_hex(16)}"


@pytest.fixture(scope="module")
def keyed_stack(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory, key: str
) -> Iterator[AuctionContext]:
    """An embedded worker for the scripted pool with an API key variable on every agent."""
    mp = pytest.MonkeyPatch()
    mp.setenv("SALE_TEST_KEY", key)
    tmp: Path = tmp_path_factory.mktemp("secrets")
    pool_file = tmp / "pool.toml"
    pool_file.write_text(
        SCRIPTED_POOL.read_text().replace(
            'model = "scripted/', 'api_key_env = "SALE_TEST_KEY"\nmodel = "scripted/'
        )
    )
    broker = redis_url.rsplit("/", 1)[0] + f"/{KEY_DB}"
    redis.Redis.from_url(broker).flushdb()
    settings = Settings(
        broker_url=broker,
        database_url=f"sqlite:///{tmp / 'sale.db'}",
        pool_file=pool_file,
        state_dir=tmp,
        refine=True,
    )
    pool = load_pool(pool_file)
    assert all(a.api_key_env == "SALE_TEST_KEY" for a in pool.agents)
    from celery._state import get_current_app

    previous = get_current_app()
    app = create_app(settings, pool)
    app.set_current()
    import sale.workers.tasks  # noqa: F401  (registers the shared tasks on this app)

    init_db(settings.effective_database_url)
    ctx = AuctionContext(
        settings=settings, pool=pool, weights=load_weights(None), llm=call_model, embed=minilm_embed
    )
    set_context(ctx)
    with start_worker(
        app,
        pool="threads",
        concurrency=4,
        perform_ping_check=False,
        queues=pool.queues,
        loglevel="DEBUG",
        shutdown_timeout=30,
    ):
        yield ctx
        gc.collect()
    from celery.backends.redis import ResultConsumer

    # As in the session's stack: result handles collected after redis stops must not reconnect.
    ResultConsumer.cancel_for = lambda *_a, **_k: None  # type: ignore[method-assign]
    set_context(None)
    previous.set_current()
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

    engine = create_engine(keyed_stack.db_url)
    rows = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            rows += [repr(tuple(row)) for row in conn.execute(text(f'SELECT * FROM "{table}"'))]
    engine.dispose()
    assert len(rows) > 10 and not [row for row in rows if key in row]

    client = redis.Redis.from_url(redis_url.rsplit("/", 1)[0] + f"/{KEY_DB}")
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
