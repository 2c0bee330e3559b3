"""The auction memory's commands: fit the scoring weights, export and import records."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from sale.scripts.cli.common import (
    PoolOpt,
    err,
    fail,
    settings_for,
)

memory_app = typer.Typer(
    no_args_is_help=True,
    help="The auction memory: move its records between databases (e.g. SQLite to PostgreSQL).",
)


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
    from sale.broker.pool import load_pool
    from sale.models.db import init_db, session_scope
    from sale.models.tables import MemoryRecord
    from sale.workers.auction.fit import (
        auctions_from_memory,
        fit_weights,
        weights_document,
        write_weights,
    )
    from sqlmodel import select

    if label not in ("auction", "verified"):
        fail(ValueError("--label must be 'auction' or 'verified'"))
    settings = settings_for(pool)
    pool_obj = load_pool(settings.effective_pool_file)
    if (per_kind or base) and not from_eval:
        fail(ValueError("--per-kind and --base go with --from-eval (the eval work directories)"))
    if no_jury and not per_kind:
        fail(ValueError("--no-jury goes with --from-eval DIR --per-kind"))
    if from_eval and (per_kind or base):
        from sale.scripts.evals.harness import fit_kinds_from_eval_dirs

        from sale.errors import WeightsError

        try:
            fits = fit_kinds_from_eval_dirs(
                list(from_eval), pool_obj, out, base, version, jury=not no_jury
            )
        except (ValueError, WeightsError) as exc:
            fail(exc)
        for kind, result in fits.items():
            err.print(f"{kind}: routed {result.routed}/{result.total}")
        err.print(f"wrote {out} (use SALE_WEIGHTS_FILE={out})")
        return
    if from_eval:
        from sale.scripts.evals.harness import fit_from_eval_dirs

        try:
            fitted, what = fit_from_eval_dirs(list(from_eval), pool_obj, out, version)
        except ValueError as exc:
            fail(exc)
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
        fail(exc)
    usable = [a for a in auctions if a.target is not None]
    if not usable:
        fail(ValueError(f"no labelled auctions in {settings.effective_database_url} to fit on"))
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
    from sale.models.db import init_db
    from sale.workers.memory.transfer import export_memory

    settings = settings_for(pool)
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
    from sale.models.db import init_db
    from sale.workers.memory.embed import embedder_for
    from sale.workers.memory.transfer import import_memory

    from sale.errors import ConfigError, InputError
    from sale.inputs import LIMITS, parse_json, read

    settings = settings_for(pool)
    if not file.exists():
        fail(FileNotFoundError(f"{file}: no such file; write one with `sale memory export`"))
    items, where = [], []
    try:
        for n, line in enumerate(read(file, str(file), LIMITS["memory"]).splitlines(), start=1):
            if line.strip():
                items.append(parse_json(line, f"{file} line {n}"))
                where.append(f"{file} line {n}")
    except InputError as exc:
        fail(exc)
    init_db(settings.effective_database_url)
    try:
        added = import_memory(
            settings.effective_database_url, items, embedder_for(settings.embedder), where
        )
    except (ConfigError, ValueError) as exc:
        fail(exc)
    err.print(
        f"imported {added} memory records into {settings.effective_database_url} "
        f"({len(items) - added} were there already)"
    )


# --- services -----------------------------------------------------------------------------
