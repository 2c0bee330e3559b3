"""Unit tests for sale.workers.auction.chains: expected success and cost of escalation chains
and the verified award's choice, on hand-computed cases."""

from __future__ import annotations

import pytest
from sale.workers.auction.chains import (
    AgentView,
    ChainParams,
    award_chain,
    barred,
    chain_value,
    chains,
    choose,
)
from sale.workers.auction.estimates import Outcome

# name, price, P(pass), cost of an attempt, P(check passes | pass), P(check passes | fail)
SMALL = AgentView("small", 0.12, 0.5, 1.0, 0.9, 0.1)
LARGE = AgentView("large", 0.36, 0.8, 3.0, 0.9, 0.2)
TINY = AgentView("tiny", 0.03, 0.05, 0.2, 0.5, 0.5)


def names(cs: list[tuple[AgentView, ...]]) -> list[tuple[str, ...]]:
    return [tuple(a.name for a in c) for c in cs]


def test_chains_are_subsets_in_ascending_price_shortest_first() -> None:
    assert names(chains([LARGE, SMALL, TINY])) == [
        ("tiny",),
        ("small",),
        ("large",),
        ("tiny", "small"),
        ("tiny", "large"),
        ("small", "large"),
        ("tiny", "small", "large"),
    ]
    assert names(chains([LARGE, SMALL], max_len=1)) == [("small",), ("large",)]


def test_chain_value_by_hand() -> None:
    # small escalates with e = 0.5·0.1 + 0.5·0.9 = 0.5
    # E[success] = 0.5·0.9 + 0.5·0.8 = 0.85; E[cost] = 1 + 0.5·3 = 2.5
    assert chain_value([SMALL, LARGE]) == pytest.approx((0.85, 2.5))
    # plus an auction's cost
    assert chain_value([SMALL, LARGE], auction_cost=0.25) == pytest.approx((0.85, 2.75))
    # Unchecked: the first answer stands.
    assert chain_value([SMALL, LARGE], checkable=False) == pytest.approx((0.5, 1.0))
    assert chain_value([LARGE]) == pytest.approx((0.8, 3.0))


def test_three_agent_chain_by_hand() -> None:
    # tiny: e1 = 0.05·0.5 + 0.95·0.5 = 0.5; small: e2 = 0.5
    # success = 0.05·0.5 + 0.5·0.5·0.9 + 0.25·0.8 = 0.025 + 0.225 + 0.2 = 0.45
    # cost = 0.2 + 0.5·1 + 0.25·3 = 1.45
    assert chain_value([TINY, SMALL, LARGE]) == pytest.approx((0.45, 1.45))


def test_choose_takes_the_cheapest_chain_within_tol_of_the_best() -> None:
    # [small] 0.5 @ 1, [large] 0.8 @ 3, [small, large] 0.85 @ 2.5: the best, and cheaper.
    assert choose([SMALL, LARGE], tol=0.02).chain == ("small", "large")
    # An uninformative check: e = 0.5, success = 0.25 + 0.4 = 0.65 < 0.8 - 0.02.
    blind = AgentView("small", 0.12, 0.5, 1.0, 0.5, 0.5)
    got = choose([blind, LARGE], tol=0.02)
    assert (got.chain, got.success, got.cost) == (("large",), pytest.approx(0.8), 3.0)
    # A wide tolerance lets the small agent alone through.
    assert choose([blind, LARGE], tol=0.35).chain == ("small",)


def test_floor_largest_compares_with_the_largest_agent_alone() -> None:
    blind = AgentView("small", 0.12, 0.7, 1.0, 0.5, 0.5)
    # small→large: 0.7·0.5 + 0.5·0.8 = 0.75 @ 2.5; floor 0.8 - 0.15: small alone (0.7 @ 1).
    assert choose([blind, LARGE], tol=0.15, floor="largest").chain == ("small",)
    # floor 0.8 - 0.05 = 0.75: small→large just qualifies and is cheaper than large alone.
    assert choose([blind, LARGE], tol=0.05, floor="largest").chain == ("small", "large")
    assert choose([blind, LARGE], tol=0.04, floor="largest").chain == ("large",)


def test_a_barred_agent_is_not_tried_first_and_max_len_limits_escalation() -> None:
    assert choose([SMALL, LARGE], 0.02, barred_first=frozenset({"small"})).chain == ("large",)
    assert choose([SMALL, LARGE], 0.02, max_len=1).chain == ("large",)
    # The largest alone is allowed even if barred (it is never barred by award_chain).
    assert choose([LARGE], 0.0, barred_first=frozenset({"large"})).chain == ("large",)
    with pytest.raises(ValueError, match="pool is empty"):
        choose([], 0.0)


def test_barred_needs_enough_attempts_and_a_low_laplace_rate() -> None:
    counts = {"tiny": (0, 5), "small": (0, 4), "medium": (1, 5), "large": (0, 9)}
    # tiny: 1/7 = 0.143 < 0.15; small: too few; medium: 2/7 = 0.29; large: kept
    assert barred(counts, 5, 0.15, keep="large") == frozenset({"tiny"})


def test_award_chain_from_a_memory() -> None:
    x, y = [1.0, 0.0], [0.0, 1.0]
    memory = (
        [Outcome(x, "small", True, self_check=True, cost_usd=0.0002)] * 6
        + [Outcome(y, "small", False, self_check=False, cost_usd=0.0002)] * 4
        + [Outcome(x, "large", True, self_check=True, cost_usd=0.0008)] * 5
        + [Outcome(x, "tiny", False, self_check=False, cost_usd=0.00005)] * 6
    )
    prices = {"tiny": 0.03, "small": 0.12, "large": 0.36}
    choice, views, bar = award_chain(memory, x, prices, ChainParams())
    assert bar == frozenset({"tiny"})  # 0 of 6: (0 + 1) / 8 < 0.15
    assert [v.name for v in views] == ["tiny", "small", "large"]
    assert choice.chain == ("small", "large")
    # A job whose answer cannot be self-checked runs one agent only.
    unchecked, _, _ = award_chain(memory, x, prices, ChainParams(), checkable=False)
    assert len(unchecked.chain) == 1
    # Empty memory: every agent at the prior, uninformative checks, price × typical tokens.
    cold, views, bar = award_chain([], x, prices)
    assert bar == frozenset() and all(v.p_pass == 0.5 for v in views)
    best = max(chain_value(c)[0] for c in chains(views))
    assert cold.success >= best - 0.02
