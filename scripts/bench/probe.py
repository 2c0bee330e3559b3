"""Timers for the overhead benchmark's breakdown, loaded into a worker only when asked for.

``python -m sale.scripts.bench.overhead`` restarts its workers with ``--include
sale.scripts.bench.probe`` for the breakdown pass; no other worker imports this module, so the
product's hot path carries none of it. When the worker starts, it wraps a few functions with
exclusive timers (a nested timer's time is not counted again in the one around it): the
database (SQLAlchemy statements and commits), Redis commands (sends, results, chord counters,
leases; counted by command too), the model call, the embedder and the sandbox. Each task's
span (and when its message was received) and its timers are appended as one JSON line to
``<state_dir>/probe/<pid>.jsonl``, keyed by the job id (every sale task's first argument), for
:func:`read_spans` to gather.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun, task_received, worker_init
from sale.broker.settings import get_settings

#: The timers, in the order the breakdown lists them.
CATEGORIES = ("database", "redis", "model call", "embedding", "sandbox")

_state = threading.local()


def _timers() -> dict[str, float]:
    if not hasattr(_state, "timers"):
        _state.timers = defaultdict(float)
        _state.counts = defaultdict(int)
        _state.commands = defaultdict(int)
        _state.stack = []
    return _state.timers  # type: ignore[no-any-return]


def timed(category: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its exclusive time and its calls added to ``category``."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        timers = _timers()
        stack: list[float] = _state.stack
        stack.append(0.0)
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.perf_counter() - started
            inner = stack.pop()
            timers[category] += spent - inner
            _state.counts[category] += 1
            if stack:
                stack[-1] += spent

    return wrapper


def _patch(owner: Any, name: str, category: str) -> None:
    setattr(owner, name, timed(category, getattr(owner, name)))


def _counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a Redis client's ``execute_command``) counting its calls by command name."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _timers()
        _state.commands[str(args[0]) if args else "?"] += 1
        return fn(self, *args, **kwargs)

    return wrapper


def _counted_pipeline(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` (a Redis pipeline's ``execute``) counting each queued command by name."""

    @functools.wraps(fn)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _timers()
        names = "+".join(str(c[0][0]) for c in self.command_stack) or "?"
        _state.commands[f"pipeline {names}"] += 1
        return fn(self, *args, **kwargs)

    return wrapper


@worker_init.connect
def install(**_: Any) -> None:
    """Wrap the timed functions (in the worker's main process, before the fork)."""
    import redis.client
    from sale.workers.llm import provider
    from sale.workers.memory import embed
    from sale.workers.sandbox import runner
    from sqlalchemy.engine import default

    _patch(default.DefaultDialect, "do_execute", "database")
    _patch(default.DefaultDialect, "do_execute_no_params", "database")
    _patch(default.DefaultDialect, "do_executemany", "database")
    _patch(default.DefaultDialect, "do_commit", "database")
    _patch(redis.client.Redis, "execute_command", "redis")
    _patch(redis.client.Pipeline, "execute", "redis")
    client, pipeline = redis.client.Redis, redis.client.Pipeline
    setattr(client, "execute_command", _counted(client.execute_command))  # noqa: B010
    setattr(pipeline, "execute", _counted_pipeline(pipeline.execute))  # noqa: B010
    _patch(provider, "call_model", "model call")
    _patch(embed, "minilm_embed", "embedding")
    _patch(runner, "_run", "sandbox")


_spans: dict[str, float] = {}


def _append(line: dict[str, Any]) -> None:
    path = get_settings().state_dir / "probe" / f"{os.getpid()}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    """When the worker's main process took the message off its queue."""
    if request is not None and request.args:
        _append({"job": str(request.args[0]), "task": request.name, "id": request.id,
                 "received": time.time()})  # fmt: skip


@task_prerun.connect
def _start(task_id: str = "", **_: Any) -> None:
    _timers().clear()
    _state.counts.clear()
    _state.commands.clear()
    _spans[task_id] = time.time()


@task_postrun.connect
def _finish(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    started = _spans.pop(task_id, None)
    if started is None or not args:
        return
    _append({
        "job": str(args[0]),
        "task": getattr(task, "name", "?"),
        "id": task_id,
        "start": started,
        "end": time.time(),
        "timers": dict(_timers()),
        "counts": dict(_state.counts),
        "commands": dict(_state.commands),
    })  # fmt: skip


def read_spans(state_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Every recorded task span, with when its message was received, by job id, in start
    order."""
    spans: dict[str, list[dict[str, Any]]] = defaultdict(list)
    received: dict[tuple[str, str], list[float]] = defaultdict(list)
    lines = [json.loads(line) for path in sorted((state_dir / "probe").glob("*.jsonl"))
             for line in path.read_text().splitlines()]  # fmt: skip
    for line in sorted(lines, key=lambda x: x.get("received", x.get("start", 0.0))):
        if "received" in line:
            received[(line["id"], line["task"])].append(line["received"])
        else:
            taken = received.get((line["id"], line["task"]))
            line["received"] = taken.pop(0) if taken else line["start"]
            spans[line["job"]].append(line)
    for job_spans in spans.values():
        job_spans.sort(key=lambda s: s["start"])
    return dict(spans)
