"""The pool's daily budget: today's recorded spend (since 00:00 UTC, this pool's jobs only) is
summed from the database, and once it reaches ``daily_budget_usd`` `submit()`, `sale submit`
and `sale run` refuse new jobs with one line and exit code 2, storing nothing. The broker URL
points at a closed port: the refusal comes before anything is sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sale.broker.pool import load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.tables import Bid, Execution, Job, ModelCall
from sale.workers.auction.weights import load_weights
from sale.workers.budget import check_daily_budget, day_spend
from sale.workers.canvas import submit
from sale.workers.context import AuctionContext
from sale.workers.llm.provider import call_model
from sqlmodel import select

from sale.errors import DailyBudgetError
from tests.conftest import SCRIPTED_POOL, free_port

NOW = datetime(2026, 12, 8, 9, 30, tzinfo=UTC)
SPEC = {"kind": "search", "prompt": "Who wrote Hamlet?", "answer": "Shakespeare"}


def add_spend(db: str, job_id: str, pool_path: str, cost: float, at: datetime) -> None:
    with session_scope(db) as s:
        s.add(Job(id=job_id, kind="search", prompt="p", spec={}, pool_path=pool_path,
                  status="done", created_at=at))  # fmt: skip
        s.flush()
        s.add(Bid(job_id=job_id, agent="small", round="first", status="ok", cost_usd=cost / 2,
                  created_at=at))  # fmt: skip
        s.flush()
        bid = s.exec(select(Bid).where(Bid.job_id == job_id)).one()
        assert bid.id is not None
        s.add(Execution(job_id=job_id, agent="small", bid_id=bid.id, status="done",
                        cost_usd=cost / 2, created_at=at))  # fmt: skip
        for stage in ("bid", "execute"):  # the ledger: what the day's spend is read from
            s.add(ModelCall(call_id=f"{job_id}-{stage}", job_id=job_id, stage=stage,
                            agent="small", cost_usd=cost / 2, created_at=at))  # fmt: skip


@pytest.fixture
def budget_pool(tmp_path: Path) -> Path:
    pool = tmp_path / "pool.toml"
    pool.write_text("daily_budget_usd = 0.01\n" + SCRIPTED_POOL.read_text())
    return pool


def test_the_day_counts_this_pools_calls_since_utc_midnight(
    tmp_path: Path, budget_pool: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'sale.db'}"
    init_db(db)
    pool = str(budget_pool)
    add_spend(db, "today", pool, 0.006, NOW - timedelta(hours=9))  # 00:30 UTC
    add_spend(db, "yesterday", pool, 0.5, NOW - timedelta(hours=10))  # 23:30 the day before
    add_spend(db, "other-pool", "elsewhere.toml", 0.5, NOW)
    assert day_spend(db, pool, NOW) == pytest.approx(0.006)
    ctx = AuctionContext(settings=Settings(database_url=db, pool_file=budget_pool),
                         pool=load_pool(budget_pool), weights=load_weights(None),
                         llm=call_model, embed=lambda t: [[1.0] for _ in t])  # fmt: skip
    check_daily_budget(ctx, NOW)  # US$0.006 of 0.01: jobs are still taken
    add_spend(db, "today-2", pool, 0.004, NOW)
    with pytest.raises(DailyBudgetError, match=r"US\$0.010000 recorded since 00:00 UTC"):
        check_daily_budget(ctx, NOW)
    with pytest.raises(DailyBudgetError):
        submit(SPEC, ctx)  # refused before the broker is even asked
    with session_scope(db) as s:
        assert len(s.exec(select(Job)).all()) == 4


def test_sale_submit_and_sale_run_refuse_with_one_line_once_the_day_is_spent(
    tmp_path: Path, budget_pool: Path
) -> None:
    db = f"sqlite:///{tmp_path / 'sale.db'}"
    init_db(db)
    add_spend(db, "spent", str(budget_pool.resolve()), 0.02, datetime.now(UTC))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(SPEC))
    batch = tmp_path / "batch.jsonl"
    batch.write_text(json.dumps(SPEC) + "\n")
    env = dict(os.environ, COLUMNS="400", SALE_DATABASE_URL=db, SALE_STATE_DIR=str(tmp_path),
               SALE_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")  # fmt: skip
    sale = str(Path(sys.executable).parent / "sale")
    for argv in (["submit", str(spec)], ["run", str(batch)]):
        done = subprocess.run([sale, *argv, "--pool", str(budget_pool)], env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, (argv, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "the daily budget of pool" in lines[0] and "no job was submitted" in lines[0]
    with session_scope(db) as s:
        assert [j.id for j in s.exec(select(Job))] == ["spent"]
