"""Bids: an agent's plan for a job, in the first round, refined, or for the memory shortcut.

A first-round (or ``shortcut``) bid asks the agent for a short plan, and its log-probabilities
give the plan's entropy; a refined bid shows a cheaper agent its own first plan and contrastive
pairs from the memory records the first round retrieved. A transient model error is raised for
the task layer to retry; any other failure, or an empty plan, is recorded as a failed bid and the
auction goes on without it. Idempotent: one bid per (job, agent, round), looked up before any
model call.
"""

from __future__ import annotations

import logging

from sale.models.db import session_scope
from sale.models.tables import Bid, MemoryRecord
from sale.workers.auction import scoring as auction
from sale.workers.context import AuctionContext
from sale.workers.gate import model_caller
from sale.workers.jobs import insert_once, job_messages, job_spec, load_job, memory_entry
from sale.workers.memory.retrieval import build_pairs, render_pairs
from sale.workers.prompts import render
from sqlmodel import Session, col, select

from sale.errors import ModelCallError, TransientModelError

log = logging.getLogger(__name__)


TOOLS = {"coding": "a Python sandbox, the task's examples", "search": "search, open document"}


def bid_row(s: Session, job_id: str, agent: str, round_: str) -> Bid | None:
    """The bid of ``agent`` in ``round_`` of a job (failed or not), or None."""
    return s.exec(
        select(Bid).where(Bid.job_id == job_id, Bid.agent == agent, Bid.round == round_)
    ).first()


def run_bid(
    ctx: AuctionContext, job_id: str, agent_name: str, round_: str, memory_ids: list[int] | None
) -> int:
    """Collect one bid (``first``, or ``shortcut``: the same prompt) or refined bid
    (``refined``); returns the bid id.

    Raises TransientModelError for the task layer to retry; any other failure is recorded as
    a failed bid.
    """
    with session_scope(ctx.db_url) as s:
        existing = bid_row(s, job_id, agent_name, round_)
        if existing is not None and existing.id is not None:
            return existing.id
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        own = bid_row(s, job_id, agent_name, "first") if round_ == "refined" else None
        records = (
            list(s.exec(select(MemoryRecord).where(col(MemoryRecord.id).in_(memory_ids or []))))
            if round_ == "refined"
            else []
        )
    agent = ctx.pool.get(agent_name)
    max_words = max(20, ctx.settings.bid_max_tokens * 3 // 4)
    pairs_used: list[int] = []
    if round_ != "refined":
        prompt = render(
            "bid", kind=spec.kind, prompt=spec.prompt, max_words=max_words, tools=TOOLS[spec.kind]
        )
    else:
        entries = [memory_entry(r) for r in records]
        order = {rid: i for i, rid in enumerate(memory_ids or [])}
        entries.sort(key=lambda e: order.get(e.record_id, 0))
        pairs = build_pairs(
            agent_name, entries, ctx.settings.memory_label, ctx.settings.refine_max_pairs
        )
        pairs_used = [p.record_id for p in pairs]
        prompt = render(
            "refine",
            kind=spec.kind,
            prompt=spec.prompt,
            own_plan=(own.plan if own and own.plan else "(none)"),
            pairs=render_pairs(pairs),
            max_words=max_words,
        )
    messages = job_messages(ctx, spec, prompt)
    try:
        result = model_caller(ctx, job_id)(
            agent,
            messages,
            stage="refine" if round_ == "refined" else "bid",
            max_tokens=ctx.settings.bid_max_tokens,
            logprobs=True,
            top_logprobs=ctx.settings.top_logprobs,
            timeout=ctx.settings.llm_timeout_s,
        )
    except ModelCallError as exc:
        if isinstance(exc, TransientModelError):
            raise
        return record_failed_bid(ctx, job_id, agent_name, round_, str(exc))
    plan = result.text.strip()
    entropy = auction.plan_entropy(result.top_logprobs, ctx.settings.top_logprobs)
    row = Bid(
        job_id=job_id,
        agent=agent_name,
        round=round_,
        status="ok" if plan else "failed",
        plan=plan or None,
        error=None if plan else "the model returned an empty plan",
        tokens_in=result.tokens_in,
        tokens_out=result.tokens_out,
        entropy=entropy,
        cost_usd=result.cost_usd,
        latency_s=result.latency_s,
        memory_pairs=pairs_used,
    )
    insert_once(ctx, row)
    with session_scope(ctx.db_url) as s:
        found = bid_row(s, job_id, agent_name, round_)
        assert found is not None and found.id is not None
        return found.id


def record_failed_bid(
    ctx: AuctionContext, job_id: str, agent_name: str, round_: str, error: str
) -> int:
    """Record a bid that could not be collected; the auction goes on without it."""
    log.warning("job %s: bid of %s (%s) failed: %s", job_id, agent_name, round_, error)
    insert_once(
        ctx, Bid(job_id=job_id, agent=agent_name, round=round_, status="failed", error=error)
    )
    with session_scope(ctx.db_url) as s:
        found = bid_row(s, job_id, agent_name, round_)
        assert found is not None and found.id is not None
        return found.id


def ok_bids(s: Session, job_id: str, round_: str) -> list[Bid]:
    """The successful bids of a round, by id."""
    return list(
        s.exec(
            select(Bid)
            .where(Bid.job_id == job_id, Bid.round == round_, Bid.status == "ok")
            .order_by(col(Bid.id))
        )
    )


def has_bids(ctx: AuctionContext, job_id: str, round_: str) -> bool:
    """Whether the round has at least one successful bid."""
    with session_scope(ctx.db_url) as s:
        return bool(ok_bids(s, job_id, round_))
