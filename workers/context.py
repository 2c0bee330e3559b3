"""The per-process auction context: settings, pool, weights, model caller, embedder.

Built lazily on first use in each worker process (never at import), from the settings. Tests and
benchmarks may install their own context with ``set_context`` (e.g. to inject a model caller).
"""

from __future__ import annotations

import threading

from broker.settings import get_settings
from workers.pool import load_pool
from workers.service import AuctionContext
from workers.weights import load_weights

_context: AuctionContext | None = None
_lock = threading.Lock()


def get_context() -> AuctionContext:
    """The context of this process, built from settings on first use."""
    global _context
    with _lock:
        if _context is None:
            from workers.embed import minilm_embed
            from workers.llm import call_model

            settings = get_settings()
            _context = AuctionContext(
                settings=settings,
                pool=load_pool(settings.effective_pool_file),
                weights=load_weights(settings.weights_file),
                llm=call_model,
                embed=minilm_embed,
            )
        return _context


def set_context(context: AuctionContext | None) -> None:
    """Install (or with None, forget) this process's context."""
    global _context
    with _lock:
        _context = context
