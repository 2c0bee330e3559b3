"""The verified award (``award=verified``): the memory's verified outcomes pick the agents.

The memory's verified outcomes are one per execution attempt with a verdict (the award's,
every self-check fallback's, direct jobs' executions too; an attempt whose model could not be
reached is no outcome of the agent). The control stage reads no record in full for the kind
rates: the memory index (:mod:`sale.workers.memory.index`) keeps each agent's totals over the
kind, and gives each agent's ``award_k`` nearest records with an outcome of it.
:func:`sale.workers.auction.chains.award_chain_from` turns them into each agent's chance to
pass this job (its attempts on the ``award_k`` nearest past jobs, shrunk toward its rate on the
kind), its self-check's record and its expected attempt cost, and chooses the escalation chain
of least expected cost within ``award_tolerance`` of the best (at most ``1 +
self_check_fallback`` agents; one when the job cannot be self-checked). The award stores the
chain and one ``verified`` bid per chain agent carrying the generic plan (no model call, zero
cost), and the execution stage escalates along the chain on a failed self-check.

No bids are collected: on the recorded 30-task runs the bids and the jury cost 17-22 % of the
tokens while their signal hardly predicts success (entropy r = 0.12, the jury 0.03), and the
chosen agents execute the generic plan anyway (``plan_mode=generic``). So the auction runs only
on a cold start: while the memory holds fewer than ``award_min_records`` jobs of the kind with
a verified outcome, :func:`award_verified` returns None and the job goes through the auction
as configured, whose record then feeds the award. Idempotent: one award per job; a job whose
auction has begun keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sale.models.db import session_scope
from sale.models.tables import Award, Bid, MemoryRecord
from sale.workers.auction.chains import ChainParams, award_chain_from
from sale.workers.auction.estimates import EstimatorParams, Outcome
from sale.workers.context import AuctionContext
from sale.workers.jobs import add_note, insert_once, job_embedding, job_spec, load_job
from sale.workers.memory.index import memory_index, nearest_records
from sale.workers.memory.index import record_outcomes as attempt_outcomes
from sale.workers.stages.awarding import DIRECT_PLAN, VERIFIED
from sale.workers.stages.bidding import bid_row
from sale.workers.stages.executing import self_checked
from sqlmodel import select

log = logging.getLogger(__name__)


def record_outcomes(record: MemoryRecord) -> list[Outcome]:
    """The verified outcomes of one memory record: each attempt that ran and has a verdict
    (a record from before attempts were listed: its award's agent with the job's verdict)."""
    return attempt_outcomes(record.attempts, record.award_agent, record.verdict, record.embedding)


def memory_outcomes(records: Sequence[MemoryRecord]) -> tuple[list[Outcome], int]:
    """(every verified outcome of ``records``, how many records have at least one)."""
    outcomes: list[Outcome] = []
    jobs = 0
    for r in records:
        found = record_outcomes(r)
        outcomes += found
        jobs += bool(found)
    return outcomes, jobs


def agent_neighbours(
    ctx: AuctionContext, kind: str, query: Sequence[float], agents: Sequence[str]
) -> dict[str, list[tuple[bool, float]]]:
    """Each agent's ``award_k`` verified outcomes of ``kind`` nearest ``query`` as (passed,
    similarity), nearest first: from the ``award_k`` nearest records where the agent has one
    (the memory index), the only records read."""
    k = ctx.settings.award_k
    near: dict[str, list[tuple[bool, float]]] = {}
    for agent in agents:
        found = nearest_records(ctx.db_url, kind, query, k, agent=agent) if k > 0 else []
        near[agent] = [
            (o.passed, sim)
            for r, sim in found
            for o in attempt_outcomes(r.attempts, r.award_agent, r.verdict)
            if o.agent == agent
        ][:k]
    return near


def chain_params(ctx: AuctionContext) -> ChainParams:
    """The award's parameters from the settings (the rest: the pure module's defaults)."""
    return ChainParams(EstimatorParams(k=ctx.settings.award_k), tol=ctx.settings.award_tolerance)


def award_verified(ctx: AuctionContext, job_id: str) -> Award | None:
    """The job's verified award, written on first call; None on a cold start (fewer than
    ``award_min_records`` verified jobs of the kind) or when the job's auction has begun,
    so the auction awards it. The choice is noted on the job with its estimates."""
    with session_scope(ctx.db_url) as s:
        existing = s.exec(select(Award).where(Award.job_id == job_id)).first()
        if existing is not None:
            return existing if existing.round == VERIFIED else None
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        if s.exec(select(Bid).where(Bid.job_id == job_id, Bid.round != VERIFIED)).first():
            return None  # its auction (or memory shortcut) has begun: let it finish
    by_agent, jobs = memory_index(ctx.db_url).outcome_totals(job.kind)
    least = ctx.settings.award_min_records
    if jobs < least:
        add_note(
            ctx,
            job_id,
            f"verified award: cold start ({jobs} verified {spec.kind} job(s) in memory, "
            f"SALE_AWARD_MIN_RECORDS={least}); the auction awards this job",
        )
        return None
    query = job_embedding(ctx, job_id)
    prices = {a.name: a.output_price for a in ctx.pool.agents}
    choice, views, bar = award_chain_from(
        by_agent,
        agent_neighbours(ctx, job.kind, query, list(prices)),
        prices,
        chain_params(ctx),
        checkable=self_checked(ctx, spec),
        max_len=1 + ctx.settings.self_check_fallback,
    )
    for agent in choice.chain:
        insert_once(
            ctx, Bid(job_id=job_id, agent=agent, round=VERIFIED, status="ok", plan=DIRECT_PLAN)
        )
    with session_scope(ctx.db_url) as s:
        first = bid_row(s, job_id, choice.chain[0], VERIFIED)
        assert first is not None and first.id is not None
        award = Award(
            job_id=job_id,
            bid_id=first.id,
            agent=choice.chain[0],
            round=VERIFIED,
            score=0.0,
            provisional_agent=choice.chain[0],
            provisional_score=0.0,
            chain=list(choice.chain),
        )
    insert_once(ctx, award)
    estimates = ", ".join(f"{v.name} {v.p_pass:.2f}" for v in views)
    add_note(
        ctx,
        job_id,
        f"verified award: chain {' -> '.join(choice.chain)} (expected success "
        f"{choice.success:.3f}, expected cost ${choice.cost:.6f}); P(pass) {estimates}"
        + (f"; not tried first: {', '.join(sorted(bar))}" if bar else "")
        + f"; from {sum(t.attempts for t in by_agent.values())} verified attempts of {jobs} "
        f"{spec.kind} jobs; no auction",
    )
    log.info("job %s: verified award, chain %s", job_id, choice.chain)
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()
