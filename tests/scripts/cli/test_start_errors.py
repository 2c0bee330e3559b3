"""A worker that cannot start says why in one line and exits 2: bad settings, no embedder."""

from __future__ import annotations

from importlib import util
from typing import Any

import pytest
from sale.broker.settings import get_settings
from sale.scripts.cli import app
from typer.testing import CliRunner

from tests.conftest import SCRIPTED_POOL


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("SALE_POOL_FILE", str(SCRIPTED_POOL))
    yield
    get_settings.cache_clear()


def said(res: Any) -> str:
    """The command's output with rich's line wrapping undone."""
    return " ".join(res.output.split())


def test_an_invalid_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_JURY_MODE", "sometimes")
    res = CliRunner().invoke(app, ["worker", "--control"])
    assert res.exit_code == 2
    assert "invalid settings: SALE_JURY_MODE: Input should be" in said(res)
    assert "Traceback" not in res.output


def test_no_embedder_with_refinement_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_EMBEDDER", "none")
    monkeypatch.setenv("SALE_REFINE", "true")
    res = CliRunner().invoke(app, ["worker", "--control"])
    assert res.exit_code == 2 and "SALE_EMBEDDER=none leaves the memory" in said(res)


def test_a_control_worker_without_the_embedder_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = util.find_spec
    monkeypatch.setattr(
        util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    monkeypatch.delenv("SALE_EMBEDDER", raising=False)
    res = CliRunner().invoke(app, ["worker", "--control"])
    assert res.exit_code == 2
    # Escaped, so the extra's brackets survive rich's markup.
    assert "needs torch, not installed" in said(res) and "sale-celery[embed]" in said(res)
