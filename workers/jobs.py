"""The job every stage works on: its row and status, notes, prompts, embedding and usage.

The auction's stages are plain functions that load by id, do one thing, persist and return ids
(:mod:`sale.workers.stages.bidding`, :mod:`sale.workers.stages.judging`,
:mod:`sale.workers.stages.awarding`,
:mod:`sale.workers.stages.executing`, :mod:`sale.workers.stages.updating`); the Celery tasks in
:mod:`sale.workers.tasks`
are thin wrappers around them. Every stage is idempotent: it first looks for the row its work
would produce and returns that instead of calling a model again, and the unique constraints of
the tables turn a lost race between two deliveries into "someone else already wrote it"
(:func:`insert_once`). This module holds what the stages share: creating and loading a job,
moving its status forward (never backwards, never out of a terminal state), notes, the chat
messages of a model call, the task embedding, and the tokens and cost of a job's calls.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from sale.models.db import session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Job, MemoryRecord, ModelCall, StatusEvent, utcnow
from sale.workers.context import AuctionContext
from sale.workers.llm.types import LLMResult
from sale.workers.memory.retrieval import MemoryEntry
from sale.workers.prompts import PromptStyle, render, task_block, task_first
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from sale.errors import JobNotFoundError

log = logging.getLogger(__name__)


STATUSES = (
    "queued",
    "bidding",
    "judging",
    "refining",
    "executing",
    "updating",
    "done",
    "failed",
    "cancelled",
)
TERMINAL = {"done", "failed", "cancelled"}
USAGE_STAGES = ("bid", "jury", "refine", "execute")


def create_job(ctx: AuctionContext, spec: TaskSpec, job_id: str, agent: str | None = None) -> str:
    """Insert the job row (status queued) unless it exists; returns the id. ``agent``: the
    agent a direct job runs on (None: the job goes through the auction)."""
    with session_scope(ctx.db_url) as s:
        if s.get(Job, job_id) is None:
            s.add(
                Job(
                    id=job_id,
                    kind=spec.kind,
                    name=spec.name,
                    prompt=spec.prompt,
                    spec=spec.model_dump(mode="json"),
                    pool_path=ctx.pool.path,
                    agent=agent,
                )
            )
            s.add(StatusEvent(job_id=job_id, status="queued"))
    return job_id


def load_job(s: Session, job_id: str, db_url: str) -> Job:
    """The job row, or JobNotFoundError."""
    job = s.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(job_id, db_url)
    return job


def set_status(ctx: AuctionContext, job_id: str, status: str, detail: str | None = None) -> bool:
    """Move a job forward to ``status``; never backwards, never out of a terminal state.

    Returns True when the status changed. Idempotent: a repeated transition is a no-op.
    """
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if job.status in TERMINAL:
            return False
        if status not in TERMINAL and STATUSES.index(status) <= STATUSES.index(job.status):
            return False
        job.status = status
        job.updated_at = utcnow()
        if detail is not None:
            job.status_reason = detail
        s.add(job)
        exists = s.exec(
            select(StatusEvent).where(StatusEvent.job_id == job_id, StatusEvent.status == status)
        ).first()
        if exists is None:
            s.add(StatusEvent(job_id=job_id, status=status, detail=detail))
    log.info("job %s: %s%s", job_id, status, f" ({detail})" if detail else "")
    return True


def discard_job(ctx: AuctionContext, job_id: str) -> None:
    """Delete a job that was never sent (its row and status events): a submission whose
    pipeline the broker did not take leaves nothing behind."""
    with session_scope(ctx.db_url) as s:
        for event in s.exec(select(StatusEvent).where(StatusEvent.job_id == job_id)):
            s.delete(event)
        job = s.get(Job, job_id)
        if job is not None:
            s.delete(job)


def fail_job(ctx: AuctionContext, job_id: str, reason: str) -> None:
    """Mark a job failed with a reason (idempotent; a finished job stays finished)."""
    set_status(ctx, job_id, "failed", reason)


def _unfinished() -> Any:
    """The where-clause of a job not in a terminal state."""
    return col(Job.status).not_in(TERMINAL)


def unfinished_jobs(db_url: str) -> list[str]:
    """The ids of the database's jobs that are not in a terminal state."""
    with session_scope(db_url) as s:
        return list(s.exec(select(Job.id).where(_unfinished())).all())


def adoptable_jobs(
    db_url: str, specs: Sequence[dict[str, Any]], agent: str | None, pool_path: str
) -> list[str | None]:
    """For each spec (as stored: ``TaskSpec.model_dump(mode="json")``), an unfinished job of
    the same spec, agent (None: an auction) and pool that a stopped run left, or None; each
    job is given to one spec at most, oldest first. A rerun of a batch waits for these instead
    of submitting their tasks again."""
    same_agent = col(Job.agent).is_(None) if agent is None else col(Job.agent) == agent
    with session_scope(db_url) as s:
        rows = s.exec(
            select(Job.id, Job.spec)
            .where(_unfinished(), same_agent, Job.pool_path == pool_path)
            .order_by(col(Job.created_at))
        ).all()
    waiting: dict[str, list[str]] = {}
    for job_id, spec in rows:
        waiting.setdefault(json.dumps(spec, sort_keys=True), []).append(job_id)
    out: list[str | None] = []
    for spec in specs:
        same = waiting.get(json.dumps(spec, sort_keys=True))
        out.append(same.pop(0) if same else None)
    return out


def cancel_unfinished(db_url: str, reason: str) -> list[str]:
    """Mark every job of the database that is not in a terminal state cancelled, with
    ``reason``; returns their ids. For a runner that knows nothing can still finish them (its
    queues were cleared), so they do not stay "executing" forever."""
    with session_scope(db_url) as s:
        jobs = s.exec(select(Job).where(_unfinished())).all()
        for job in jobs:
            job.status, job.status_reason, job.updated_at = "cancelled", reason, utcnow()
            s.add(job)
            s.add(StatusEvent(job_id=job.id, status="cancelled", detail=reason))
        ids = [job.id for job in jobs]
    for job_id in ids:
        log.info("job %s: cancelled (%s)", job_id, reason)
    return ids


def job_spec(job: Job) -> TaskSpec:
    """The stored task spec of a job."""
    return TaskSpec.model_validate(job.spec)


def add_note(ctx: AuctionContext, job_id: str, note: str) -> None:
    """Append a note (e.g. why a term was dropped) to a job, once."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if note not in job.notes:
            job.notes = [*job.notes, note]
            s.add(job)


def insert_once(ctx: AuctionContext, row: Any) -> None:
    """Insert a row; if a concurrent delivery already inserted it, keep theirs."""
    try:
        with session_scope(ctx.db_url) as s:
            s.add(row)
    except IntegrityError:
        log.info("duplicate %s ignored (redelivered task)", type(row).__name__)


def prompt_style(ctx: AuctionContext, kind: str) -> PromptStyle:
    """The execution layout the settings ask for a job of this kind (task first, the plan
    mode, repeat stop)."""
    return PromptStyle(
        ctx.settings.task_first_prompts, ctx.settings.plan_mode_for(kind), ctx.settings.repeat_stop
    )


def job_messages(ctx: AuctionContext, spec: TaskSpec, user: str) -> list[dict[str, str]]:
    """The chat messages of a bid, refine or jury call: the system prompt, then ``user``;
    with ``task_first_prompts`` the task block heads the system message instead."""
    system = render("system")
    if ctx.settings.task_first_prompts:
        system, user = task_first(system, user, task_block(spec.kind, spec.prompt))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def job_embedding(ctx: AuctionContext, job_id: str) -> list[float]:
    """The job's task embedding, computed once and stored on the job."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if job.embedding:
            return list(job.embedding)
        text = job.prompt
    vector = ctx.embed([text])[0]
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        job.embedding = vector
        s.add(job)
    return vector


def memory_entry(r: MemoryRecord) -> MemoryEntry:
    """What retrieval and refinement pairs need of a stored memory record."""
    assert r.id is not None
    return MemoryEntry(r.id, r.embedding, r.bids, r.verdict)


def job_usage(s: Session, job_id: str) -> dict[str, tuple[int, float]]:
    """(tokens, US$) of a job's model calls per stage: bid, jury, refine, execute, read from
    the ledger (:class:`~sale.models.tables.ModelCall`): every call the job paid for, including
    those of a stage that a killed worker or a transient error cut short."""
    usage = {stage: (0, 0.0) for stage in USAGE_STAGES}
    rows = s.exec(
        select(
            ModelCall.stage,
            func.sum(ModelCall.tokens_in + ModelCall.tokens_out),
            func.sum(ModelCall.cost_usd),
        )
        .where(ModelCall.job_id == job_id)
        .group_by(col(ModelCall.stage))
    )
    for stage, tokens, cost in rows:
        usage[stage] = (int(tokens or 0), float(cost or 0.0))
    return usage


def paid_call(job_id: str, stage: str, agent: str, result: LLMResult) -> ModelCall:
    """The ledger row of one paid call, with its own id (writing it twice keeps one row)."""
    return ModelCall(
        call_id=uuid.uuid4().hex,
        job_id=job_id,
        stage=stage,
        agent=agent,
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        cost_usd=result.cost_usd,
    )


def job_totals(s: Session, job_id: str) -> tuple[int, float]:
    """(tokens, US$) over every model call of a job: bids, jury, execution."""
    usage = job_usage(s, job_id).values()
    return sum(t for t, _ in usage), sum(c for _, c in usage)
