"""What a job's tasks show while they run: custom task states and task events.

A stage publishes its state (``BIDDING``, ``JUDGING``, ``EXECUTING`` …) with the job id as
meta on the result backend (``AsyncResult(id).state``/``.info``, Flower's /api/task/result)
and as a task event ``task-<state>``, which Flower's event-fed views see (the task's state in
its task list, ``flower_events_total{type="task-bidding"}`` on /metrics). A call held back by a
shared rate limit shows ``WAITING`` (the agent, the stage, the seconds and the limit) until its
slot frees, then its stage's state again. Task events follow the worker's setting
(``worker_send_task_events``, on).
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, current_task
from sale.workers.recovery import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

#: The state a stage's model calls run under (the ``stage`` of a call).
CALL_STATES = {"bid": "BIDDING", "refine": "REFINING", "jury": "JUDGING", "execute": "EXECUTING"}


def publish(task: Task, state: str, job_id: str, **meta: Any) -> None:
    """Show ``state`` on ``task`` (a running task of ``job_id``); a broker error only costs
    the view, the stage goes on."""
    if task.request.id and not task.request.is_eager:
        fields = {"job_id": job_id, **meta}
        try:
            task.update_state(state=state, meta=fields)
            if task.app.conf.worker_send_task_events:
                task.send_event(f"task-{state.lower()}", **fields)
        except TRANSPORT_ERRORS as exc:
            log.warning("job %s: stage %s not published (broker: %s)", job_id, state, exc)


def publish_current(state: str, job_id: str, **meta: Any) -> None:
    """:func:`publish` on the task this thread is running, if any (a call made outside a task,
    e.g. by the evaluation harness, shows nothing)."""
    if current_task:  # a proxy: false when this thread runs no task
        publish(current_task, state, job_id, **meta)
