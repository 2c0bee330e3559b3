"""Unit tests for sale.workers.memory.retrieval: nearest-neighbour retrieval, win/lose labels and
pairs."""

from __future__ import annotations

from typing import Any

from sale.workers.memory.retrieval import (
    MemoryEntry,
    Pair,
    bid_labels,
    build_pairs,
    nearest,
    render_pairs,
)


def entry(
    record_id: int,
    embedding: list[float],
    bids: list[dict[str, Any]] | None = None,
    verdict: str = "unknown",
) -> MemoryEntry:
    return MemoryEntry(record_id, embedding, bids or [], verdict)


# --- retrieval ----------------------------------------------------------------------------


def test_nearest_on_empty_memory() -> None:
    assert nearest([1.0, 0.0], [], 8) == []


def test_nearest_fewer_than_k_returns_all_by_cosine() -> None:
    # Query (1, 0). Cosines: r1 (0,1) → 0; r2 (-1,0) → −1; r3 (.6,.8) → .6; r4 (3,0) → 1
    # (cosine ignores length).
    entries = [
        entry(1, [0.0, 1.0]),
        entry(2, [-1.0, 0.0]),
        entry(3, [0.6, 0.8]),
        entry(4, [3.0, 0.0]),
    ]
    assert [e.record_id for e in nearest([1.0, 0.0], entries, 8)] == [4, 3, 1, 2]


def test_nearest_k_smaller_than_memory() -> None:
    entries = [
        entry(1, [0.0, 1.0]),
        entry(2, [-1.0, 0.0]),
        entry(3, [0.6, 0.8]),
        entry(4, [1.0, 0.0]),
    ]
    assert [e.record_id for e in nearest([1.0, 0.0], entries, 2)] == [4, 3]
    assert [e.record_id for e in nearest([1.0, 0.0], entries, 1)] == [4]


def test_nearest_ties_broken_by_record_id() -> None:
    # r9, r2 and r5 are all at cosine 1 (same direction, different lengths): older id first.
    entries = [
        entry(9, [2.0, 0.0]),
        entry(2, [1.0, 0.0]),
        entry(5, [0.5, 0.0]),
        entry(1, [0.0, 1.0]),
    ]
    assert [e.record_id for e in nearest([1.0, 0.0], entries, 3)] == [2, 5, 9]


def test_nearest_query_length_does_not_matter() -> None:
    entries = [entry(1, [0.0, 1.0]), entry(2, [0.8, 0.6])]
    assert [e.record_id for e in nearest([10.0, 0.0], entries, 1)] == [2]


# --- labels -------------------------------------------------------------------------------

THREE: list[dict[str, Any]] = [{}, {}, {}]


def test_bid_labels_passed() -> None:
    # Award (index 1) executed and passed: it wins both ways; the others lose both ways.
    assert bid_labels(THREE, 1, "passed") == [("lose", "lose"), ("win", "win"), ("lose", "lose")]


def test_bid_labels_failed() -> None:
    # Award failed: verified loser; the others were never tried → no verified label.
    assert bid_labels(THREE, 1, "failed") == [("lose", None), ("win", "lose"), ("lose", None)]


def test_bid_labels_unknown() -> None:
    assert bid_labels(THREE, 1, "unknown") == [("lose", None), ("win", None), ("lose", None)]


# --- pairs --------------------------------------------------------------------------------


def bid(agent: str, auction: str | None, verified: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "agent": agent,
        "plan": f"plan of {agent}",
        "status": "ok",
        "auction_label": auction,
        "verified_label": verified,
        **extra,
    }


def passed_record(record_id: int) -> MemoryEntry:
    # large won the auction and passed.
    return entry(
        record_id,
        [1.0, 0.0],
        [bid("small", "lose", "lose"), bid("medium", "lose", "lose"), bid("large", "win", "win")],
        "passed",
    )


def failed_record(record_id: int) -> MemoryEntry:
    # large won the auction and failed: verified labels have no winner.
    return entry(
        record_id,
        [1.0, 0.0],
        [bid("small", "lose", None), bid("medium", "lose", None), bid("large", "win", "lose")],
        "failed",
    )


def test_auction_mode_pairs_with_own_plan_on_the_losing_side() -> None:
    pairs = build_pairs("small", [passed_record(1)], "auction", 4)
    assert pairs == [Pair(1, "small", "plan of small", "large", "plan of large")]


def test_auction_mode_pairs_with_own_plan_on_the_winning_side() -> None:
    pairs = build_pairs("large", [passed_record(1)], "auction", 4)
    assert len(pairs) == 1
    assert pairs[0].winning_agent == "large"
    assert pairs[0].losing_agent in ("small", "medium")


def test_agent_absent_from_a_record_gets_no_pair() -> None:
    assert build_pairs("tiny", [passed_record(1)], "auction", 4) == []


def test_own_plan_never_paired_with_itself() -> None:
    # small lost in the first round and its refined plan won.
    own_only = entry(
        1,
        [1.0, 0.0],
        [
            bid("small", "lose", "lose", round="first"),
            bid("small", "win", "win", round="refined"),
        ],
        "passed",
    )
    assert build_pairs("small", [own_only], "auction", 4) == []
    with_other = entry(
        2,
        [1.0, 0.0],
        [
            bid("small", "lose", "lose", round="first"),
            bid("small", "win", "win", round="refined"),
            bid("medium", "lose", "lose"),
        ],
        "passed",
    )
    pairs = build_pairs("small", [own_only, with_other], "auction", 4)
    assert pairs == [Pair(2, "medium", "plan of medium", "small", "plan of small")]


def test_failed_record_gives_no_pair_in_verified_mode_but_does_in_auction_mode() -> None:
    record = failed_record(3)
    assert build_pairs("small", [record], "verified", 4) == []
    assert build_pairs("small", [record], "auction", 4) == [
        Pair(3, "small", "plan of small", "large", "plan of large")
    ]


def test_verified_mode_uses_verified_labels_when_there_is_a_verdict() -> None:
    # Auction labels say medium won; the verified labels (e.g. from a passed refined plan of
    # small) say small won and medium lost. Verified mode follows the verified ones.
    record = entry(
        4,
        [1.0, 0.0],
        [bid("small", "lose", "win"), bid("medium", "win", "lose")],
        "passed",
    )
    assert build_pairs("small", [record], "verified", 4) == [
        Pair(4, "medium", "plan of medium", "small", "plan of small")
    ]
    assert build_pairs("small", [record], "auction", 4) == [
        Pair(4, "small", "plan of small", "medium", "plan of medium")
    ]


def test_verified_mode_falls_back_to_auction_labels_without_a_verdict() -> None:
    record = entry(
        5,
        [1.0, 0.0],
        [bid("small", "lose", None), bid("large", "win", None)],
        "unknown",
    )
    assert build_pairs("small", [record], "verified", 4) == [
        Pair(5, "small", "plan of small", "large", "plan of large")
    ]


def test_max_pairs_is_respected_in_record_order() -> None:
    records = [passed_record(i) for i in (7, 3, 9)]
    pairs = build_pairs("small", records, "auction", 2)
    # One pair per record, the nearest (first given) records first.
    assert [p.record_id for p in pairs] == [7, 3]
    assert len(build_pairs("small", records, "auction", 10)) == 3


def test_max_pairs_zero_gives_no_pairs() -> None:
    assert build_pairs("small", [passed_record(1)], "auction", 0) == []


def test_failed_bids_are_excluded() -> None:
    record = entry(
        6,
        [1.0, 0.0],
        [bid("small", "lose", "lose", status="failed"), bid("large", "win", "win")],
        "passed",
    )
    assert build_pairs("small", [record], "auction", 4) == []
    assert build_pairs("large", [record], "auction", 4) == []


def test_empty_plans_are_excluded() -> None:
    record = entry(
        6,
        [1.0, 0.0],
        [bid("small", "lose", "lose", plan=""), bid("large", "win", "win", plan=None)],
        "passed",
    )
    assert build_pairs("small", [record], "auction", 4) == []


def test_render_pairs_numbers_and_shows_both_plans() -> None:
    pairs = [
        Pair(1, "small", "  lose one  ", "large", "win one\n"),
        Pair(2, "medium", "lose two", "small", "win two"),
    ]
    text = render_pairs(pairs)
    assert "PAST JOB 1\n" in text
    assert "PAST JOB 2\n" in text
    for plan in ("lose one", "win one", "lose two", "win two"):
        assert plan in text
    # Losing before winning within a block, job 1 before job 2.
    assert text.index("LOSING PLAN:\nlose one") < text.index("WINNING PLAN:\nwin one")
    assert text.index("win one") < text.index("PAST JOB 2") < text.index("lose two")


def test_render_no_pairs_is_empty() -> None:
    assert render_pairs([]) == ""


def test_entries_without_a_comparable_embedding_are_never_near() -> None:
    # Records written with SALE_EMBEDDER=none carry an empty embedding.
    entries = [entry(1, []), entry(2, [0.0, 1.0]), entry(3, [1.0, 0.0, 0.0])]
    assert [e.record_id for e in nearest([0.0, 1.0], entries, 3)] == [2]
    assert nearest([0.0, 1.0], [entry(1, [])], 3) == []
