"""The Celery tasks: thin wrappers that read as the auction's stages in Flower.

Each task loads by id, calls one stage function (:mod:`sale.workers.jobs`,
:mod:`sale.workers.stages.bidding`,
:mod:`sale.workers.stages.judging`, :mod:`sale.workers.stages.awarding`,
:mod:`sale.workers.stages.executing`,
:mod:`sale.workers.stages.updating`), and either returns a small JSON value or replaces itself with
the
next stage's canvas (dynamic fan-out without blocking).
All tasks are idempotent and acknowledged late (a redelivery finds the rows already written).
A model call's transient error is first tried again in the worker (``SALE_CALL_RETRIES``,
:mod:`sale.workers.gate`), then the stage task is retried by Celery (exponential backoff with
jitter, on the typed transient errors); when retries run out, a bid becomes a failed bid and a
juror abstains, so the auction goes on. Stage tasks publish a custom state (BIDDING, JUDGING,
…) with the job id as meta, on the result backend and as a task event (``task-bidding``, …) for
Flower; a task that publishes its state as it starts skips Celery's STARTED
(``track_started=False``). In Flower every bid, juror call and execution is a task of its own;
the control stages (sale.job, sale.judge, sale.score, sale.update) replace one another and so
share one task, whose id is the job id and whose name is the stage it is in.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task, chain, chord, group, shared_task
from celery.exceptions import Reject, TaskPredicate
from celery.utils.log import get_task_logger
from sale.broker.pool import CONTROL_QUEUE
from sale.workers.budget import check_daily_budget
from sale.workers.cancel import stop_point
from sale.workers.context import AuctionContext, get_context
from sale.workers.jobs import add_note, create_job, fail_job, set_status
from sale.workers.progress import publish as _publish
from sale.workers.recovery import count_start, is_transport_error, resume
from sale.workers.spec import validate_spec
from sale.workers.stages.awarding import (
    SHORTCUT,
    assign_direct,
    award_shortcut,
    decide_award,
    memory_shortcut,
    score_first_round,
)
from sale.workers.stages.bidding import has_bids, record_failed_bid, run_bid
from sale.workers.stages.executing import (
    add_paid,
    plan_fallback,
    record_failed_execution,
    run_execution,
)
from sale.workers.stages.judging import jury_targets, record_abstention, run_jury
from sale.workers.stages.updating import update_memory
from sale.workers.stages.verified import award_verified

from sale.errors import RETRIES_SPENT, AuctionError, DailyBudgetError, TransientModelError

logger = get_task_logger(__name__)


def _retry_or(
    task: Task,
    ctx: AuctionContext,
    exc: TransientModelError,
    give_up: Callable[[str], Any],
    retry_args: tuple[list[Any], dict[str, Any]] | None = None,
) -> Any:
    """Retry with exponential backoff and jitter, or, when retries are spent, run ``give_up``
    with the error to record (``RETRIES_SPENT`` and the last error). ``retry_args``: the
    (args, kwargs) of the retry, when they differ from this try's."""
    n = task.request.retries
    if n < ctx.settings.max_retries:
        countdown = ctx.settings.backoff_s(n)
        if exc.retry_after:  # the provider's Retry-After, or the wait of a shared rate limit
            countdown = exc.retry_after * random.uniform(1.0, 1.2)
        logger.warning("retry %d/%d in %.1fs: %s", n + 1, ctx.settings.max_retries, countdown, exc)
        args, kwargs = retry_args or (None, None)
        raise task.retry(
            args=args,
            kwargs=kwargs,
            exc=exc,
            countdown=countdown,
            max_retries=ctx.settings.max_retries,
        )
    return give_up(RETRIES_SPENT + str(exc))


@contextmanager
def _failing_job(task: Task, job_id: str) -> Iterator[None]:
    """Boundary of a stage task: an unexpected error marks the job failed, then propagates.

    The job is marked before Celery stores the task's failure, so anyone waiting on the result
    sees a failed job. Celery's own control flow (replace, retry) passes through untouched. A
    broker error (after Celery's publish retries) fails nothing: the stage's work is stored, so
    its message is requeued (or, with Redis still down, left unacknowledged for the watchdog)
    and the stage runs again from the database.
    """
    try:
        yield
    except Reject as exc:
        if exc.requeue or not is_transport_error(exc):
            raise
        # Celery's retry could not publish (the broker connection broke): not the job's fault,
        # so the message goes back instead of being dropped (or waits for the watchdog).
        logger.warning("job %s: %s could not send its retry, delivered again: %s", job_id,
                       task.name, exc.reason)  # fmt: skip
        raise Reject(exc.reason, requeue=True) from exc
    except TaskPredicate:
        raise
    except Exception as exc:
        if is_transport_error(exc):
            logger.warning("job %s: %s hit a broker error, delivered again: %s", job_id,
                           task.name, exc)  # fmt: skip
            raise Reject(exc, requeue=True) from exc
        reason = f"{task.name} failed: {type(exc).__name__}: {exc}"
        logger.error("job %s: %s", job_id, reason)
        fail_job(get_context(), job_id, reason)
        raise


def _stage(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Run a stage task's body inside :func:`_failing_job` (its first argument is the job id),
    unless its job's cancel was requested or the job already ended cancelled or failed: then
    the stage does not start and the task returns the job's summary."""

    @functools.wraps(fn)
    def wrapper(self: Task, job_id: str, *args: Any, **kwargs: Any) -> Any:
        with _failing_job(self, job_id):
            count_start(self, job_id)  # past the redelivery cap: a poison job
            stopped = stop_point(get_context(), job_id, self.name)
            if stopped is not None:
                return stopped
            return fn(self, job_id, *args, **kwargs)

    return wrapper


# --- canvas pieces (used by the stage tasks to replace themselves) ------------------------


def build_bid_round(
    ctx: AuctionContext, job_id: str, round_: str, refiners: dict[str, list[int]] | None = None
) -> Any:
    """Bids of a round fanned out to the agents' queues, then the jury stage on control."""
    if round_ == "first":
        header = [
            collect_bid.si(job_id, a.name, "first", None).set(queue=a.queue)
            for a in ctx.pool.agents
        ]
    else:
        header = [
            collect_bid.si(job_id, name, "refined", ids).set(queue=ctx.pool.get(name).queue)
            for name, ids in (refiners or {}).items()
        ]
    return chord(group(header), judge_round.si(job_id, round_).set(queue=CONTROL_QUEUE))


def build_shortcut(ctx: AuctionContext, job_id: str, agent: str) -> Any:
    """The memory shortcut: ``agent``'s one bid on its queue, then its award on control."""
    return chain(
        collect_bid.si(job_id, agent, SHORTCUT, None).set(queue=ctx.pool.get(agent).queue),
        award_shortcut_bid.si(job_id).set(queue=CONTROL_QUEUE),
    )


def build_execution(ctx: AuctionContext, job_id: str, agent: str) -> Any:
    """Execution on the winner's queue, then the memory update on control."""
    return chain(
        execute_plan.si(job_id).set(queue=ctx.pool.get(agent).queue),
        update_job_memory.si(job_id).set(queue=CONTROL_QUEUE),
    )


# --- stage tasks --------------------------------------------------------------------------


@shared_task(bind=True, name="sale.job")
@_stage
def start_job(
    self: Task, job_id: str, spec: dict[str, Any] | None = None, agent: str | None = None
) -> Any:
    """Start a job: create the job row if a spec is given, then fan the bids out, or, with
    ``agent``, skip the auction and send the execution straight to that agent's queue, or,
    with ``award=verified`` past a cold start, award the job by verified outcomes and send it
    to the first agent of its chain, or, when the memory shortcut applies, collect only the
    agent memory agrees on.

    Queue: sale.control. Idempotent (the job row, status events and a direct award are keyed
    by the job id). No retries: it only writes to the database and dispatches.
    """
    ctx = get_context()
    if spec is not None:  # a signature in a user's canvas: the job is stored now
        create_job(ctx, validate_spec(spec), job_id, agent)
        try:
            check_daily_budget(ctx)
        except DailyBudgetError as exc:
            fail_job(ctx, job_id, exc.refusal)
            return stop_point(ctx, job_id, self.name)
    if agent is not None:
        award = assign_direct(ctx, job_id, agent)
        set_status(ctx, job_id, "executing", f"assigned to {award.agent} (direct, no auction)")
        return self.replace(build_execution(ctx, job_id, award.agent))
    if ctx.settings.award == "verified":
        verified = award_verified(ctx, job_id)
        if verified is not None:
            chain = " -> ".join(verified.chain or [verified.agent])
            _publish(self, "AWARDING", job_id, chain=verified.chain)
            set_status(ctx, job_id, "executing", f"verified award: chain {chain} (no auction)")
            return self.replace(build_execution(ctx, job_id, verified.agent))
    set_status(ctx, job_id, "bidding")
    _publish(self, "BIDDING", job_id)
    shortcut = memory_shortcut(ctx, job_id)
    if shortcut is not None:
        return self.replace(build_shortcut(ctx, job_id, shortcut))
    return self.replace(build_bid_round(ctx, job_id, "first"))


@shared_task(bind=True, name="sale.bid", track_started=False)
@_stage
def collect_bid(
    self: Task, job_id: str, agent: str, round_: str, memory_ids: list[int] | None
) -> dict[str, Any]:
    """One agent's bid (first round) or refined bid, with log-probabilities.

    Queue: sale.agent.<agent>. Idempotent: one Bid row per (job, agent, round). Retries the
    model call on transient errors; then, or on any other model error, records a failed bid.
    """
    ctx = get_context()
    _publish(self, "BIDDING" if round_ == "first" else "REFINING", job_id, agent=agent)
    try:
        bid_id = run_bid(ctx, job_id, agent, round_, memory_ids)
    except TransientModelError as exc:
        bid_id = _retry_or(
            self, ctx, exc, lambda why: record_failed_bid(ctx, job_id, agent, round_, why)
        )
    return {"job_id": job_id, "bid_id": bid_id, "agent": agent, "round": round_}


@shared_task(bind=True, name="sale.judge", track_started=False)
@_stage
def judge_round(self: Task, job_id: str, round_: str) -> Any:
    """Fan the jury out for a round's bids (one call per juror, or per juror and bid).

    Queue: sale.control. Idempotent. Fails the job when every first-round bid failed.
    """
    ctx = get_context()
    if round_ == "first":
        set_status(ctx, job_id, "judging")
    _publish(self, "JUDGING", job_id, round=round_)
    targets = jury_targets(ctx, job_id, round_)
    if not targets:
        # No targets: no bid, or no juror left by jury_min_weight (scored without the jury).
        if round_ == "first" and not has_bids(ctx, job_id, round_):
            exc = AuctionError(job_id, "every bid failed; see `sale show` for each agent's error")
            fail_job(ctx, job_id, exc.reason)
            raise exc
        return self.replace(score_round.si(job_id, round_).set(queue=CONTROL_QUEUE))
    header = [
        judge_bids.si(job_id, juror, round_, target).set(queue=ctx.pool.get(juror).queue)
        for juror, target in targets
    ]
    return self.replace(
        chord(group(header), score_round.si(job_id, round_).set(queue=CONTROL_QUEUE))
    )


@shared_task(bind=True, name="sale.jury", track_started=False)
@_stage
def judge_bids(self: Task, job_id: str, juror: str, round_: str, target: str) -> dict[str, Any]:
    """One juror scores the round's anonymised bids 0–5 (or one bid in per-bid mode).

    Queue: sale.agent.<juror>. Idempotent: one JuryCall per (job, juror, round, target).
    Retries transient model errors; then the juror abstains (recorded).
    """
    ctx = get_context()
    _publish(self, "JUDGING", job_id, juror=juror)
    try:
        call_id = run_jury(ctx, job_id, juror, round_, target)
    except TransientModelError as exc:
        _retry_or(
            self,
            ctx,
            exc,
            lambda why: record_abstention(ctx, job_id, juror, round_, target, why),
        )
        call_id = None
    return {"job_id": job_id, "juror": juror, "jury_call_id": call_id}


@shared_task(bind=True, name="sale.score", track_started=False)
@_stage
def score_round(self: Task, job_id: str, round_: str) -> Any:
    """Score a round; after the first, fan refinement out to strictly cheaper agents or award.

    Queue: sale.control. Idempotent (scores are recomputed from stored rows; one award).
    """
    ctx = get_context()
    _publish(self, "SCORING", job_id, round=round_)
    if round_ == "first":
        outcome = score_first_round(ctx, job_id)
        if outcome.refiners:
            set_status(ctx, job_id, "refining", f"provisional winner {outcome.provisional_agent}")
            return self.replace(build_bid_round(ctx, job_id, "refined", outcome.refiners))
    award = decide_award(ctx, job_id)
    set_status(ctx, job_id, "executing", f"awarded to {award.agent} ({award.round} bid)")
    return self.replace(build_execution(ctx, job_id, award.agent))


@shared_task(bind=True, name="sale.shortcut")
@_stage
def award_shortcut_bid(self: Task, job_id: str) -> Any:
    """Award the job to its memory-shortcut bid and send it to execution; if that bid failed,
    run the auction after all.

    Queue: sale.control. Idempotent (one award per job). No retries (database only).
    """
    ctx = get_context()
    award = award_shortcut(ctx, job_id)
    if award is None:
        add_note(ctx, job_id, "memory shortcut: its bid failed, so the auction runs")
        return self.replace(build_bid_round(ctx, job_id, "first"))
    set_status(ctx, job_id, "executing", f"awarded to {award.agent} (memory shortcut)")
    return self.replace(build_execution(ctx, job_id, award.agent))


@shared_task(bind=True, name="sale.execute", track_started=False)
@_stage
def execute_plan(
    self: Task, job_id: str, attempt: int = 0, carried: dict[str, float] | None = None
) -> Any:
    """An agent executes its own plan (attempt 0: the winner); trace, self-check and verdict
    are stored. When the self-check failed and ``self_check_fallback`` allows it, the task
    replaces itself with the next attempt on the next-best bidder's queue (the memory update
    still follows on control).

    Queue: sale.agent.<executing agent>. Idempotent: one Execution per (job, attempt).
    Retries transient model errors, carrying the cost of the calls a try made before its
    error (``carried``) into the recorded execution; then records a failed execution (the job
    ends failed, its memory record is kept).
    """
    ctx = get_context()
    _publish(self, "EXECUTING", job_id, attempt=attempt)
    try:
        execution_id = run_execution(
            ctx,
            job_id,
            progress=lambda step, tool: _publish(
                self, "EXECUTING", job_id, step=step, tool=tool, attempt=attempt
            ),
            attempt=attempt,
            carried=carried,
        )
    except TransientModelError as exc:
        paid = add_paid(carried, exc.paid)
        _retry_or(
            self,
            ctx,
            exc,
            lambda why: record_failed_execution(ctx, job_id, why, attempt, carried=paid),
            retry_args=([job_id, attempt], {"carried": paid}),
        )
        execution_id = None
    fallback = plan_fallback(ctx, job_id, attempt)
    if fallback is not None:
        queue = ctx.pool.get(fallback).queue
        return self.replace(execute_plan.si(job_id, attempt + 1).set(queue=queue))
    return {"job_id": job_id, "execution_id": execution_id, "attempt": attempt}


@shared_task(bind=True, name="sale.update", track_started=False)
@_stage
def update_job_memory(self: Task, job_id: str) -> dict[str, Any]:
    """Write the job's single memory record and finish the job.

    Queue: sale.control. Idempotent: one MemoryRecord per job. No retries (database only).
    Returns a summary, so a user's canvas can chain on the job.
    """
    ctx = get_context()
    set_status(ctx, job_id, "updating")
    _publish(self, "UPDATING", job_id)
    record_id = update_memory(ctx, job_id)
    from sale.workers.views import job_summary

    return job_summary(ctx, job_id, record_id)


@shared_task(name="sale.on_error")
def on_pipeline_error(request: Any, exc: BaseException, traceback: Any, job_id: str) -> None:
    """Error callback on the whole pipeline: mark the job failed with the reason, or, for a
    broker error (a chord joined while Redis restarted), resume the job from the database.

    Runs in the worker whose task failed. Idempotent (a finished job stays finished).
    """
    reason = f"{getattr(request, 'task', 'task')} failed: {type(exc).__name__}: {exc}"
    if is_transport_error(exc):
        # A broker error is no verdict on the job: its work is stored, so it carries on.
        logger.warning("job %s: %s; resuming from the database", job_id, reason)
        resume(get_context(), job_id)
        return
    logger.error("job %s: %s", job_id, reason)
    fail_job(get_context(), job_id, reason)
