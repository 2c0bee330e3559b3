"""A bare Celery canvas of the auction's shape: the overhead benchmark's yardstick.

The same hops and fan-outs as an auctioned job on the scripted pool (:mod:`sale.workers.tasks`,
``SALE_AWARD=auction``, no refinement), on the same queues: a control task replaces itself with
the bids fanned out as a chord to the agents' queues, whose body (judge) replaces itself with
the jurors fanned out the same way, whose body (score) replaces itself with the execution on
the winner's queue chained to the update on control; the error callback sits on the whole
pipeline. Every task does nothing but return a
small value, so a job's time here is Celery's and Redis's alone. The benchmark's workers load
this module with ``--include sale.scripts.bench.bare``.
"""

from __future__ import annotations

from typing import Any

from celery import Task, chain, chord, group, shared_task
from celery.canvas import Signature
from sale.broker.pool import CONTROL_QUEUE


@shared_task(bind=True, name="bench.job")
def bare_job(self: Task, job_id: str, queues: list[str]) -> Any:
    """Fan a bid out to each of ``queues`` (a chord), then judge on control."""
    bids = group(bare_bid.si(job_id, q).set(queue=q) for q in queues)
    body = bare_judge.si(job_id, queues).set(queue=CONTROL_QUEUE)
    return self.replace(chord(bids, body))


@shared_task(name="bench.bid")
def bare_bid(job_id: str, queue: str) -> dict[str, str]:
    """One bid: returns a small value."""
    return {"job_id": job_id, "queue": queue}


@shared_task(bind=True, name="bench.judge")
def bare_judge(self: Task, job_id: str, queues: list[str]) -> Any:
    """Fan a juror out to each of ``queues`` (a chord), then score on control."""
    jurors = group(bare_juror.si(job_id, q).set(queue=q) for q in queues)
    body = bare_score.si(job_id, queues[-1]).set(queue=CONTROL_QUEUE)
    return self.replace(chord(jurors, body))


@shared_task(name="bench.jury")
def bare_juror(job_id: str, queue: str) -> dict[str, str]:
    """One juror's call: returns a small value."""
    return {"job_id": job_id, "queue": queue}


@shared_task(bind=True, name="bench.score")
def bare_score(self: Task, job_id: str, winner: str) -> Any:
    """Award: replace itself with the execution on ``winner`` and the update on control."""
    return self.replace(
        chain(
            bare_execute.si(job_id).set(queue=winner),
            bare_update.si(job_id).set(queue=CONTROL_QUEUE),
        )
    )


@shared_task(name="bench.execute")
def bare_execute(job_id: str) -> dict[str, str]:
    """The execution: returns a small value."""
    return {"job_id": job_id}


@shared_task(name="bench.update")
def bare_update(job_id: str) -> dict[str, str]:
    """The update: returns the job's summary."""
    return {"job_id": job_id, "status": "done"}


@shared_task(name="bench.on_error")
def bare_error(request: Any, exc: BaseException, traceback: Any, job_id: str) -> None:
    """The error callback on the whole pipeline (never called when nothing fails)."""


def bare_pipeline(job_id: str, queues: list[str]) -> Signature:
    """One bare job whose root task's id is the job id (as in ``build_pipeline``)."""
    sig = bare_job.si(job_id, queues).set(queue=CONTROL_QUEUE, task_id=job_id)
    sig.link_error(bare_error.s(job_id))
    return sig
