"""Unit tests for sale.workers.auction.fit: the offline weight fit recovers planted weights
(docs/design.md §3, "Weights").

Synthetic auctions are drawn from a seeded generator and labelled by the real scorer under
planted weights; the fit must route them back and generalise to a held-out set.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sale.workers.auction.fit import (
    FitResult,
    FittedWeights,
    TrainingAuction,
    TrainingBid,
    auction_features,
    auction_scores,
    auctions_from_memory,
    auctions_from_outcomes,
    fit_weights,
    routes_to_target,
    weights_document,
    write_weights,
)
from sale.workers.auction.weights import load_weights

from sale.errors import WeightsError

JURORS = ["a", "b", "c"]
_RAW = {"w_c": 0.02, "w_h": 0.5, "a": 0.6, "b": 0.0, "c": 0.4}
_SCALE = _RAW["w_h"] + _RAW["a"] + _RAW["b"] + _RAW["c"]  # the fit's scale: w_h + Σ w_j = 1
PLANTED = FittedWeights(
    w_c=_RAW["w_c"] / _SCALE,
    w_h=_RAW["w_h"] / _SCALE,
    jurors={j: _RAW[j] / _SCALE for j in JURORS},
)


def _winner(item: TrainingAuction, w: FittedWeights) -> int:
    return int(np.argmin(auction_scores(item, w["w_c"], w["w_h"], w["jurors"])))


def synthetic(
    rng: np.random.Generator, n: int, *, p_missing_entropy: float = 0.0, p_abstain: float = 0.0
) -> list[TrainingAuction]:
    """``n`` three-bid auctions, each labelled with its argmin under the planted weights."""
    out = []
    for t in range(n):
        bids = []
        for b in range(3):
            missing = rng.random() < p_missing_entropy
            entropy = None if missing else float(rng.uniform(0.0, 1.0))
            jury: dict[str, int | None] = {}
            for j in JURORS:
                score = int(rng.integers(0, 6))
                jury[j] = None if rng.random() < p_abstain else score
            bids.append(
                TrainingBid(
                    agent=f"agent{b}",
                    price=float(rng.uniform(0.1, 2.0)),
                    tokens=int(rng.integers(50, 251)),
                    entropy=entropy,
                    jury=jury,
                )
            )
        item = TrainingAuction(f"task{t}", bids, None)
        out.append(TrainingAuction(item.task_id, bids, _winner(item, PLANTED)))
    return out


@pytest.fixture(scope="module")
def planted_fit() -> tuple[FitResult, list[TrainingAuction]]:
    rng = np.random.default_rng(20261126)
    train = synthetic(rng, 60)
    held_out = synthetic(rng, 400)
    return fit_weights(train, JURORS), held_out


# --- recovery of planted weights ---------------------------------------------------------


def test_fit_routes_the_training_auctions_to_their_targets(
    planted_fit: tuple[FitResult, list[TrainingAuction]],
) -> None:
    result, _ = planted_fit
    assert result.total == 60
    assert result.status == "optimal"
    assert result.routed >= 57  # ≥ 95 %
    assert result.accuracy == pytest.approx(result.routed / 60)
    assert result.min_margin >= 1e-3


def test_fit_agrees_with_the_planted_ranking_on_held_out_auctions(
    planted_fit: tuple[FitResult, list[TrainingAuction]],
) -> None:
    result, held_out = planted_fit
    same_winner = sum(_winner(item, result.weights) == item.target for item in held_out)
    assert same_winner / len(held_out) >= 0.90


def test_fit_gives_the_uninformative_juror_little_weight_and_respects_the_scale(
    planted_fit: tuple[FitResult, list[TrainingAuction]],
) -> None:
    w = planted_fit[0].weights
    assert w["jurors"]["b"] <= 0.1
    assert w["jurors"]["a"] > w["jurors"]["c"] > w["jurors"]["b"]  # planted order 0.6 > 0.4 > 0
    assert w["w_h"] + sum(w["jurors"].values()) == pytest.approx(1.0)
    assert 0.0 <= w["w_c"] <= 1.0
    assert all(v >= 0.0 for v in [w["w_h"], *w["jurors"].values()])
    assert w["w_c"] == pytest.approx(PLANTED["w_c"], rel=0.5)


def test_fit_is_deterministic() -> None:
    train = synthetic(np.random.default_rng(7), 30)
    first = fit_weights(train, JURORS)
    second = fit_weights(train, JURORS)
    assert first.weights == second.weights
    assert (first.routed, first.objective, first.min_margin) == (
        second.routed,
        second.objective,
        second.min_margin,
    )


# --- contradictory data, ties, skipped auctions ------------------------------------------


def _bid(agent: str, price: float, tokens: int, entropy: float | None, **jury: int | None) -> Any:
    return TrainingBid(agent, price, tokens, entropy, dict(jury))


def test_contradictory_auctions_return_the_best_partial_routing() -> None:
    train = synthetic(np.random.default_rng(3), 12)
    clash = train[0]
    assert clash.target is not None
    flipped = TrainingAuction("clash", clash.bids, (clash.target + 1) % 3)
    result = fit_weights([*train, flipped], JURORS)
    # The same bids cannot be won by two different targets: exactly one of the pair is lost.
    assert result.total == 13
    assert result.objective == 12
    assert result.routed == 12
    w = result.weights
    assert routes_to_target(clash, w["w_c"], w["w_h"], w["jurors"]) != routes_to_target(
        flipped, w["w_c"], w["w_h"], w["jurors"]
    )


def test_a_tie_never_counts_as_a_win() -> None:
    same = _bid("x", 1.0, 100, 0.5, a=3)
    twin = _bid("y", 1.0, 100, 0.5, a=3)
    result = fit_weights([TrainingAuction("tie", [same, twin], 0)], ["a"])
    assert (result.routed, result.total, result.objective) == (0, 1, 0)
    assert result.min_margin == 0.0


def test_auctions_without_target_or_rival_are_skipped_and_bad_targets_rejected() -> None:
    lone = TrainingAuction("lone", [_bid("x", 1.0, 10, 0.1, a=1)], 0)
    unknown = TrainingAuction("unknown", [_bid("x", 1.0, 10, 0.1, a=1)] * 2, None)
    good = TrainingAuction("good", [_bid("x", 1.0, 10, 0.1, a=5), _bid("y", 1.0, 10, 0.1, a=1)], 0)
    result = fit_weights([lone, unknown, good], ["a"])
    assert (result.routed, result.total, result.skipped) == (1, 1, 2)
    with pytest.raises(ValueError, match="target 2"):
        fit_weights([TrainingAuction("bad", good.bids, 2)], ["a"])


# --- missing entropy and abstaining jurors -----------------------------------------------


def test_missing_entropy_drops_the_feature_for_the_whole_auction() -> None:
    # Auction 1 needs w_h > w_a (entropy 1.0 beats one jury point). Auction 2 lacks one entropy,
    # so H is dropped and jury a alone decides; read as H = 0 it would need w_a > w_h instead.
    one = TrainingAuction("one", [_bid("x", 1.0, 100, 1.0, a=2), _bid("y", 1.0, 100, 0.0, a=3)], 0)
    two = TrainingAuction("two", [_bid("x", 1.0, 100, None, a=4), _bid("y", 1.0, 100, 1.0, a=3)], 0)
    features = auction_features(two, ["a"])
    assert features[:, 1].tolist() == [0.0, 0.0]
    assert features[:, 0].tolist() == [100.0, 100.0]
    result = fit_weights([one, two], ["a"])
    assert (result.routed, result.total) == (2, 2)
    assert result.weights["w_h"] > result.weights["jurors"]["a"] > 0


def test_an_abstaining_juror_is_scored_as_the_present_jurors_mean() -> None:
    # Auction 1 needs w_b > w_a. In auction 2 juror b abstains on bid x: rescaled (design §3) x has
    # 5·(w_a + w_b) > 3·w_a + 4·w_b always; read as a 0 it would need 2·w_a > 4·w_b instead.
    one = TrainingAuction(
        "one", [_bid("x", 1.0, 100, 0.5, a=0, b=5), _bid("y", 1.0, 100, 0.5, a=5, b=0)], 0
    )
    two = TrainingAuction(
        "two", [_bid("x", 1.0, 100, 0.5, a=5, b=None), _bid("y", 1.0, 100, 0.5, a=3, b=4)], 0
    )
    features = auction_features(two, ["a", "b"])
    assert features[0, 2:].tolist() == [-5.0, -5.0]
    mixed = TrainingAuction("m", [_bid("x", 1.0, 1, None, a=4, b=None, c=2)], None)
    assert auction_features(mixed, ["a", "b", "c"])[0, 2:].tolist() == [-4.0, -3.0, -2.0]
    silent = TrainingAuction("s", [_bid("x", 1.0, 1, None, a=None, b=None)], None)
    assert auction_features(silent, ["a", "b"])[0, 2:].tolist() == [0.0, 0.0]
    result = fit_weights([one, two], ["a", "b"])
    assert (result.routed, result.total) == (2, 2)
    assert result.weights["jurors"]["b"] > result.weights["jurors"]["a"]


def test_planted_weights_are_recovered_with_missing_entropy_and_abstentions() -> None:
    rng = np.random.default_rng(11)
    train = synthetic(rng, 60, p_missing_entropy=0.1, p_abstain=0.1)
    held_out = synthetic(rng, 300, p_missing_entropy=0.1, p_abstain=0.1)
    result = fit_weights(train, JURORS)
    assert result.routed >= 57
    same = sum(_winner(item, result.weights) == item.target for item in held_out)
    # Less information per auction: over seeds 0-19 the agreement has median 0.97, minimum 0.88
    # (this seed is that minimum), so the bar is lower than for complete data.
    assert same / len(held_out) >= 0.85


# --- the weights file --------------------------------------------------------------------


def test_written_weights_file_loads_and_round_trips(
    planted_fit: tuple[FitResult, list[TrainingAuction]], tmp_path: Path
) -> None:
    result, _ = planted_fit
    doc = weights_document(
        result, "fit-test-1", "synthetic planted set", date=dt.date(2026, 11, 26)
    )
    path = tmp_path / "weights" / "fitted.json"
    write_weights(path, doc)
    loaded = load_weights(path)
    assert loaded.version == "fit-test-1"
    assert loaded.w_c == result.weights["w_c"]
    assert loaded.w_h == result.weights["w_h"]
    assert loaded.jurors == result.weights["jurors"]
    mean = sum(result.weights["jurors"].values()) / 3
    assert loaded.default_juror_weight == pytest.approx(mean)
    assert "synthetic planted set" in loaded.source
    assert "60 auctions" in loaded.source and "2026-11-26" in loaded.source
    assert json.loads(path.read_text(encoding="utf-8")) == doc
    assert [p.name for p in path.parent.iterdir()] == ["fitted.json"]  # no temp file left


def test_write_weights_refuses_an_invalid_document(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    with pytest.raises(WeightsError, match="w_c"):
        write_weights(path, {"version": "v", "w_c": "cheap", "w_h": 1.0})
    assert not path.exists()


# --- training auctions from memory and from single-agent outcomes ------------------------

PRICES = {"cheap": 0.2, "mid": 1.0, "dear": 5.0}


def _mem_bid(agent: str, auction: str | None, verified: str | None, **extra: Any) -> dict[str, Any]:
    bid: dict[str, Any] = {
        "agent": agent,
        "round": "first",
        "status": "ok",
        "plan": f"plan by {agent}",
        "tokens": 120,
        "entropy": 0.4,
        "jury": {"cheap": 3, "mid": 4, "dear": None},
        "cost": 0.0,
        "value": 0.0,
        "score": 0.0,
        "auction_label": auction,
        "verified_label": verified,
    }
    bid.update(extra)
    return bid


RECORDS: list[dict[str, Any]] = [
    {  # the awarded bid passed
        "job_id": "passed",
        "verdict": "passed",
        "bids": [
            _mem_bid("cheap", "lose", "lose"),
            _mem_bid("dear", None, None, status="failed", plan=""),
            _mem_bid("mid", "win", "win"),
        ],
    },
    {  # the awarded bid failed
        "job_id": "failed",
        "verdict": "failed",
        "bids": [_mem_bid("cheap", "lose", None), _mem_bid("dear", "win", "lose")],
    },
    {  # no verdict: the only label is the old weights' own decision
        "job_id": "unknown",
        "verdict": "unknown",
        "bids": [_mem_bid("mid", "win", None), _mem_bid("dear", "lose", None)],
    },
]


def test_auctions_from_memory_in_auction_mode_target_the_awarded_bid() -> None:
    got = auctions_from_memory(RECORDS, "auction", prices=PRICES)
    assert [a.task_id for a in got] == ["passed", "failed", "unknown"]
    assert [[b.agent for b in a.bids] for a in got] == [
        ["cheap", "mid"],  # the failed bid is dropped
        ["cheap", "dear"],
        ["mid", "dear"],
    ]
    assert [a.target for a in got] == [1, 1, 0]
    bid = got[0].bids[1]
    assert (bid.price, bid.tokens, bid.entropy) == (1.0, 120, 0.4)
    assert bid.jury == {"cheap": 3, "mid": 4, "dear": None}


def test_auctions_from_memory_in_verified_mode_target_only_passed_executions() -> None:
    got = auctions_from_memory(RECORDS, "verified", prices=PRICES)
    assert [a.target for a in got] == [1, None, None]


def test_auctions_from_memory_reads_the_scorer_gammas_when_stored() -> None:
    # "gamma" holds the jury scores as the scorer used them (standardised, degenerate jurors
    # left out); the raw "jury" is only the fallback of records written before it existed.
    gamma = {"cheap": 2.75, "mid": 3.5}
    record = {
        "job_id": "g",
        "verdict": "passed",
        "bids": [_mem_bid("cheap", "win", "win", gamma=gamma), _mem_bid("mid", "lose", "lose")],
    }
    got = auctions_from_memory([record], "auction", prices=PRICES)[0]
    assert got.bids[0].jury == gamma
    assert got.bids[1].jury == {"cheap": 3, "mid": 4, "dear": None}


def test_auctions_from_memory_needs_a_price_for_every_agent() -> None:
    with pytest.raises(ValueError, match="no price for agent 'dear'"):
        auctions_from_memory(RECORDS[1:2], "auction", prices={"cheap": 0.2})
    priced = [
        {"job_id": "p", "verdict": "passed", "bids": [_mem_bid("x", "win", "win", price=3.0)]}
    ]
    assert auctions_from_memory(priced, "verified")[0].bids[0].price == 3.0


def test_auctions_from_outcomes_target_the_cheapest_solver() -> None:
    bids = [
        _bid("dear", 5.0, 100, 0.2, a=5),
        _bid("cheap", 0.2, 100, 0.2, a=1),
        _bid("mid", 1.0, 100, 0.2, a=3),
    ]
    features = [
        TrainingAuction("t1", bids, None),
        TrainingAuction("t2", bids, None),
        TrainingAuction("t3", bids, None),
        TrainingAuction("t4", bids, None),
    ]
    solved = {
        "t1": {"dear": True, "cheap": False, "mid": True},
        "t2": {"dear": True, "cheap": True, "mid": True},
        "t3": {"dear": False, "cheap": False, "mid": False},
    }
    got = auctions_from_outcomes(features, solved)
    assert [a.target for a in got] == [2, 1, None, None]
    assert got[0].bids == bids and features[0].target is None  # inputs untouched


def test_auctions_from_memory_skips_jobs_without_an_auction() -> None:
    skipped = [
        {
            "job_id": "d",
            "verdict": "passed",
            "bids": [_mem_bid("cheap", "win", "win", round="direct")],
        },
        {
            "job_id": "s",
            "verdict": "passed",
            "bids": [_mem_bid("mid", "win", "win", round="shortcut")],
        },
    ]
    got = auctions_from_memory([*RECORDS, *skipped], "auction", prices=PRICES)
    assert [a.task_id for a in got] == ["passed", "failed", "unknown"]
