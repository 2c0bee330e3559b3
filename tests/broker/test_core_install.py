"""Settings of a core install and of a user's canvas: the embedder switch and extra queues."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sale.broker.app import create_app
from sale.broker.pool import load_pool
from sale.broker.settings import Settings

from tests.conftest import SCRIPTED_POOL


def test_the_embedder_defaults_to_minilm_and_none_keeps_the_memoryless_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALE_EMBEDDER", raising=False)
    assert Settings(_env_file=None).embedder == "minilm"
    monkeypatch.setenv("SALE_EMBEDDER", "none")
    s = Settings(_env_file=None)
    assert s.embedder == "none" and s.refine is False and s.memory_shortcut == 0


@pytest.mark.parametrize(
    "env",
    [{"SALE_REFINE": "true"}, {"SALE_MEMORY_SHORTCUT": "0.9"}, {"SALE_MECHANISM": "paper"}],
)
def test_no_embedder_refuses_what_retrieves_by_embedding(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    monkeypatch.setenv("SALE_EMBEDDER", "none")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=r"SALE_EMBEDDER=none .* sale-celery\[embed\]"):
        Settings(_env_file=None)


def test_extra_queues_are_read_comma_separated_and_declared_on_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SALE_EXTRA_QUEUES", raising=False)
    assert Settings(_env_file=None).extra_queues == []
    monkeypatch.setenv("SALE_EXTRA_QUEUES", "user, reports,")
    settings = Settings(_env_file=None)
    assert settings.extra_queues == ["user", "reports"]
    pool = load_pool(SCRIPTED_POOL)
    declared = [q.name for q in create_app(settings, pool).conf.task_queues]
    assert declared == [*pool.queues, "user", "reports"]
