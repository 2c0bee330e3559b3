"""The auction context: settings, pool, weights, model caller, embedder; one per process.

:class:`AuctionContext` is everything a stage needs besides ids. This process's context is built
lazily on first use in each worker process (never at import), from the settings. Tests and
benchmarks may install their own context with ``set_context`` (e.g. to inject a model caller).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sale.broker.pool import Pool, load_pool
from sale.broker.settings import Settings, get_settings
from sale.workers.auction.weights import Weights, load_weights
from sale.workers.llm.types import LLMCall


@dataclass
class AuctionContext:
    """Everything a stage needs besides ids: configuration and injected callables."""

    settings: Settings
    pool: Pool
    weights: Weights
    llm: LLMCall
    embed: Callable[[list[str]], list[list[float]]]
    db_url: str = field(default="")

    def __post_init__(self) -> None:
        if not self.db_url:
            self.db_url = self.settings.effective_database_url


_context: AuctionContext | None = None
_lock = threading.Lock()


def get_context() -> AuctionContext:
    """The context of this process, built from settings on first use."""
    global _context
    with _lock:
        if _context is None:
            from sale.workers.llm.provider import call_model
            from sale.workers.memory.embed import embedder_for

            settings = get_settings()
            _context = AuctionContext(
                settings=settings,
                pool=load_pool(settings.effective_pool_file),
                weights=load_weights(settings.effective_weights_file),
                llm=call_model,
                embed=embedder_for(settings.embedder),
            )
        return _context


def set_context(context: AuctionContext | None) -> None:
    """Install (or with None, forget) this process's context."""
    global _context
    with _lock:
        _context = context
