"""The verified award's replay on recorded single-agent outcomes, and the checked cascade."""

from __future__ import annotations

from sale.scripts.evals.methods import VerifiedAwardReplay, pick_cascade_checked
from sale.scripts.evals.metrics import cost_per_pass_curve
from sale.workers.auction.chains import ChainParams
from sale.workers.auction.estimates import EstimatorParams

PRICES = {"tiny": 0.03, "small": 0.12, "large": 0.36}


def run(passed: bool, check: bool | None, cost: float) -> dict[str, object]:
    return {"passed": passed, "self_check": check, "cost_usd": cost, "tokens": 1000}


def test_checked_cascade_escalates_only_on_a_failed_self_check() -> None:
    outcomes = {"small": run(False, False, 1.0), "large": run(True, True, 3.0)}
    assert pick_cascade_checked(outcomes, ["small", "large"]).tried == ("small", "large")
    unchecked = {"small": run(False, None, 1.0), "large": run(True, None, 3.0)}
    assert pick_cascade_checked(unchecked, ["small", "large"]).agent == "small"


def test_the_replay_learns_from_train_and_from_what_it_ran() -> None:
    x = [1.0, 0.0]
    train = {
        f"t{i}": {
            "tiny": run(False, False, 0.1),
            "small": run(i % 2 == 0, i % 2 == 0, 1.0),
            "large": run(i < 6, i < 6, 3.0),
        }
        for i in range(10)
    }
    params = ChainParams(EstimatorParams(k=0))  # the kind rates: every task embeds alike here
    award = VerifiedAwardReplay(train, {t: x for t in train}, PRICES, max_len=3, params=params)
    assert len(award.memory) == 30
    # tiny is barred (0 of 10); small's check separates its passes: small, then large.
    failed_small = {
        "tiny": run(False, False, 0.1),
        "small": run(False, False, 1.0),
        "large": run(True, True, 3.0),
    }
    pick = award.pick(x, failed_small, checkable=True)
    assert pick.tried == ("small", "large") and pick.agent == "large"
    assert len(award.memory) == 32  # both attempts that ran are remembered, not tiny's
    # An unchecked task runs one agent only.
    assert len(award.pick(x, failed_small, checkable=False).tried) == 1


def test_cost_per_pass_curve() -> None:
    rows = [
        {"order": 0, "position": 1, "cost_usd": 2.0, "passed": True},
        {"order": 0, "position": 0, "cost_usd": 1.0, "passed": False},
    ]
    assert cost_per_pass_curve(rows) == {0: [None, 3.0]}
