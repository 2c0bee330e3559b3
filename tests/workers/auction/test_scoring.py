"""Unit tests for sale.workers.auction.scoring: the mechanism's arithmetic on hand-computed cases
(docs/design.md §3)."""

from __future__ import annotations

import math

import pytest
from sale.workers.auction.scoring import (
    Candidate,
    bid_value,
    constant_jurors,
    cost_term,
    fallback_pick,
    final_award,
    jury_value,
    plan_entropy,
    position_entropy,
    provisional_winner,
    ranking,
    refinement_eligible,
    standardize,
)

LN = math.log

# --- cost ---------------------------------------------------------------------------------


def test_cost_term_is_w_c_times_price_times_tokens() -> None:
    # C = 0.01 · 0.36 $/Mt · 200 tokens = 0.72
    assert cost_term(0.01, 0.36, 200) == pytest.approx(0.72)
    # C = 2 · 0.03 · 100 = 6.0
    assert cost_term(2.0, 0.03, 100) == pytest.approx(6.0)


def test_cost_term_of_an_empty_plan_is_zero() -> None:
    assert cost_term(0.01, 0.36, 0) == 0.0


def test_cost_term_rejects_negative_tokens() -> None:
    with pytest.raises(ValueError, match="plan_tokens"):
        cost_term(0.01, 0.36, -1)


# --- entropy ------------------------------------------------------------------------------


def test_uniform_top_k_has_entropy_one() -> None:
    # Five equal alternatives: H = ln 5, normalised by ln 5 → 1.
    assert position_entropy([LN(0.2)] * 5, 5) == pytest.approx(1.0)
    # The absolute level does not matter after renormalisation: 5 × ln(0.01) is uniform too.
    assert position_entropy([LN(0.01)] * 5, 5) == pytest.approx(1.0)


def test_one_hot_has_entropy_near_zero() -> None:
    # p ≈ (1, e^-50, …): H ≈ 4 · 50 · e^-50 ≈ 4e-20, far below any tolerance.
    h = position_entropy([0.0, -50.0, -50.0, -50.0, -50.0], 5)
    assert 0.0 <= h < 1e-15


def test_two_way_split_with_k_two_is_one() -> None:
    # p = (.5, .5): H = ln 2, divided by ln 2 → 1.
    assert position_entropy([LN(0.5), LN(0.5)], 2) == pytest.approx(1.0)


def test_two_alternatives_with_k_five_divides_by_ln_five() -> None:
    # Only two alternatives returned: H = ln 2, but the scale is still ln k = ln 5.
    # ln 2 / ln 5 = 0.6931 / 1.6094 = 0.43068
    h = position_entropy([LN(0.5), LN(0.5)], 5)
    assert h == pytest.approx(LN(2) / LN(5))
    assert h == pytest.approx(0.43068, abs=1e-5)


def test_entropy_renormalises_over_the_k_alternatives() -> None:
    # The top-5 mass is .4+.2+.2+.1+.05 = .95; renormalised p = (.4, .2, .2, .1, .05) / .95
    # = (.42105, .21053, .21053, .10526, .05263).
    # H = −Σ p ln p = .36422 + 2·.32803 + .23698 + .15497 = 1.41222; / ln 5 = 0.87746.
    raw = [0.4, 0.2, 0.2, 0.1, 0.05]
    renormalised = [x / 0.95 for x in raw]
    expected = -sum(p * LN(p) for p in renormalised) / LN(5)
    h = position_entropy([LN(x) for x in raw], 5)
    assert h == pytest.approx(expected)
    assert h == pytest.approx(0.87746, abs=1e-4)
    # Without renormalisation it would be −Σ q ln q / ln 5 = 0.86386: clearly different.
    assert h != pytest.approx(-sum(q * LN(q) for q in raw) / LN(5), abs=1e-3)


def test_entropy_keeps_only_the_top_k() -> None:
    # Seven alternatives, k = 2: only the two largest (ln .5, ln .5) count → 1.0.
    lps = [LN(0.01), LN(0.5), LN(0.02), LN(0.5), LN(0.03), LN(0.04), LN(0.05)]
    assert position_entropy(lps, 2) == pytest.approx(1.0)


def test_entropy_order_of_alternatives_does_not_matter() -> None:
    a = [LN(0.6), LN(0.3), LN(0.1)]
    assert position_entropy(a, 3) == pytest.approx(position_entropy(list(reversed(a)), 3))


def test_entropy_rejects_k_below_two_and_empty_positions() -> None:
    with pytest.raises(ValueError):
        position_entropy([0.0], 1)
    with pytest.raises(ValueError):
        position_entropy([], 5)


@pytest.mark.parametrize("positions", [None, []])
def test_plan_entropy_is_none_without_positions(positions: list[list[float]] | None) -> None:
    assert plan_entropy(positions, 5) is None


def test_plan_entropy_is_the_mean_over_positions() -> None:
    # Positions: uniform over 2 (H=1 with k=2) and one-hot (H≈0) → mean 0.5.
    positions = [[LN(0.5), LN(0.5)], [0.0, -50.0]]
    assert plan_entropy(positions, 2) == pytest.approx(0.5)
    # Three positions with k=5: 1.0, ln2/ln5, 0 → (1 + 0.43068 + 0) / 3 = 0.47689
    three = [[LN(0.2)] * 5, [LN(0.5), LN(0.5)], [0.0, -50.0, -50.0]]
    assert plan_entropy(three, 5) == pytest.approx((1 + LN(2) / LN(5)) / 3)


# --- jury ---------------------------------------------------------------------------------


def test_jury_value_with_every_juror() -> None:
    # 1·4 + 1·3 + 2·1 = 9; everyone present, no rescaling.
    assert jury_value({"a": 4, "b": 3, "c": 1}, {"a": 1, "b": 1, "c": 2}) == pytest.approx(9.0)


def test_jury_value_imputes_the_present_mean_for_an_abstaining_juror() -> None:
    # present mean (4 + 1)/2 = 2.5 stands in for b: 1·4 + 1·2.5 + 2·1 = 8.5
    scores = {"a": 4, "b": None, "c": 1}
    assert jury_value(scores, {"a": 1.0, "b": 1.0, "c": 2.0}) == pytest.approx(8.5)


def test_jury_value_equal_weights_is_the_mean_of_present_scores_times_total_weight() -> None:
    # Weights 1/3 each, b abstains and is imputed 3.5: (5 + 3.5 + 2)/3 = 3.5 (the mean).
    third = 1 / 3
    value = jury_value({"a": 5, "b": None, "c": 2}, {"a": third, "b": third, "c": third})
    assert value == pytest.approx(3.5)


def test_jury_value_is_none_when_every_juror_abstains() -> None:
    assert jury_value({"a": None, "b": None}, {"a": 1.0, "b": 1.0}) is None


def test_jury_value_abstaining_juror_weight_still_counts() -> None:
    # a (weight 0) scores 5; b abstains and is imputed 5: 0·5 + 1·5 = 5.
    assert jury_value({"a": 5, "b": None}, {"a": 0.0, "b": 1.0}) == pytest.approx(5.0)


def test_jury_value_juror_without_weight_counts_zero() -> None:
    # "z" has no weight entry: weight 0. 2·3 + 0·5 = 6.
    assert jury_value({"a": 3, "z": 5}, {"a": 2.0}) == pytest.approx(6.0)


def test_constant_jurors_needs_two_or_more_equal_scores() -> None:
    scores = {
        "flat": {1: 4.0, 2: 4.0, 3: 4.0},
        "fair": {1: 4.0, 2: 3.0, 3: 4.0},
        "one": {1: 5.0},  # a single bid ranks nothing either, but is not a constant vector
        "none": {},
    }
    assert constant_jurors(scores) == ["flat"]


# A biased juror ("loud") uses the whole scale and loves bid 3; two fair jurors mildly prefer bid 2.
BIASED = {
    "fair1": {1: 2.0, 2: 3.0, 3: 2.0},
    "fair2": {1: 2.0, 2: 3.0, 3: 2.0},
    "loud": {1: 0.0, 2: 1.0, 3: 5.0},
}


def mean_jury(scores: dict[str, dict[int, float]]) -> dict[int, float]:
    third = {j: 1 / 3 for j in scores}
    out = {}
    for bid in (1, 2, 3):
        value = jury_value({j: s[bid] for j, s in scores.items()}, third)
        assert value is not None
        out[bid] = value
    return out


def test_standardize_takes_the_winner_away_from_a_biased_juror() -> None:
    # Raw means: bid 1 4/3, bid 2 7/3, bid 3 3 -> bid 3. Standardised, each juror's deviations
    # count alike: fair z (−0.71, 1.41, −0.71), loud z (−0.93, −0.46, 1.39) -> bid 2.
    raw = mean_jury(BIASED)
    assert max(raw, key=lambda b: raw[b]) == 3
    fixed = mean_jury(standardize(BIASED))
    assert max(fixed, key=lambda b: fixed[b]) == 2


def test_standardize_maps_onto_the_jury_mean_and_spread() -> None:
    out = standardize(BIASED)
    # μ = mean of the juror means (7/3, 7/3, 2) = 20/9; σ = mean of the deviations.
    mu = 20 / 9
    sd_fair = math.sqrt(2 / 9)
    sd_loud = math.sqrt(14 / 3)
    sigma = (2 * sd_fair + sd_loud) / 3
    assert out["fair1"][2] == pytest.approx(mu + sigma * (3 - 7 / 3) / sd_fair)
    assert out["loud"][1] == pytest.approx(mu + sigma * (0 - 2) / sd_loud)
    for juror in out:
        assert sum(out[juror].values()) / 3 == pytest.approx(mu)
    assert out["fair1"] == out["fair2"]


def test_standardize_gives_a_constant_or_single_bid_juror_the_jury_mean() -> None:
    out = standardize({"flat": {1: 5.0, 2: 5.0}, "fair": {1: 1.0, 2: 3.0}})
    # μ = (5 + 2)/2 = 3.5; σ = 1 (fair's deviation only): fair -> 2.5, 4.5; flat -> 3.5, 3.5.
    assert out == {"flat": {1: 3.5, 2: 3.5}, "fair": {1: 2.5, 2: 4.5}}
    assert standardize({"solo": {7: 4.0}}) == {"solo": {7: 4.0}}


# --- value and score ----------------------------------------------------------------------


def test_bid_value_with_entropy() -> None:
    # V = w_h · H + jury = 2 · 0.25 + 3 = 3.5
    assert bid_value(0.25, 2.0, 3.0, use_entropy=True) == pytest.approx(3.5)


def test_bid_value_without_entropy_drops_the_term() -> None:
    # The entropy is known but the auction does not use it: V = jury = 3.
    assert bid_value(0.25, 2.0, 3.0, use_entropy=False) == pytest.approx(3.0)
    assert bid_value(None, 2.0, 3.0, use_entropy=False) == pytest.approx(3.0)


def test_bid_value_without_jury() -> None:
    # V = 1 · 0.5 + nothing = 0.5; neither term → 0.
    assert bid_value(0.5, 1.0, None, use_entropy=True) == pytest.approx(0.5)
    assert bid_value(None, 1.0, None, use_entropy=False) == 0.0


def test_bid_value_refuses_missing_entropy_when_entropy_is_used() -> None:
    with pytest.raises(ValueError, match="entropy"):
        bid_value(None, 1.0, 3.0, use_entropy=True)


def test_score_is_cost_minus_value() -> None:
    # C = 0.01 · 0.36 · 200 = 0.72; V = 1 · 0.5 + 4 = 4.5; score = 0.72 − 4.5 = −3.78
    c = cost_term(0.01, 0.36, 200)
    v = bid_value(0.5, 1.0, 4.0, use_entropy=True)
    assert c - v == pytest.approx(-3.78)


# --- winners ------------------------------------------------------------------------------


def cand(bid_id: int, agent: str, price: float, score: float) -> Candidate:
    return Candidate(bid_id=bid_id, agent=agent, price=price, score=score)


def test_provisional_winner_is_the_lowest_score() -> None:
    small, medium, large = (
        cand(1, "small", 0.03, -1.0),
        cand(2, "medium", 0.12, -2.5),
        cand(3, "large", 0.36, -2.0),
    )
    assert provisional_winner([small, medium, large]) == medium


def test_provisional_winner_tie_goes_to_the_cheaper_agent() -> None:
    large = cand(3, "large", 0.36, -2.0)
    small = cand(1, "small", 0.03, -2.0)
    assert provisional_winner([large, small]).agent == "small"


def test_provisional_winner_tie_on_score_and_price_goes_to_the_first_name() -> None:
    zeta = cand(1, "zeta", 0.1, -2.0)
    alpha = cand(2, "alpha", 0.1, -2.0)
    assert provisional_winner([zeta, alpha]).agent == "alpha"
    assert provisional_winner([alpha, zeta]).agent == "alpha"


def test_provisional_winner_needs_candidates() -> None:
    with pytest.raises(ValueError):
        provisional_winner([])


def test_ranking_orders_by_score_then_price_then_name() -> None:
    a = cand(1, "b-agent", 0.1, -1.0)
    b = cand(2, "a-agent", 0.1, -1.0)  # same score and price as a: name decides
    c = cand(3, "cheap", 0.01, -1.0)  # same score, cheaper: before both
    d = cand(4, "best", 9.0, -5.0)  # best score whatever its price
    e = cand(5, "worst", 0.0, 3.0)
    assert [x.bid_id for x in ranking([a, b, c, d, e])] == [4, 3, 2, 1, 5]


def test_refinement_eligible_is_strictly_cheaper_cheapest_first() -> None:
    prices = {"large": 0.36, "medium": 0.12, "tiny": 0.01, "small": 0.03, "twin": 0.12}
    # winner price 0.12: medium and twin cost the same → excluded; tiny then small.
    assert refinement_eligible(prices, 0.12) == ["tiny", "small"]


def test_refinement_eligible_ties_on_price_sorted_by_name() -> None:
    assert refinement_eligible({"b": 0.03, "a": 0.03, "w": 1.0}, 1.0) == ["a", "b"]


def test_nobody_refines_when_the_cheapest_wins() -> None:
    assert refinement_eligible({"small": 0.03, "large": 0.36}, 0.03) == []


def test_final_award_refined_bid_strictly_below_wins() -> None:
    provisional = cand(3, "large", 0.36, -2.0)
    refined = cand(4, "small", 0.03, -2.01)
    assert final_award(provisional, [refined]) == refined


def test_final_award_equal_score_does_not_replace() -> None:
    provisional = cand(3, "large", 0.36, -2.0)
    refined = cand(4, "small", 0.03, -2.0)  # cheaper but not strictly better
    assert final_award(provisional, [refined]) == provisional


def test_final_award_worse_refined_bid_does_not_replace() -> None:
    provisional = cand(3, "large", 0.36, -2.0)
    assert final_award(provisional, [cand(4, "small", 0.03, -1.0)]) == provisional


def test_final_award_lowest_of_several_better_refined_bids() -> None:
    provisional = cand(3, "large", 0.36, -2.0)
    r1 = cand(4, "small", 0.03, -2.5)
    r2 = cand(5, "medium", 0.12, -3.0)
    r3 = cand(6, "tiny", 0.01, -1.0)  # worse than the provisional: ignored
    assert final_award(provisional, [r1, r2, r3]) == r2


def test_final_award_without_refined_bids_is_the_provisional() -> None:
    provisional = cand(3, "large", 0.36, -2.0)
    assert final_award(provisional, []) == provisional


def test_a_fallback_goes_to_the_best_bid_left_and_with_up_never_to_a_cheaper_agent() -> None:
    prices = {"small": 0.03, "medium": 0.12, "large": 0.36}
    ranked = ranking([Candidate(1, "medium", 0.12, -1.0), Candidate(2, "small", 0.03, -0.5),
                      Candidate(3, "large", 0.36, 0.0)])  # fmt: skip
    assert fallback_pick(ranked, [], prices, "up") == ranked[0]  # nothing executed: the award
    assert fallback_pick(ranked, ["medium"], prices, "ranking").agent == "small"
    assert fallback_pick(ranked, ["medium"], prices, "up").agent == "large"
    assert fallback_pick(ranked, ["medium", "large"], prices, "up") is None
    assert fallback_pick(ranked, ["medium", "large"], prices, "ranking").agent == "small"
