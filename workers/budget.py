"""The pool's daily budget: new jobs are refused once today's recorded spend reaches it.

A pool file may set ``daily_budget_usd``. The day's spend is read from the database: the cost
of every model call in the ledger since 00:00 UTC (bids, jury calls, execution steps) of the
jobs of this pool (``Job.pool_path``). :func:`check_daily_budget` runs in :func:`sale.submit`
(and so in `sale submit` and `sale run`) before anything is stored or sent. Jobs already
running are not stopped by it: each one is bounded by its own ``max_cost_usd``, checked before
every call (:mod:`sale.workers.gate`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sale.models.db import session_scope
from sale.models.tables import Job, ModelCall
from sale.workers.context import AuctionContext
from sqlalchemy import func
from sqlmodel import col, select

from sale.errors import DailyBudgetError


def utc_midnight(now: datetime | None = None) -> datetime:
    """The start of the current UTC day."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def day_spend(db_url: str, pool_path: str, now: datetime | None = None) -> float:
    """US$ of the model calls recorded since 00:00 UTC for the jobs of the pool at
    ``pool_path``."""
    since = utc_midnight(now)
    with session_scope(db_url) as s:
        spent = s.exec(
            select(func.sum(ModelCall.cost_usd))
            .join(Job, col(Job.id) == ModelCall.job_id)
            .where(col(Job.pool_path) == pool_path, col(ModelCall.created_at) >= since)
        ).one()
    return float(spent or 0.0)


def check_daily_budget(ctx: AuctionContext, now: datetime | None = None) -> None:
    """Raise DailyBudgetError when the pool has a daily budget and today's spend reached it."""
    budget = ctx.pool.daily_budget_usd
    if budget is None:
        return
    spent = day_spend(ctx.db_url, ctx.pool.path, now)
    if spent >= budget:
        raise DailyBudgetError(ctx.pool.path, budget, spent)
