"""The jury's scores as the scorer uses them: who is called, and what its stored scores become.

Three options of the mechanism ("a trustworthy jury"), all off by default and off under
``SALE_MECHANISM=paper``: ``jury_min_weight`` calls only jurors whose weight in the weights file
reaches it (the others are scored as abstaining, so the weights keep the meaning ``sale fit``
gave them); ``jury_degenerate = "abstain"`` treats a juror whose scores of a round are all equal
as abstaining for that round; ``jury_debias = "standardize"`` replaces each juror's scores of a
round by ``sale.workers.auction.scoring.standardize``. Both are computed from the stored raw
``JuryScore``
rows at scoring time, per (juror, round), so the per-bid jury mode (one call per bid) is covered
as well as the batched one, the raw scores stay stored, and a redelivered scoring task computes
the same thing. The transformed values (γ) are written to each memory bid as ``gamma`` next to
the raw ``jury``; ``sale fit`` reads ``gamma`` when present, so it fits the values the scorer saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sale.broker.settings import Settings
from sale.models.tables import Bid, JuryCall, JuryScore
from sale.workers.auction import scoring as auction
from sale.workers.auction.weights import Weights
from sqlmodel import Session, col, select


def called_jurors(names: Sequence[str], weights: Weights, min_weight: float) -> list[str]:
    """The jurors to call: all of ``names``, less those weighing below ``min_weight`` (if > 0)."""
    if min_weight <= 0:
        return list(names)
    return [n for n in names if weights.juror(n) >= min_weight]


@dataclass
class JuryGammas:
    """Each bid's γ per juror (None: abstained) and the jurors found degenerate per round."""

    by_bid: dict[int, dict[str, float | None]] = field(default_factory=dict)
    degenerate: dict[tuple[str, str], str] = field(default_factory=dict)  # (round, juror) -> why


def jury_gammas(
    s: Session, bids: Sequence[Bid], jurors: Sequence[str], settings: Settings
) -> JuryGammas:
    """γ_j(b) for ``bids`` from the stored scores, after the validity check and debiasing."""
    rounds: dict[str, dict[str, dict[int, float]]] = {}
    ids = [b.id for b in bids if b.id is not None]
    round_of = {b.id: b.round for b in bids}
    rows = s.exec(select(JuryScore).where(col(JuryScore.bid_id).in_(ids))).all()
    for r in rows:
        if r.juror in jurors:
            by_juror = rounds.setdefault(round_of[r.bid_id], {})
            by_juror.setdefault(r.juror, {})[r.bid_id] = float(r.score)
    out = JuryGammas(by_bid={i: {j: None for j in jurors} for i in ids})
    for round_, by_juror in rounds.items():
        if settings.jury_degenerate == "abstain":
            for juror in auction.constant_jurors(by_juror):
                scores = by_juror.pop(juror)
                value = next(iter(scores.values()))
                out.degenerate[(round_, juror)] = (
                    f"degenerate: constant scores (all {value:g} over {len(scores)} bids)"
                )
        if settings.jury_debias == "standardize":
            by_juror = auction.standardize(by_juror)
        for juror, by_bid in by_juror.items():
            for bid_id, gamma in by_bid.items():
                out.by_bid[bid_id][juror] = gamma
    return out


def mark_degenerate(
    s: Session, job_id: str, degenerate: dict[tuple[str, str], str]
) -> list[tuple[str, str, str]]:
    """Record degenerate jurors on their jury calls: status abstained, the reason as the error.

    Returns the (round, juror, reason) newly recorded (a repeated scoring records nothing new).
    """
    marked = []
    for (round_, juror), why in degenerate.items():
        calls = s.exec(
            select(JuryCall).where(
                JuryCall.job_id == job_id, JuryCall.juror == juror, JuryCall.round == round_
            )
        ).all()
        for call in calls:
            if call.status != "abstained":
                call.status = "abstained"
                call.error = why
                s.add(call)
                marked.append((round_, juror, why))
    return marked
