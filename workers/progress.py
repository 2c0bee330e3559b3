"""What a job's tasks show while they run: custom task states and task events.

A stage publishes its state (``BIDDING``, ``JUDGING``, ``EXECUTING`` …) with the job id as
meta on the result backend (``AsyncResult(id).state``/``.info``, Flower's /api/task/result)
and as a task event ``task-<state>``, which Flower's event-fed views see (the task's state in
its task list, ``flower_events_total{type="task-bidding"}`` on /metrics). A call held back by a
shared rate limit shows ``WAITING`` (the agent, the stage, the seconds and the limit) until its
slot frees, then its stage's state again. Task events follow the worker's setting
(``worker_send_task_events``, on).

On a Redis result backend the state is stored in one command: a server-side script that, like
Celery's own ``update_state``, leaves a task's final ``SUCCESS`` alone (a stage delivered again
after its task finished must not hide the result), but without Celery's separate read first.
When the broker is that same Redis server, the task event (prepared by kombu as usual,
:mod:`sale.broker.capture`) is published by the same script, so a published stage costs one
round trip.
The stage tasks that publish their state as they start skip Celery's ``STARTED`` state
(``track_started=False`` in :mod:`sale.workers.tasks`): it would be overwritten at once.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from celery import Task, current_task
from celery.backends.redis import RedisBackend
from sale.broker.capture import captured_publishes
from sale.workers.recovery import TRANSPORT_ERRORS

log = logging.getLogger(__name__)

#: The state a stage's model calls run under (the ``stage`` of a call).
CALL_STATES = {"bid": "BIDDING", "refine": "REFINING", "jury": "JUDGING", "execute": "EXECUTING"}

#: Store a task's state and announce it on the key's channel (as Celery's Redis backend does,
#: so ``AsyncResult.get`` waiters hear it), unless the stored state is already SUCCESS; then
#: publish the (topic, payload) pairs that follow (the task event) in any case.
_SET_UNLESS_DONE = """
local stored = 1
local current = redis.call('GET', KEYS[1])
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then stored = 0 end
end
if stored == 1 then
  local expires = tonumber(ARGV[2])
  if expires > 0 then
    redis.call('SETEX', KEYS[1], expires, ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1])
  end
  redis.call('PUBLISH', KEYS[1], ARGV[1])
end
for i = 3, #ARGV - 1, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return stored
"""
_script: Any = None


def publish(task: Task, state: str, job_id: str, **meta: Any) -> None:
    """Show ``state`` on ``task`` (a running task of ``job_id``); a broker error only costs
    the view, the stage goes on."""
    if task.request.id and not task.request.is_eager:
        fields = {"job_id": job_id, **meta}
        try:
            events: list[tuple[str, str]] = []
            if task.app.conf.worker_send_task_events:
                events = _prepare_event(task, f"task-{state.lower()}", fields)
            store_state(task, state, fields, events)
        except TRANSPORT_ERRORS as exc:
            log.warning("job %s: stage %s not published (broker: %s)", job_id, state, exc)


def _prepare_event(task: Task, kind: str, fields: dict[str, Any]) -> list[tuple[str, str]]:
    """Send the task event ``kind`` as ``Task.send_event`` does, or, when the broker and the
    result backend are one Redis server, return its (topic, payload) for the state's script."""
    if not _one_redis(task):
        task.send_event(kind, **fields)
        return []
    req = task.request
    retry_policy = task.app.conf.task_publish_retry_policy
    with (
        captured_publishes() as events,
        task.app.events.default_dispatcher(hostname=req.hostname) as dispatcher,
        dispatcher.producer.batch(),
    ):
        dispatcher.send(kind, uuid=req.id, retry=True, retry_policy=retry_policy, **fields)
    return events


def _one_redis(task: Task) -> bool:
    """Whether the broker and the result backend are the same Redis server (pub/sub topics
    are server-wide, whichever database each uses)."""
    backend = task.backend
    if not isinstance(backend, RedisBackend):
        return False
    broker = urlsplit(str(task.app.conf.broker_url or ""))
    result = urlsplit(str(getattr(backend, "url", "") or ""))
    if broker.scheme != "redis" or result.scheme != "redis":
        return False
    return (broker.hostname, broker.port or 6379) == (result.hostname, result.port or 6379)


def store_state(
    task: Task, state: str, fields: dict[str, Any], events: list[tuple[str, str]] | None = None
) -> bool:
    """Store ``state`` with ``fields`` as the running ``task``'s result meta, unless its
    result is already SUCCESS; True when stored; then publish ``events`` (topic, payload) on
    the backend's server. One round trip on a Redis backend (the same meta as Celery's
    ``update_state``, extended fields included); any other backend goes through
    ``update_state`` (and takes no ``events``)."""
    backend = task.backend
    if not isinstance(backend, RedisBackend):
        task.update_state(state=state, meta=fields)
        return True
    task_id = task.request.id
    # Celery's own builder of a result's meta, so the stored value reads as update_state's.
    meta = backend._get_result_meta(result=fields, state=state, traceback=None,
                                    request=task.request)  # fmt: skip
    meta["task_id"] = task_id
    global _script
    client = backend.client  # per thread, as Celery's backends are
    if _script is None:
        _script = client.register_script(_SET_UNLESS_DONE)  # EVALSHA, loaded on first use
    key = backend.get_key_for_task(task_id)
    args: list[Any] = [backend.encode(meta), int(backend.expires or 0)]
    for topic, payload in events or ():
        args += [topic, payload]
    return bool(_script(keys=[key], args=args, client=client))


def publish_current(state: str, job_id: str, **meta: Any) -> None:
    """:func:`publish` on the task this thread is running, if any (a call made outside a task,
    e.g. by the evaluation harness, shows nothing)."""
    if current_task:  # a proxy: false when this thread runs no task
        publish(current_task, state, job_id, **meta)
