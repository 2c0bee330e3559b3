"""Cancelling a job: the request is stored on the job row and honoured wherever the job runs.

:func:`cancel` commits ``Job.cancel_requested_at`` before anything else, so the request is in
the database, not in a worker's memory (Celery's ``revoke`` is forgotten when the workers
restart): it outlives worker and broker restarts and reaches every worker on every host. A job
still ``queued`` ends ``cancelled`` at once, and its start task, when a worker takes it, sends
nothing. A running job is stopped by whichever worker holds it, at the first of two points:
the model-call gate (:mod:`sale.workers.gate`) refuses its next model call (the stage records
the refusal like a failed call, so what the job spent stays recorded), and every stage task
checks :func:`stop_point` at its start, where the job is marked ``cancelled`` with what it
spent; no later stage runs. A call already in flight finishes (and is paid and recorded): a job
stops within one model call of the request. Cancelling a finished job changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from sale.models.db import session_scope
from sale.models.tables import Job, StatusEvent, utcnow
from sale.workers.context import AuctionContext
from sale.workers.jobs import TERMINAL, job_totals, load_job, set_status
from sqlmodel import col, update

log = logging.getLogger(__name__)

Outcome = Literal["cancelled", "requested", "already_requested", "finished"]


@dataclass(frozen=True)
class Cancellation:
    """What :func:`cancel` did: ``outcome`` is ``cancelled`` (the job was queued and is now
    cancelled), ``requested`` (it runs and stops at its next model call or stage),
    ``already_requested`` or ``finished`` (done, failed or cancelled before: nothing changed);
    ``status`` is the job's status after the call."""

    job_id: str
    outcome: Outcome
    status: str
    message: str


def cancel(job_id: str, ctx: AuctionContext | None = None) -> Cancellation:
    """Cancel a job: store the request, then end a queued job at once.

    Raises JobNotFoundError for an unknown id. Idempotent: a second call reports
    ``already_requested``; a finished job is left as it was (``finished``).
    """
    from sale.workers.context import get_context

    ctx = ctx or get_context()
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        status = job.status
        if status in TERMINAL:
            return Cancellation(job_id, "finished", status, f"{job_id} is already {status}")
        first = job.cancel_requested_at is None
        if first:
            job.cancel_requested_at = utcnow()
            s.add(job)
    # Committed: from here on every worker sees the request.
    log.info("job %s: cancel requested (status %s)", job_id, status)
    if status == "queued" and _cancel_if_queued(ctx, job_id):
        return Cancellation(
            job_id, "cancelled", "cancelled", f"{job_id} cancelled (it was queued: never started)"
        )
    if not first:
        return Cancellation(
            job_id, "already_requested", status, f"{job_id}: cancel already requested ({status})"
        )
    return Cancellation(
        job_id,
        "requested",
        status,
        f"{job_id}: cancel requested ({status}); it stops at its next model call or stage",
    )


def _cancel_if_queued(ctx: AuctionContext, job_id: str) -> bool:
    """Mark the job cancelled if it is still queued (one conditional UPDATE, so a start task
    that moved it on first wins and the job stops at its next model call instead)."""
    reason = "cancelled by request before it started"
    with session_scope(ctx.db_url) as s:
        changed = s.exec(
            update(Job)
            .where(col(Job.id) == job_id, col(Job.status) == "queued")
            .values(status="cancelled", status_reason=reason, updated_at=utcnow())
        ).rowcount
        if changed:
            s.add(StatusEvent(job_id=job_id, status="cancelled", detail=reason))
    if changed:
        log.info("job %s: cancelled (%s)", job_id, reason)
    return bool(changed)


def cancel_requested(ctx: AuctionContext, job_id: str) -> bool:
    """Whether a cancel was requested for the job (read from the database)."""
    with session_scope(ctx.db_url) as s:
        return load_job(s, job_id, ctx.db_url).cancel_requested_at is not None


def finish_cancelled(ctx: AuctionContext, job_id: str, where: str) -> None:
    """Mark a job whose cancel was requested cancelled, naming where it stopped and what it
    had spent (idempotent: a finished job stays finished)."""
    with session_scope(ctx.db_url) as s:
        tokens, cost = job_totals(s, job_id)
    set_status(
        ctx,
        job_id,
        "cancelled",
        f"cancelled by request at {where}; spent US${cost:.6f} ({tokens} tokens)",
    )


def stop_point(ctx: AuctionContext, job_id: str, stage: str) -> dict[str, Any] | None:
    """At the start of a stage task: None to go on, or the job's summary when the job must
    not go on (its cancel was requested, or it is already cancelled or failed; the cancelled
    job is marked so here)."""
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, job_id)
        if job is None:  # a start task that creates its job (``sale_signature``)
            return None
        requested, status = job.cancel_requested_at is not None, job.status
    if status not in ("cancelled", "failed") and not requested:
        return None
    if requested:
        finish_cancelled(ctx, job_id, stage)
    log.info("job %s: %s not started (job %s)", job_id, stage, "cancelled" if requested else status)
    from sale.workers.views import job_summary

    return job_summary(ctx, job_id)
