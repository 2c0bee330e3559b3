"""Job commands: submit one, follow its status, show its auction, run a batch."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from sale.broker.settings import Settings
from sale.scripts.cli.common import (
    AgentOpt,
    PoolOpt,
    check_agent,
    console,
    context,
    ensure_broker,
    err,
    fail,
    interruptible,
    settings_for,
    stop_if_signalled,
)


def submit(spec_file: Path, pool: PoolOpt = None, agent: AgentOpt = None) -> None:
    """Validate SPEC_FILE (a task spec JSON), enqueue the job and print its id."""
    from sale.workers.spec import validate_spec

    from sale.errors import SaleError
    from sale.inputs import LIMITS, read

    settings = settings_for(pool)
    try:
        spec = validate_spec(read(spec_file, str(spec_file), LIMITS["spec"]), str(spec_file))
    except SaleError as exc:
        fail(exc)
    check_agent(settings, agent)
    settings = ensure_broker(settings)
    from sale.models.db import init_db

    init_db(settings.effective_database_url)
    import sale.broker.app  # noqa: F401  (configures the current Celery app)
    from sale.workers.canvas import submit as submit_job

    try:
        job_id = submit_job(spec.model_dump(mode="json"), context(), agent=agent)
    except SaleError as exc:
        fail(exc)
    typer.echo(job_id)


def status(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="follow until the job ends")] = False,
    pool: PoolOpt = None,
) -> None:
    """Print a job's status and the stages it went through."""
    from sale.workers.views import job_view

    from sale.errors import SaleError

    settings_for(pool)
    last = None
    while True:
        try:
            view = job_view(context(), job_id, steps=False)
        except SaleError as exc:
            fail(exc)
        line = {
            "job_id": job_id,
            "status": view["status"],
            "reason": view["status_reason"],
            "history": [h["status"] for h in view["history"]],
            "verdict": view["verdict"],
        }
        if line != last:
            if as_json:
                typer.echo(json.dumps(line))
            else:
                extra = f" ({view['status_reason']})" if view["status_reason"] else ""
                typer.echo(f"{job_id} {view['status']}{extra}  [{' → '.join(line['history'])}]")
            last = line
        if not watch or view["status"] in ("done", "failed", "cancelled"):
            return
        time.sleep(0.5)


def show(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    pool: PoolOpt = None,
) -> None:
    """Show everything about a job: bids, jury, award, execution trace, verdict, cost."""
    from sale.scripts.cli.show import render
    from sale.workers.views import job_view

    from sale.errors import SaleError

    settings_for(pool)
    try:
        view = job_view(context(), job_id)
    except SaleError as exc:
        fail(exc)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    render(view, console)


def _load_tasks(path: Path) -> list[dict[str, Any]]:
    from sale.workers.spec import validate_spec

    from sale.errors import InputError, SpecError
    from sale.inputs import LIMITS, read

    specs = []
    problems = []
    try:
        text = read(path, str(path), LIMITS["batch"])
    except InputError as exc:
        fail(exc)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            specs.append(validate_spec(line, f"{path}:{n}").model_dump(mode="json"))
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        fail(ValueError("\n".join(problems)))
    if not specs:
        fail(ValueError(f"{path} holds no task specs (one JSON object per line)"))
    return specs


def run(
    tasks_file: Path,
    pool: PoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per job")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the batch")] = 7200.0,
    agent: AgentOpt = None,
) -> None:
    """Run a batch of jobs (JSON lines) through the auction, as configured (SALE_MECHANISM=paper:
    the published one), or with --agent directly on one agent, and print a table."""
    from sale.scripts.local.runtime import EmbeddedStack, running_broker

    settings = settings_for(pool)
    if not tasks_file.exists():
        fail(FileNotFoundError(f"{tasks_file} not found"))
    specs = _load_tasks(tasks_file)
    check_agent(settings, agent)
    from sale.broker.pool import load_pool
    from sale.models.db import init_db
    from sale.workers.budget import check_daily_budget

    from sale.errors import SaleError

    init_db(settings.effective_database_url)
    try:
        check_daily_budget(context())  # before the runtime starts for nothing
    except SaleError as exc:
        fail(exc)
    interruptible()
    stack = None
    if not settings.broker_url and running_broker(settings) is None:
        pool_obj = load_pool(settings.effective_pool_file)
        err.print(f"starting the embedded runtime for pool {pool_obj.path} …")
        stack = EmbeddedStack(settings, pool_obj)
    try:
        if stack is not None:
            stack.__enter__()
            settings = settings_for(None, stack.broker_url)
            stack.workers_ready()
            say_resumed(settings, stack.restored)
        else:
            settings = ensure_broker(settings)
        _run_batch(settings, specs, as_json, timeout, agent, embedded=stack is not None)
    except KeyboardInterrupt:
        err.print("interrupted: stopping")
        raise typer.Exit(130) from None
    finally:
        if stack is not None:
            stack.stop()


def say_resumed(settings: Settings, restored: int) -> None:
    """Say which jobs of an earlier, stopped run go on now that the runtime is up again."""
    from sale.workers.jobs import unfinished_jobs

    left = unfinished_jobs(settings.effective_database_url)
    if not left:
        return
    taken = (
        f" ({restored} of their tasks had been taken by a worker that was stopped and are "
        "queued again)"
        if restored
        else ""
    )
    err.print(f"{len(left)} unfinished job(s) of an earlier run go on{taken}")


def _unfinished_note(ctx: Any, job_ids: list[str], embedded: bool) -> str:
    """What a stopped `sale run` leaves behind, and what becomes of it."""
    from sale.workers.jobs import unfinished_jobs

    unfinished = set(unfinished_jobs(ctx.db_url))
    left = [j for j in job_ids if j in unfinished]
    if not left:
        return f"all {len(job_ids)} jobs had finished"
    where = (
        "their tasks stay queued in the embedded broker and go on the next time it starts "
        "(`sale run` or `sale up`); a rerun of the same file waits for them instead of "
        "submitting them again"
        if embedded
        else "they keep running on the broker's workers"
    )
    return (
        f"{len(left)} of {len(job_ids)} jobs unfinished ({', '.join(j[:8] for j in left[:5])}"
        f"{', …' if len(left) > 5 else ''}): {where}; `sale status ID` follows one"
    )


def _resend_lost(settings: Settings, ctx: Any, job_ids: list[str], agent: str | None) -> int:
    """Send again the pipeline of each adopted job that is still queued while no message of
    it waits on the broker (a run killed between storing a job and sending it, or a broker that
    lost its last writes): nothing else would ever start it. Returns how many."""
    from sale.broker.pool import CONTROL_QUEUE
    from sale.models.db import session_scope
    from sale.models.tables import Job
    from sale.scripts.local.runtime import pending_task_ids
    from sale.workers.canvas import build_pipeline
    from sqlmodel import col, select

    if not settings.broker_url or not settings.broker_url.startswith("redis"):
        return 0
    pending = pending_task_ids(settings.broker_url, [CONTROL_QUEUE])  # first: a worker may take one
    with session_scope(ctx.db_url) as s:
        queued = s.exec(
            select(Job.id).where(col(Job.id).in_(job_ids), Job.status == "queued")
        ).all()
    lost = [j for j in queued if j not in pending]
    for job_id in lost:
        build_pipeline(job_id, agent=agent).apply_async()
    return len(lost)


def _run_batch(
    settings: Settings,
    specs: list[dict[str, Any]],
    as_json: bool,
    timeout: float,
    agent: str | None = None,
    embedded: bool = False,
) -> None:
    import sale.broker.app  # noqa: F401
    from sale.workers.canvas import submit as submit_job
    from sale.workers.jobs import adoptable_jobs

    ctx = context()
    started = time.monotonic()
    waiting = adoptable_jobs(ctx.db_url, specs, agent, ctx.pool.path)
    adopted = [j for j in waiting if j is not None]
    if adopted:
        resent = _resend_lost(settings, ctx, adopted, agent)
        err.print(
            f"{len(adopted)} of these {len(specs)} tasks already have an unfinished job from a "
            "stopped run: waiting for those instead of submitting them again"
            + (f" ({resent} never reached a worker and were sent again)" if resent else "")
        )
    from sale.errors import SaleError

    try:
        job_ids = [
            j or submit_job(spec, ctx, agent=agent) for j, spec in zip(waiting, specs, strict=True)
        ]
    except SaleError as exc:  # e.g. the daily budget ran out within the batch
        fail(exc)
    try:
        views = _wait_batch(ctx, job_ids, as_json, timeout, started)
    except KeyboardInterrupt:
        err.print(_unfinished_note(ctx, job_ids, embedded))
        raise
    ordered = [views[j] for j in job_ids]
    if as_json:
        for v in ordered:
            typer.echo(json.dumps(v))
        return
    _print_report(ordered, time.monotonic() - started)


def _wait_batch(
    ctx: Any, job_ids: list[str], as_json: bool, timeout: float, started: float
) -> dict[str, dict[str, Any]]:
    """Wait for every job of a batch with a progress bar; returns their full views."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from sale.workers.jobs import TERMINAL
    from sale.workers.views import job_view

    views: dict[str, dict[str, Any]] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=err,
        transient=as_json,
    ) as progress:
        bar = progress.add_task("jobs", total=len(job_ids))
        while len(views) < len(job_ids):
            stages = []
            for job_id in job_ids:
                if job_id in views:
                    continue
                view = job_view(ctx, job_id, steps=False)
                if view["status"] in TERMINAL:
                    views[job_id] = job_view(ctx, job_id)
                else:
                    stages.append(view["status"])
            progress.update(
                bar,
                completed=len(views),
                description=f"jobs ({', '.join(sorted(set(stages))) or 'finishing'})",
            )
            if time.monotonic() - started > timeout:
                fail(TimeoutError(f"batch not finished after {timeout:.0f}s; jobs keep running"))
            stop_if_signalled()
            time.sleep(0.5)
    return views


def _print_report(views: list[dict[str, Any]], wall: float) -> None:
    from datetime import datetime

    from sale.scripts.cli.show import answered_by, winner_cell

    table = Table(
        "job",
        "name",
        "winner",
        "refined",
        "verdict",
        "tokens",
        "auction tok",
        "cost $",
        "seconds",
        title="SALE run",
    )
    for v in views:
        award = v["award"] or {}
        secs = datetime.fromisoformat(v["updated_at"]) - datetime.fromisoformat(v["created_at"])
        table.add_row(
            v["job_id"][:8],
            (v["name"] or "")[:24],
            winner_cell(v),
            {"refined": "yes", "direct": "direct"}.get(award.get("round", ""), "no"),
            str(v["verdict"] if v["status"] != "failed" else f"failed: {v['status_reason']}"[:40]),
            str(v["tokens"]),
            str(v["auction_tokens"]),
            f"{v['cost_usd']:.7f}",
            f"{secs.total_seconds():.1f}",
        )
    console.print(table)
    checked = [v for v in views if v["verdict"] in ("passed", "failed")]
    passed = sum(v["verdict"] == "passed" for v in checked)
    tokens = sum(v["tokens"] for v in views)
    auction_tokens = sum(v["auction_tokens"] for v in views)
    shares: dict[str, int] = {}
    for v in views:
        if (agent := answered_by(v)) is not None:
            shares[agent] = shares.get(agent, 0) + 1
    per_agent = ", ".join(f"{a} {n}/{len(views)}" for a, n in sorted(shares.items()))
    rate = f"{passed}/{len(checked)}" + (f" ({passed / len(checked):.0%})" if checked else "")
    overhead = f"{auction_tokens / tokens:.0%}" if tokens else "n/a"
    console.print(
        f"pass rate {rate} · total cost ${sum(v['cost_usd'] for v in views):.7f} · "
        f"jobs answered per agent: {per_agent} · auction overhead {overhead} of {tokens} tokens"
    )
    console.print(f"wall time {wall:.1f}s for {len(views)} jobs")
