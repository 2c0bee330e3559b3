"""Worker signal handlers: logging set up once, database engines reset after fork, and each
worker's leases and watchdog (:mod:`sale.broker.leases`) started when it is ready."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import (
    setup_logging,
    task_received,
    worker_process_init,
    worker_ready,
)
from sale.broker.leases import current_guard, start_guard
from sale.broker.settings import get_settings
from sale.models.db import dispose_engines


@setup_logging.connect
def configure_logging(**_: Any) -> None:
    """Log to stdout with the task name; Celery leaves logging to us once this is connected."""
    logging.basicConfig(
        level=get_settings().log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        force=True,
    )
    logging.getLogger("LiteLLM").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


@worker_process_init.connect
def reset_engines(**_: Any) -> None:
    """Drop database connections inherited from the parent process."""
    dispose_engines()


@worker_ready.connect
def start_leases(sender: Any = None, **_: Any) -> None:
    """Start the worker's heartbeat and watchdog (once; the consumer is ready again after each
    reconnect)."""
    if sender is not None:
        start_guard(sender.app, str(getattr(sender, "hostname", "") or "worker"))


@task_received.connect
def lease_message(request: Any = None, **_: Any) -> None:
    """Lease each received message until it is acknowledged (waiting, retrying or running)."""
    guard = current_guard()
    if guard is not None and request is not None:
        guard.hold(request)
