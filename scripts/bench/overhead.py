"""Benchmark: the queue's orchestration overhead, measured with the SCRIPTED test-double pool.

The scripted provider answers instantly, so what is measured is the cost of the system itself:
Celery hops, chords, database writes, jury parsing, embedding and the sandboxed verdict. Nothing
here says anything about decision quality. It starts the embedded runtime (bundled Redis and
real Celery worker processes), submits N coding jobs at once, and reports per-job latency from
submit to done and the throughput. Results go to docs/benchmarks/orchestration_overhead.json.

    python -m sale.scripts.bench.overhead --jobs 40
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[2]
SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


def main(
    jobs: int = 40,
    out: Path = ROOT / "docs" / "benchmarks" / "orchestration_overhead.json",
) -> None:
    """Run the benchmark and write the results."""
    state = Path(tempfile.mkdtemp(prefix="sale-bench-"))
    os.environ.update(
        SALE_STATE_DIR=str(state),
        SALE_POOL_FILE=str(ROOT / "broker" / "pools" / "scripted.toml"),
        SALE_DATABASE_URL=f"sqlite:///{state / 'bench.db'}",
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
    started_stack = time.monotonic()
    with EmbeddedStack(settings, pool, serve_models=False) as stack:
        stack.workers_ready()
        os.environ["SALE_BROKER_URL"] = stack.broker_url
        get_settings.cache_clear()
        import sale.broker.app  # noqa: F401
        from sale.workers.canvas import submit
        from sale.workers.context import get_context
        from sale.workers.views import job_view

        ctx = get_context()
        startup = time.monotonic() - started_stack
        # One warm-up job loads MiniLM in the control worker; it is not counted.
        warm = submit(_spec(-1), ctx)
        _wait(ctx, [warm], job_view)
        t0 = time.monotonic()
        ids = [submit(_spec(i), ctx) for i in range(jobs)]
        submitted = time.monotonic() - t0
        _wait(ctx, ids, job_view)
        wall = time.monotonic() - t0
        views = [job_view(ctx, j, steps=False) for j in ids]
    latencies = [
        (
            datetime.fromisoformat(v["updated_at"]) - datetime.fromisoformat(v["created_at"])
        ).total_seconds()
        for v in views
    ]
    result = {
        "benchmark": "orchestration_overhead",
        "provider": "scripted test double (zero model latency)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "pool": "broker/pools/scripted.toml (3 agents x concurrency 2; control concurrency 2)",
        "jobs": jobs,
        "done": sum(v["status"] == "done" for v in views),
        "runtime_startup_s": round(startup, 2),
        "submit_s_total": round(submitted, 3),
        "wall_s": round(wall, 2),
        "throughput_jobs_per_s": round(jobs / wall, 3),
        "latency_s": {
            "mean": round(statistics.mean(latencies), 3),
            "p50": round(statistics.median(latencies), 3),
            "p95": round(sorted(latencies)[int(0.95 * (len(latencies) - 1))], 3),
            "max": round(max(latencies), 3),
        },
        "celery_tasks_per_job": "3 bids + 3 jury + execute + update (+ 3 control hops)",
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def _spec(i: int) -> dict[str, object]:
    prompt = f"Job {i}: write add(a, b).\n[[scripted]]\n[[solution]]\n{SOLUTION}[[/solution]]\n"
    return {"kind": "coding", "prompt": prompt, "tests": TESTS, "entry_point": "add"}


def _wait(ctx: object, ids: list[str], job_view: object) -> None:
    pending = set(ids)
    while pending:
        for j in list(pending):
            if job_view(ctx, j, steps=False)["status"] in ("done", "failed"):  # type: ignore[operator]
                pending.discard(j)
        time.sleep(0.1)


if __name__ == "__main__":
    typer.run(main)
