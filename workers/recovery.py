"""Delivery faults: broker errors that must not fail a job, poison jobs, resuming a job.

A stage whose work is stored must survive the broker going away: its rows are in the database
and every stage is idempotent, so the cure for a transport error (Redis restarting, a dropped
connection) is to deliver the stage again, never to fail the job. This module holds what the
task layer (:mod:`sale.workers.tasks`) needs for that:

- :func:`is_transport_error`: the broker/result-backend errors worth redelivering for, including
  a chord whose join or header failed with one.
- :func:`count_start`: counts each start of a stage task (leases and watchdog:
  :mod:`sale.broker.leases`); a stage started more than ``SALE_REDELIVERY_CAP`` times, its worker
  dying each time, fails its job as a poison job. Only redelivered starts touch Redis.
- :func:`resume_signature`: the signature that carries a job on from what the database holds
  (its status, its executions), with the pipeline's error callback; used when a chord failed
  for a transport error, and by the dispatch sweep of queued jobs.

Tasks are named by string here (``sale.job``, …), so this module imports no task module.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Task, chain, signature
from celery.canvas import Signature
from celery.exceptions import ChordError, Reject
from kombu.exceptions import OperationalError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sale.broker.leases import count_delivery, delivery_key, redis_client
from sale.broker.pool import CONTROL_QUEUE
from sale.models.db import session_scope
from sale.models.tables import Award, Execution, Job
from sale.workers.context import AuctionContext
from sqlmodel import col, select

from sale.errors import AuctionError

log = logging.getLogger(__name__)

TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionError,
    TimeoutError,
)
#: Names of transport errors as they appear in a ChordError's text ("Dependency … raised …").
_TRANSPORT_NAMES = ("ConnectionError", "TimeoutError", "OperationalError", "ConnectionRefused")


def closed_channel_error(exc: BaseException) -> bool:
    """An AttributeError raised inside kombu's transport: a publish (a retry, the next stage)
    on a channel whose connection broke and was torn down, as after a Redis restart (kombu:
    ``'NoneType' object has no attribute 'client'``)."""
    if not isinstance(exc, AttributeError):
        return False
    tb, last = exc.__traceback__, ""
    while tb is not None:
        last, tb = tb.tb_frame.f_code.co_filename, tb.tb_next
    return f"{os.sep}kombu{os.sep}" in last


def is_transport_error(exc: BaseException) -> bool:
    """True for a broker or result-backend error (or a chord failed by one, or Celery's Reject
    of a retry whose publish met one): the job's stored work is intact and the stage only has
    to be delivered again."""
    if isinstance(exc, TRANSPORT_ERRORS) or closed_channel_error(exc):
        return True
    if isinstance(exc, ChordError):
        return any(name in str(exc) for name in _TRANSPORT_NAMES)
    if isinstance(exc, Reject) and isinstance(exc.reason, BaseException) and exc.reason is not exc:
        return is_transport_error(exc.reason)
    cause = exc.__cause__ or exc.__context__
    return (
        cause is not None
        and cause is not exc
        and (isinstance(cause, TRANSPORT_ERRORS) or closed_channel_error(cause))
    )


def count_start(task: Task, job_id: str) -> None:
    """Count this start of a stage task; past ``SALE_REDELIVERY_CAP`` starts (its worker died
    each time), raise AuctionError: the job fails as a poison job. Without a Redis broker, or
    with Redis unreachable, the stage runs uncounted (an outage is no reason to stop it).

    Only a message delivered again is counted in Redis: every way the Redis transport puts a
    message back (the watchdog's re-dispatch, a rejection with requeue, a worker lost, the
    visibility timeout) marks it ``redelivered``, so a stage's first start, the common case,
    costs no Redis command and is added to the count instead. A message put back before its
    first start counts that start once more, so the cap can only be reached one start early,
    never late.
    """
    req = task.request
    url = str(task.app.conf.broker_url or "")
    if req.is_eager or not req.id or not url.startswith(("redis://", "rediss://", "unix://")):
        return
    if not (req.delivery_info or {}).get("redelivered"):
        return  # the first start: nothing to count against the cap yet
    key = delivery_key(req.id, task.name, req.args or [], req.retries or 0)
    try:
        starts = 1 + count_delivery(url, key)  # the first start, then each redelivered one
    except TRANSPORT_ERRORS as exc:
        log.warning("job %s: %s started uncounted (Redis unreachable: %s)", job_id, task.name, exc)
        return
    cap = int(task.app.conf.get("sale_redelivery_cap", 5))
    if starts > cap:
        raise AuctionError(
            job_id,
            f"poison job: {task.name} was started {starts} times and its worker died each time "
            f"(SALE_REDELIVERY_CAP={cap}); see the worker logs",
        )


def _on_error(job_id: str) -> Signature:
    return signature("sale.on_error", args=(job_id,))


def resume_signature(ctx: AuctionContext, job_id: str) -> Signature | None:
    """The signature that carries the job on from its stored state, or None for a finished job.

    queued/bidding: the job's start (bids already stored are kept); judging: the first round's
    jury; refining: the first round's scoring, which fans refinement out again; executing: the
    last execution attempt (an execution already stored is kept and its fallback decided), then
    the memory update; updating: the memory update. Control stages take the job id as task id,
    as the pipeline's do, so ``AsyncResult(job_id)`` follows the job.
    """
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        if job is None or job.status in ("done", "failed", "cancelled"):
            return None
        status = job.status
        last = s.exec(
            select(Execution)
            .where(Execution.job_id == job_id)
            .order_by(col(Execution.attempt).desc())
        ).first()
        award = s.exec(select(Award).where(Award.job_id == job_id)).first()
        attempt, agent = (last.attempt, last.agent) if last else (0, award.agent if award else None)
    control: dict[str, Any] = {"queue": CONTROL_QUEUE, "task_id": job_id, "immutable": True}
    sig: Signature
    if status in ("queued", "bidding"):
        sig = signature("sale.job", args=(job_id, None, None), **control)
    elif status == "judging":
        sig = signature("sale.judge", args=(job_id, "first"), **control)
    elif status == "refining":
        sig = signature("sale.score", args=(job_id, "first"), **control)
    elif status == "executing" and agent is not None:
        queue = ctx.pool.get(agent).queue
        sig = chain(
            signature("sale.execute", args=(job_id, attempt), queue=queue, immutable=True),
            signature("sale.update", args=(job_id,), **control),
        )
    else:  # updating (or executing with no award, which cannot happen)
        sig = signature("sale.update", args=(job_id,), **control)
    sig.link_error(_on_error(job_id))
    return sig


#: How long a resume of a job from one stored state is claimed: one broker fault fails a
#: pipeline through several tasks (a bid of a chord's header and the chord itself), and each
#: runs the error callback within moments; one of them resumes the job.
RESUME_CLAIM_S = 10


def claim_resume(ctx: AuctionContext, job_id: str) -> bool:
    """Claim the resume of ``job_id`` from its stored state (``SET NX`` on Redis); True when
    this caller sends it. Without a Redis broker, or with Redis unreachable, it is not claimed."""
    url = ctx.settings.broker_url or ""
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return True
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        status = job.status if job is not None else None
    try:
        key = f"sale:resume:{job_id}:{status}"
        return bool(redis_client(url).set(key, "1", nx=True, ex=RESUME_CLAIM_S))
    except TRANSPORT_ERRORS:
        return True


def resume(ctx: AuctionContext, job_id: str) -> bool:
    """Send the job's :func:`resume_signature`, once per stored state however many failed tasks
    of one pipeline ask (two resumed pipelines would run its stages twice at once, paying for
    an execution twice); False when the job is finished or its resume was already sent."""
    sig = resume_signature(ctx, job_id)
    if sig is None or not claim_resume(ctx, job_id):
        return False
    sig.apply_async()
    log.warning("job %s: resumed from the database", job_id)
    return True
