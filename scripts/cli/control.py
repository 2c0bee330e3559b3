"""Job control commands: list the jobs of the database (`sale jobs`) and cancel them
(`sale cancel`). Both read and write the database only, so they work with the workers and the
broker down; a cancel is honoured by whichever worker holds the job (``sale.workers.cancel``)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sale.scripts.cli.common import PoolOpt, console, context, err, fail, settings_for

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """``30m``, ``2h``, ``1d``, ``45s`` as a timedelta; ValueError naming the forms otherwise."""
    found = _AGE.match(text.strip())
    if not found:
        raise ValueError(f"--since {text!r}: give an age like 45s, 30m, 2h or 1d")
    return timedelta(seconds=float(found.group(1)) * _UNIT_S[found.group(2)])


def list_jobs(
    db_url: str,
    *,
    statuses: list[str] | None = None,
    kind: str | None = None,
    agent: str | None = None,
    since: timedelta | None = None,
    limit: int = 20,
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """The newest jobs matching the filters, one JSON-ready dict each: id, status (and whether
    a cancel is pending), kind, name, agent (a direct job's, else the award's), cost, created.
    ``agent`` matches a direct job's agent or the award's."""
    from sale.models.db import session_scope
    from sale.models.tables import Award, Job, ModelCall
    from sqlalchemy import func, or_
    from sqlmodel import col, select

    query = select(Job, Award.agent).join(Award, col(Award.job_id) == Job.id, isouter=True)
    if statuses:
        query = query.where(col(Job.status).in_(statuses))
    if kind:
        query = query.where(Job.kind == kind)
    if agent:
        query = query.where(or_(col(Job.agent) == agent, col(Award.agent) == agent))
    if since is not None:
        query = query.where(col(Job.created_at) >= (now or datetime.now(UTC)) - since)
    query = query.order_by(col(Job.created_at).desc()).limit(limit)
    with session_scope(db_url) as s:
        rows = s.exec(query).all()
        ids = [job.id for job, _ in rows]
        sums = s.exec(
            select(ModelCall.job_id, func.sum(ModelCall.cost_usd))
            .where(col(ModelCall.job_id).in_(ids))
            .group_by(col(ModelCall.job_id))
        ).all()
        cost = {job_id: float(total or 0.0) for job_id, total in sums}
    return [
        {
            "job_id": job.id,
            "status": job.status,
            "cancel_requested": job.cancel_requested_at is not None,
            "kind": job.kind,
            "name": job.name,
            "agent": job.agent or award_agent,
            "cost_usd": cost.get(job.id, 0.0),
            "reason": job.status_reason,
            "created_at": job.created_at.isoformat(),
            "updated_at": job.updated_at.isoformat(),
        }
        for job, award_agent in rows
    ]


def _ago(iso: str, now: datetime) -> str:
    at = datetime.fromisoformat(iso)
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    secs = max(0.0, (now - at).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.0f}{unit} ago"
    return f"{secs:.0f}s ago"


def jobs(
    status: Annotated[
        str | None, typer.Option(help="only jobs in these statuses (comma-separated)")
    ] = None,
    kind: Annotated[str | None, typer.Option(help="coding or search")] = None,
    agent: Annotated[
        str | None, typer.Option(help="only jobs run by this agent (direct or awarded)")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="only jobs created within this age: 30m, 2h, 1d")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many, newest first")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per job")] = False,
    pool: PoolOpt = None,
) -> None:
    """List jobs, newest first: status, kind, agent, cost, age."""
    from sale.workers.jobs import STATUSES

    settings = settings_for(pool)
    wanted = [s.strip() for s in status.split(",") if s.strip()] if status else None
    unknown = [s for s in wanted or [] if s not in STATUSES]
    if unknown:
        fail(ValueError(f"--status {','.join(unknown)}: unknown; one of {', '.join(STATUSES)}"))
    if kind is not None and kind not in ("coding", "search"):
        fail(ValueError(f"--kind {kind!r}: give coding or search"))
    try:
        age = parse_age(since) if since else None
    except ValueError as exc:
        fail(exc)
    from sale.models.db import init_db

    init_db(settings.effective_database_url)
    found = list_jobs(
        settings.effective_database_url,
        statuses=wanted,
        kind=kind,
        agent=agent,
        since=age,
        limit=limit,
    )
    if as_json:
        for row in found:
            typer.echo(json.dumps(row))
        return
    now = datetime.now(UTC)
    table = Table("job", "status", "kind", "name", "agent", "cost $", "created", "reason")
    for row in found:
        shown = row["status"] + (" (cancel requested)" if row["cancel_requested"] else "")
        table.add_row(
            row["job_id"],
            shown,
            row["kind"],
            escape((row["name"] or "")[:24]),
            row["agent"] or "-",
            f"{row['cost_usd']:.7f}",
            _ago(row["created_at"], now),
            escape((row["reason"] or "")[:48]),
        )
    console.print(table)
    if not found:
        err.print("no jobs match")


def cancel(
    job_ids: Annotated[list[str], typer.Argument(metavar="JOB...", help="job ids")],
    pool: PoolOpt = None,
) -> None:
    """Cancel jobs: a queued job never starts; a running one stops at its next model call or
    stage, on whichever worker holds it; a finished one is left as it is."""
    from sale.models.db import session_scope
    from sale.models.tables import Job
    from sale.workers.cancel import cancel as cancel_job
    from sqlmodel import col, select

    settings = settings_for(pool)
    db_url = settings.effective_database_url
    from sale.models.db import init_db

    init_db(db_url)
    with session_scope(db_url) as s:
        known = set(s.exec(select(Job.id).where(col(Job.id).in_(job_ids))).all())
    missing = [j for j in job_ids if j not in known]
    if missing:
        fail(
            ValueError(
                f"no job {', '.join(missing)} in {db_url}; nothing was cancelled "
                "(`sale jobs` lists the ids)"
            )
        )
    ctx = context()
    for job_id in dict.fromkeys(job_ids):
        typer.echo(cancel_job(job_id, ctx).message)
