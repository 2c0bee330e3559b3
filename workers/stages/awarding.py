"""Scoring and the award: who gets the job, by auction, by name, or by the memory shortcut.

Each successful bid is scored as its cost term less its value (entropy and the weighted jury);
the first round picks the provisional winner and the cheaper agents that refine from memory, and
:func:`decide_award` awards over both rounds. A direct job gets one ``direct`` bid of
:data:`DIRECT_PLAN` and an award without an auction; the memory shortcut gives the job to the
agent the nearest memory records agree on, and awards it on that agent's one ``shortcut`` bid. A
term dropped (no log-probabilities, no juror called) is noted on the job. Idempotent: one award
per job, and a redelivery finds it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sale.models.db import session_scope
from sale.models.tables import Award, Bid
from sale.workers.auction import scoring as auction
from sale.workers.context import AuctionContext
from sale.workers.jobs import add_note, insert_once, job_embedding, load_job, memory_entry
from sale.workers.memory.index import memory_index, nearest_records
from sale.workers.memory.retrieval import build_pairs, shortcut_agent
from sale.workers.stages.bidding import bid_row, ok_bids
from sale.workers.stages.judging import jury_panel
from sale.workers.stages.jury_scores import jury_gammas, mark_degenerate
from sqlmodel import Session, select

from sale.errors import AuctionError

log = logging.getLogger(__name__)


DIRECT = "direct"  # the round of a job assigned to a named agent without an auction
SHORTCUT = "shortcut"  # the round of a job memory awarded without an auction (memory_shortcut)
VERIFIED = "verified"  # the round of a job awarded by verified outcomes (award=verified)
#: Rounds whose bids no agent wrote for an auction (the generic plan): their records take no
#: retrieval slot for refinement pairs or the shortcut.
NO_AUCTION = (DIRECT, VERIFIED)
DIRECT_PLAN = (
    "1. Read the task and restate what the answer must be. 2. Work it out step by step with "
    "the tools. 3. Check your answer with the tools where you can and fix what is wrong. "
    "4. Give the final answer."
)


@dataclass(frozen=True)
class FirstRoundOutcome:
    """What happens after the first round: who refines, from which memory records."""

    provisional_agent: str
    refiners: dict[str, list[int]]  # agent -> memory record ids to draw pairs from


def _score_bids(ctx: AuctionContext, s: Session, job_id: str, bids: list[Bid]) -> bool:
    """Compute and store C, V and score for ``bids``; returns whether entropy was used."""
    use_entropy = all(b.entropy is not None for b in bids)
    w = ctx.weights.for_kind(load_job(s, job_id, ctx.db_url).kind, ctx.pool.names)
    # Every pool juror counts; one not called (jury_min_weight) or abstaining is imputed.
    jurors = ctx.pool.names
    weights = w.juror_weights(jurors)
    gammas = jury_gammas(s, bids, jurors, ctx.settings)
    for round_, juror, why in mark_degenerate(s, job_id, gammas.degenerate):
        log.warning("job %s: juror %s abstains in %s round: %s", job_id, juror, round_, why)
    terms = []
    for bid in bids:
        assert bid.id is not None
        price = ctx.pool.get(bid.agent).output_price
        terms.append(auction.BidTerms(price, bid.tokens_out, bid.entropy, gammas.by_bid[bid.id]))
    for bid, scored in zip(bids, auction.score_bids(terms, w.w_c, w.w_h, weights), strict=True):
        bid.cost_term, bid.value, bid.score = scored.cost, scored.value, scored.score
        s.add(bid)
    return use_entropy


def candidate(ctx: AuctionContext, bid: Bid) -> auction.Candidate:
    """A scored bid as the auction ranks it: id, agent, the agent's output price, score."""
    assert bid.id is not None and bid.score is not None
    return auction.Candidate(bid.id, bid.agent, ctx.pool.get(bid.agent).output_price, bid.score)


def _note_jury_panel(ctx: AuctionContext, job_id: str, kind: str) -> None:
    """Say on the job which jurors ``jury_min_weight`` left uncalled, or that none was called."""
    panel = jury_panel(ctx, kind)
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
        winner = auction.provisional_winner([candidate(ctx, b) for b in bids])
        job.provisional_winner = winner.agent
        s.add(job)
        kind = job.kind
    if not use_entropy:
        add_note(ctx, job_id, "entropy term dropped: a bid came without log-probabilities")
        log.warning("job %s: entropy term dropped (missing log-probabilities)", job_id)
    _note_jury_panel(ctx, job_id, kind)
    if not ctx.settings.refine:
        add_note(ctx, job_id, "refinement off (SALE_REFINE=false)")
        return FirstRoundOutcome(winner.agent, {})
    prices = {b.agent: ctx.pool.get(b.agent).output_price for b in bids}
    eligible = auction.refinement_eligible(prices, winner.price)
    refiners: dict[str, list[int]] = {}
    # Direct and verified jobs had no auction: they would take retrieval slots and give no pairs.
    if eligible and memory_index(ctx.db_url).count(kind, NO_AUCTION):
        query = job_embedding(ctx, job_id)
        hits = nearest_records(ctx.db_url, kind, query, ctx.settings.memory_k, NO_AUCTION)
        near = [memory_entry(r) for r, _sim in hits]
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
        provisional = auction.provisional_winner([candidate(ctx, b) for b in first])
        final = auction.final_award(provisional, [candidate(ctx, b) for b in refined])
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
    insert_once(ctx, award)
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
    insert_once(
        ctx, Bid(job_id=job_id, agent=agent_name, round=DIRECT, status="ok", plan=DIRECT_PLAN)
    )
    with session_scope(ctx.db_url) as s:
        bid = bid_row(s, job_id, agent_name, DIRECT)
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
    insert_once(ctx, award)
    add_note(ctx, job_id, f"direct: assigned to {agent_name}, no auction")
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()


def memory_shortcut(ctx: AuctionContext, job_id: str) -> str | None:
    """The agent the memory shortcut gives the job to without an auction, or None.

    Off unless ``memory_shortcut`` > 0. Among the ``max(memory_k, memory_shortcut_min)``
    memory records of the job's kind nearest its task (direct jobs' records excluded: no
    auction, no agent's plan), :func:`sale.workers.memory.retrieval.shortcut_agent` decides: at
    least
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
    if "first" in rounds or SHORTCUT in rounds:
        return None if "first" in rounds else rounds[SHORTCUT]
    least = ctx.settings.memory_shortcut_min
    if memory_index(ctx.db_url).count(kind, NO_AUCTION) < least:
        return None
    query = job_embedding(ctx, job_id)
    hits = nearest_records(ctx.db_url, kind, query, max(ctx.settings.memory_k, least), NO_AUCTION)
    near = [(memory_entry(r), sim) for r, sim in hits]
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
    insert_once(ctx, award)
    with session_scope(ctx.db_url) as s:
        return s.exec(select(Award).where(Award.job_id == job_id)).one()
