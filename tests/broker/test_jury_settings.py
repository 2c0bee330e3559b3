"""Settings: the jury levers (debiasing, constant vectors, weight-based subset)."""

from __future__ import annotations

import pytest
from sale.broker.settings import PAPER_MECHANISM, Settings

JURY_LEVERS_ON = {
    "SALE_JURY_DEBIAS": "standardize",
    "SALE_JURY_DEGENERATE": "abstain",
    "SALE_JURY_MIN_WEIGHT": "0.2",
}


def test_jury_levers_default_off_and_read_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    for name in JURY_LEVERS_ON:
        monkeypatch.delenv(name, raising=False)
    off = Settings(_env_file=None)
    assert (off.jury_debias, off.jury_degenerate, off.jury_min_weight) == ("none", "keep", 0.05)
    for name, value in JURY_LEVERS_ON.items():
        monkeypatch.setenv(name, value)
    on = Settings(_env_file=None)
    assert (on.jury_debias, on.jury_degenerate, on.jury_min_weight) == (
        "standardize",
        "abstain",
        0.2,
    )


def test_paper_mechanism_turns_the_jury_levers_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in JURY_LEVERS_ON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SALE_JURY_DEBIAS", "rotate")
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    s = Settings(_env_file=None)
    assert (s.jury_debias, s.jury_degenerate, s.jury_min_weight) == ("none", "keep", 0.0)
    assert {"jury_debias", "jury_degenerate", "jury_min_weight"} <= set(PAPER_MECHANISM)


def test_jury_min_weight_is_not_negative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_JURY_MIN_WEIGHT", "-0.1")
    with pytest.raises(ValueError, match="jury_min_weight"):
        Settings(_env_file=None)
