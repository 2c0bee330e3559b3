"""scripts/evals/shortcut_reach.py: whether the memory shortcut can fire on a task set."""

from __future__ import annotations

import math

import pytest
from sale.scripts.evals.shortcut_reach import markdown, reach

VECTORS = {"a": [1.0, 0.0], "a2": [0.8, 0.6], "b": [0.0, 1.0], "c": [-1.0, 0.0]}


def embed(texts: list[str]) -> list[list[float]]:
    return [VECTORS[t] for t in texts]


def test_reach_is_the_best_pair_and_the_best_kth_nearest() -> None:
    pair, second = reach(["a", "a2", "b", "c"], embed, 2)
    assert pair == pytest.approx(0.8)  # a and a2
    # a2's two nearest others are a (0.8) and b (0.6): the best second-nearest of any task
    assert second == pytest.approx(0.6)
    pair, first = reach(["a", "a2", "b", "c"], embed, 1)
    assert first == pytest.approx(pair)
    assert math.isnan(reach(["a", "b"], embed, 2)[1])  # one other task: no second-nearest
    assert math.isnan(reach(["a"], embed, 1)[0])


def test_markdown_has_a_row_per_benchmark_and_task_count() -> None:
    text = markdown([("humaneval", 10, 0.565, 0.417), ("search", 30, 0.688, 0.626)], 3)
    assert "| humaneval | 10 | 0.565 | 0.417 |" in text
    assert "| search | 30 | 0.688 | 0.626 |" in text and "highest k-th nearest, k = 3" in text
