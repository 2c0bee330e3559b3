"""The methods that only pick an agent, computed from recorded single-agent outcomes (replay).

Each agent alone runs every task live through the queue (``single:<agent>``). A method that only
*chooses* an agent — random, the description-only routers, the oracles — then replays the
recorded outcome of the agent it chose, which is exact when decoding is deterministic
(temperature 0, as in the pool files) and is reported as replay. The cascade replays too: it
runs agents cheapest first, exactly as the single-agent runs did, and stops at the first whose
answer passes the self-check (a check the agent may see: a coding task's docstring examples, a
search answer found in what the agent read); its cost is the sum over every agent it tried.

Routers never see test outcomes: they are fitted on the train split's single-agent outcomes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Outcome = Mapping[str, Any]  # one single-agent run record (see sale.scripts.evals.runner)
Outcomes = Mapping[str, Mapping[str, Outcome]]  # task_id -> agent -> record

#: A router picks the cheapest agent whose estimated pass probability is within this margin of
#: the best estimate (cost-aware routing in the style of CARROT's cost-quality trade-off).
ROUTER_MARGIN = 0.1
KNN_K = 5


@dataclass(frozen=True)
class Pick:
    """What a replay method did on one task: the agent whose answer counts, and every agent run."""

    agent: str
    tried: tuple[str, ...]


def cheapest_first(prices: Mapping[str, float]) -> list[str]:
    """Agents by output price, cheapest first (ties by name)."""
    return sorted(prices, key=lambda a: (prices[a], a))


def pick_random(agents: Sequence[str], rng: random.Random) -> Pick:
    """A uniformly random agent."""
    agent = rng.choice(list(agents))
    return Pick(agent, (agent,))


def pick_oracle(outcomes: Mapping[str, Outcome], prices: Mapping[str, float]) -> Pick:
    """The cheapest agent that passed alone; if none passed, the cheapest agent (it fails)."""
    order = cheapest_first(prices)
    for agent in order:
        if outcomes.get(agent, {}).get("passed"):
            return Pick(agent, (agent,))
    return Pick(order[0], (order[0],))


def pick_oracle_small(
    outcomes: Mapping[str, Outcome], prices: Mapping[str, float], largest: str
) -> Pick:
    """The oracle without foresight of the largest agent: the cheapest other agent that passed
    alone, else the largest (which may fail). It reaches the largest agent's pass@1 or more at
    the lowest cost any router can that does not know in advance when the largest will fail:
    the floor under every method that keeps the largest agent for what the others miss."""
    for agent in cheapest_first(prices):
        if agent != largest and outcomes.get(agent, {}).get("passed"):
            return Pick(agent, (agent,))
    return Pick(largest, (largest,))


def pick_cascade(outcomes: Mapping[str, Outcome], prices: Mapping[str, float]) -> Pick:
    """Cheapest first; escalate while the self-check fails; the last agent's answer stands."""
    order = cheapest_first(prices)
    tried: list[str] = []
    for agent in order:
        tried.append(agent)
        if outcomes.get(agent, {}).get("self_check"):
            break
    return Pick(tried[-1], tuple(tried))


def pick_by_auction(
    bids: Sequence[Mapping[str, Any]],
    outcomes: Mapping[str, Outcome],
    prices: Mapping[str, float],
    fallbacks: int,
    escalation: str,
) -> Pick | None:
    """The agent a recorded memoryless auction awards (its first-round bids ranked by their
    recorded scores, as the job ranked them), then, while that agent's answer fails its
    self-check and fallbacks are left, the one the job falls back to (``escalation`` "up": the
    best bid of an agent pricier than every one tried; "ranking": the next-best bid of an agent
    not tried). With each agent running a direct job's generic plan (``plan_mode=generic``),
    every try is that agent's single-agent run. None when no bid was scored."""
    from sale.workers.auction.scoring import Candidate, fallback_pick, ranking

    scored = [
        b
        for b in bids
        if b.get("status") == "ok" and b.get("round") == "first" and b.get("score") is not None
    ]
    if not scored:
        return None
    ranked = ranking(
        [Candidate(i, str(b["agent"]), prices[str(b["agent"])], float(b["score"]))
         for i, b in enumerate(scored)]
    )  # fmt: skip
    tried: list[str] = []
    for _ in range(fallbacks + 1):
        nxt = fallback_pick(ranked, tried, prices, escalation)
        if nxt is None:
            break
        tried.append(nxt.agent)
        if outcomes.get(nxt.agent, {}).get("self_check") is not False:
            break
    return Pick(tried[-1], tuple(tried))


def replay_first_attempt(job: Mapping[str, Any]) -> dict[str, Any] | None:
    """A recorded memoryless SALE job as it would have ended without self-check fallbacks
    (``self_check_fallback=0``): the auction it paid for and its first execution attempt, the
    award's, which is what such a job executes. The attempt's share of the job's execution wall
    time is its share of the attempts' model-call seconds (of their tokens when a record
    predates those). None when the record lists no attempts (made before they were recorded)."""
    attempts = sorted(job.get("executions") or [], key=lambda e: int(e.get("attempt") or 0))
    if not attempts:
        return None
    first = attempts[0]
    weight = "latency_s" if all(e.get("latency_s") is not None for e in attempts) else "tokens"
    total = sum(float(e.get(weight) or 0.0) for e in attempts)
    share = float(first.get(weight) or 0.0) / total if total > 0 else 1.0
    wall = float(job.get("execution_wall_s") or 0.0) * share
    check = first.get("self_check")
    return {
        "agent": str(first["agent"]),
        "tried": [str(first["agent"])],
        "verdict": first.get("verdict") or "unknown",
        "passed": first.get("verdict") == "passed",
        "self_check": None if check is None else check == "passed",
        "stop_reason": first.get("stop_reason"),
        "attempts": 1,
        "tokens": int(job["auction_tokens"]) + int(first.get("tokens") or 0),
        "auction_tokens": int(job["auction_tokens"]),
        "cost_usd": float(job["auction_cost_usd"]) + float(first.get("cost_usd") or 0.0),
        "auction_cost_usd": float(job["auction_cost_usd"]),
        "wall_s": float(job["auction_wall_s"]) + wall,
        "auction_wall_s": float(job["auction_wall_s"]),
        "replayed": True,
    }


#: The methods that read nothing but the task's recorded single-agent outcomes.
OUTCOME_METHODS = ("oracle", "oracle-small", "cascade")


def pick_from_outcomes(
    method: str, outcomes: Mapping[str, Outcome], prices: Mapping[str, float], largest: str
) -> Pick:
    """The pick of one of :data:`OUTCOME_METHODS` on a task with these outcomes."""
    if method == "oracle":
        return pick_oracle(outcomes, prices)
    if method == "oracle-small":
        return pick_oracle_small(outcomes, prices, largest)
    if method == "cascade":
        return pick_cascade(outcomes, prices)
    raise ValueError(f"{method!r} is not one of {', '.join(OUTCOME_METHODS)}")


def cost_aware_choice(
    estimates: Mapping[str, float], prices: Mapping[str, float], margin: float = ROUTER_MARGIN
) -> str:
    """The cheapest agent whose estimated pass probability is within ``margin`` of the best."""
    best = max(estimates.values())
    for agent in cheapest_first(prices):
        if estimates[agent] >= best - margin:
            return agent
    raise AssertionError("unreachable: the best agent is always within the margin")


@dataclass
class TrainingSet:
    """The train split's single-agent outcomes with the task embeddings."""

    task_ids: list[str]
    embeddings: np.ndarray[Any, np.dtype[np.float64]]
    passed: dict[str, np.ndarray[Any, np.dtype[np.float64]]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        outcomes: Outcomes,
        texts: Mapping[str, str],
        agents: Sequence[str],
        embed: Callable[[list[str]], list[list[float]]],
    ) -> TrainingSet:
        """Keep the train tasks every agent has an outcome for."""
        ids = sorted(t for t in outcomes if all(a in outcomes[t] for a in agents))
        if not ids:
            raise ValueError(
                "no train task has an outcome for every agent: run the single-agent methods on "
                "the train split first (sale eval runs them when a router is asked for)"
            )
        vectors = np.asarray(embed([texts[t] for t in ids]), dtype=np.float64)
        passed = {
            a: np.asarray([1.0 if outcomes[t][a].get("passed") else 0.0 for t in ids])
            for a in agents
        }
        return cls(ids, vectors, passed)


class KnnRouter:
    """Estimates each agent's pass probability as its pass rate on the k nearest train tasks."""

    name = "knn"

    def __init__(self, train: TrainingSet, prices: Mapping[str, float], k: int = KNN_K) -> None:
        self.train = train
        self.prices = dict(prices)
        self.k = min(k, len(train.task_ids))

    def estimates(self, vector: Sequence[float]) -> dict[str, float]:
        """Pass-rate estimates for one task embedding (cosine: the embeddings are unit-norm)."""
        sims = self.train.embeddings @ np.asarray(vector, dtype=np.float64)
        near = np.argsort(-sims, kind="stable")[: self.k]
        return {a: float(p[near].mean()) for a, p in self.train.passed.items()}

    def pick(self, vector: Sequence[float]) -> Pick:
        agent = cost_aware_choice(self.estimates(vector), self.prices)
        return Pick(agent, (agent,))


class ClassifierRouter:
    """One L2-regularised logistic regression per agent on the task embedding (pass / fail).

    An agent whose train outcomes are all the same gets that constant rate (Laplace-smoothed),
    since a classifier cannot be fitted on one class.
    """

    name = "classifier"

    def __init__(self, train: TrainingSet, prices: Mapping[str, float], c: float = 1.0) -> None:
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        self.prices = dict(prices)
        self.models: dict[str, Any] = {}
        self.constant: dict[str, float] = {}
        for agent, y in train.passed.items():
            if y.min() == y.max():
                self.constant[agent] = (float(y.sum()) + 1.0) / (len(y) + 2.0)
            else:
                model = LogisticRegression(C=c, max_iter=1000)
                model.fit(train.embeddings, y.astype(int))
                self.models[agent] = model

    def estimates(self, vector: Sequence[float]) -> dict[str, float]:
        x = np.asarray([vector], dtype=np.float64)
        out = dict(self.constant)
        for agent, model in self.models.items():
            out[agent] = float(model.predict_proba(x)[0][1])
        return out

    def pick(self, vector: Sequence[float]) -> Pick:
        agent = cost_aware_choice(self.estimates(vector), self.prices)
        return Pick(agent, (agent,))


def replay(pick: Pick, outcomes: Mapping[str, Outcome]) -> dict[str, Any]:
    """The run record of a replayed pick: the chosen agent's outcome, costs summed over tried."""
    chosen = outcomes[pick.agent]
    tried = [outcomes[a] for a in pick.tried]
    return {
        "agent": pick.agent,
        "tried": list(pick.tried),
        "verdict": chosen["verdict"],
        "passed": bool(chosen["passed"]),
        "tokens": sum(int(t["tokens"]) for t in tried),
        "auction_tokens": 0,
        "cost_usd": sum(float(t["cost_usd"]) for t in tried),
        "auction_cost_usd": 0.0,
        "wall_s": sum(float(t["wall_s"]) for t in tried),
        "auction_wall_s": 0.0,
        "replayed": True,
    }


def pick_cascade_checked(outcomes: Mapping[str, Outcome], chain: Sequence[str]) -> Pick:
    """The agents of ``chain`` in order, escalating only on a failed self-check (an answer that
    could not be self-checked stands), as the queue's self-check fallbacks do."""
    tried: list[str] = []
    for agent in chain:
        tried.append(agent)
        if outcomes.get(agent, {}).get("self_check") is not False:
            break
    return Pick(tried[-1], tuple(tried))


class VerifiedAwardReplay:
    """``SALE_AWARD=verified`` replayed on the recorded single-agent runs (exact at temperature
    0: a verified award executes a direct job's generic plan, as the single-agent runs did, and
    collects no bids). The memory starts with the train split's single-agent outcomes (every
    agent on every train task) and grows with the attempts the award ran on the stream, each
    outcome what the recorded run of that agent gave (verdict, self-check, tokens, cost)."""

    name = "verified-award"

    def __init__(
        self,
        train: Outcomes,
        train_vectors: Mapping[str, Sequence[float]],
        prices: Mapping[str, float],
        max_len: int,
        params: Any = None,
    ) -> None:
        from sale.workers.auction.chains import ChainParams

        self.prices = dict(prices)
        self.max_len = max_len
        self.params = params or ChainParams()
        self.memory = [
            _outcome(train_vectors[t], agent, rec)
            for t in sorted(train)
            if t in train_vectors
            for agent, rec in sorted(train[t].items())
            if agent in self.prices
        ]

    def pick(
        self, vector: Sequence[float], outcomes: Mapping[str, Outcome], checkable: bool
    ) -> Pick:
        """Choose the chain for one task, run it on the recorded outcomes, remember what ran."""
        from sale.workers.auction.chains import award_chain

        choice, _, _ = award_chain(
            self.memory, vector, self.prices, self.params, checkable, self.max_len
        )
        pick = pick_cascade_checked(outcomes, choice.chain)
        self.memory += [_outcome(vector, a, outcomes[a]) for a in pick.tried]
        return pick


def _outcome(vector: Sequence[float], agent: str, rec: Outcome) -> Any:
    from sale.workers.auction.estimates import Outcome as Verified

    check = rec.get("self_check")
    return Verified(
        list(vector),
        agent,
        bool(rec.get("passed")),
        None if check is None else bool(check),
        float(rec.get("cost_usd") or 0.0),
        int(rec.get("tokens") or 0),
    )
