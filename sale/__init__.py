"""SALE on Celery: strategy auctions that route LLM-agent jobs across a pool of models.

The public Python API::

    from sale import submit, sale_signature

    job_id = submit({"kind": "coding", "prompt": "...", "tests": "..."})
    chain = sale_signature(spec) | my_task.s()   # inside your own canvas
    cancel(job_id)                               # stops at its next model call or stage

Both validate the spec first and raise :class:`SpecError` (nothing stored or sent) on a bad one.
The subpackages are the architecture: ``sale.broker`` (settings, the agent pool, the Celery app),
``sale.models`` (the auction memory's tables), ``sale.workers`` (the auction, its stages, the
agent, the sandbox, search, the model seam, the Celery tasks) and ``sale.scripts`` (the `sale`
command line, the embedded runtime, the evaluation harness, benchmarks). Importing this package
loads nothing else: the API is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sale.errors import SaleError, SpecError, UnknownAgentError

if TYPE_CHECKING:
    from sale.workers.cancel import cancel
    from sale.workers.canvas import sale_signature, submit

__all__ = ["SaleError", "SpecError", "UnknownAgentError", "cancel", "sale_signature", "submit"]


def __getattr__(name: str) -> Any:
    if name in ("submit", "sale_signature"):
        from sale.workers import canvas

        return getattr(canvas, name)
    if name == "cancel":
        from sale.workers.cancel import cancel

        return cancel
    raise AttributeError(f"module 'sale' has no attribute {name!r}")
