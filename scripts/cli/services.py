"""Long-running services: a worker, Flower, the whole embedded stack (`sale up`)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from sale.scripts.cli.common import (
    PoolOpt,
    ensure_broker,
    err,
    fail,
    interruptible,
    settings_for,
)
from sale.scripts.cli.jobs import say_resumed


def worker(
    agent: Annotated[str | None, typer.Option(help="serve this agent's queue")] = None,
    control: Annotated[bool, typer.Option("--control", help="serve the control queue")] = False,
    pool: PoolOpt = None,
    loglevel: str = "INFO",
    node: Annotated[
        str | None,
        typer.Option(help="Celery node name, unique per worker (default: the queue's NAME@%h)"),
    ] = None,
) -> None:
    """Run a Celery worker for one agent's queue or for the control queue."""
    from sale.broker.pool import CONTROL_QUEUE, load_pool

    from sale.errors import SaleError

    settings = settings_for(pool)
    if control == (agent is not None):
        fail(ValueError("give exactly one of --agent NAME or --control"))
    try:
        pool_obj = load_pool(settings.effective_pool_file)
        queue = CONTROL_QUEUE if control else pool_obj.get(agent or "").queue
        concurrency = 2 if control else pool_obj.get(agent or "").concurrency
    except SaleError as exc:
        fail(exc)
    from sale.models.db import init_db

    if control:
        # The control queue embeds tasks (awarding, the memory update): a missing embedder is
        # a start-up error here, not a failure of every job at its last stage.
        if settings.embedder == "minilm":
            from sale.workers.memory.embed import require_minilm

            try:
                require_minilm()
            except SaleError as exc:
                fail(exc)
        init_db(settings.effective_database_url)
    from sale.broker.app import app as celery_app

    node = node or f"{'control' if control else agent}@%h"
    celery_app.worker_main(
        ["worker", "-Q", queue, "-c", str(concurrency), "-n", node, "-l", loglevel]
    )


def flower(pool: PoolOpt = None, port: int | None = None) -> None:
    """Run Flower on the broker (basic auth from SALE_FLOWER_BASIC_AUTH, /metrics included)."""
    settings = ensure_broker(settings_for(pool))
    from sale.broker.app import create_app

    celery_app = create_app(settings)
    argv = ["flower", f"--port={port or settings.flower_port}", "--address=127.0.0.1"]
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth}")
        _authenticate_metrics()
    celery_app.start(argv)


def _authenticate_metrics() -> None:
    """Put Flower's /metrics behind its login: Flower 2.2 serves it to anyone, and its task
    counts name the jobs' stages and workers (Prometheus then scrapes with basic_auth)."""
    from flower.views.monitor import Metrics  # type: ignore[import-untyped]
    from tornado.web import authenticated

    if not getattr(Metrics.get, "__wrapped__", None):
        Metrics.get = authenticated(Metrics.get)


def up(pool: PoolOpt = None) -> None:
    """Start the embedded runtime (Redis, workers, model servers) until Ctrl-C."""
    from sale.broker.pool import load_pool
    from sale.models.db import init_db
    from sale.scripts.local.runtime import EmbeddedStack, running_broker

    settings = settings_for(pool)
    if settings.broker_url or running_broker(settings):
        fail(RuntimeError("a broker is already configured or a `sale up` is running"))
    init_db(settings.effective_database_url)
    interruptible()
    with EmbeddedStack(settings, load_pool(settings.effective_pool_file)) as stack:
        stack.workers_ready()
        say_resumed(settings, stack.restored)
        err.print(f"up: broker {stack.broker_url}; logs in {stack.log_dir}. Ctrl-C stops.")
        try:
            # Workers that exit are restarted by the stack; without Redis nothing can run.
            while all(p.poll() is None for n, p in stack.children if n == "redis"):
                time.sleep(1)
            err.print("[red]the broker (redis) exited; stopping[/red]")
        except KeyboardInterrupt:
            err.print("stopping …")


# --- local models -------------------------------------------------------------------------
