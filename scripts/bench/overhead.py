"""Benchmark: the queue's own overhead, against a bare Celery canvas of the same shape, in one run.

The SCRIPTED test-double pool answers instantly, so what is measured is the system itself:
Celery hops, chords, database writes, embedding and the sandboxed verdict; nothing here says
anything about decision quality. One run starts the embedded runtime (bundled Redis and real
Celery worker processes, which also load :mod:`sale.scripts.bench.bare`) and measures, on that
one Redis and those workers: the runtime's start-up (start to every worker answering a ping);
one job alone (p50 over ``--alone`` sequential jobs) and the throughput with ``--jobs`` and
``--many`` in flight, for the auction pipeline (``SALE_AWARD=auction``, so every job bids) and
for the bare canvas, each with the CPU time the stack's processes spent per job; then, with
the workers restarted under :mod:`sale.scripts.bench.probe`, where one job's time goes. Every
latency is submit to the job's final result in the result backend. Results go to
docs/benchmarks/orchestration_overhead.json under ``--label``.

    python -m sale.scripts.bench.overhead --jobs 40 --label after
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
BARE = ["--include", "sale.scripts.bench.bare"]
PROBE = ["--include", "sale.scripts.bench.bare,sale.scripts.bench.probe"]

#: Sends one job and returns (its id, the submit time as a UNIX timestamp).
Send = Callable[[int], tuple[str, float]]


def main(
    jobs: int = 40,
    many: int = 200,
    alone: int = 20,
    label: str = "after",
    out: Path = ROOT / "docs" / "benchmarks" / "orchestration_overhead.json",
) -> None:
    """Run the benchmark and write the results under ``label``."""
    state = Path(tempfile.mkdtemp(prefix="sale-bench-"))
    os.environ.update(
        SALE_STATE_DIR=str(state),
        SALE_POOL_FILE=str(ROOT / "broker" / "pools" / "scripted.toml"),
        SALE_DATABASE_URL=f"sqlite:///{state / 'bench.db'}",
        SALE_AWARD="auction",
    )
    os.environ.pop("SALE_BROKER_URL", None)
    from sale.broker.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from sale.broker.pool import load_pool
    from sale.models.db import init_db
    from sale.scripts.local.runtime import EmbeddedStack

    init_db(settings.effective_database_url)
    pool = load_pool(settings.effective_pool_file)
    started = time.monotonic()
    with EmbeddedStack(settings, pool, serve_models=False, worker_args=BARE) as stack:
        stack.workers_ready()
        startup = time.monotonic() - started
        os.environ["SALE_BROKER_URL"] = stack.broker_url
        get_settings.cache_clear()
        from sale.broker.app import create_app
        from sale.scripts.bench.bare import bare_pipeline
        from sale.workers.canvas import new_job_id, submit
        from sale.workers.context import get_context

        app = create_app()  # this process's app, on the stack's broker
        ctx = get_context()
        queues = [a.queue for a in pool.agents]

        def sale_job(i: int) -> tuple[str, float]:
            sent = time.time()
            return submit(_spec(i), ctx), sent

        def bare_job(i: int) -> tuple[str, float]:
            sent, job_id = time.time(), new_job_id()
            bare_pipeline(job_id, queues).apply_async()
            return job_id, sent

        measured: dict[str, dict[str, Any]] = {}
        for name, send in (("sale", sale_job), ("bare", bare_job)):
            # Warm-up, not counted: a first job on the fresh workers (each worker process
            # imports litellm on its first model call, the control worker's loads MiniLM on
            # its first update), then enough at once to reach every process.
            first = _run(app, send, 1, sequential=True)
            _run(app, send, 8)
            measured[name] = {
                "first_job_s": round(first[0][2] - first[0][1], 3),
                "alone": _phase(stack, app, send, alone, sequential=True),
                f"in_flight_{jobs}": _phase(stack, app, send, jobs),
                f"in_flight_{many}": _phase(stack, app, send, many),
            }
        stack.worker_args = PROBE
        stack.restart_workers({})
        stack.workers_ready()
        _run(app, sale_job, 8)
        from sale.scripts.bench.probe import read_spans

        alone_sends = _run(app, sale_job, alone, sequential=True)
        loaded_sends = _run(app, sale_job, jobs)
        spans = read_spans(settings.state_dir)
        breakdown = {
            "alone": _breakdown(alone_sends, spans),
            f"in_flight_{jobs}": _breakdown(loaded_sends, spans),
        }
    result = {
        "benchmark": "orchestration_overhead",
        "provider": "scripted test double (zero model latency)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "pool": "broker/pools/scripted.toml (3 agents x concurrency 2; control concurrency 2)",
        "pipeline": "SALE_AWARD=auction: sale.job -> 3 x sale.bid (chord) -> sale.judge -> "
        "3 x sale.jury (chord) -> sale.score -> sale.execute -> sale.update; bare: the same "
        "canvas, tasks returning small values (scripts/bench/bare.py)",
        "runtime_startup_s": round(startup, 2),
        **measured,
        "ratio": _ratios(measured["sale"], measured["bare"]),
        "breakdown_s": breakdown,
    }
    runs = json.loads(out.read_text()).get("runs", {}) if out.exists() else {}
    runs[label] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {"benchmark": "orchestration_overhead", "runs": runs}
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _spec(i: int) -> dict[str, object]:
    prompt = f"Job {i}: write add(a, b).\n[[scripted]]\n[[solution]]\n{SOLUTION}[[/solution]]\n"
    return {"kind": "coding", "prompt": prompt, "tests": TESTS, "entry_point": "add"}


def _run(app: Any, send: Send, n: int, sequential: bool = False) -> list[tuple[str, float, float]]:
    """Send ``n`` jobs (each after the last finished, or all at once); (id, sent, done) each."""
    sent: list[tuple[str, float]] = []
    for i in range(n):
        sent.append(send(i))
        if sequential:
            app.AsyncResult(sent[-1][0]).get(propagate=False, timeout=120)
    done = []
    for job_id, at in sent:
        result = app.AsyncResult(job_id)
        result.get(propagate=False, timeout=600)
        if result.status != "SUCCESS":
            raise RuntimeError(f"job {job_id} ended {result.status}: {result.result!r}")
        done.append((job_id, at, result.date_done.replace(tzinfo=UTC).timestamp()))
    return done


def _phase(stack: Any, app: Any, send: Send, n: int, sequential: bool = False) -> dict[str, float]:
    """:func:`_run` summarised, with the CPU time the stack spent per job meanwhile."""
    cpu = _stack_cpu_s(stack)
    summary = _summary(_run(app, send, n, sequential))
    summary["stack_cpu_s_per_job"] = round((_stack_cpu_s(stack) - cpu) / n, 4)
    return summary


def _stack_cpu_s(stack: Any) -> float:
    """CPU seconds (user + system) used so far by the stack's processes: Redis, the workers,
    their pool processes and every child they reaped (the sandboxes). Unlike a latency, it
    hardly moves with the machine's load."""
    import psutil

    total = 0.0
    for _name, child in list(stack.children):
        try:
            top = psutil.Process(child.pid)
            procs = [top, *top.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for proc in procs:
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def _summary(done: list[tuple[str, float, float]]) -> dict[str, float]:
    latencies = sorted(end - sent for _id, sent, end in done)
    wall = max(end for *_x, end in done) - min(sent for _id, sent, _end in done)
    return {
        "jobs": len(done),
        "latency_p50_s": round(statistics.median(latencies), 4),
        "latency_p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 4),
        "wall_s": round(wall, 3),
        "throughput_jobs_per_s": round(len(done) / wall, 2),
    }


def _ratios(sale: dict[str, Any], bare: dict[str, Any]) -> dict[str, float]:
    """The pipeline over the bare canvas: latency alone (x times), throughputs (a share)."""
    ratios = {"alone_latency": round(sale["alone"]["latency_p50_s"]
                                     / bare["alone"]["latency_p50_s"], 2)}  # fmt: skip
    for key in (k for k in sale if k.startswith("in_flight_")):
        ratio = sale[key]["throughput_jobs_per_s"] / bare[key]["throughput_jobs_per_s"]
        ratios[f"{key}_throughput"] = round(ratio, 3)
    return ratios


def _breakdown(
    done: list[tuple[str, float, float]], spans: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Median per job: time in each task (bids, jurors: the slowest of the round), the timers
    summed over the job's tasks, and the time between tasks (hops: broker, dispatch, acks)."""
    per_job: dict[str, list[float]] = defaultdict(list)
    for job_id, sent, end in done:
        row: dict[str, float] = defaultdict(float)
        job_spans = spans.get(job_id, [])
        for span in job_spans:
            took = span["end"] - span["start"]
            key = f"task {span['task']}"
            fanned = span["task"] in ("sale.bid", "sale.jury")
            row[key] = max(row[key], took) if fanned else row[key] + took
            for category, spent in span["timers"].items():
                row[f"in tasks: {category}"] += spent
                row[f"in tasks: {category} (calls)"] += span["counts"].get(category, 0)
        busy = _union([(s["start"], s["end"]) for s in job_spans])
        held = _union([(s["received"], s["end"]) for s in job_spans])
        first = min((s["received"] for s in job_spans), default=end)
        row["total"] = end - sent
        row["submit to first receipt"] = first - sent
        row["in tasks (wall)"] = busy
        row["received, waiting for a process"] = held - busy
        row["on the broker (sent to received)"] = end - first - held
        for key, value in row.items():
            per_job[key].append(value)
    return {key: round(statistics.median(values), 4) for key, values in per_job.items()}


def _union(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of ``intervals``."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


if __name__ == "__main__":
    typer.run(main)
