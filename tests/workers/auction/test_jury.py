"""Unit tests for sale.workers.auction.jury: labels, the deterministic shuffled presentation,
strict parsing."""

from __future__ import annotations

import pytest
from sale.workers.auction.jury import (
    example_object,
    label,
    parse_scores,
    presentation_order,
    render_bids,
    rotated_order,
)

from sale.errors import JuryParseError

BIDS = [
    (11, "small", "plan of small"),
    (12, "medium", "plan of medium"),
    (13, "large", "plan of large"),
    (14, "huge", "plan of huge"),
]
ABC = ["A", "B", "C"]


# --- labels and presentation --------------------------------------------------------------


def test_label_sequence() -> None:
    # 0..25 → A..Z, then 26 → AA, 27 → AB, 51 → AZ, 52 → BA (bijective base 26).
    assert [label(i) for i in range(3)] == ["A", "B", "C"]
    assert label(25) == "Z"
    assert label(26) == "AA"
    assert label(27) == "AB"
    assert label(51) == "AZ"
    assert label(52) == "BA"


def order(juror: str, job_id: str = "job-1", seed: int = 0, round_: str = "first") -> list[int]:
    presented = presentation_order(BIDS, seed=seed, job_id=job_id, juror=juror, round_=round_)
    return [p.bid_id for p in presented]


def test_presentation_order_is_deterministic() -> None:
    first = presentation_order(BIDS, seed=7, job_id="job-1", juror="small", round_="first")
    again = presentation_order(BIDS, seed=7, job_id="job-1", juror="small", round_="first")
    assert first == again


def test_presentation_order_does_not_depend_on_the_input_order() -> None:
    # The bids are sorted by id before shuffling, so a redelivery that loads them in another
    # order shows the same presentation.
    a = presentation_order(BIDS, seed=0, job_id="job-1", juror="small", round_="first")
    b = presentation_order(BIDS[::-1], seed=0, job_id="job-1", juror="small", round_="first")
    assert a == b


def test_presentation_order_differs_across_jurors_for_some_job() -> None:
    differing = [
        j for j in (f"job-{i}" for i in range(50)) if order("small", j) != order("large", j)
    ]
    # With 4 bids there are 24 orders; 50 jobs all agreeing would mean the juror is ignored.
    assert differing


def test_presentation_order_depends_on_seed_job_and_round_too() -> None:
    jobs = [f"job-{i}" for i in range(50)]
    assert any(order("small", j, seed=0) != order("small", j, seed=1) for j in jobs)
    assert any(
        order("small", j, round_="first") != order("small", j, round_="refined") for j in jobs
    )
    assert len({tuple(order("small", j)) for j in jobs}) > 1


def test_presentation_is_a_labelled_permutation() -> None:
    presented = presentation_order(BIDS, seed=3, job_id="job-9", juror="medium", round_="first")
    assert sorted(p.bid_id for p in presented) == [11, 12, 13, 14]
    assert [p.label for p in presented] == ["A", "B", "C", "D"]
    by_id = {b[0]: b for b in BIDS}
    for p in presented:
        assert (p.bid_id, p.agent, p.plan) == by_id[p.bid_id]


def rotation(bids: list[tuple[int, str, str]], jurors: int, job_id: str) -> list[list[int]]:
    return [
        [p.bid_id for p in rotated_order(bids, seed=0, job_id=job_id, round_="first", index=i)]
        for i in range(jurors)
    ]


@pytest.mark.parametrize("job_id", ["job-1", "job-2", "job-3"])
def test_rotation_gives_each_position_to_each_bid_across_three_jurors(job_id: str) -> None:
    orders = rotation(BIDS[:3], 3, job_id)
    for position in range(3):
        assert sorted(order[position] for order in orders) == [11, 12, 13], position
    assert all(sorted(order) == [11, 12, 13] for order in orders)


def test_rotation_with_fewer_jurors_than_bids_never_repeats_a_position() -> None:
    orders = rotation(BIDS, 3, "job-1")
    for position in range(4):
        assert len({order[position] for order in orders}) == 3, position


def test_rotation_is_labelled_deterministic_and_shuffled_per_job() -> None:
    presented = rotated_order(BIDS[::-1], seed=0, job_id="job-1", round_="first", index=1)
    assert [p.label for p in presented] == ["A", "B", "C", "D"]
    assert presented == rotated_order(BIDS, seed=0, job_id="job-1", round_="first", index=1)
    assert len({tuple(rotation(BIDS, 1, f"job-{i}")[0]) for i in range(20)}) > 1
    assert rotated_order([], seed=0, job_id="job-1", round_="first", index=2) == []


def test_render_bids_and_example_object() -> None:
    presented = presentation_order(BIDS[:2], seed=0, job_id="j", juror="x", round_="first")
    text = render_bids(presented)
    assert text.startswith("PLAN A:\n")
    assert "PLAN B:\n" in text
    # The example is valid for the labels it is given (3+i mod 6 → A 3, B 4).
    assert parse_scores(example_object(["A", "B"]), ["A", "B"]) == {"A": 3, "B": 4}


# --- parsing ------------------------------------------------------------------------------


def test_parse_bare_json() -> None:
    assert parse_scores('{"A": 3, "B": 5, "C": 0}', ABC) == {"A": 3, "B": 5, "C": 0}


def test_parse_json_in_code_fence() -> None:
    # The 1.5B model's habit: a ```json fence around the object.
    reply = '```json\n{"A": 2, "B": 4, "C": 5}\n```'
    assert parse_scores(reply, ABC) == {"A": 2, "B": 4, "C": 5}


def test_parse_json_after_prose() -> None:
    reply = 'Here are my scores for the plans:\n{"A": 1, "B": 1, "C": 4}\nThanks.'
    assert parse_scores(reply, ABC) == {"A": 1, "B": 1, "C": 4}


def test_parse_skips_a_non_json_brace_before_the_object() -> None:
    reply = 'Plan A uses {a set} of steps. Scores: {"A": 5, "B": 3, "C": 2}'
    assert parse_scores(reply, ABC) == {"A": 5, "B": 3, "C": 2}


def test_parse_wrong_keys_is_an_error() -> None:
    with pytest.raises(JuryParseError, match="keys"):
        parse_scores('{"plan1": 3, "plan2": 4, "plan3": 5}', ABC)


def test_parse_missing_label_is_an_error() -> None:
    with pytest.raises(JuryParseError):
        parse_scores('{"A": 3, "B": 4}', ABC)


def test_parse_extra_label_is_an_error() -> None:
    with pytest.raises(JuryParseError):
        parse_scores('{"A": 3, "B": 4, "C": 5, "D": 1}', ABC)


def test_parse_float_score_is_an_error() -> None:
    with pytest.raises(JuryParseError, match="not an integer"):
        parse_scores('{"A": 4.0, "B": 4, "C": 5}', ABC)


def test_parse_bool_score_is_an_error() -> None:
    with pytest.raises(JuryParseError, match="not an integer"):
        parse_scores('{"A": true, "B": 4, "C": 5}', ABC)


def test_parse_string_score_is_an_error() -> None:
    with pytest.raises(JuryParseError):
        parse_scores('{"A": "4", "B": 4, "C": 5}', ABC)


@pytest.mark.parametrize("bad", [6, -1])
def test_parse_out_of_range_score_is_an_error(bad: int) -> None:
    with pytest.raises(JuryParseError, match="outside 0-5"):
        parse_scores(f'{{"A": {bad}, "B": 4, "C": 5}}', ABC)


def test_parse_range_bounds_are_inclusive() -> None:
    assert parse_scores('{"A": 0, "B": 5, "C": 0}', ABC) == {"A": 0, "B": 5, "C": 0}


def test_parse_no_json_is_an_error() -> None:
    with pytest.raises(JuryParseError, match="no JSON object"):
        parse_scores("def solve():\n    return 42", ABC)


def test_parse_json_array_is_not_an_object() -> None:
    with pytest.raises(JuryParseError):
        parse_scores("[3, 4, 5]", ABC)


def test_parse_takes_the_first_valid_of_several_objects() -> None:
    reply = 'First try: {"A": 9, "B": 4, "C": 5} sorry, corrected: {"A": 2, "B": 4, "C": 5}'
    assert parse_scores(reply, ABC) == {"A": 2, "B": 4, "C": 5}


def test_parse_error_keeps_the_reply_and_the_reason() -> None:
    reply = 'scores: {"A": 7, "B": 4, "C": 5}'
    with pytest.raises(JuryParseError) as info:
        parse_scores(reply, ABC)
    assert info.value.reply == reply
    assert "7" in info.value.reason
