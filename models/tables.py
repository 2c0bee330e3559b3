"""The auction memory: SQLModel tables.

The database is the source of truth for every job. Each table that a Celery task writes has a
natural unique key (job, agent, round, …) so a redelivered task finds its row instead of adding a
second one: bids, jury calls, the award, the execution and its steps, the memory record.
The tokens and cost of every model call are in their own ledger (:class:`ModelCall`), one row
per call as it returns. JSON columns hold small structured values (orders, limits, a job's
embedding); a memory record's embedding is packed int8 bytes and its task text, bids and
attempts are deflated text and JSON (:mod:`sale.models.types`); nothing is pickled.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sale.models.types import DeflatedJSON, DeflatedText, Int8Vector
from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Timezone-aware now, for timestamps."""
    return datetime.now(UTC)


class Job(SQLModel, table=True):
    """One submitted task and everything that happens to it."""

    id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=200)
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    pool_path: str = Field(max_length=1000)
    agent: str | None = Field(default=None, max_length=64)  # a direct job's agent; None: auction
    status: str = Field(default="queued", max_length=16, index=True)
    status_reason: str | None = Field(default=None, sa_column=Column(Text))
    embedding: list[float] | None = Field(default=None, sa_column=Column(JSON))
    provisional_winner: str | None = Field(default=None, max_length=64)
    verdict: str | None = Field(default=None, max_length=16)
    notes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Set once by `sale cancel` / ``cancel()``: whichever worker holds the job stops it at its
    # next model call or stage (stored here, so it outlives worker and broker restarts).
    cancel_requested_at: datetime | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)


class StatusEvent(SQLModel, table=True):
    """One status transition of a job, in order (`sale status` walks these)."""

    __table_args__ = (UniqueConstraint("job_id", "status", name="uq_status_event"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    status: str = Field(max_length=16)
    detail: str | None = Field(default=None, sa_column=Column(Text))
    at: datetime = Field(default_factory=utcnow)


class Bid(SQLModel, table=True):
    """An agent's plan for a job, first round or refined, with its score terms."""

    __table_args__ = (UniqueConstraint("job_id", "agent", "round", name="uq_bid"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    agent: str = Field(max_length=64)
    round: str = Field(max_length=8)  # "first" | "refined"
    status: str = Field(max_length=8)  # "ok" | "failed"
    plan: str | None = Field(default=None, sa_column=Column(Text))
    error: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    entropy: float | None = None
    cost_usd: float = 0.0  # what the bid call cost
    cost_term: float | None = None  # C_i of the score
    value: float | None = None  # V_i of the score
    score: float | None = None  # C_i - V_i
    latency_s: float = 0.0
    memory_pairs: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class JuryCall(SQLModel, table=True):
    """One juror's call: the labels it saw, in order, and whether it abstained."""

    __table_args__ = (UniqueConstraint("job_id", "juror", "round", "target", name="uq_jury_call"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    juror: str = Field(max_length=64)
    round: str = Field(max_length=8)
    target: str = Field(default="all", max_length=32)  # "all" (batched) or a bid id (per_bid)
    status: str = Field(max_length=12)  # "ok" | "abstained"
    order: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )  # [{"label": "A", "bid_id": 3, "agent": "x"}, ...] as presented
    reply: str | None = Field(default=None, sa_column=Column(Text))
    retried: bool = False
    error: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)


class JuryScore(SQLModel, table=True):
    """One juror's 0–5 score of one bid."""

    __table_args__ = (UniqueConstraint("jury_call_id", "bid_id", name="uq_jury_score"),)

    id: int | None = Field(default=None, primary_key=True)
    jury_call_id: int = Field(foreign_key="jurycall.id", index=True)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    bid_id: int = Field(foreign_key="bid.id", index=True)
    juror: str = Field(max_length=64)
    score: int


class Award(SQLModel, table=True):
    """The final winner of a job's auction."""

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", unique=True, max_length=64)
    bid_id: int = Field(foreign_key="bid.id")
    agent: str = Field(max_length=64)
    round: str = Field(max_length=8)
    score: float
    provisional_agent: str = Field(max_length=64)
    provisional_score: float
    # A verified award's escalation chain (agents in the order they run); None: an auction's,
    # a direct or a shortcut award, whose fallbacks follow the auction's ranking.
    chain: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(default_factory=utcnow)


class Execution(SQLModel, table=True):
    """An agent running its own plan: the outcome and its totals.

    Attempt 0 is the award's agent; attempts 1, 2, … are self-check fallbacks to the next-best
    bids (``self_check_fallback``). ``self_check`` is the outcome of running the answer on the
    prompt's own examples: "passed" | "failed", None when no self-check ran.
    """

    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_execution_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", max_length=64)
    attempt: int = 0
    agent: str = Field(max_length=64)
    bid_id: int = Field(foreign_key="bid.id")
    status: str = Field(max_length=12)  # "done" | "failed"
    answer: str | None = Field(default=None, sa_column=Column(Text))
    stop_reason: str | None = Field(default=None, max_length=200)
    error: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    verdict: str = Field(default="unknown", max_length=16)
    verdict_detail: str | None = Field(default=None, sa_column=Column(Text))
    self_check: str | None = Field(default=None, max_length=16)
    self_check_detail: str | None = Field(default=None, sa_column=Column(Text))
    created_at: datetime = Field(default_factory=utcnow)


class ExecutionStep(SQLModel, table=True):
    """One step of an execution trace."""

    __table_args__ = (UniqueConstraint("execution_id", "index", name="uq_execution_step"),)

    id: int | None = Field(default=None, primary_key=True)
    execution_id: int = Field(foreign_key="execution.id", index=True)
    index: int
    role: str = Field(max_length=16)
    content: str | None = Field(default=None, sa_column=Column(Text))
    tool_name: str | None = Field(default=None, max_length=64)
    tool_args: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    observation: str | None = Field(default=None, sa_column=Column(Text))
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0


class ModelCall(SQLModel, table=True):
    """One paid model call of a job, written as soon as the provider answers (the ledger).

    A job's tokens and cost are the sum of its calls here, so a worker killed between a call
    and the end of its stage loses nothing from the record, and a stage that runs again after
    such a kill adds the calls it makes again (they are billed again). ``call_id`` is drawn once
    per call: writing the same call twice keeps one row. ``stage`` is bid, refine, jury or
    execute.
    """

    id: int | None = Field(default=None, primary_key=True)
    call_id: str = Field(unique=True, max_length=32)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=64)
    stage: str = Field(max_length=8)
    agent: str = Field(max_length=64)
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    created_at: datetime = Field(default_factory=utcnow, index=True)


class MemoryRecord(SQLModel, table=True):
    """Exactly one per finished job: what a future auction learns from."""

    # (kind, id): the memory index reads a kind's records above the last id it has seen; the
    # index also serves every query by kind alone.
    __table_args__ = (Index("ix_memoryrecord_kind_id", "kind", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="job.id", unique=True, max_length=64)
    kind: str = Field(max_length=16)
    # Written once, read whole by id, never filtered on: stored small (models.types).
    task_text: str = Field(sa_column=Column(DeflatedText, nullable=False))
    # A float32 scale and int8 components: the memory index reads the bytes as they are.
    embedding: list[float] = Field(sa_column=Column(Int8Vector, nullable=False))
    bids: list[dict[str, Any]] = Field(sa_column=Column(DeflatedJSON, nullable=False))
    # Every execution in order (the award's, then self-check fallbacks): bid, self-check,
    # verdict, tokens and cost (what the verified award estimates from).
    attempts: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(DeflatedJSON, nullable=False)
    )
    award_agent: str = Field(max_length=64)
    award_round: str = Field(max_length=8)
    provisional_agent: str = Field(max_length=64)
    chain: list[str] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    verdict: str = Field(max_length=16)
    total_tokens: int
    total_cost_usd: float
    created_at: datetime = Field(default_factory=utcnow)
