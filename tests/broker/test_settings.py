"""Settings: the paper mechanism preset."""

from __future__ import annotations

import pytest

from broker.settings import PAPER_MECHANISM, Settings


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
