"""Leases on the task messages a worker holds, and the watchdog that re-dispatches lapsed ones.

Tasks are acknowledged late, so a worker that dies leaves its message in the Redis transport's
``unacked`` hash, and Redis alone would put it back only after the visibility timeout
(``SALE_VISIBILITY_TIMEOUT_S``, hours). Instead every ``sale worker`` runs a :class:`Guard`
(started on ``worker_ready``, in the worker's main process) with two threads:

- the **heartbeat** renews a lease ``sale:lease:<delivery tag>`` (TTL ``SALE_LEASE_TTL_S``) every
  third of the TTL for each message the worker holds, from the moment it receives it (waiting
  for a slot or for its retry countdown) until it is acknowledged; the lease names the job, the
  stage task and the worker. A message it no longer holds has its lease deleted (released); so
  does one it let go of when its connection to Redis broke before the task started (Celery
  drops waiting and countdown requests then, and they never run in this worker).
- the **watchdog** (every ``SALE_WATCHDOG_INTERVAL_S``) reads the transport's unacked index: a
  message delivered more than a TTL ago that has no lease belongs to a worker that is gone. It
  claims the message (``SET NX sale:redispatch:<tag>``, so of many watchdogs on many hosts one
  acts) and puts it back on its queue with kombu's own restore (one WATCH/MULTI transaction),
  with its whole canvas context (chain, chord, error callback) as it was sent.

A live worker's message is never re-dispatched: its heartbeat renews the lease three times per
TTL. After a Redis restart the watchdog waits until Redis has been up a full TTL, so leases that
lapsed while Redis was down are renewed before anything is judged. Bound: a stage whose worker
died is back on its queue within ``lease_ttl_s + watchdog_interval_s`` of the death (or of its
delivery, if later), as long as any ``sale worker`` runs. A worker cut off from Redis longer than a
TTL while it goes on running loses its lease, and its stage may run twice; the stages are
idempotent, so no row is duplicated, but its model calls may be paid twice.

Redeliveries are capped where the stage runs: :func:`count_delivery` counts each redelivered
start of a stage task's body (per task id, name, arguments and retry; a first delivery is the
one start not stored), and a stage started more than ``SALE_REDELIVERY_CAP`` times fails its
job as a poison job (:mod:`sale.workers.recovery`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

LEASE_PREFIX = "sale:lease:"
CLAIM_PREFIX = "sale:redispatch:"
DELIVERY_PREFIX = "sale:deliveries:"
#: How long a delivery count is kept: longer than any job lives.
DELIVERY_COUNT_TTL_S = 7 * 24 * 3600

_clients: dict[tuple[int, str], Any] = {}
_clients_lock = threading.Lock()


def redis_client(url: str) -> Any:
    """A redis-py client for ``url``, one per process (short timeouts: a dead Redis is an
    error within seconds, never a hang)."""
    import redis

    key = (os.getpid(), url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3)
            _clients[key] = client
        return client


def delivery_key(task_id: str, name: str, args: Iterable[Any], retries: int) -> str:
    """The Redis key counting the starts of one delivery chain of a stage task: the control
    stages of a job share its task id, so the name and arguments tell them apart."""
    digest = hashlib.sha1(json.dumps(list(args), default=str).encode()).hexdigest()[:16]
    return f"{DELIVERY_PREFIX}{task_id}:{name}:{digest}:{retries}"


def count_delivery(url: str, key: str) -> int:
    """Count one more start of the delivery ``key``; returns the count (1 at the first one
    counted)."""
    client = redis_client(url)
    pipe = client.pipeline()
    pipe.incr(key)
    pipe.expire(key, DELIVERY_COUNT_TTL_S)
    count, _ = pipe.execute()
    return int(count)


def lease_value(task: str, task_id: str, args: Any, worker: str) -> str:
    """What a lease says: the stage task, its id, its job (first argument) and the worker."""
    job = args[0] if isinstance(args, list | tuple) and args else None
    return json.dumps({"task": task, "id": task_id, "job_id": job, "worker": worker})


def lapsed_tags(client: Any, unacked_index: str, ttl_s: float, now: float) -> list[str]:
    """Delivery tags of unacknowledged messages delivered more than ``ttl_s`` ago whose lease
    is missing: their worker is gone."""
    tags = [
        t.decode() if isinstance(t, bytes) else str(t)
        for t in client.zrangebyscore(unacked_index, "-inf", now - ttl_s)
    ]
    if not tags:
        return []
    pipe = client.pipeline()
    for tag in tags:
        pipe.exists(LEASE_PREFIX + tag)
    return [tag for tag, held in zip(tags, pipe.execute(), strict=True) if not held]


def describe(raw: bytes | None) -> str:
    """``task[job]`` of an unacked message, for the log."""
    if not raw:
        return "(gone)"
    try:
        payload = json.loads(raw)[0]
        headers = payload.get("headers", {})
        return f"{headers.get('task')}[{headers.get('argsrepr', '')[:80]}]"
    except (ValueError, KeyError, IndexError, TypeError):
        return "(unreadable)"


def dropped(request: Any) -> bool:
    """Whether the worker let go of ``request`` without running it: its message's channel was
    closed (the connection broke) and the task is not running. Celery's consumer drops its
    waiting and countdown requests on a reconnect, leaving their messages unacknowledged for
    the watchdog; a request handed to the pool just before it counts as running once the pool
    accepts it, and is leased again then."""
    channel = getattr(getattr(request, "message", None), "channel", None)
    if not getattr(channel, "closed", False):
        return False
    from celery.worker.state import active_requests

    return request not in active_requests


class Guard:
    """The heartbeat and the watchdog of one worker process (see the module docstring)."""

    def __init__(
        self,
        broker_url: str,
        worker: str,
        lease_ttl_s: float,
        interval_s: float,
        restore: Callable[[str], None],
        unacked_index: str = "unacked_index",
        unacked: str = "unacked",
    ) -> None:
        self.broker_url = broker_url
        self.worker = worker
        self.ttl = lease_ttl_s
        self.interval = interval_s
        self.restore = restore
        self.unacked_index = unacked_index
        self.unacked = unacked
        self.held: weakref.WeakSet[Any] = weakref.WeakSet()
        self._leased: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- the heartbeat ---------------------------------------------------------------------
    def hold(self, request: Any) -> None:
        """Lease ``request``'s message from now until it is acknowledged."""
        self.held.add(request)  # the next heartbeat leases it, well within a TTL

    def _held_now(self) -> dict[str, str]:
        for _ in range(5):
            try:
                requests = list(self.held)
                break
            except RuntimeError:  # the set changed while it was read
                continue
        else:
            return {}
        out = {}
        for req in requests:
            if getattr(req, "acknowledged", False):
                self.held.discard(req)
                continue
            if dropped(req):
                continue  # not discarded: it may still be starting (see dropped)
            message = getattr(req, "message", None)
            tag = getattr(message, "delivery_tag", None)
            if tag:
                out[str(tag)] = lease_value(req.name, req.id, req.args, self.worker)
        return out

    def _renew(self) -> None:
        held = self._held_now()
        client = redis_client(self.broker_url)
        pipe = client.pipeline()
        for tag, value in held.items():
            pipe.set(LEASE_PREFIX + tag, value, px=int(self.ttl * 1000))
        for tag in self._leased - held.keys():
            pipe.delete(LEASE_PREFIX + tag)
        pipe.execute()
        self._leased = set(held)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with _suppress_redis("lease renewal"):
                self._renew()

    # --- the watchdog ----------------------------------------------------------------------
    def scan(self) -> list[str]:
        """One watchdog pass: re-dispatch every lapsed message this watchdog claims; returns
        their delivery tags."""
        client = redis_client(self.broker_url)
        if float(client.info("server").get("uptime_in_seconds", 0)) < self.ttl:
            return []  # leases may have lapsed while Redis was down; let the workers renew
        done = []
        for tag in lapsed_tags(client, self.unacked_index, self.ttl, time.time()):
            if not client.set(CLAIM_PREFIX + tag, self.worker, nx=True, ex=max(60, self.ttl)):
                continue  # another watchdog has it
            what = describe(client.hget(self.unacked, tag))
            self.restore(tag)
            log.warning("watchdog: %s lost its worker (lease lapsed); re-dispatched", what)
            done.append(tag)
        return done

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            with _suppress_redis("watchdog scan"):
                self.scan()

    def start(self) -> None:
        """Start both threads (daemons: they end with the worker)."""
        for target, name in ((self._heartbeat, "sale-lease"), (self._watch, "sale-watchdog")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads. The leases are left to expire: a warm shutdown may still be
        finishing a task, and the worker's daemon threads end with its process anyway."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)


class _suppress_redis:
    """Log and swallow a Redis connection error: the guard's threads outlive an outage."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, _tb: Any) -> bool:
        import redis

        if isinstance(exc, redis.ConnectionError | redis.TimeoutError | OSError):
            log.warning("%s skipped: Redis unreachable (%s)", self.what, exc)
            return True
        if exc is not None and isinstance(exc, Exception):
            log.exception("%s failed", self.what)
            return True
        return False


_guard: Guard | None = None


def start_guard(app: Any, worker: str) -> Guard | None:
    """Start this worker process's guard once (a Redis broker only); returns it."""
    global _guard
    if _guard is not None:
        return _guard
    url = str(app.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return None
    conf = app.conf

    def restore(tag: str) -> None:
        with app.connection_for_write() as conn:
            channel: Any = conn.default_channel
            channel.qos.restore_by_tag(tag, channel.client)

    _guard = Guard(
        url,
        worker,
        float(conf.get("sale_lease_ttl_s", 20)),
        float(conf.get("sale_watchdog_interval_s", 5)),
        restore,
    )
    _guard.start()
    log.info("leases every %.1fs (TTL %.0fs); watchdog every %.1fs", _guard.ttl / 3, _guard.ttl,
             _guard.interval)  # fmt: skip
    return _guard


def current_guard() -> Guard | None:
    """This process's guard, if started."""
    return _guard
