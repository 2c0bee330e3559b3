"""The auction's arithmetic (docs/design.md §3): cost, entropy, jury value, score, winners.

Pure functions over plain values: no Celery, no database, no network. Every formula of the
mechanism lives here so it can be tested on hand-computed cases.

- cost        ``C_i = w_c · π_i · |s_i|`` (π in US$ per million output tokens, |s| plan tokens)
- entropy     mean over plan positions of the top-k entropy, renormalised over the k returned
              alternatives and divided by ``ln k`` (so it lies in [0, 1]); ``None`` when the
              provider returned no log-probabilities
- jury value  ``Σ_j w_j · γ_j(s_i)``; an abstaining juror's score is imputed as the mean of the
              present jurors' scores for that bid (linear in w, so the fit matches the scorer);
              optional per-round validity (constant vectors) and per-juror standardisation
- value       ``V_i = w_h · H(s_i) + jury value``; the entropy term is dropped for the whole
              auction when any compared bid lacks it
- score       ``C_i − V_i``; lowest wins, ties go to the cheaper agent, then to the name
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar


def cost_term(w_c: float, output_price: float, plan_tokens: int) -> float:
    """``C = w_c · π · |s|`` with π in US$ per million tokens and |s| the plan's tokens."""
    if plan_tokens < 0:
        raise ValueError("plan_tokens must be >= 0")
    return w_c * output_price * plan_tokens


def position_entropy(top_logprobs: Sequence[float], k: int) -> float:
    """Entropy of one position's top-k distribution, renormalised over the k, divided by ln k."""
    if k < 2:
        raise ValueError("k must be >= 2 for a normalised entropy")
    lps = sorted(top_logprobs, reverse=True)[:k]
    if not lps:
        raise ValueError("a position needs at least one log-probability")
    peak = lps[0]
    # Shift by the maximum before exponentiating so very negative log-probs do not underflow.
    weights = [math.exp(lp - peak) for lp in lps]
    total = sum(weights)
    h = 0.0
    for w in weights:
        p = w / total
        if p > 0:
            h -= p * math.log(p)
    return h / math.log(k)


def plan_entropy(positions: Sequence[Sequence[float]] | None, k: int) -> float | None:
    """Mean normalised top-k entropy over a plan's positions; None when there are none."""
    if not positions:
        return None
    return sum(position_entropy(p, k) for p in positions) / len(positions)


def jury_value(scores: Mapping[str, float | None], weights: Mapping[str, float]) -> float | None:
    """``Σ_j w_j γ_j``, an abstaining juror's γ imputed as the mean of the present jurors' scores.

    ``scores`` maps every juror to its score of this bid, or None when it abstained. Imputing the
    mean keeps the jury's total weight unchanged and equals rescaling the present jurors'
    weights when the weights are equal (the default); unlike rescaling it stays linear in the
    weights, so the offline fit (``sale.workers.auction.fit``) optimises exactly the rule the
    scorer applies.
    Returns None when every juror abstained (the bid then has no extrinsic value).
    """
    present = [float(s) for s in scores.values() if s is not None]
    if not present:
        return None
    fill = sum(present) / len(present)
    return sum(weights.get(j, 0.0) * (fill if s is None else float(s)) for j, s in scores.items())


RoundScores = Mapping[str, Mapping[int, float]]  # juror -> {bid id: score} for one round


def constant_jurors(scores: RoundScores) -> list[str]:
    """Jurors whose scores of a round cover ≥ 2 bids and are all equal (a degenerate vector).

    A constant vector ranks nothing; with ``jury_degenerate = "abstain"`` such a juror abstains
    for the round and its γ is imputed like any abstention.
    """
    return sorted(
        j for j, by_bid in scores.items() if len(by_bid) >= 2 and len(set(by_bid.values())) == 1
    )


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def standardize(scores: RoundScores) -> dict[str, dict[int, float]]:
    """Each juror's scores of a round z-scored over the bids it scored, then mapped onto the jury.

    ``γ'_j(b) = μ + σ · (γ_j(b) − μ_j) / σ_j`` with μ_j, σ_j juror j's mean and (population)
    standard deviation over the round, μ the mean of the jurors' means and σ the mean of their
    non-zero deviations. A lenient or harsh juror (shift) and one that uses only part of the scale
    (spread) then count alike; mapping back onto the jury's own level and spread keeps the 0–5
    scale that the weights (w_c, w_h against γ) were set or fitted on, and keeps a round's
    absolute level, which a refined round is compared on. A juror with σ_j = 0 (constant, or one
    bid) says nothing about the order of the bids: it gets μ for each.
    """
    stats = {j: _mean_std(list(by_bid.values())) for j, by_bid in scores.items() if by_bid}
    if not stats:
        return {j: {} for j in scores}
    mu = sum(m for m, _ in stats.values()) / len(stats)
    spreads = [sd for _, sd in stats.values() if sd > 0]
    sigma = sum(spreads) / len(spreads) if spreads else 0.0
    out: dict[str, dict[int, float]] = {}
    for juror, by_bid in scores.items():
        m, sd = stats.get(juror, (0.0, 0.0))
        out[juror] = {b: mu + sigma * (s - m) / sd if sd > 0 else mu for b, s in by_bid.items()}
    return out


def bid_value(entropy: float | None, w_h: float, jury: float | None, use_entropy: bool) -> float:
    """``V = w_h · H + jury value`` (a missing term contributes nothing, by design)."""
    value = 0.0
    if use_entropy:
        if entropy is None:
            raise ValueError("use_entropy is set but this bid has no entropy")
        value += w_h * entropy
    if jury is not None:
        value += jury
    return value


@dataclass(frozen=True)
class BidTerms:
    """What one bid's score is computed from: the bidder's output price (US$ per million
    tokens), the plan's length in tokens, its entropy (None when missing) and each juror's
    score of it (None when that juror abstained; empty when no juror is called)."""

    price: float
    tokens: int
    entropy: float | None
    jury: Mapping[str, float | None]


@dataclass(frozen=True)
class BidScore:
    """One bid's ``C``, ``V`` and ``score = C − V``."""

    cost: float
    value: float
    score: float


def score_bids(
    bids: Sequence[BidTerms], w_c: float, w_h: float, juror_weights: Mapping[str, float]
) -> list[BidScore]:
    """Score the bids of one auction round: ``C − V`` per bid, in order.

    The one scoring rule of the mechanism: the scorer, the offline fit and the replays all call
    it, so the fit optimises exactly the rule the award applies. The entropy term is dropped for
    the whole round when any bid lacks entropy; a bid every juror abstained on (or one scored
    with no juror) has no jury term.
    """
    use_entropy = all(b.entropy is not None for b in bids)
    scored = []
    for b in bids:
        jury = jury_value({j: b.jury.get(j) for j in juror_weights}, juror_weights)
        cost = cost_term(w_c, b.price, b.tokens)
        value = bid_value(b.entropy, w_h, jury, use_entropy)
        scored.append(BidScore(cost, value, cost - value))
    return scored


@dataclass(frozen=True)
class Candidate:
    """What the winner rules need to know about one scored bid."""

    bid_id: int
    agent: str
    price: float
    score: float


def _rank_key(c: Candidate) -> tuple[float, float, str]:
    return (c.score, c.price, c.agent)


def provisional_winner(candidates: Sequence[Candidate]) -> Candidate:
    """argmin score; ties go to the cheaper agent, then to the alphabetically first name."""
    if not candidates:
        raise ValueError("no candidates")
    return min(candidates, key=_rank_key)


def ranking(candidates: Sequence[Candidate]) -> list[Candidate]:
    """All candidates, best first, by the same rule as the winner."""
    return sorted(candidates, key=_rank_key)


class _Bidder(Protocol):
    @property
    def agent(self) -> str: ...


B = TypeVar("B", bound=_Bidder)


def fallback_pick(
    ranked: Sequence[B], executed: Collection[str], prices: Mapping[str, float], escalation: str
) -> B | None:
    """The first of ``ranked`` (bids or candidates, best first) that executes next: with no
    agent executed yet, the first; after a failed self-check, the first of an agent that has not
    executed, and with ``escalation`` "up" only of one priced above every agent that has (a
    failure never falls back to a cheaper agent; "chain", for an award without a chain, as
    "up"). None when no such bid is left. The job's fallbacks and their replays all pick by
    this rule."""
    floor = -1.0  # "ranking": any agent's bid
    if escalation in ("up", "chain"):
        floor = max((prices.get(agent, 0.0) for agent in executed), default=floor)
    return next(
        (b for b in ranked if b.agent not in executed and prices.get(b.agent, 0.0) > floor), None
    )


def refinement_eligible(prices: Mapping[str, float], winner_price: float) -> list[str]:
    """Agents strictly cheaper than the provisional winner, cheapest first."""
    return sorted(
        (name for name, price in prices.items() if price < winner_price),
        key=lambda n: (prices[n], n),
    )


def final_award(provisional: Candidate, refined: Sequence[Candidate]) -> Candidate:
    """The lowest-scoring refined bid that beats the provisional winner, else the provisional."""
    better = [c for c in refined if c.score < provisional.score]
    if not better:
        return provisional
    return min(better, key=_rank_key)
