"""The jury: each called juror scores a round's bids, all in one call or one bid per call.

The panel is the pool less the jurors weighing below ``jury_min_weight``; a juror sees the bids
under labels, in a shuffled (or rotated) order of its own. A reply that is not a valid score
object gets one retry with a stricter prompt, then the juror abstains, as does a juror that
could not be reached after every retry; an abstention is recorded with its reason. Idempotent:
one jury call per (job, juror, round, target), looked up before any model call.
"""

from __future__ import annotations

import logging

from sale.models.db import session_scope
from sale.models.tables import JuryCall, JuryScore
from sale.workers.auction.jury import (
    example_object,
    parse_scores,
    presentation_order,
    render_bids,
    rotated_order,
)
from sale.workers.context import AuctionContext
from sale.workers.gate import model_caller
from sale.workers.jobs import insert_once, job_messages, job_spec, load_job
from sale.workers.prompts import render
from sale.workers.stages.bidding import ok_bids
from sale.workers.stages.jury_scores import called_jurors
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from sale.errors import JuryParseError, ModelCallError, TransientModelError

log = logging.getLogger(__name__)


def jury_panel(ctx: AuctionContext, kind: str) -> list[str]:
    """The jurors called for a job of this kind: the pool, less those whose weight for the kind
    is below ``jury_min_weight`` (if set)."""
    weights = ctx.weights.for_kind(kind, ctx.pool.names)
    return called_jurors(ctx.pool.names, weights, ctx.settings.jury_min_weight)


def jury_targets(ctx: AuctionContext, job_id: str, round_: str) -> list[tuple[str, str]]:
    """(juror, target) pairs for a round: one per called juror (batched) or per juror × bid.

    Empty when the round has no bid, or when ``jury_min_weight`` leaves no juror (the scorer
    then drops the jury term and notes it on the job).
    """
    with session_scope(ctx.db_url) as s:
        bids = ok_bids(s, job_id, round_)
        kind = load_job(s, job_id, ctx.db_url).kind
    if not bids:
        return []
    panel = jury_panel(ctx, kind)
    if ctx.settings.jury_mode == "batched":
        return [(j, "all") for j in panel]
    return [(j, str(b.id)) for j in panel for b in bids]


def _jury_call_row(
    s: Session, job_id: str, juror: str, round_: str, target: str
) -> JuryCall | None:
    """The juror's call for this round and target, or None."""
    return s.exec(
        select(JuryCall).where(
            JuryCall.job_id == job_id,
            JuryCall.juror == juror,
            JuryCall.round == round_,
            JuryCall.target == target,
        )
    ).first()


def run_jury(ctx: AuctionContext, job_id: str, juror: str, round_: str, target: str) -> int:
    """One juror's call: scores for the round's bids (or one bid); returns the JuryCall id.

    A juror whose reply is not a valid score object gets one retry with a stricter prompt,
    then abstains (recorded with the reason). Raises TransientModelError to be retried.
    """
    with session_scope(ctx.db_url) as s:
        existing = _jury_call_row(s, job_id, juror, round_, target)
        if existing is not None and existing.id is not None:
            return existing.id
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        bids = ok_bids(s, job_id, round_)
    if target != "all":
        bids = [b for b in bids if str(b.id) == target]
    shown = [(b.id or 0, b.agent, b.plan or "") for b in bids]
    seed = ctx.settings.shuffle_seed
    if ctx.settings.jury_debias == "rotate":
        panel = jury_panel(ctx, spec.kind)
        index = panel.index(juror) if juror in panel else ctx.pool.names.index(juror)
        presented = rotated_order(shown, seed=seed, job_id=job_id, round_=round_, index=index)
    else:
        presented = presentation_order(shown, seed=seed, job_id=job_id, juror=juror, round_=round_)
    labels = [p.label for p in presented]
    agent = ctx.pool.get(juror)
    common = dict(kind=spec.kind, prompt=spec.prompt, bids=render_bids(presented))
    prompt = render("jury", example=example_object(labels), **common)
    tokens_in = tokens_out = 0
    cost = latency = 0.0
    replies: list[str] = []
    scores: dict[str, int] | None = None
    error: str | None = None
    llm = model_caller(ctx, job_id)
    for attempt in range(2):
        try:
            result = llm(
                agent,
                job_messages(ctx, spec, prompt),
                stage="jury",
                max_tokens=ctx.settings.jury_max_tokens,
                timeout=ctx.settings.llm_timeout_s,
            )
        except ModelCallError as exc:
            if isinstance(exc, TransientModelError) and not replies:
                raise
            error = str(exc)
            break
        tokens_in += result.tokens_in
        tokens_out += result.tokens_out
        cost += result.cost_usd
        latency += result.latency_s
        replies.append(result.text)
        try:
            scores = parse_scores(result.text, labels)
            error = None
            break
        except JuryParseError as exc:
            error = exc.reason
            if attempt == 0:
                prompt = render(
                    "jury_strict",
                    example=example_object(labels),
                    labels=", ".join(labels),
                    reason=exc.reason,
                    **common,
                )
    status = "ok" if scores is not None else "abstained"
    if status == "abstained":
        log.warning("job %s: juror %s abstains in %s round: %s", job_id, juror, round_, error)
    call = JuryCall(
        job_id=job_id,
        juror=juror,
        round=round_,
        target=target,
        status=status,
        order=[{"label": p.label, "bid_id": p.bid_id, "agent": p.agent} for p in presented],
        reply="\n\n--- retry ---\n\n".join(replies) or None,
        retried=len(replies) > 1,
        error=error,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=cost,
        latency_s=latency,
    )
    try:
        with session_scope(ctx.db_url) as s:
            s.add(call)
            s.flush()
            assert call.id is not None
            for p in presented:
                if scores is not None:
                    s.add(
                        JuryScore(
                            jury_call_id=call.id,
                            job_id=job_id,
                            bid_id=p.bid_id,
                            juror=juror,
                            score=scores[p.label],
                        )
                    )
            return call.id
    except IntegrityError:
        with session_scope(ctx.db_url) as s:
            again = _jury_call_row(s, job_id, juror, round_, target)
            assert again is not None and again.id is not None
            return again.id


def record_abstention(
    ctx: AuctionContext, job_id: str, juror: str, round_: str, target: str, error: str
) -> None:
    """Record a juror that could not be reached after every retry: it abstains."""
    log.warning("job %s: juror %s abstains in %s round: %s", job_id, juror, round_, error)
    insert_once(
        ctx,
        JuryCall(
            job_id=job_id, juror=juror, round=round_, target=target, status="abstained", error=error
        ),
    )
