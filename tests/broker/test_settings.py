"""Settings: the paper mechanism preset."""

from __future__ import annotations

import pytest
from sale.broker.settings import PAPER_MECHANISM, Settings


def test_paper_mechanism_forces_the_published_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    monkeypatch.setenv("SALE_JURY_MODE", "batched")
    monkeypatch.setenv("SALE_MEMORY_LABEL", "verified")
    monkeypatch.setenv("SALE_REFINE", "false")
    s = Settings(_env_file=None)
    for name, value in PAPER_MECHANISM.items():
        assert getattr(s, name) == value, name
    assert s.jury_mode == "per_bid" and s.memory_label == "auction" and s.refine is True


def test_custom_mechanism_keeps_each_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    monkeypatch.setenv("SALE_REFINE", "false")
    monkeypatch.setenv("SALE_JURY_MODE", "batched")
    s = Settings(_env_file=None)
    assert s.mechanism == "custom" and s.refine is False and s.jury_mode == "batched"


LEVERS_ON = {
    "SALE_TASK_FIRST_PROMPTS": "true",
    "SALE_MEMORY_SHORTCUT": "0.9",
    "SALE_MEMORY_SHORTCUT_MIN": "2",
    "SALE_PLAN_MODE": "guidance",
}


def test_prompt_and_shortcut_levers_default_off_and_read_their_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    for name in LEVERS_ON:
        monkeypatch.delenv(name, raising=False)
    off = Settings(_env_file=None)
    # the plan mode's default is the measured one: the auction picks the agent only
    assert (off.task_first_prompts, off.memory_shortcut, off.plan_mode) == (False, 0.0, "generic")
    assert off.memory_shortcut_min == 3
    for name, value in LEVERS_ON.items():
        monkeypatch.setenv(name, value)
    on = Settings(_env_file=None)
    assert (on.task_first_prompts, on.memory_shortcut, on.plan_mode) == (True, 0.9, "guidance")
    assert on.memory_shortcut_min == 2


def test_paper_mechanism_turns_the_prompt_and_shortcut_levers_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in LEVERS_ON.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    s = Settings(_env_file=None)
    assert (s.task_first_prompts, s.memory_shortcut, s.plan_mode) == (False, 0.0, "follow")
    assert {"task_first_prompts", "memory_shortcut", "plan_mode"} <= set(PAPER_MECHANISM)


def test_memory_shortcut_threshold_is_a_similarity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_MEMORY_SHORTCUT", "1.5")
    with pytest.raises(ValueError, match="memory_shortcut"):
        Settings(_env_file=None)


def test_the_repeat_stop_is_on_by_default_and_off_in_the_paper_mechanism(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    monkeypatch.delenv("SALE_REPEAT_STOP", raising=False)
    assert Settings(_env_file=None).repeat_stop == 2
    monkeypatch.setenv("SALE_REPEAT_STOP", "0")
    assert Settings(_env_file=None).repeat_stop == 0
    monkeypatch.setenv("SALE_REPEAT_STOP", "3")
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    assert Settings(_env_file=None).repeat_stop == 0


def test_coding_plan_mode_sets_the_plan_mode_of_coding_jobs_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    monkeypatch.delenv("SALE_PLAN_MODE", raising=False)
    monkeypatch.delenv("SALE_CODING_PLAN_MODE", raising=False)
    s = Settings(_env_file=None)
    assert s.coding_plan_mode == "inherit"
    assert (s.plan_mode_for("coding"), s.plan_mode_for("search")) == ("generic", "generic")
    monkeypatch.setenv("SALE_PLAN_MODE", "guidance")
    monkeypatch.setenv("SALE_CODING_PLAN_MODE", "generic")
    s = Settings(_env_file=None)
    assert (s.plan_mode_for("coding"), s.plan_mode_for("search")) == ("generic", "guidance")
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    s = Settings(_env_file=None)
    assert (s.plan_mode_for("coding"), s.plan_mode_for("search")) == ("follow", "follow")
    monkeypatch.setenv("SALE_MECHANISM", "custom")
    monkeypatch.setenv("SALE_CODING_PLAN_MODE", "always")
    with pytest.raises(ValueError, match="coding_plan_mode"):
        Settings(_env_file=None)


def test_the_default_is_the_measured_cheap_auction_and_paper_restores_the_published_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sale.broker.settings import JURY_WEIGHTS_FILE
    from sale.workers.auction.weights import load_weights

    for name in ("SALE_MECHANISM", "SALE_REFINE", "SALE_BID_MAX_TOKENS", "SALE_PLAN_MODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SALE_WEIGHTS_FILE", raising=False)
    s = Settings(_env_file=None)
    assert (s.refine, s.bid_max_tokens, s.plan_mode) == (False, 128, "generic")
    assert s.effective_weights_file is None  # the packaged default weights: no juror weighs
    shipped = load_weights(None)
    for kind in ("coding", "search"):
        section = shipped.kinds[kind]
        assert set(section.jurors.values()) == {0.0} and section.default_juror_weight == 0.0
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    paper = Settings(_env_file=None)
    assert (paper.refine, paper.bid_max_tokens, paper.plan_mode) == (True, 256, "follow")
    assert paper.effective_weights_file == JURY_WEIGHTS_FILE  # the fit with its jury
    assert max(load_weights(JURY_WEIGHTS_FILE).kinds["coding"].jurors.values()) > 0.05
    monkeypatch.setenv("SALE_WEIGHTS_FILE", "/tmp/mine.json")  # a configured file wins
    assert str(Settings(_env_file=None).effective_weights_file) == "/tmp/mine.json"
