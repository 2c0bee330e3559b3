"""Execution attempts: the awarded agent executes its plan, then any self-check fallbacks.

Attempt 0 is the award's bid. With ``self_check_fallback`` on, a coding job whose prompt shows
examples has its answer run on them (never on the hidden tests) and a search job's answer must
be grounded in what its agent read (``sale.workers.agent.selfcheck``); a failed self-check hands the
job to the best bid, in the auction's ranking, of an agent that has not executed yet, or, for a
verified award (``award=verified``), to the next agent of the award's chain. Each
attempt stores its trace, self-check and verdict; one whose model could not be reached after
every retry is recorded as a failed execution. Idempotent: one execution per (job, attempt).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sale.models.db import session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Award, Bid, Execution, ExecutionStep
from sale.workers.agent.loop import EXECUTORS
from sale.workers.agent.outcome import Step
from sale.workers.agent.selfcheck import has_visible_checks, self_check
from sale.workers.agent.verdict import judge_answer
from sale.workers.auction import scoring as auction
from sale.workers.context import AuctionContext
from sale.workers.gate import model_caller
from sale.workers.jobs import add_note, insert_once, job_spec, load_job, prompt_style
from sale.workers.stages.awarding import DIRECT_PLAN, candidate
from sale.workers.stages.bidding import bid_row, ok_bids
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from sale.errors import AuctionError

log = logging.getLogger(__name__)


def attempts_of(s: Session, job_id: str) -> list[Execution]:
    """A job's executions in attempt order: the award's (0), then its self-check fallbacks."""
    return list(
        s.exec(select(Execution).where(Execution.job_id == job_id).order_by(col(Execution.attempt)))
    )


def final_execution(s: Session, job_id: str) -> Execution | None:
    """The execution whose answer and verdict are the job's: the last attempt."""
    found = attempts_of(s, job_id)
    return found[-1] if found else None


def execution_row(s: Session, job_id: str, attempt: int) -> Execution | None:
    """A job's execution ``attempt`` (0: the award's), or None."""
    return s.exec(
        select(Execution).where(Execution.job_id == job_id, Execution.attempt == attempt)
    ).first()


def self_checked(ctx: AuctionContext, spec: TaskSpec) -> bool:
    """The job's executions are self-checked: the fallback is on and the job has checks its
    agents may see (or, with ``self_check_smoke``, any coding job)."""
    return ctx.settings.self_check_fallback > 0 and has_visible_checks(
        spec, ctx.settings.self_check_smoke
    )


def attempt_bid(ctx: AuctionContext, s: Session, job_id: str, attempt: int) -> Bid | None:
    """The bid that executes as ``attempt``: the award's for 0; for a self-check fallback, the
    best bid in the auction's ranking (score, then price; first and refined rounds, as
    :func:`decide_award` ranks them) of an agent that has not executed for this job yet, and,
    with ``self_check_escalation = "up"``, whose output price is above every executed agent's.
    An award with a chain (a verified award) escalates along it instead: attempt i is the bid of
    the chain's i-th agent. None when no such bid is left."""
    award = s.exec(select(Award).where(Award.job_id == job_id)).one()
    if attempt == 0:
        return s.get(Bid, award.bid_id)
    if award.chain:
        return (
            bid_row(s, job_id, award.chain[attempt], award.round)
            if attempt < len(award.chain)
            else None
        )
    executed = {e.agent for e in attempts_of(s, job_id) if e.attempt < attempt}
    prices = {a.name: a.output_price for a in ctx.pool.agents}
    scored = [
        b
        for b in ok_bids(s, job_id, "first") + ok_bids(s, job_id, "refined")
        if b.score is not None
    ]
    ranked = auction.ranking([candidate(ctx, b) for b in scored])
    best = auction.fallback_pick(ranked, executed, prices, ctx.settings.self_check_escalation)
    if best is None:
        return None
    return next(b for b in scored if b.id == best.bid_id)


def plan_fallback(ctx: AuctionContext, job_id: str, attempt: int) -> str | None:
    """After execution ``attempt``: the agent that executes next, or None (the job goes on to
    the memory update). There is a next attempt when this one's self-check failed, fewer than
    ``self_check_fallback`` fallbacks ran, and a bid of an agent that has not executed is left.
    The hand-over (or why there is none) is noted on the job, once."""
    with session_scope(ctx.db_url) as s:
        done = execution_row(s, job_id, attempt)
        if done is None or done.self_check != "failed":
            return None
        limit = ctx.settings.self_check_fallback
        nxt = attempt_bid(ctx, s, job_id, attempt + 1) if attempt < limit else None
        chain = s.exec(select(Award.chain).where(Award.job_id == job_id)).first()
    failed = f"self-check of {done.agent} failed (attempt {attempt})"
    if attempt >= limit:
        add_note(ctx, job_id, f"{failed}; no fallback left (SALE_SELF_CHECK_FALLBACK={limit})")
        return None
    if nxt is None and chain:
        add_note(ctx, job_id, f"{failed}; the award's chain ends here")
        return None
    if nxt is None:
        costlier = " costlier" if ctx.settings.self_check_escalation != "ranking" else ""
        add_note(ctx, job_id, f"{failed}; no bid of another{costlier} agent left to fall back to")
        return None
    add_note(ctx, job_id, f"{failed}: fallback {attempt + 1} to {nxt.agent} ({nxt.round} bid)")
    log.info("job %s: %s, falling back to %s", job_id, failed, nxt.agent)
    return nxt.agent


def run_execution(
    ctx: AuctionContext,
    job_id: str,
    progress: Callable[[int, str | None], None] | None = None,
    attempt: int = 0,
    carried: dict[str, float] | None = None,
) -> int:
    """An agent executes its own plan; stores the trace, the self-check and the verdict.

    Attempt 0 is the award's agent, later attempts the fallbacks of :func:`attempt_bid`. With
    ``self_check_fallback`` on, a coding job's answer is run on the prompt's examples (never the
    hidden tests) and a search job's answer is checked for grounding in what its agent read.
    ``progress(step, last_tool)`` is called after each step (the task publishes it to Flower).
    ``carried``: the paid calls of earlier tries that a transient error cut short; they open
    the trace as one ``retried`` step, so the execution's cost counts them. Idempotent: one
    Execution per (job, attempt).
    """
    with session_scope(ctx.db_url) as s:
        existing = execution_row(s, job_id, attempt)
        if existing is not None and existing.id is not None:
            return existing.id
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        bid = attempt_bid(ctx, s, job_id, attempt)
        if bid is None or bid.id is None:
            raise AuctionError(job_id, f"no bid left to execute as attempt {attempt}")
        style = prompt_style(ctx, spec.kind)
        # plan mode "generic": the auction picks the agent, which runs a direct job's plan.
        plan = DIRECT_PLAN if style.plan_mode == "generic" else bid.plan or ""
    agent = ctx.pool.get(bid.agent)
    max_tokens = min(ctx.settings.execute_max_tokens, spec.limits.max_tokens)
    outcome = EXECUTORS[spec.kind](
        spec, plan, agent, model_caller(ctx, job_id), max_tokens, progress=progress, style=style
    )
    if carried:
        outcome.steps.insert(0, retried_step(carried))
    verdict = judge_answer(spec, outcome.answer)
    if outcome.error and verdict.value == "unknown":
        detail = f"execution failed: {outcome.error}"
    else:
        detail = verdict.detail
    observations = [st.observation or "" for st in outcome.steps]
    check = (
        self_check(
            spec,
            outcome.answer,
            observations=observations,
            smoke=ctx.settings.self_check_smoke,
            answer_types=ctx.settings.search_answer_types,
        )
        if self_checked(ctx, spec) and outcome.stop_reason != "job_stopped"
        else None
    )
    execution = Execution(
        job_id=job_id,
        attempt=attempt,
        agent=bid.agent,
        bid_id=bid.id,
        status="failed" if outcome.error else "done",
        answer=outcome.answer,
        stop_reason=outcome.stop_reason,
        error=outcome.error,
        tokens_in=outcome.tokens_in,
        tokens_out=outcome.tokens_out,
        cost_usd=outcome.cost_usd,
        latency_s=sum(st.latency_s for st in outcome.steps),
        verdict=verdict.value,
        verdict_detail=detail,
        self_check=check.value if check else None,
        self_check_detail=check.detail if check else None,
    )
    try:
        with session_scope(ctx.db_url) as s:
            s.add(execution)
            s.flush()
            assert execution.id is not None
            for i, st in enumerate(outcome.steps):
                s.add(
                    ExecutionStep(
                        execution_id=execution.id,
                        index=i,
                        role=st.role,
                        content=st.content,
                        tool_name=st.tool_name,
                        tool_args=st.tool_args,
                        observation=st.observation,
                        tokens_in=st.tokens_in,
                        tokens_out=st.tokens_out,
                        cost_usd=st.cost_usd,
                        latency_s=st.latency_s,
                    )
                )
            return execution.id
    except IntegrityError:
        with session_scope(ctx.db_url) as s:
            again = execution_row(s, job_id, attempt)
            assert again is not None and again.id is not None
            return again.id


def retried_step(carried: dict[str, float]) -> Step:
    """The trace step that stands for the paid calls of tries a transient error cut short."""
    return Step(
        role="retried",
        content=f"{int(carried.get('calls', 0))} paid model call(s) of earlier tries, cut short "
        "by transient model errors",
        tokens_in=int(carried.get("tokens_in", 0)),
        tokens_out=int(carried.get("tokens_out", 0)),
        cost_usd=float(carried.get("cost_usd", 0.0)),
    )


def add_paid(carried: dict[str, float] | None, paid: dict[str, float] | None) -> dict[str, float]:
    """``carried`` plus ``paid`` (the usage of one more try cut short)."""
    out = dict(carried or {})
    for key, value in (paid or {}).items():
        out[key] = out.get(key, 0) + value
    return out


def record_failed_execution(
    ctx: AuctionContext,
    job_id: str,
    error: str,
    attempt: int = 0,
    carried: dict[str, float] | None = None,
) -> None:
    """Record an execution whose model could not be reached after every retry; ``carried``:
    the paid calls of its tries, counted in its tokens and cost.

    With ``self_check_fallback`` on, a job with visible examples records a failed self-check
    (no code was produced), so the next-best bid gets the job.
    """
    with session_scope(ctx.db_url) as s:
        bid = attempt_bid(ctx, s, job_id, attempt)
        spec = job_spec(load_job(s, job_id, ctx.db_url))
    if bid is None or bid.id is None:
        raise AuctionError(job_id, f"no bid left to execute as attempt {attempt}")
    checkable = spec.tests is not None or spec.answer is not None
    check = self_checked(ctx, spec)
    paid = retried_step(carried or {})
    insert_once(
        ctx,
        Execution(
            job_id=job_id,
            attempt=attempt,
            agent=bid.agent,
            bid_id=bid.id,
            status="failed",
            stop_reason="model_error",
            error=error,
            tokens_in=paid.tokens_in,
            tokens_out=paid.tokens_out,
            cost_usd=paid.cost_usd,
            verdict="failed" if checkable else "unknown",
            verdict_detail=f"execution failed: {error}",
            self_check="failed" if check else None,
            self_check_detail=f"no {'code' if spec.kind == 'coding' else 'answer'} was produced"
            if check
            else None,
        ),
    )
