"""Unit tests for sale.workers.auction.estimates: success estimates from verified outcomes on
hand-computed cases, and a calibration check on synthetic memories with planted pass rates."""

from __future__ import annotations

import numpy as np
import pytest
from sale.workers.auction.estimates import (
    EstimatorParams,
    Outcome,
    attempt_cost,
    brier,
    check_behaviour,
    kind_rate,
    p_pass,
    record_counts,
)

X = [1.0, 0.0]
Y = [0.0, 1.0]


def test_an_empty_memory_gives_the_honest_prior() -> None:
    assert p_pass([], X, "small") == 0.5
    assert p_pass([], X, "small", EstimatorParams(mu0=0.3)) == pytest.approx(0.3)
    assert check_behaviour([], "small") == (0.5, 0.5)


def test_the_kind_rate_is_shrunk_toward_the_prior_mean() -> None:
    memory = [Outcome(X, "a", True)] * 3 + [Outcome(Y, "a", False), Outcome(X, "b", False)]
    # (3 passes + 2 · 0.5) / (4 attempts + 2) = 4/6
    assert kind_rate(memory, "a", EstimatorParams()) == pytest.approx(4 / 6)
    assert record_counts(memory, "a") == (3, 4)
    # k = 0 is the kind rate alone; another agent's outcomes do not count.
    assert p_pass(memory, Y, "a", EstimatorParams(k=0)) == pytest.approx(4 / 6)
    assert p_pass(memory, X, "b", EstimatorParams(k=0)) == pytest.approx(1 / 3)


def test_neighbours_are_weighted_by_similarity_over_the_kind_rate_prior() -> None:
    memory = [Outcome(X, "a", True), Outcome(Y, "a", False)]
    # r = (1 + 1) / (2 + 2) = 0.5; query (0.6, 0.8): similarities 0.6 (pass), 0.8 (fail)
    # P = (0.6·1 + 0.8·0 + 2·0.5) / (0.6 + 0.8 + 2) = 1.6 / 3.4
    assert p_pass(memory, [0.6, 0.8], "a", EstimatorParams(k=2)) == pytest.approx(1.6 / 3.4)
    # k = 1 keeps the nearest only: (0 + 1) / (0.8 + 2)
    assert p_pass(memory, [0.6, 0.8], "a", EstimatorParams(k=1)) == pytest.approx(1 / 2.8)
    # An opposite record weighs nothing (negative similarity clipped to 0): the prior stands.
    assert p_pass(memory[:1], [-1.0, 0.0], "a", EstimatorParams(k=1)) == pytest.approx(2 / 3)


def test_outcomes_without_a_comparable_embedding_count_in_the_kind_rate_only() -> None:
    # Outcomes recorded with SALE_EMBEDDER=none carry an empty embedding.
    memory = [Outcome(X, "a", True), Outcome([], "a", False)]
    # r = (1 + 1) / (2 + 2) = 0.5 over both; the one neighbour (similarity 1) passed:
    # P = (1·1 + 2·0.5) / (1 + 2)
    assert p_pass(memory, X, "a", EstimatorParams(k=2)) == pytest.approx(2 / 3)
    # With no embedder at all, the estimate is the kind rate.
    assert p_pass(memory, [], "a", EstimatorParams(k=2)) == pytest.approx(0.5)


def test_self_check_behaviour_is_shrunk_toward_the_acceptance_rate() -> None:
    memory = [
        Outcome(X, "a", True, self_check=True),
        Outcome(X, "a", True, self_check=True),
        Outcome(X, "a", False, self_check=True),
        Outcome(X, "a", False, self_check=False),
        Outcome(X, "a", False, self_check=None),  # unchecked: ignored
    ]
    # accepted 3 of 4 checked: a = 4/6; s = (2 + 2a) / (2 + 2), f = (1 + 2a) / (2 + 2)
    s, f = check_behaviour(memory, "a")
    assert s == pytest.approx((2 + 4 / 3) / 4)
    assert f == pytest.approx((1 + 4 / 3) / 4)


def test_a_check_that_never_accepts_is_not_credited_with_accepting_passes() -> None:
    memory = [Outcome(X, "a", i < 2, self_check=False) for i in range(20)]
    s, f = check_behaviour(memory, "a")
    # a = 1/22; s = (0 + 2/22) / (2 + 2), far below the uninformed 0.5
    assert s == pytest.approx((2 / 22) / 4)
    assert f == pytest.approx((2 / 22) / 20)


def test_attempt_cost_is_the_mean_past_cost_else_price_times_typical_tokens() -> None:
    memory = [
        Outcome(X, "a", True, cost_usd=0.002, tokens=1000),
        Outcome(X, "a", False, cost_usd=0.004, tokens=3000),
        Outcome(X, "a", False),  # cost not recorded: left out of the mean
    ]
    assert attempt_cost(memory, "a", 0.36) == pytest.approx(0.003)
    # b never ran: 0.12 $/Mt × the mean recorded tokens (2000)
    assert attempt_cost(memory, "b", 0.12) == pytest.approx(0.12 * 2000 / 1e6)
    assert attempt_cost([], "b", 0.12, default_tokens=1000) == pytest.approx(0.12 * 1000 / 1e6)


def test_brier_score() -> None:
    assert brier([1.0, 0.0, 0.5], [True, False, True]) == pytest.approx(0.25 / 3)
    assert np.isnan(brier([], []))


def _unit(v: np.ndarray) -> list[float]:
    return [float(x) for x in v / np.linalg.norm(v)]


def test_estimates_recover_a_planted_rate_and_are_calibrated() -> None:
    rng = np.random.default_rng(7)
    dim = 16
    memory = [
        Outcome(_unit(rng.normal(size=dim)), "a", bool(rng.random() < 0.3)) for _ in range(400)
    ]
    queries = [_unit(rng.normal(size=dim)) for _ in range(1000)]
    ys = [bool(rng.random() < 0.3) for _ in queries]
    probs = [p_pass(memory, q, "a") for q in queries]
    # No structure in the tasks: the estimates centre on the planted rate, and score about as
    # well as knowing it (Brier 0.3 · 0.7 = 0.21).
    assert abs(float(np.mean(probs)) - 0.3) < 0.03
    assert brier(probs, ys) < 0.21 + 0.03


def test_neighbours_separate_planted_clusters_better_than_the_kind_rate() -> None:
    rng = np.random.default_rng(11)
    dim = 16
    centres = {0.9: rng.normal(size=dim) * 3, 0.1: rng.normal(size=dim) * 3}

    def draw(n: int) -> list[tuple[list[float], bool]]:
        out = []
        for i in range(n):
            rate = 0.9 if i % 2 else 0.1
            out.append((_unit(centres[rate] + rng.normal(size=dim)), bool(rng.random() < rate)))
        return out

    memory = [Outcome(e, "a", y) for e, y in draw(300)]
    held_out = draw(1000)
    knn = [p_pass(memory, e, "a", EstimatorParams(k=15)) for e, _ in held_out]
    rate = [p_pass(memory, e, "a", EstimatorParams(k=0)) for e, _ in held_out]
    ys = [y for _, y in held_out]
    assert brier(knn, ys) < brier(rate, ys) - 0.05
    # Calibrated: in each cluster the mean estimate is near the planted rate.
    for parity, planted in ((0, 0.1), (1, 0.9)):
        mean_p = float(np.mean([knn[i] for i in range(len(ys)) if i % 2 == parity]))
        assert abs(mean_p - planted) < 0.1
