"""`sale eval`: every method on the same pool and the same tasks; resumable."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

err = Console(stderr=True)


def _hms(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def job_line(text: str, done: int, total: int, elapsed: float, left: str) -> str:
    """A finished job as one log line: count, what it was, time so far and the estimate left."""
    return f"[{done}/{total}] {text} · elapsed {_hms(elapsed)} · {left}"


@dataclass
class Eta:
    """Time left from each stage's own pace so far: a SALE job takes many times a single-agent
    job, so one mean over all jobs misleads. A stage not yet timed borrows the pace of the SALE
    stages that are (a SALE variant runs like SALE); with none timed, it is named as untimed."""

    todo: dict[str, int]  # stage (single, sale-train, sale, sale+...) -> jobs left
    last: float  # when the previous job finished (or the run started)
    gaps: dict[str, list[float]] = field(default_factory=dict)

    @staticmethod
    def stage(text: str) -> str:
        head = text.split(" ", 1)[0]
        return "single" if head.startswith("single:") else head

    def finished(self, text: str, now: float) -> None:
        stage = self.stage(text)
        self.gaps.setdefault(stage, []).append(now - self.last)
        self.last = now
        if self.todo.get(stage, 0) > 0:
            self.todo[stage] -= 1

    def left(self) -> str:
        sale = [g for k, v in self.gaps.items() if k != "single" for g in v]
        seconds, untimed = 0.0, 0
        for stage, n in self.todo.items():
            if n <= 0:
                continue
            pace = self.gaps.get(stage) or (sale if stage != "single" else [])
            if pace:
                seconds += n * sum(pace) / len(pace)
            else:
                untimed += n
        text = f"~{_hms(seconds)} left"
        return text + (f" (+ {untimed} jobs not yet timed)" if untimed else "")


def _order_list(text: str | None) -> list[int] | None:
    """``--only-orders``: a comma list of order numbers; a ValueError names what is wrong."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(
            f"--only-orders {text!r}: give order numbers separated by commas, e.g. 0 or 0,1"
        ) from None


def _copy_records(work_dir: Path, records: Path | None) -> None:
    """Bring the copy of the run records up to date (the reports rewrite it as the run goes)."""
    from sale.scripts.evals.store import RunStore

    if records is not None:
        store = RunStore(work_dir / "runs.jsonl")
        if store.records:
            store.write_copy(records)
            err.print(f"{len(store.records)} run records copied to {records}")


def eval_command(
    bench: Annotated[str, typer.Option(help="humaneval | search")] = "humaneval",
    methods: Annotated[
        str,
        typer.Option(
            help="comma list: single (each agent alone) or single:<agent>, random, knn, "
            "classifier, cascade, oracle, oracle-small, auction-router, sale-nomem-nofallback, "
            "sale-nomem, sale, or a SALE variant such as sale+jury_debias=rotate (and "
            "auction-router+X: sale-nomem+X with the generic plan, replayed from the recorded "
            "sale-nomem+X auctions); 'all' for every method"
        ),
    ] = "all",
    limit: Annotated[int | None, typer.Option(help="first N test tasks of the split")] = None,
    train_limit: Annotated[
        int | None, typer.Option(help="first N train tasks (routers, fit); default: --limit")
    ] = None,
    orders: Annotated[int, typer.Option(help="task orders for SALE (mean ± std)")] = 2,
    only_orders: Annotated[
        str | None,
        typer.Option(
            help="run only these task orders of the SALE methods (comma list of 0..orders-1), "
            "to split a long run over processes or machines: each its own --work-dir and "
            "--records, merged by a --report-only run given the other's records"
        ),
    ] = None,
    fit: Annotated[
        bool, typer.Option(help="fit the weights on the train split before the SALE runs")
    ] = True,
    work_dir: Annotated[
        Path | None, typer.Option(help="where runs are stored (resume from here)")
    ] = None,
    out: Annotated[Path, typer.Option(help="where the results go")] = Path("docs/results"),
    plots: Annotated[bool, typer.Option(help="write the PNG plots")] = True,
    report_only: Annotated[
        bool, typer.Option(help="run nothing: write the results of the stored runs")
    ] = False,
    pool: Annotated[
        Path | None, typer.Option("--pool", help="agent pool TOML (default: the local pool)")
    ] = None,
    records: Annotated[
        Path | None,
        typer.Option(
            help="a copy of the run records kept outside the work directory (e.g. "
            "docs/results/full-run/humaneval.runs.jsonl): records the work directory lacks are "
            "taken from it first, and it is rewritten with every report, so a run can go on "
            "on another machine"
        ),
    ] = None,
) -> None:
    """Evaluate SALE against every baseline on the same pool; resumable (rerun to continue)."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from sale.broker.pool import load_pool
    from sale.scripts.cli.common import fail, interruptible, settings_for, stop_if_signalled
    from sale.scripts.evals.benchmarks import BENCHMARKS
    from sale.scripts.evals.harness import WorkDirBusy, evaluate, restore_records, work_dir_lock
    from sale.scripts.evals.runner import (
        JobFailed,
        RecordsError,
        expand_methods,
        live_work,
        make_plan,
        pinned_in_environment,
    )
    from sale.scripts.evals.store import RunStore

    if bench not in BENCHMARKS:
        err.print(f"[red]error:[/red] unknown benchmark {bench!r}; choose one of {BENCHMARKS}")
        raise typer.Exit(2)
    settings = settings_for(pool)
    if settings.broker_url:
        err.print(
            "[yellow]note:[/yellow] SALE_BROKER_URL is ignored: the evaluation runs its own "
            "embedded stack so each method gets its own database"
        )
    pinned = pinned_in_environment(settings)
    if pinned:
        err.print(
            f"[yellow]note:[/yellow] {', '.join(pinned)} ignored: every job of the evaluation runs "
            "with the settings the recorded runs were measured with (scripts/evals/runner.py: "
            "MEASURED_BASE); set a setting per method instead, e.g. sale+bid_max_tokens=128"
        )
    pool_obj = load_pool(settings.effective_pool_file)
    try:
        method_list = expand_methods([methods], pool_obj)
        plan = make_plan(
            bench,
            method_list,
            pool_obj,
            limit=limit,
            train_limit=train_limit,
            orders=orders,
            fit=fit,
            only_orders=_order_list(only_orders),
        )
    except ValueError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    wdir = work_dir or settings.state_dir / "eval" / f"{bench}-{Path(pool_obj.path).stem}"
    store = RunStore(wdir / "runs.jsonl")
    if records is not None:
        try:
            with work_dir_lock(wdir):  # not while another run appends to the same store
                added = restore_records(store, records)
            if added:
                err.print(f"restored {added} run records from {records}")
        except WorkDirBusy:
            err.print(
                f"[yellow]note:[/yellow] another run holds {wdir}; nothing restored from {records}"
            )
    todo = live_work(plan, store)
    err.print(
        f"{bench}: {len(plan.test)} test / {len(plan.train)} train tasks, "
        f"{len(plan.methods)} methods, {plan.orders} orders; live jobs still to run: "
        + ", ".join(f"{k} {v}" for k, v in todo.items())
        + f"; runs stored in {wdir}"
    )
    embed = None
    if any(m in ("knn", "classifier") for m in plan.methods):
        from sale.workers.memory.embed import minilm_embed

        embed = minilm_embed
    interruptible()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
    ) as progress:
        total = sum(todo.values())
        bar = progress.add_task("jobs", total=total)
        started, finished = time.monotonic(), [0]
        eta = Eta(dict(todo), started)

        def advance(text: str, done: int) -> None:
            progress.update(bar, advance=done, description=text[:60])
            finished[0] += done
            now = time.monotonic()
            eta.finished(text, now)
            if not err.is_terminal:  # a log file: the bar is not drawn, so one line per job
                err.print(job_line(text, finished[0], total, now - started, eta.left()))
            stop_if_signalled()  # a Ctrl-C whose exception was lost stops at the next job

        try:
            doc = evaluate(
                bench,
                plan,
                settings,
                pool_obj,
                wdir,
                out,
                on_progress=advance,
                embed=embed,
                plots=plots,
                report_only=report_only,
                records=records,
            )
        except KeyboardInterrupt:
            err.print(f"[yellow]stopped[/yellow]: finished jobs are kept in {wdir}; rerun to go on")
            raise typer.Exit(130) from None
        except JobFailed as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        except RecordsError as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(2) from None
        except WorkDirBusy as exc:
            fail(exc)
        finally:  # however the run ends, the copy holds every finished job
            _copy_records(wdir, records)
    from sale.scripts.evals.report import markdown

    typer.echo(markdown(doc))
    err.print(f"results: {out / (bench + '.json')}, {out / (bench + '.md')} and the plots")
