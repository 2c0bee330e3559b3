"""The auction's stages as plain functions: load by id, do one thing, persist, return ids.

The Celery tasks in :mod:`workers.tasks` are thin wrappers around these. Every function is
idempotent: it first looks for the row its work would produce (bid, jury call, award, execution,
memory record) and returns that instead of calling a model again, and the unique constraints of
the tables turn a lost race between two deliveries into "someone else already wrote it".
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from broker.settings import Settings
from models.db import session_scope
from models.schemas import TaskSpec
from models.tables import (
    Award,
    Bid,
    Execution,
    ExecutionStep,
    Job,
    JuryCall,
    JuryScore,
    MemoryRecord,
    StatusEvent,
    utcnow,
)
from workers import auction
from workers.errors import (
    AuctionError,
    JobNotFoundError,
    JuryParseError,
    ModelCallError,
    TransientModelError,
)
from workers.execution import EXECUTORS
from workers.jury import (
    example_object,
    parse_scores,
    presentation_order,
    render_bids,
    rotated_order,
)
from workers.juryscores import called_jurors, jury_gammas, mark_degenerate
from workers.llm import LLMCall
from workers.memory import (
    MemoryEntry,
    bid_labels,
    build_pairs,
    nearest,
    nearest_with_similarity,
    render_pairs,
    shortcut_agent,
)
from workers.pool import Pool
from workers.prompts import PromptStyle, render, task_block, task_first
from workers.selfcheck import has_visible_checks, self_check
from workers.verdict import judge_answer
from workers.weights import Weights

log = logging.getLogger(__name__)

STATUSES = (
    "queued",
    "bidding",
    "judging",
    "refining",
    "executing",
    "updating",
    "done",
    "failed",
    "cancelled",
)
TERMINAL = {"done", "failed", "cancelled"}
TOOLS = {"coding": "a Python sandbox, the task's examples", "search": "search, open document"}
DIRECT = "direct"  # the round of a job assigned to a named agent without an auction
SHORTCUT = "shortcut"  # the round of a job memory awarded without an auction (memory_shortcut)
DIRECT_PLAN = (
    "1. Read the task and restate what the answer must be. 2. Work it out step by step with "
    "the tools. 3. Check your answer with the tools where you can and fix what is wrong. "
    "4. Give the final answer."
)


@dataclass
class AuctionContext:
    """Everything a stage needs besides ids: configuration and injected callables."""

    settings: Settings
    pool: Pool
    weights: Weights
    llm: LLMCall
    embed: Callable[[list[str]], list[list[float]]]
    db_url: str = field(default="")

    def __post_init__(self) -> None:
        if not self.db_url:
            self.db_url = self.settings.effective_database_url


# --- jobs and status ----------------------------------------------------------------------


def create_job(ctx: AuctionContext, spec: TaskSpec, job_id: str) -> str:
    """Insert the job row (status queued) unless it exists; returns the id."""
    with session_scope(ctx.db_url) as s:
        if s.get(Job, job_id) is None:
            s.add(
                Job(
                    id=job_id,
                    kind=spec.kind,
                    name=spec.name,
                    prompt=spec.prompt,
                    spec=spec.model_dump(mode="json"),
                    pool_path=ctx.pool.path,
                )
            )
            s.add(StatusEvent(job_id=job_id, status="queued"))
    return job_id


def load_job(s: Session, job_id: str, db_url: str) -> Job:
    """The job row, or JobNotFoundError."""
    job = s.get(Job, job_id)
    if job is None:
        raise JobNotFoundError(job_id, db_url)
    return job


def set_status(ctx: AuctionContext, job_id: str, status: str, detail: str | None = None) -> bool:
    """Move a job forward to ``status``; never backwards, never out of a terminal state.

    Returns True when the status changed. Idempotent: a repeated transition is a no-op.
    """
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if job.status in TERMINAL:
            return False
        if status not in TERMINAL and STATUSES.index(status) <= STATUSES.index(job.status):
            return False
        job.status = status
        job.updated_at = utcnow()
        if detail is not None:
            job.status_reason = detail
        s.add(job)
        exists = s.exec(
            select(StatusEvent).where(StatusEvent.job_id == job_id, StatusEvent.status == status)
        ).first()
        if exists is None:
            s.add(StatusEvent(job_id=job_id, status=status, detail=detail))
    log.info("job %s: %s%s", job_id, status, f" ({detail})" if detail else "")
    return True


def fail_job(ctx: AuctionContext, job_id: str, reason: str) -> None:
    """Mark a job failed with a reason (idempotent; a finished job stays finished)."""
    set_status(ctx, job_id, "failed", reason)


def job_spec(job: Job) -> TaskSpec:
    """The stored task spec of a job."""
    return TaskSpec.model_validate(job.spec)


def add_note(ctx: AuctionContext, job_id: str, note: str) -> None:
    """Append a note (e.g. why a term was dropped) to a job, once."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if note not in job.notes:
            job.notes = [*job.notes, note]
            s.add(job)


# --- bids ---------------------------------------------------------------------------------


def prompt_style(ctx: AuctionContext) -> PromptStyle:
    """The prompt layout the settings ask for (task first, plan as guidance)."""
    return PromptStyle(ctx.settings.task_first_prompts, ctx.settings.plan_mode)


def job_messages(ctx: AuctionContext, spec: TaskSpec, user: str) -> list[dict[str, str]]:
    """The chat messages of a bid, refine or jury call: the system prompt, then ``user``;
    with ``task_first_prompts`` the task block heads the system message instead."""
    system = render("system")
    if ctx.settings.task_first_prompts:
        system, user = task_first(system, user, task_block(spec.kind, spec.prompt))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _bid_row(s: Session, job_id: str, agent: str, round_: str) -> Bid | None:
    return s.exec(
        select(Bid).where(Bid.job_id == job_id, Bid.agent == agent, Bid.round == round_)
    ).first()


def _insert_once(ctx: AuctionContext, row: Any) -> None:
    """Insert a row; if a concurrent delivery already inserted it, keep theirs."""
    try:
        with session_scope(ctx.db_url) as s:
            s.add(row)
    except IntegrityError:
        log.info("duplicate %s ignored (redelivered task)", type(row).__name__)


def run_bid(
    ctx: AuctionContext, job_id: str, agent_name: str, round_: str, memory_ids: list[int] | None
) -> int:
    """Collect one bid (``first``, or ``shortcut``: the same prompt) or refined bid
    (``refined``); returns the bid id.

    Raises TransientModelError for the task layer to retry; any other failure is recorded as
    a failed bid.
    """
    with session_scope(ctx.db_url) as s:
        existing = _bid_row(s, job_id, agent_name, round_)
        if existing is not None and existing.id is not None:
            return existing.id
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        own = _bid_row(s, job_id, agent_name, "first") if round_ == "refined" else None
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
        entries = [_entry(r) for r in records]
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
        result = ctx.llm(
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
    _insert_once(ctx, row)
    with session_scope(ctx.db_url) as s:
        found = _bid_row(s, job_id, agent_name, round_)
        assert found is not None and found.id is not None
        return found.id


def record_failed_bid(
    ctx: AuctionContext, job_id: str, agent_name: str, round_: str, error: str
) -> int:
    """Record a bid that could not be collected; the auction goes on without it."""
    log.warning("job %s: bid of %s (%s) failed: %s", job_id, agent_name, round_, error)
    _insert_once(
        ctx, Bid(job_id=job_id, agent=agent_name, round=round_, status="failed", error=error)
    )
    with session_scope(ctx.db_url) as s:
        found = _bid_row(s, job_id, agent_name, round_)
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


# --- jury ---------------------------------------------------------------------------------


def jury_panel(ctx: AuctionContext) -> list[str]:
    """The jurors called: the pool, less those weighing below ``jury_min_weight`` (if set)."""
    return called_jurors(ctx.pool.names, ctx.weights, ctx.settings.jury_min_weight)


def has_bids(ctx: AuctionContext, job_id: str, round_: str) -> bool:
    """Whether the round has at least one successful bid."""
    with session_scope(ctx.db_url) as s:
        return bool(ok_bids(s, job_id, round_))


def jury_targets(ctx: AuctionContext, job_id: str, round_: str) -> list[tuple[str, str]]:
    """(juror, target) pairs for a round: one per called juror (batched) or per juror × bid.

    Empty when the round has no bid, or when ``jury_min_weight`` leaves no juror (the scorer
    then drops the jury term and notes it on the job).
    """
    with session_scope(ctx.db_url) as s:
        bids = ok_bids(s, job_id, round_)
    if not bids:
        return []
    if ctx.settings.jury_mode == "batched":
        return [(j, "all") for j in jury_panel(ctx)]
    return [(j, str(b.id)) for j in jury_panel(ctx) for b in bids]


def run_jury(ctx: AuctionContext, job_id: str, juror: str, round_: str, target: str) -> int:
    """One juror's call: scores for the round's bids (or one bid); returns the JuryCall id.

    A juror whose reply is not a valid score object gets one retry with a stricter prompt,
    then abstains (recorded with the reason). Raises TransientModelError to be retried.
    """
    with session_scope(ctx.db_url) as s:
        existing = s.exec(
            select(JuryCall).where(
                JuryCall.job_id == job_id,
                JuryCall.juror == juror,
                JuryCall.round == round_,
                JuryCall.target == target,
            )
        ).first()
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
        panel = jury_panel(ctx)
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
    for attempt in range(2):
        try:
            result = ctx.llm(
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
            again = s.exec(
                select(JuryCall).where(
                    JuryCall.job_id == job_id,
                    JuryCall.juror == juror,
                    JuryCall.round == round_,
                    JuryCall.target == target,
                )
            ).one()
            assert again.id is not None
            return again.id


# --- scoring, refinement, award -----------------------------------------------------------


@dataclass(frozen=True)
class FirstRoundOutcome:
    """What happens after the first round: who refines, from which memory records."""

    provisional_agent: str
    refiners: dict[str, list[int]]  # agent -> memory record ids to draw pairs from


def _score_bids(ctx: AuctionContext, s: Session, job_id: str, bids: list[Bid]) -> bool:
    """Compute and store C, V and score for ``bids``; returns whether entropy was used."""
    use_entropy = all(b.entropy is not None for b in bids)
    # Every pool juror counts; one not called (jury_min_weight) or abstaining is imputed.
    jurors = ctx.pool.names
    weights = ctx.weights.juror_weights(jurors)
    gammas = jury_gammas(s, bids, jurors, ctx.settings)
    for round_, juror, why in mark_degenerate(s, job_id, gammas.degenerate):
        log.warning("job %s: juror %s abstains in %s round: %s", job_id, juror, round_, why)
    for bid in bids:
        assert bid.id is not None
        jv = auction.jury_value(gammas.by_bid[bid.id], weights)
        agent = ctx.pool.get(bid.agent)
        bid.cost_term = auction.cost_term(ctx.weights.w_c, agent.output_price, bid.tokens_out)
        bid.value = auction.bid_value(bid.entropy, ctx.weights.w_h, jv, use_entropy)
        bid.score = bid.cost_term - bid.value
        s.add(bid)
    return use_entropy


def _candidate(ctx: AuctionContext, bid: Bid) -> auction.Candidate:
    assert bid.id is not None and bid.score is not None
    return auction.Candidate(bid.id, bid.agent, ctx.pool.get(bid.agent).output_price, bid.score)


def _entry(r: MemoryRecord) -> MemoryEntry:
    assert r.id is not None
    return MemoryEntry(r.id, r.embedding, r.bids, r.verdict)


def job_embedding(ctx: AuctionContext, job_id: str) -> list[float]:
    """The job's task embedding, computed once and stored on the job."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        if job.embedding:
            return list(job.embedding)
        text = job.prompt
    vector = ctx.embed([text])[0]
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        job.embedding = vector
        s.add(job)
    return vector


def _note_jury_panel(ctx: AuctionContext, job_id: str) -> None:
    """Say on the job which jurors ``jury_min_weight`` left uncalled, or that none was called."""
    panel = jury_panel(ctx)
    left_out = [j for j in ctx.pool.names if j not in panel]
    if not left_out:
        return
    bar = f"SALE_JURY_MIN_WEIGHT={ctx.settings.jury_min_weight:g}"
    if not panel:
        add_note(ctx, job_id, f"jury term dropped: no juror's weight reaches {bar}")
        log.warning("job %s: jury term dropped, no juror's weight reaches %s", job_id, bar)
    else:
        add_note(ctx, job_id, f"jury subset: {', '.join(left_out)} not called (weight < {bar})")


def score_first_round(ctx: AuctionContext, job_id: str) -> FirstRoundOutcome:
    """Score the first-round bids, pick the provisional winner, and decide who refines."""
    with session_scope(ctx.db_url) as s:
        job = load_job(s, job_id, ctx.db_url)
        bids = ok_bids(s, job_id, "first")
        if not bids:
            raise AuctionError(job_id, "every bid failed; see `sale show` for each agent's error")
        use_entropy = _score_bids(ctx, s, job_id, bids)
        winner = auction.provisional_winner([_candidate(ctx, b) for b in bids])
        job.provisional_winner = winner.agent
        s.add(job)
        kind = job.kind
    if not use_entropy:
        add_note(ctx, job_id, "entropy term dropped: a bid came without log-probabilities")
        log.warning("job %s: entropy term dropped (missing log-probabilities)", job_id)
    _note_jury_panel(ctx, job_id)
    if not ctx.settings.refine:
        add_note(ctx, job_id, "refinement off (SALE_REFINE=false)")
        return FirstRoundOutcome(winner.agent, {})
    prices = {b.agent: ctx.pool.get(b.agent).output_price for b in bids}
    eligible = auction.refinement_eligible(prices, winner.price)
    refiners: dict[str, list[int]] = {}
    if eligible:
        with session_scope(ctx.db_url) as s:
            # Direct jobs had no auction: they would take retrieval slots and give no pairs.
            records = list(
                s.exec(
                    select(MemoryRecord).where(
                        MemoryRecord.kind == kind, MemoryRecord.award_round != DIRECT
                    )
                )
            )
        if records:
            query = job_embedding(ctx, job_id)
            near = nearest(query, [_entry(r) for r in records], ctx.settings.memory_k)
            for agent in eligible:
                pairs = build_pairs(
                    agent, near, ctx.settings.memory_label, ctx.settings.refine_max_pairs
                )
                if pairs:
                    # Pass the retrieved ids in order so the refine task sees this exact memory.
                    refiners[agent] = [e.record_id for e in near]
    return FirstRoundOutcome(winner.agent, refiners)


def decide_award(ctx: AuctionContext, job_id: str) -> Award:
    """Score refined bids (if any) and write the award (idempotent)."""
    with session_scope(ctx.db_url) as s:
        existing = s.exec(select(Award).where(Award.job_id == job_id)).first()
        if existing is not None:
            return existing
        first = ok_bids(s, job_id, "first")
        refined = ok_bids(s, job_id, "refined")
        if not first:
            raise AuctionError(job_id, "every bid failed; see `sale show` for each agent's error")
        use_entropy = _score_bids(ctx, s, job_id, first + refined)
        provisional = auction.provisional_winner([_candidate(ctx, b) for b in first])
        final = auction.final_award(provisional, [_candidate(ctx, b) for b in refined])
        winning = next(b for b in first + refined if b.id == final.bid_id)
        award = Award(
            job_id=job_id,
            bid_id=final.bid_id,
            agent=final.agent,
            round=winning.round,
            score=final.score,
            provisional_agent=provisional.agent,
            provisional_score=provisional.score,
        )
    if not use_entropy:
        add_note(ctx, job_id, "entropy term dropped: a bid came without log-probabilities")
    _insert_once(ctx, award)
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()


def assign_direct(ctx: AuctionContext, job_id: str, agent_name: str) -> Award:
    """Award a job to ``agent_name`` without an auction: it executes :data:`DIRECT_PLAN`.

    Stored as what happened: one ``direct`` bid (the generic plan, no model call, so zero tokens
    and cost), an award of round ``direct`` with score 0, and a job note. Raises
    UnknownAgentError before writing anything. Idempotent: a redelivery finds the award.
    """
    ctx.pool.get(agent_name)
    with session_scope(ctx.db_url) as s:
        load_job(s, job_id, ctx.db_url)
        existing = s.exec(select(Award).where(Award.job_id == job_id)).first()
        if existing is not None:
            return existing
    _insert_once(
        ctx, Bid(job_id=job_id, agent=agent_name, round=DIRECT, status="ok", plan=DIRECT_PLAN)
    )
    with session_scope(ctx.db_url) as s:
        bid = _bid_row(s, job_id, agent_name, DIRECT)
        assert bid is not None and bid.id is not None
        award = Award(
            job_id=job_id,
            bid_id=bid.id,
            agent=agent_name,
            round=DIRECT,
            score=0.0,
            provisional_agent=agent_name,
            provisional_score=0.0,
        )
    _insert_once(ctx, award)
    add_note(ctx, job_id, f"direct: assigned to {agent_name}, no auction")
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()


def memory_shortcut(ctx: AuctionContext, job_id: str) -> str | None:
    """The agent the memory shortcut gives the job to without an auction, or None.

    Off unless ``memory_shortcut`` > 0. Among the ``max(memory_k, memory_shortcut_min)``
    memory records of the job's kind nearest its task (direct jobs' records excluded: no
    auction, no agent's plan), :func:`workers.memory.shortcut_agent` decides: at least
    ``memory_shortcut_min`` records with similarity >= ``memory_shortcut``, each with a verdict,
    and in each the same cheapest agent whose executed bid passed. A decision adds a job note
    naming the records. A job whose auction has begun (first-round bids) never takes the
    shortcut; one that took it gets the same agent again (a redelivered start).
    """
    threshold = ctx.settings.memory_shortcut
    if threshold <= 0:
        return None
    with session_scope(ctx.db_url) as s:
        kind = load_job(s, job_id, ctx.db_url).kind
        rounds = {b.round: b.agent for b in s.exec(select(Bid).where(Bid.job_id == job_id))}
        records = list(
            s.exec(
                select(MemoryRecord).where(
                    MemoryRecord.kind == kind, MemoryRecord.award_round != DIRECT
                )
            )
        )
    if "first" in rounds or SHORTCUT in rounds:
        return None if "first" in rounds else rounds[SHORTCUT]
    least = ctx.settings.memory_shortcut_min
    if len(records) < least:
        return None
    query = job_embedding(ctx, job_id)
    near = nearest_with_similarity(
        query, [_entry(r) for r in records], max(ctx.settings.memory_k, least)
    )
    prices = {a.name: a.output_price for a in ctx.pool.agents}
    found = shortcut_agent(near, prices, threshold, least)
    if found is None:
        return None
    agent, record_ids = found
    add_note(
        ctx,
        job_id,
        f"memory shortcut: {agent} was the cheapest agent that passed in each of memory "
        f"records {record_ids} (similarity >= {threshold:g}); no auction",
    )
    log.info("job %s: memory shortcut to %s (records %s)", job_id, agent, record_ids)
    return agent


def award_shortcut(ctx: AuctionContext, job_id: str) -> Award | None:
    """Award the job to its ``shortcut`` bid, or None when that bid failed (run the auction).

    The one bid is scored like any bid (no jury: its value is the entropy term alone) and the
    award, of round ``shortcut``, carries that score. Idempotent: a redelivery finds the award.
    """
    with session_scope(ctx.db_url) as s:
        existing = s.exec(select(Award).where(Award.job_id == job_id)).first()
        if existing is not None:
            return existing
        bid = s.exec(select(Bid).where(Bid.job_id == job_id, Bid.round == SHORTCUT)).first()
        if bid is None or bid.status != "ok":
            return None
        _score_bids(ctx, s, job_id, [bid])
        assert bid.id is not None and bid.score is not None
        award = Award(
            job_id=job_id,
            bid_id=bid.id,
            agent=bid.agent,
            round=SHORTCUT,
            score=bid.score,
            provisional_agent=bid.agent,
            provisional_score=bid.score,
        )
    _insert_once(ctx, award)
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()


# --- execution, verdict, memory -----------------------------------------------------------


def attempts_of(s: Session, job_id: str) -> list[Execution]:
    """A job's executions in attempt order: the award's (0), then its self-check fallbacks."""
    return list(
        s.exec(select(Execution).where(Execution.job_id == job_id).order_by(col(Execution.attempt)))
    )


def final_execution(s: Session, job_id: str) -> Execution | None:
    """The execution whose answer and verdict are the job's: the last attempt."""
    found = attempts_of(s, job_id)
    return found[-1] if found else None


def attempt_bid(ctx: AuctionContext, s: Session, job_id: str, attempt: int) -> Bid | None:
    """The bid that executes as ``attempt``: the award's for 0; for a self-check fallback, the
    best bid in the auction's ranking (score, then price; first and refined rounds, as
    :func:`decide_award` ranks them) of an agent that has not executed for this job yet.
    None when no such bid is left."""
    award = s.exec(select(Award).where(Award.job_id == job_id)).one()
    if attempt == 0:
        return s.get(Bid, award.bid_id)
    executed = {e.agent for e in attempts_of(s, job_id) if e.attempt < attempt}
    left = [
        b
        for b in ok_bids(s, job_id, "first") + ok_bids(s, job_id, "refined")
        if b.score is not None and b.agent not in executed
    ]
    if not left:
        return None
    best = auction.ranking([_candidate(ctx, b) for b in left])[0]
    return next(b for b in left if b.id == best.bid_id)


def plan_fallback(ctx: AuctionContext, job_id: str, attempt: int) -> str | None:
    """After execution ``attempt``: the agent that executes next, or None (the job goes on to
    the memory update). There is a next attempt when this one's self-check failed, fewer than
    ``self_check_fallback`` fallbacks ran, and a bid of an agent that has not executed is left.
    The hand-over (or why there is none) is noted on the job, once."""
    with session_scope(ctx.db_url) as s:
        done = s.exec(
            select(Execution).where(Execution.job_id == job_id, Execution.attempt == attempt)
        ).first()
        if done is None or done.self_check != "failed":
            return None
        limit = ctx.settings.self_check_fallback
        nxt = attempt_bid(ctx, s, job_id, attempt + 1) if attempt < limit else None
    failed = f"self-check of {done.agent} failed (attempt {attempt})"
    if attempt >= limit:
        add_note(ctx, job_id, f"{failed}; no fallback left (SALE_SELF_CHECK_FALLBACK={limit})")
        return None
    if nxt is None:
        add_note(ctx, job_id, f"{failed}; no bid of another agent left to fall back to")
        return None
    add_note(ctx, job_id, f"{failed}: fallback {attempt + 1} to {nxt.agent} ({nxt.round} bid)")
    log.info("job %s: %s, falling back to %s", job_id, failed, nxt.agent)
    return nxt.agent


def run_execution(
    ctx: AuctionContext,
    job_id: str,
    progress: Callable[[int, str | None], None] | None = None,
    attempt: int = 0,
) -> int:
    """An agent executes its own plan; stores the trace, the self-check and the verdict.

    Attempt 0 is the award's agent, later attempts the fallbacks of :func:`attempt_bid`. With
    ``self_check_fallback`` on and a job whose prompt shows examples, the answer is run on them
    (the self-check; never the hidden tests). ``progress(step, last_tool)`` is called after
    each step (the task publishes it to Flower). Idempotent: one Execution per (job, attempt).
    """
    with session_scope(ctx.db_url) as s:
        existing = s.exec(
            select(Execution).where(Execution.job_id == job_id, Execution.attempt == attempt)
        ).first()
        if existing is not None and existing.id is not None:
            return existing.id
        job = load_job(s, job_id, ctx.db_url)
        spec = job_spec(job)
        bid = attempt_bid(ctx, s, job_id, attempt)
        if bid is None or bid.id is None:
            raise AuctionError(job_id, f"no bid left to execute as attempt {attempt}")
        plan = bid.plan or ""
    agent = ctx.pool.get(bid.agent)
    max_tokens = min(ctx.settings.execute_max_tokens, spec.limits.max_tokens)
    outcome = EXECUTORS[spec.kind](
        spec, plan, agent, ctx.llm, max_tokens, progress=progress, style=prompt_style(ctx)
    )
    verdict = judge_answer(spec, outcome.answer)
    if outcome.error and verdict.value == "unknown":
        detail = f"execution failed: {outcome.error}"
    else:
        detail = verdict.detail
    check = (
        self_check(spec, outcome.answer)
        if ctx.settings.self_check_fallback and has_visible_checks(spec)
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
            again = s.exec(
                select(Execution).where(Execution.job_id == job_id, Execution.attempt == attempt)
            ).one()
            assert again.id is not None
            return again.id


USAGE_STAGES = ("bid", "jury", "refine", "execute")


def job_usage(s: Session, job_id: str) -> dict[str, tuple[int, float]]:
    """(tokens, US$) of a job's model calls per stage: bid, jury, refine, execute.

    Bids of round ``first`` count as ``bid``, ``refined`` as ``refine``; a ``direct`` bid made
    no call and adds nothing.
    """
    usage = {stage: (0, 0.0) for stage in USAGE_STAGES}

    def add(stage: str, tokens: int, cost: float) -> None:
        usage[stage] = (usage[stage][0] + tokens, usage[stage][1] + cost)

    for b in s.exec(select(Bid).where(Bid.job_id == job_id)):
        add("refine" if b.round == "refined" else "bid", b.tokens_in + b.tokens_out, b.cost_usd)
    for j in s.exec(select(JuryCall).where(JuryCall.job_id == job_id)):
        add("jury", j.tokens_in + j.tokens_out, j.cost_usd)
    for e in s.exec(select(Execution).where(Execution.job_id == job_id)):
        add("execute", e.tokens_in + e.tokens_out, e.cost_usd)
    return usage


def job_totals(s: Session, job_id: str) -> tuple[int, float]:
    """(tokens, US$) over every model call of a job: bids, jury, execution."""
    usage = job_usage(s, job_id).values()
    return sum(t for t, _ in usage), sum(c for _, c in usage)


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
            # A direct bid won no auction and no agent wrote it: unlabelled, it never becomes
            # one side of a refinement pair nor a target of the weights fit.
            labelled = b.status == "ok" and b.round != DIRECT
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
                }
                for e in executions
            ],
            total_tokens=tokens,
            total_cost_usd=cost,
        )
    _insert_once(ctx, record)
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


def record_abstention(
    ctx: AuctionContext, job_id: str, juror: str, round_: str, target: str, error: str
) -> None:
    """Record a juror that could not be reached after every retry: it abstains."""
    log.warning("job %s: juror %s abstains in %s round: %s", job_id, juror, round_, error)
    _insert_once(
        ctx,
        JuryCall(
            job_id=job_id, juror=juror, round=round_, target=target, status="abstained", error=error
        ),
    )


def record_failed_execution(ctx: AuctionContext, job_id: str, error: str, attempt: int = 0) -> None:
    """Record an execution whose model could not be reached after every retry.

    With ``self_check_fallback`` on, a job with visible examples records a failed self-check
    (no code was produced), so the next-best bid gets the job.
    """
    with session_scope(ctx.db_url) as s:
        bid = attempt_bid(ctx, s, job_id, attempt)
        spec = job_spec(load_job(s, job_id, ctx.db_url))
    if bid is None or bid.id is None:
        raise AuctionError(job_id, f"no bid left to execute as attempt {attempt}")
    checkable = spec.tests is not None or spec.answer is not None
    check = ctx.settings.self_check_fallback > 0 and has_visible_checks(spec)
    _insert_once(
        ctx,
        Execution(
            job_id=job_id,
            attempt=attempt,
            agent=bid.agent,
            bid_id=bid.id,
            status="failed",
            stop_reason="model_error",
            error=error,
            verdict="failed" if checkable else "unknown",
            verdict_detail=f"execution failed: {error}",
            self_check="failed" if check else None,
            self_check_detail="no code was produced" if check else None,
        ),
    )
