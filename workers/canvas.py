"""The public Python interface: submit a job, or get its Celery signature for your own canvas.

``submit(spec)`` validates the spec (nothing is written or sent if it is bad), checks that the
broker answers, stores the job (status ``queued``), commits, then sends the pipeline; with the
broker unreachable it raises BrokerUnavailableError within seconds and leaves no job behind (a
job whose send failed is deleted again). The Celery root task id is the job id, so
``AsyncResult(job_id)`` follows the job. ``sale_signature(spec)`` returns the same pipeline as a
signature whose result (the job summary) flows on to the next task of a user's chain. Both take
``agent=NAME`` for a direct job: no auction, that agent executes a generic plan.
"""

from __future__ import annotations

import uuid
from typing import Any

from celery.canvas import Signature
from sale.broker.pool import CONTROL_QUEUE
from sale.workers.budget import check_daily_budget
from sale.workers.context import AuctionContext, get_context
from sale.workers.jobs import create_job, discard_job
from sale.workers.recovery import TRANSPORT_ERRORS
from sale.workers.spec import validate_spec
from sale.workers.tasks import on_pipeline_error, start_job

from sale.errors import BrokerUnavailableError

#: A submission gives the broker this long to answer, and its send two quick retries: a user at
#: a terminal hears of a dead broker in seconds (the workers' own sends retry for minutes).
SUBMIT_TIMEOUT_S = 3.0
SUBMIT_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5,
                       "interval_max": 1.0}  # fmt: skip


def new_job_id() -> str:
    """A fresh job id."""
    return uuid.uuid4().hex


def build_pipeline(
    job_id: str, spec: dict[str, Any] | None = None, agent: str | None = None
) -> Signature:
    """The whole job as one signature, with the error callback on the whole pipeline.

    With ``agent`` the job is a direct job: no auction, that agent executes a generic plan.
    """
    sig = start_job.si(job_id, spec, agent).set(queue=CONTROL_QUEUE, task_id=job_id)
    sig.link_error(on_pipeline_error.s(job_id))
    return sig


def submit(spec: Any, ctx: AuctionContext | None = None, *, agent: str | None = None) -> str:
    """Validate, store and enqueue a job; returns its id.

    ``agent`` names a pool agent to run the job directly, without an auction. Raises SpecError
    on a bad spec, UnknownAgentError on an unknown agent and DailyBudgetError once the pool's
    ``daily_budget_usd`` is spent for the day, before anything is stored or sent.
    """
    task_spec = validate_spec(spec)
    ctx = ctx or get_context()
    if agent is not None:
        ctx.pool.get(agent)
    check_daily_budget(ctx)
    job_id = new_job_id()
    app = start_job.app
    url = app.conf.broker_url or ""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0.5, timeout=SUBMIT_TIMEOUT_S)
    except TRANSPORT_ERRORS as exc:
        raise BrokerUnavailableError(url, str(exc) or type(exc).__name__) from exc
    create_job(ctx, task_spec, job_id, agent)
    try:
        build_pipeline(job_id, agent=agent).apply_async(retry_policy=SUBMIT_RETRY_POLICY)
    except TRANSPORT_ERRORS as exc:
        discard_job(ctx, job_id)
        raise BrokerUnavailableError(url, str(exc) or type(exc).__name__) from exc
    return job_id


def sale_signature(spec: Any, *, agent: str | None = None) -> Signature:
    """A Celery signature that runs one job when applied (validated now, stored when run).

    ``agent`` as in :func:`submit` (checked now against this process's pool). Raises
    DailyBudgetError as :func:`submit` does; a signature applied once the day's budget is spent
    starts no job: the job ends ``failed`` with that reason, nothing spent. A task chained
    after it is sent by sale's control worker with sale's routes, so give it its queue
    (``my_task.s().set(queue="mine")``) and list that queue in ``SALE_EXTRA_QUEUES``.
    """
    task_spec = validate_spec(spec)
    ctx = get_context()
    if agent is not None:
        ctx.pool.get(agent)
    check_daily_budget(ctx)
    return build_pipeline(new_job_id(), task_spec.model_dump(mode="json"), agent)
