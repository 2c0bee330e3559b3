"""The Celery stack for canvas and integration tests: a real redis-server, Celery's embedded
worker (threads, consuming every queue of the scripted pool), a fresh SQLite memory and the
real MiniLM embedder. No eager mode."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from sale.broker.app import create_app
from sale.broker.pool import load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext, set_context
from sale.workers.llm.provider import call_model
from sale.workers.memory.embed import minilm_embed

from tests.conftest import SCRIPTED_POOL


@pytest.fixture(scope="session")
def stack(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuctionContext]:
    """A running embedded worker and the context its tasks use.

    One per test process: embedded workers share kombu's event loop, and Celery ends one
    through process-wide state, so a second would stop this one with it. Tests that need other
    settings, a pool or a database of their own swap them on this context (see
    ``swapped_context``)."""
    tmp: Path = tmp_path_factory.mktemp("sale")
    settings = Settings(
        broker_url=redis_url,
        database_url=f"sqlite:///{tmp / 'sale.db'}",
        pool_file=SCRIPTED_POOL,
        state_dir=tmp,
        max_retries=2,
        # the stage tasks' Celery retries are what these tests exercise; a call's own tries in
        # the worker have tests of their own (tests/broker/test_limits.py)
        call_retries=0,
        retry_backoff_s=0.05,
        retry_backoff_max_s=0.1,
        # the whole auction of design §3: refinement is off by default, and by default the
        # verified award replaces the auction once the memory holds verified jobs (it has its
        # own tests)
        refine=True,
        award="auction",
    )
    pool = load_pool(SCRIPTED_POOL)
    app = create_app(settings, pool)
    app.set_current()
    app.set_default()
    import sale.workers.tasks  # noqa: F401  (registers the shared tasks on this app)

    init_db(settings.effective_database_url)
    ctx = AuctionContext(
        settings=settings, pool=pool, weights=load_weights(None), llm=call_model, embed=minilm_embed
    )
    set_context(ctx)
    with start_worker(
        app,
        pool="threads",
        concurrency=6,
        perform_ping_check=False,
        queues=pool.queues,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield ctx
        gc.collect()
    # Result handles still alive unsubscribe from redis when collected; the server is about to
    # stop, so make that a no-op instead of a reconnect storm at interpreter exit.
    # (Backends are per thread, so this is patched on the class.)
    from celery.backends.redis import ResultConsumer

    ResultConsumer.cancel_for = lambda *_a, **_k: None
    set_context(None)


@contextmanager
def swapped_context(
    stack: AuctionContext, database_url: str, pool_file: Path | None = None, **settings: Any
) -> Iterator[AuctionContext]:
    """The stack's workers on the database ``database_url`` (migrated here) with ``settings``
    and, given ``pool_file``, that pool (its agents on the stack's queues); restored after."""
    init_db(database_url)
    original = stack.settings, stack.db_url, stack.pool
    update: dict[str, Any] = {"database_url": database_url, **settings}
    if pool_file is not None:
        update["pool_file"] = pool_file
        stack.pool = load_pool(pool_file)
        assert set(stack.pool.queues) <= set(original[2].queues), "the worker consumes these"
    stack.settings = original[0].model_copy(update=update)
    stack.db_url = database_url
    try:
        yield stack
    finally:
        stack.settings, stack.db_url, stack.pool = original


def wait(job_id: str, timeout: float = 120) -> Any:
    """Block until the job's pipeline ends (on the result backend, no polling sleeps)."""
    from celery.result import AsyncResult

    return AsyncResult(job_id).get(timeout=timeout, propagate=False)
