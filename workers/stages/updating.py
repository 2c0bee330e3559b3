"""The memory update: the job's one memory record, then the job finishes with its verdict.

The record keeps the task and its embedding, every bid with its terms and jury scores (raw, and
as the scorer used them), the bid's auction and verified labels (a direct bid stays unlabelled),
the award (with a verified award's chain), every execution attempt (agent, self-check, verdict,
tokens, cost) and the job's totals: later refinement, the memory shortcut, the verified award
and `sale fit` read it. The job then ends ``done``, or ``failed`` when its last execution failed.
Idempotent: one record per job; a redelivery finishes the job again without writing one.
"""

from __future__ import annotations

from sale.models.db import session_scope
from sale.models.tables import Award, Bid, Execution, JuryScore, MemoryRecord
from sale.workers.context import AuctionContext
from sale.workers.jobs import fail_job, insert_once, job_embedding, job_totals, load_job, set_status
from sale.workers.memory.retrieval import bid_labels
from sale.workers.stages.awarding import NO_AUCTION
from sale.workers.stages.executing import attempts_of, final_execution
from sale.workers.stages.jury_scores import jury_gammas
from sqlmodel import col, select

from sale.errors import AuctionError


def update_memory(ctx: AuctionContext, job_id: str) -> int:
    """Write the job's one memory record and finish the job; returns the record id."""
    with session_scope(ctx.db_url) as s:
        existing = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).first()
        if existing is not None and existing.id is not None:
            record_id = existing.id
            execution = final_execution(s, job_id)
        else:
            record_id = 0
    if record_id:
        _finish(ctx, job_id, execution)
        return record_id
    vector = job_embedding(ctx, job_id)
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        award = s.exec(select(Award).where(Award.job_id == job_id)).one()
        executions = attempts_of(s, job_id)
        if not executions:
            raise AuctionError(job_id, "no execution to record in the memory")
        execution = executions[-1]
        bids = list(s.exec(select(Bid).where(Bid.job_id == job_id).order_by(col(Bid.id))))
        jury = s.exec(select(JuryScore).where(JuryScore.job_id == job_id)).all()
        tokens, cost = job_totals(s, job_id)
        award_index = next(i for i, b in enumerate(bids) if b.id == award.bid_id)
        index_of = {b.id: i for i, b in enumerate(bids)}
        executed = {index_of[e.bid_id]: e.verdict for e in executions}
        labels = bid_labels([{} for _ in bids], award_index, execution.verdict, executed)
        # The jury's scores as the scorer used them (validity, debiasing): `sale fit` reads them.
        gammas = jury_gammas(s, [b for b in bids if b.status == "ok"], ctx.pool.names, ctx.settings)
        items = []
        for b, (auction_label, verified_label) in zip(bids, labels, strict=True):
            # A direct or verified bid won no auction and no agent wrote it: unlabelled, it
            # never becomes one side of a refinement pair nor a target of the weights fit.
            labelled = b.status == "ok" and b.round not in NO_AUCTION
            items.append(
                {
                    "bid_id": b.id,
                    "agent": b.agent,
                    "round": b.round,
                    "status": b.status,
                    "plan": b.plan,
                    "tokens": b.tokens_out,
                    "entropy": b.entropy,
                    "jury": {r.juror: r.score for r in jury if r.bid_id == b.id},
                    "gamma": {
                        j: g for j, g in gammas.by_bid.get(b.id or 0, {}).items() if g is not None
                    },
                    "cost": b.cost_term,
                    "value": b.value,
                    "score": b.score,
                    "auction_label": auction_label if labelled else None,
                    "verified_label": verified_label if labelled else None,
                }
            )
        record = MemoryRecord(
            job_id=job_id,
            kind=job.kind,
            task_text=job.prompt,
            embedding=vector,
            bids=items,
            award_agent=award.agent,
            award_round=award.round,
            provisional_agent=award.provisional_agent,
            chain=award.chain,
            verdict=execution.verdict,
            attempts=[
                {
                    "attempt": e.attempt,
                    "bid_id": e.bid_id,
                    "agent": e.agent,
                    "round": bids[index_of[e.bid_id]].round,
                    "status": e.status,
                    "self_check": e.self_check,
                    "verdict": e.verdict,
                    "tokens": e.tokens_in + e.tokens_out,
                    "cost_usd": e.cost_usd,
                }
                for e in executions
            ],
            total_tokens=tokens,
            total_cost_usd=cost,
        )
    insert_once(ctx, record)
    with session_scope(ctx.db_url) as s:
        found = s.exec(select(MemoryRecord).where(MemoryRecord.job_id == job_id)).one()
        assert found.id is not None
        record_id = found.id
    _finish(ctx, job_id, execution)
    return record_id


def _finish(ctx: AuctionContext, job_id: str, execution: Execution | None) -> None:
    verdict = execution.verdict if execution else "unknown"
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        job.verdict = verdict
        s.add(job)
    if execution is not None and execution.status == "failed":
        fail_job(ctx, job_id, f"execution by {execution.agent} failed: {execution.error}")
    else:
        set_status(ctx, job_id, "done", f"verdict {verdict}")
