"""The verified award: the ordered escalation chain of least expected cost (pure).

For each pool agent a (ascending price) the award knows p_a = P(pass) for this job, c_a = the
expected US$ of one attempt, and its self-check's behaviour s_a = P(check passes | pass),
f_a = P(check passes | fail) (:mod:`sale.workers.auction.estimates`). A chain is a non-empty
subset of the pool in ascending price, a_1 < … < a_n. Each a_i with i < n runs; if its
self-check passes its answer is the job's (a pass with probability p_i·s_i, a wrongly accepted
failure with (1 − p_i)·f_i); otherwise (e_i = p_i·(1 − s_i) + (1 − p_i)·(1 − f_i)) the next
agent runs, and the last agent's answer stands. A job whose self-check cannot run (a coding
prompt without examples: ``checkable=False``) accepts every answer, so only its first agent
runs. Attempts are taken as independent given the estimates (optimistic for escalation: on the
recorded runs the 1.5B fails more often where the 0.5B fails):

    E[success] = Σ_{i<n} (Π_{j<i} e_j)·p_i·s_i + (Π_{j<n} e_j)·p_n
    E[cost]    = auction + Σ_{i≤n} (Π_{j<i} e_j)·c_i

The award is the chain of least E[cost] whose E[success] is at least the best allowed chain's
minus ``tol`` (``floor="best"``; ``floor="largest"``: the largest agent's p minus ``tol``).
A chain may not start with an agent the memory shows to fail the kind (:func:`barred`), except
the largest agent alone, which is always allowed. Ties go to the higher E[success], then to
the shorter chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Literal

from sale.workers.auction.estimates import (
    AgentTotals,
    EstimatorParams,
    Near,
    Outcome,
    attempt_cost_of,
    check_behaviour_of,
    neighbours,
    p_pass_near,
    rate_of,
    totals,
)

Floor = Literal["best", "largest"]


@dataclass(frozen=True)
class AgentView:
    """What the award knows of one agent for this job."""

    name: str
    price: float
    p_pass: float
    cost: float
    check_pass_if_pass: float
    check_pass_if_fail: float


@dataclass(frozen=True)
class Choice:
    """The chosen chain with its expected success and expected cost."""

    chain: tuple[str, ...]
    success: float
    cost: float


@dataclass(frozen=True)
class ChainParams:
    """The award's parameters: the estimator, the tolerance under the floor, the floor, and the
    bar (an agent with at least ``bar_min_n`` attempts of the kind and a Laplace pass rate below
    ``bar_max_rate`` is not tried first)."""

    estimator: EstimatorParams = field(default_factory=EstimatorParams)
    tol: float = 0.02
    floor: Floor = "best"
    bar_min_n: int = 5
    bar_max_rate: float = 0.15
    check_strength: float = 2.0


def chain_value(
    chain: Sequence[AgentView], checkable: bool = True, auction_cost: float = 0.0
) -> tuple[float, float]:
    """(E[success], E[cost]) of running ``chain`` in order (module docstring)."""
    reach = 1.0
    success = 0.0
    cost = auction_cost
    for i, a in enumerate(chain):
        cost += reach * a.cost
        if i == len(chain) - 1:
            success += reach * a.p_pass
            break
        s, f = (a.check_pass_if_pass, a.check_pass_if_fail) if checkable else (1.0, 1.0)
        success += reach * a.p_pass * s
        reach *= a.p_pass * (1.0 - s) + (1.0 - a.p_pass) * (1.0 - f)
    return success, cost


def chains(agents: Sequence[AgentView], max_len: int | None = None) -> list[tuple[AgentView, ...]]:
    """Every non-empty subset of ``agents`` in ascending price (then name), up to ``max_len``
    agents long (None: any length), shortest first."""
    pool = sorted(agents, key=lambda a: (a.price, a.name))
    top = len(pool) if max_len is None else max(1, min(max_len, len(pool)))
    return [c for n in range(1, top + 1) for c in combinations(pool, n)]


def barred(
    counts: Mapping[str, tuple[int, int]], min_n: int = 5, max_rate: float = 0.15, keep: str = ""
) -> frozenset[str]:
    """Agents the memory shows to fail the kind: at least ``min_n`` attempts and a Laplace pass
    rate (passes + 1) / (n + 2) below ``max_rate``; never ``keep``. ``counts``: agent ->
    (passes, attempts)."""
    return frozenset(
        a
        for a, (passes, n) in counts.items()
        if a != keep and n >= min_n and (passes + 1) / (n + 2) < max_rate
    )


def choose(
    agents: Sequence[AgentView],
    tol: float,
    checkable: bool = True,
    barred_first: frozenset[str] = frozenset(),
    auction_cost: float = 0.0,
    floor: Floor = "best",
    max_len: int | None = None,
) -> Choice:
    """The chain of least expected cost meeting the floor (module docstring)."""
    if not agents:
        raise ValueError("no agent to award: the pool is empty")
    largest = max(agents, key=lambda a: (a.price, a.name))
    allowed = [
        c for c in chains(agents, max_len) if c[0].name not in barred_first or c == (largest,)
    ]
    values = {c: chain_value(c, checkable, auction_cost) for c in allowed}
    if floor == "best":
        bar = max(succ for succ, _ in values.values()) - tol
    else:
        bar = largest.p_pass - tol
    best: Choice | None = None
    for c in allowed:
        succ, cost = values[c]
        if succ < bar - 1e-12:
            continue
        cand = Choice(tuple(a.name for a in c), succ, cost)
        if best is None or (cost, -succ, len(c)) < (best.cost, -best.success, len(best.chain)):
            best = cand
    assert best is not None  # [largest] alone, or the best chain, meets the floor
    return best


def agent_views_from(
    by_agent: Mapping[str, AgentTotals],
    near: Mapping[str, Near],
    prices: Mapping[str, float],
    params: ChainParams = ChainParams(),
) -> list[AgentView]:
    """Each pool agent as the award sees it, from every agent's totals over the kind and each
    pool agent's neighbours of the job (at least ``params.estimator.k`` of them when the
    memory holds that many; an agent missing from ``near`` has none)."""
    views = []
    for name, price in sorted(prices.items(), key=lambda kv: (kv[1], kv[0])):
        mine = by_agent.get(name, AgentTotals())
        s, f = check_behaviour_of(mine, params.check_strength)
        prior = rate_of(mine, params.estimator)
        views.append(
            AgentView(
                name,
                price,
                p_pass_near(near.get(name, ()), prior, params.estimator),
                attempt_cost_of(by_agent, name, price),
                s,
                f,
            )
        )
    return views


def agent_views(
    outcomes: Sequence[Outcome],
    query: Sequence[float],
    prices: Mapping[str, float],
    params: ChainParams = ChainParams(),
) -> list[AgentView]:
    """Each pool agent as the award sees it for the job embedded as ``query``: ``outcomes`` are
    the memory's verified attempts of the job's kind, ``prices`` the agents' US$ per million
    tokens (what an attempt's tokens cost when the memory has no attempt of the agent)."""
    k = params.estimator.k
    near = {name: neighbours(outcomes, query, name, k) for name in prices}
    return agent_views_from(totals(outcomes), near, prices, params)


def award_chain_from(
    by_agent: Mapping[str, AgentTotals],
    near: Mapping[str, Near],
    prices: Mapping[str, float],
    params: ChainParams = ChainParams(),
    checkable: bool = True,
    max_len: int | None = None,
    auction_cost: float = 0.0,
) -> tuple[Choice, list[AgentView], frozenset[str]]:
    """:func:`award_chain` from the agents' totals and neighbours (:func:`agent_views_from`)."""
    views = agent_views_from(by_agent, near, prices, params)
    largest = max(views, key=lambda a: (a.price, a.name)).name
    empty = AgentTotals()
    counts = {
        v.name: (by_agent.get(v.name, empty).passes, by_agent.get(v.name, empty).attempts)
        for v in views
    }
    bar = barred(counts, params.bar_min_n, params.bar_max_rate, keep=largest)
    choice = choose(views, params.tol, checkable, bar, auction_cost, params.floor, max_len)
    return choice, views, bar


def award_chain(
    outcomes: Sequence[Outcome],
    query: Sequence[float],
    prices: Mapping[str, float],
    params: ChainParams = ChainParams(),
    checkable: bool = True,
    max_len: int | None = None,
    auction_cost: float = 0.0,
) -> tuple[Choice, list[AgentView], frozenset[str]]:
    """The verified award of one job: (the chosen chain, the agents as seen, the barred ones)."""
    k = params.estimator.k
    near = {name: neighbours(outcomes, query, name, k) for name in prices}
    return award_chain_from(
        totals(outcomes), near, prices, params, checkable, max_len, auction_cost
    )
