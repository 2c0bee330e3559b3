"""Success estimates from verified outcomes: who passes a job, whose self-check tells, at what cost.

Pure (numpy only). The input is the memory's verified attempts of one job kind, flattened into
:class:`Outcome` rows (one per execution attempt with a verdict: awarded bids, self-check
fallbacks, direct jobs' executions alike). For a query embedding ``q`` and an agent ``a``:

    R      = outcomes of agent a,  n = |R|,  y_j ∈ {0, 1} their verdicts
    kind rate, shrunk toward the prior mean mu0 with m0 pseudo-counts:
        r_a = (Σ_{j∈R} y_j + m0·mu0) / (n + m0)
    neighbours N = the k outcomes of R most cosine-similar to q, weights w_j = max(cos, 0)
    Beta-shrunk kNN estimate (a Beta(m·r_a, m·(1 − r_a)) prior updated with the similarity-
    weighted successes and failures of the neighbours):
        P_a(q) = (Σ_{j∈N} w_j·y_j + m·r_a) / (Σ_{j∈N} w_j + m)

An empty memory gives P_a = mu0 (the honest prior, 0.5 by default); a few outcomes move the
kind rate; many close neighbours dominate. ``k = 0`` is the kind rate alone. On the recorded
30-task runs this estimator is about as well calibrated as the kind rate (Brier 0.174 against
0.184 on HumanEval, leave-one-out): most of its skill is in telling the agents apart. Also here:
the self-check's behaviour per agent (:func:`check_behaviour`), the expected cost of one attempt
(:func:`attempt_cost`) and the Brier score used to check calibration.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Tokens of an attempt assumed when the memory holds none of the kind (the recorded 30-task
#: runs' attempts averaged 2,000–3,600 tokens).
TYPICAL_TOKENS = 2500


@dataclass(frozen=True)
class Outcome:
    """One verified execution attempt in the memory: whose, on which task, how it ended."""

    embedding: Sequence[float]
    agent: str
    passed: bool
    self_check: bool | None = None  # None: no self-check ran (no visible examples)
    cost_usd: float | None = None  # None: not recorded
    tokens: int | None = None


@dataclass(frozen=True)
class EstimatorParams:
    """``k`` neighbours; ``m``: strength of the kind-rate prior on the kNN estimate; ``m0``,
    ``mu0``: strength and mean of the prior on the kind rate."""

    k: int = 5
    m: float = 2.0
    m0: float = 2.0
    mu0: float = 0.5


def record_counts(outcomes: Sequence[Outcome], agent: str) -> tuple[int, int]:
    """(passes, attempts) of ``agent`` in ``outcomes``."""
    ys = [o.passed for o in outcomes if o.agent == agent]
    return sum(ys), len(ys)


def kind_rate(outcomes: Sequence[Outcome], agent: str, p: EstimatorParams) -> float:
    """r_a: the agent's pass rate over ``outcomes``, shrunk toward ``mu0`` with ``m0``."""
    passes, n = record_counts(outcomes, agent)
    return (passes + p.m0 * p.mu0) / (n + p.m0)


def p_pass(
    outcomes: Sequence[Outcome],
    query: Sequence[float],
    agent: str,
    p: EstimatorParams = EstimatorParams(),
) -> float:
    """P_a(q): the Beta-shrunk, similarity-weighted kNN estimate of the module docstring."""
    mine = [o for o in outcomes if o.agent == agent]
    prior = kind_rate(mine, agent, p)
    # Neighbours only among outcomes embedded like the query (not those recorded with
    # SALE_EMBEDDER=none or another embedder); the kind rate counts them all.
    mine = [o for o in mine if len(o.embedding) == len(query)]
    if not mine or p.k <= 0:
        return prior
    emb = np.asarray([o.embedding for o in mine], dtype=np.float64)
    q = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(emb, axis=1) * (np.linalg.norm(q) or 1.0)
    sims = emb @ q / np.where(norms == 0, 1.0, norms)
    order = np.argsort(-sims, kind="stable")[: p.k]
    w = np.maximum(sims[order], 0.0)
    y = np.asarray([1.0 if mine[i].passed else 0.0 for i in order])
    return float((w @ y + p.m * prior) / (w.sum() + p.m))


def check_behaviour(
    outcomes: Sequence[Outcome], agent: str, strength: float = 2.0
) -> tuple[float, float]:
    """(s, f) = (P(self-check passes | pass), P(self-check passes | fail)) of ``agent``.

    Both are shrunk toward the agent's acceptance rate a = (accepted + 1) / (checked + 2) with
    ``strength`` pseudo-counts: s = (TP + strength·a) / (passes + strength), f = (FP +
    strength·a) / (fails + strength). So a check that has never accepted anything (the 135M's
    search check) is not credited with accepting its rare passes, and an empty memory gives
    s = f = 0.5 (a check that tells nothing). Attempts without a self-check are ignored.
    """
    mine = [o for o in outcomes if o.agent == agent and o.self_check is not None]
    accepted = sum(1 for o in mine if o.self_check)
    a = (accepted + 1.0) / (len(mine) + 2.0)
    tp = sum(1 for o in mine if o.passed and o.self_check)
    passes = sum(1 for o in mine if o.passed)
    fp = accepted - tp
    fails = len(mine) - passes
    return (tp + strength * a) / (passes + strength), (fp + strength * a) / (fails + strength)


def attempt_cost(
    outcomes: Sequence[Outcome],
    agent: str,
    price_per_mtok: float,
    default_tokens: int = TYPICAL_TOKENS,
) -> float:
    """Expected US$ of one attempt of ``agent``: the mean cost of its past attempts with a
    recorded cost, else ``price_per_mtok`` × a typical token count (the mean of any agent's
    recorded attempt tokens, else ``default_tokens``)."""
    costs = [o.cost_usd for o in outcomes if o.agent == agent and o.cost_usd is not None]
    if costs:
        return float(np.mean(costs))
    tokens = [o.tokens for o in outcomes if o.tokens is not None]
    typical = float(np.mean(tokens)) if tokens else float(default_tokens)
    return price_per_mtok * typical / 1e6


def brier(probs: Sequence[float], outcomes: Sequence[bool]) -> float:
    """Mean squared error of probabilities against 0/1 outcomes (nan for none)."""
    if not probs:
        return float("nan")
    pr = np.asarray(probs, dtype=np.float64)
    y = np.asarray(outcomes, dtype=np.float64)
    return float(np.mean((pr - y) ** 2))
