"""`sale jobs` and `sale cancel` on a temporary database: the filters, the JSON lines, the
table, and bad input as one line with exit code 2 (typer's runner, no broker needed)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sale.models.db import init_db, session_scope
from sale.models.tables import Award, Bid, Job, ModelCall
from sale.scripts.cli import app
from sale.scripts.cli.control import list_jobs, parse_age
from typer.testing import CliRunner

from tests.conftest import SCRIPTED_POOL

NOW = datetime(2026, 12, 8, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'sale.db'}"
    init_db(url)
    monkeypatch.setenv("SALE_DATABASE_URL", url)
    monkeypatch.setenv("SALE_POOL_FILE", str(SCRIPTED_POOL))
    monkeypatch.setenv("SALE_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "300")
    with session_scope(url) as s:
        for job_id, kind, status, agent, age in (
            ("direct-old", "coding", "done", "small", timedelta(days=2)),
            ("auction-new", "search", "executing", None, timedelta(minutes=5)),
            ("queued-new", "coding", "queued", None, timedelta(minutes=1)),
        ):
            s.add(Job(id=job_id, kind=kind, prompt="p", spec={}, pool_path="x", status=status,
                      agent=agent, created_at=NOW - age))  # fmt: skip
        s.flush()
        s.add(Bid(job_id="auction-new", agent="large", round="first", status="ok", cost_usd=0.25))
        s.add(Bid(job_id="auction-new", agent="small", round="first", status="ok", cost_usd=0.5))
        for agent, cost in (("large", 0.25), ("small", 0.5)):
            s.add(ModelCall(call_id=f"bid-{agent}", job_id="auction-new", stage="bid",
                            agent=agent, cost_usd=cost))  # fmt: skip
        s.flush()
        s.add(Award(job_id="auction-new", bid_id=1, agent="large", round="first", score=0.0,
                    provisional_agent="large", provisional_score=0.0))  # fmt: skip
    return url


def test_filters_combine_and_list_newest_first(db: str) -> None:
    ids = [r["job_id"] for r in list_jobs(db, now=NOW)]
    assert ids == ["queued-new", "auction-new", "direct-old"]
    assert [r["job_id"] for r in list_jobs(db, since=timedelta(hours=1), now=NOW)] == [
        "queued-new",
        "auction-new",
    ]
    assert [r["job_id"] for r in list_jobs(db, statuses=["done", "queued"], now=NOW)] == [
        "queued-new",
        "direct-old",
    ]
    assert [r["job_id"] for r in list_jobs(db, kind="search")] == ["auction-new"]
    by_large = list_jobs(db, agent="large")  # the award's agent
    assert [(r["job_id"], r["cost_usd"]) for r in by_large] == [("auction-new", 0.75)]
    assert [r["job_id"] for r in list_jobs(db, agent="small")] == ["direct-old"]
    assert [r["job_id"] for r in list_jobs(db, limit=1)] == ["queued-new"]


def test_ages_are_read_in_four_units() -> None:
    assert parse_age("30m") == timedelta(minutes=30)
    assert parse_age("2h") == timedelta(hours=2)
    assert parse_age("1d") == timedelta(days=1)
    assert parse_age("45s") == timedelta(seconds=45)
    with pytest.raises(ValueError, match="give an age like 45s, 30m, 2h or 1d"):
        parse_age("yesterday")


def test_jobs_prints_json_lines_and_a_table(db: str) -> None:
    runner = CliRunner()
    done = runner.invoke(app, ["jobs", "--json", "--status", "executing"])
    assert done.exit_code == 0, done.output
    (row,) = [json.loads(line) for line in done.stdout.splitlines()]
    assert (row["job_id"], row["agent"], row["cancel_requested"]) == ("auction-new", "large", False)
    table = runner.invoke(app, ["jobs"])
    assert table.exit_code == 0
    assert "auction-new" in table.stdout and "0.7500000" in table.stdout


def test_bad_filters_and_ids_are_one_line_with_exit_2(db: str) -> None:
    runner = CliRunner()
    for argv, problem in (
        (["jobs", "--since", "soon"], "--since 'soon': give an age like"),
        (["jobs", "--status", "running"], "--status running: unknown; one of queued"),
        (["jobs", "--kind", "math"], "--kind 'math': give coding or search"),
        (["cancel", "queued-new", "nope"], "no job nope in"),
    ):
        done = runner.invoke(app, argv)
        assert done.exit_code == 2, (argv, done.output)
        assert problem in done.output
    with session_scope(db) as s:  # nothing was cancelled for the bad id's sake
        job = s.get(Job, "queued-new")
        assert job is not None and job.status == "queued"


def test_cancel_reports_each_outcome(db: str) -> None:
    done = CliRunner().invoke(app, ["cancel", "queued-new", "auction-new", "direct-old"])
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        "queued-new cancelled (it was queued: never started)",
        "auction-new: cancel requested (executing); it stops at its next model call or stage",
        "direct-old is already done",
    ]
    (row,) = list_jobs(db, statuses=["executing"])
    assert row["cancel_requested"] is True
