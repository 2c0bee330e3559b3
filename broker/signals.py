"""Worker signal handlers: logging set up once, database engines reset after fork."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import setup_logging, worker_process_init
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
