"""Read-only views of a job for users: the `sale show --json` object and a short summary.

Besides the rows, the view gives what an evaluation needs per job: tokens and cost per stage
(``usage``), the auction's share against the execution's, and wall times from the status events
(``auction_seconds``: first event to ``executing``; ``execution_seconds``: ``executing`` to
``updating``; None for a stage the job never reached). ``mode`` is ``direct`` for a job assigned
to a named agent without an auction (``verified``: awarded by verified outcomes, its escalation
chain in ``chain``). ``executions`` lists every attempt (the award's, then
self-check fallbacks); ``execution`` is the last one, whose answer and verdict are the job's, and
the totals count every attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sale.models.db import session_scope
from sale.models.tables import (
    Award,
    Bid,
    Execution,
    ExecutionStep,
    JuryCall,
    JuryScore,
    MemoryRecord,
    StatusEvent,
)
from sale.workers.context import AuctionContext
from sale.workers.jobs import job_usage, load_job
from sale.workers.stages.awarding import DIRECT, SHORTCUT, VERIFIED
from sale.workers.stages.executing import attempts_of
from sqlmodel import col, select


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    """Wall seconds between two status events, None when either has not happened."""
    if start is None or end is None:
        return None
    return (end - start).total_seconds()


def _execution_view(execution: Execution, trace: list[ExecutionStep]) -> dict[str, Any]:
    """One execution attempt and its steps."""
    return {
        "attempt": execution.attempt,
        "agent": execution.agent,
        "bid_id": execution.bid_id,
        "status": execution.status,
        "answer": execution.answer,
        "tokens": execution.tokens_in + execution.tokens_out,
        "cost_usd": execution.cost_usd,
        "latency_s": execution.latency_s,
        "stop_reason": execution.stop_reason,
        "error": execution.error,
        "self_check": execution.self_check,
        "self_check_detail": execution.self_check_detail,
        "verdict": execution.verdict,
        "verdict_detail": execution.verdict_detail,
        "steps": [
            {
                "index": st.index,
                "role": st.role,
                "content": st.content,
                "tool_name": st.tool_name,
                "tool_args": st.tool_args,
                "observation": st.observation,
                "tokens_in": st.tokens_in,
                "tokens_out": st.tokens_out,
                "cost_usd": st.cost_usd,
                "latency_s": st.latency_s,
            }
            for st in trace
        ],
    }


def job_view(ctx: AuctionContext, job_id: str, steps: bool = True) -> dict[str, Any]:
    """Everything about a job as one JSON-ready object (the `sale show --json` shape)."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        bids = list(s.exec(select(Bid).where(Bid.job_id == job_id).order_by(col(Bid.id))))
        scores = s.exec(select(JuryScore).where(JuryScore.job_id == job_id)).all()
        # γ: the jury's scores as the scorer used them (after the validity check and debiasing),
        # kept in the job's memory record once the job is done.
        record = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).first()
        gamma = {m.get("bid_id"): m.get("gamma") for m in (record.bids if record else [])}
        calls = list(
            s.exec(select(JuryCall).where(JuryCall.job_id == job_id).order_by(col(JuryCall.id)))
        )
        award = s.exec(select(Award).where(Award.job_id == job_id)).first()
        executions = attempts_of(s, job_id)
        execution = executions[-1] if executions else None
        events = s.exec(
            select(StatusEvent).where(StatusEvent.job_id == job_id).order_by(col(StatusEvent.id))
        ).all()
        attempts = [
            _execution_view(
                e,
                list(
                    s.exec(
                        select(ExecutionStep)
                        .where(ExecutionStep.execution_id == e.id)
                        .order_by(col(ExecutionStep.index))
                    )
                )
                if steps
                else [],
            )
            for e in executions
        ]
        usage = job_usage(s, job_id)
        tokens = sum(t for t, _ in usage.values())
        cost = sum(c for _, c in usage.values())
        exec_tokens, exec_cost = usage["execute"]
        at = {e.status: e.at for e in events}
        return {
            "job_id": job.id,
            "name": job.name,
            "kind": job.kind,
            "status": job.status,
            "status_reason": job.status_reason,
            "history": [{"status": e.status, "at": e.at.isoformat()} for e in events],
            "bids": [
                {
                    "bid_id": b.id,
                    "agent": b.agent,
                    "round": b.round,
                    "status": b.status,
                    "plan": b.plan,
                    "error": b.error,
                    "tokens": b.tokens_out,
                    "entropy": b.entropy,
                    "jury": {r.juror: r.score for r in scores if r.bid_id == b.id},
                    "gamma": gamma.get(b.id),
                    "cost": b.cost_term,
                    "value": b.value,
                    "score": b.score,
                    "call_cost_usd": b.cost_usd,
                    "memory_pairs_from": b.memory_pairs,
                }
                for b in bids
            ],
            "jury_calls": [
                {
                    "juror": c.juror,
                    "round": c.round,
                    "target": c.target,
                    "status": c.status,
                    "order": [o["label"] + "=" + str(o["agent"]) for o in c.order],
                    "retried": c.retried,
                    "error": c.error,
                }
                for c in calls
            ],
            "provisional_winner": job.provisional_winner,
            "award": {"agent": award.agent, "round": award.round, "score": award.score}
            if award
            else None,
            "execution": attempts[-1] if attempts else None,
            "executions": attempts,
            "verdict": job.verdict or (execution.verdict if execution else None),
            "mode": _mode(award),
            "chain": award.chain if award else None,
            "tokens": tokens,
            "auction_tokens": tokens - exec_tokens,
            "cost_usd": cost,
            "auction_cost_usd": cost - exec_cost,
            "execution_tokens": exec_tokens,
            "execution_cost_usd": exec_cost,
            "usage": {st: {"tokens": t, "cost_usd": c} for st, (t, c) in usage.items()},
            "auction_seconds": _seconds(events[0].at if events else None, at.get("executing")),
            "execution_seconds": _seconds(at.get("executing"), at.get("updating")),
            "notes": job.notes,
            "memory_record_id": record.id if record else None,
            "created_at": job.created_at.isoformat(),
            "updated_at": job.updated_at.isoformat(),
        }


def _mode(award: Award | None) -> str:
    """How the job was given out: ``direct``, ``shortcut`` (memory, no auction), ``verified``
    (verified outcomes, no auction) or ``auction``."""
    if award is not None and award.round in (DIRECT, SHORTCUT, VERIFIED):
        return award.round
    return "auction"


def job_summary(ctx: AuctionContext, job_id: str, record_id: int | None = None) -> dict[str, Any]:
    """A small JSON summary of a job (the result of its last Celery task)."""
    view = job_view(ctx, job_id, steps=False)
    return {
        "job_id": job_id,
        "status": view["status"],
        "verdict": view["verdict"],
        "award": view["award"],
        "cost_usd": view["cost_usd"],
        "memory_record_id": record_id or view["memory_record_id"],
    }
