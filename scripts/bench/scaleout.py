"""Scale-out: jobs per second against the number of worker processes and hosts.

One run per shape, each on a fresh cluster (:mod:`sale.scripts.bench.cluster`): redis-server,
one control worker and ``R`` workers per agent queue (`sale worker`, concurrency 2 each, as the
pool file says), one database (SQLite, or a throwaway PostgreSQL with ``--postgres``), and the
fault benchmark's HTTP stub provider without faults, answering after ``--latency-ms`` (0: the
orchestration alone, bound by the CPU; 200: a provider's response time, bound by how many calls
are in flight). ``--hosts N`` runs the shapes again with the workers in N network namespaces on a
bridge (several hosts on one machine), Redis, the database and the provider on the bridge's
address, so every worker reaches them as a host on the network would.

Each shape: the workers answer a ping, a warm-up of 8 jobs (every worker process imports litellm
on its first call), then ``--jobs`` submitted at once with ``submit()``; throughput is jobs /
(first submit to last result), latency submit to result. ``SALE_AWARD=auction``: every job bids,
so its shape stays the same along the run (3 bids, 3 jury calls, an execution with one tool step,
the memory update). Results: ``docs/benchmarks/scaleout.{json,md}``; the command, date, machine
and load average are recorded with them.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from sale.scripts.bench.cluster import ROOT, Cluster, Hosts
from sale.scripts.bench.faults import Stub, agent_workers, pool_file, spec

OUT = ROOT / "docs" / "benchmarks" / "scaleout.json"


def workers_of(replicas: int) -> list[str]:
    """The control worker and ``replicas`` workers per agent queue."""
    return ["control", *(w for ws in agent_workers(replicas).values() for w in ws)]


def wait_ready(app: Any, count: int, timeout: float = 180.0) -> None:
    """Until ``count`` workers answer a ping."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(app.control.ping(timeout=1.0) or []) >= count:
            return
    raise RuntimeError(f"fewer than {count} workers answered a ping within {timeout:.0f} s")


def send(app: Any, ctx: Any, first: int, n: int) -> dict[str, float]:
    """``n`` jobs at once; their throughput and latency (as the overhead benchmark reads
    them from the result backend)."""
    from sale.scripts.bench.overhead import _run, _summary
    from sale.workers.canvas import submit

    def one(i: int) -> tuple[str, float]:
        at = time.time()
        return submit(spec(first + i, 1), ctx), at

    return _summary(_run(app, one, n))


def restore(environ: dict[str, str]) -> None:
    """Put back this process's environment, settings and context after a shape."""
    from sale.broker.settings import get_settings
    from sale.workers.context import set_context

    os.environ.clear()
    os.environ.update(environ)
    get_settings.cache_clear()
    set_context(None)


def run_shape(
    replicas: int,
    hosts: int,
    latency_ms: int,
    jobs: int,
    postgres: bool,
    workdir: Path,
    warm_up: int = 8,
) -> dict[str, Any]:
    """One shape on a fresh cluster; its figures."""
    from sale.broker.settings import get_settings

    with ExitStack() as stack:
        net = stack.enter_context(Hosts(hosts)) if hosts else None
        address = net.address if net else "127.0.0.1"
        stub = Stub(fault_rate=0.0, latency_s=latency_ms / 1000, host=address)
        api_base = stub.start()
        stack.callback(stub.stop)
        database = None
        if postgres:
            from sale.scripts.bench.postgres import throwaway_server

            database = stack.enter_context(throwaway_server("scaleout", True, address))
        names = workers_of(replicas)
        workdir.mkdir(parents=True, exist_ok=True)
        cluster = Cluster(
            workdir,
            pool_file=pool_file(workdir / "pool.toml", api_base),
            env_extra={"SALE_AWARD": "auction"},
            host=address,
            netns=net.place(names) if net else {},
            database_url=database,
        )
        stack.enter_context(cluster)
        for name in names:
            cluster.start_worker(name)
        saved = dict(os.environ)
        stack.callback(restore, saved)
        os.environ.update(cluster.env())
        get_settings.cache_clear()
        from sale.broker.app import create_app
        from sale.workers.context import get_context, set_context

        set_context(None)  # this shape's settings
        app = create_app()
        ctx = get_context()
        wait_ready(app, len(names))
        send(app, ctx, 0, warm_up)  # not counted
        load = os.getloadavg()[0]
        figures = send(app, ctx, warm_up, jobs)
    return {
        "replicas": replicas,
        "hosts": hosts,
        "latency_ms": latency_ms,
        "worker_processes": len(names),
        "agent_processes": (len(names) - 1) * 2,
        "database": "postgresql" if postgres else "sqlite",
        "load_before": round(load, 2),
        **figures,
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| provider latency | workers per agent queue | hosts | database | jobs/s | p50 latency "
        "| load before |\n" + "|---" * 7 + "|\n"
    )
    return head + "".join(
        f"| {r['latency_ms']} ms | {r['replicas']} | {r['hosts'] or 1} | {r['database']} | "
        f"{r['throughput_jobs_per_s']:.2f} | {r['latency_p50_s']:.2f} s | {r['load_before']} |\n"
        for r in rows
    )


def markdown(document: dict[str, Any], jobs: int) -> str:
    """The results as the benchmark's page."""
    return (
        "# Scale-out: jobs per second against workers and hosts\n\n"
        f"{document['date'][:10]}, `{document['command']}`, {document['machine']}.\n\n"
        "Each shape on a fresh cluster: redis-server, one control worker and the given "
        "number of `sale worker` processes per agent queue (3 agents, concurrency 2 each), "
        "one database, the benchmark's HTTP stub provider without faults, answering after the "
        "given latency. `SALE_AWARD=auction` (every job bids: 3 bids, 3 jury calls, an "
        "execution with one tool step, the memory update). Throughput: "
        f"{jobs} jobs submitted at once, after a warm-up of 8; hosts: network namespaces on "
        "a bridge, Redis, the database and the provider on the bridge's address. Load before: "
        "the 1-minute load average as the measured jobs are sent, which still counts the "
        "shape's own start-up and warm-up.\n\n" + table(document["rows"])
    )


def main(
    replicas: str = typer.Option("1,2,4", help="workers per agent queue, comma-separated"),
    latency_ms: str = typer.Option("0,200", help="the provider's response time, comma-separated"),
    hosts: int = typer.Option(0, help="also run each shape on this many hosts (namespaces)"),
    jobs: int = typer.Option(40, help="jobs in flight per shape"),
    postgres: bool = typer.Option(False, help="one throwaway PostgreSQL instead of SQLite"),
    out: Path = OUT,
) -> None:
    """Run every shape and write the results."""
    work = Path(tempfile.mkdtemp(prefix="sale-scaleout-"))
    shapes = [
        (int(r), h, int(ms))
        for ms in latency_ms.split(",")
        for h in ([0, hosts] if hosts else [0])
        for r in replicas.split(",")
    ]
    rows = []
    for r, h, ms in shapes:
        row = run_shape(r, h, ms, jobs, postgres, work / f"r{r}-h{h}-l{ms}")
        print(json.dumps(row), flush=True)
        rows.append(row)
    command = ("python -m sale.scripts.bench.scaleout " + " ".join(sys.argv[1:])).strip()
    document = {
        "benchmark": "scaleout",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "rows": rows,
    }
    out.write_text(json.dumps(document, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(document, jobs))
    print(table(rows))


if __name__ == "__main__":
    typer.run(main)
