"""The lever table (scripts/evals/levers_table.py): one row per SALE configuration,
both benchmarks side by side, each against its base row."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sale.scripts.evals import levers_table


def goal(method: str, pass_at_1: float, cost: float, overhead: float, complete: bool = True):
    return {
        "method": method,
        "pass_at_1": pass_at_1,
        "cost_ratio": cost,
        "overhead_token_share": overhead,
        "complete": complete,
    }


def method(name: str, n_per_order: list[int], std: float = 0.0, **extra: Any) -> dict[str, Any]:
    row = {"method": name, "n_tasks": n_per_order[0], "n_per_order": n_per_order}
    row.update(orders=len(n_per_order), pass_at_1_std=std, cost_usd=0.01, pass_at_1=0.5, **extra)
    return row


def doc(goals: list[dict[str, Any]], methods: list[dict[str, Any]]) -> dict[str, Any]:
    refs = [method("single:large", [10]), method("cascade", [10, 10])]
    return {"largest_agent": "large", "goals": goals, "methods": refs + methods, "n_tasks": 10}


def test_lever_of_splits_a_row_into_its_base_and_its_settings() -> None:
    assert levers_table.lever_of("sale") == ("sale", "–")
    assert levers_table.lever_of("sale+mechanism=paper") == ("sale", "mechanism=paper")
    assert levers_table.lever_of("sale-nomem+weights=nojury+bid_max_tokens=128") == (
        "sale-nomem",
        "weights=nojury + bid_max_tokens=128",
    )
    assert levers_table.lever_of("auction-router") == ("sale-nomem", "plan_mode=generic (replayed)")
    assert levers_table.lever_of("auction-router+weights=nojury+bid_max_tokens=128") == (
        "sale-nomem",
        "weights=nojury + bid_max_tokens=128 + plan_mode=generic (replayed)",
    )


def test_each_row_is_set_against_its_base_on_the_same_benchmark(tmp_path: Path) -> None:
    coding = doc(
        [
            goal("sale-nomem", 0.4, 1.5, 0.33),
            goal("sale-nomem+bid_max_tokens=128", 0.5, 1.2, 0.25),
            goal("sale", 0.5, 1.6, 0.45),
            goal("sale+mechanism=paper", 0.375, 2.5, 0.71, complete=False),
        ],
        [
            method("sale-nomem", [10]),
            method("sale-nomem+bid_max_tokens=128", [10]),
            method("sale", [10, 10], std=0.05),
            method("sale+mechanism=paper", [8], planned_orders=2),
        ],
    )
    search = doc([goal("sale-nomem", 0.5, 1.1, 0.3)], [method("sale-nomem", [10])])
    md = levers_table.markdown({"humaneval": coding, "search": search})
    rows = {line.split(" | ")[1]: line for line in md.splitlines() if line.startswith("| sale")}
    bid = rows["bid_max_tokens=128"]
    assert "0.500, 1.20×, 25% (Δ +0.100, -0.30×); 10 × 1 |" in bid
    assert bid.endswith("| – |")  # no such row on search
    assert "0.500 ± 0.050, 1.60×, 45%; 10 × 2 |" in md  # a base row has no Δ
    paper = rows["mechanism=paper"]
    assert "(Δ -0.125, +0.90×); 8 × 1 (of 2), provisional" in paper
    # base rows first, then the levers
    order = [line.split(" | ")[1] for line in md.splitlines() if line.startswith("| sale")]
    assert order[:2] == ["–", "–"]
    assert "the largest agent alone passes 0.500 for $0.01000" in md
    assert "on the first 10 test tasks of each benchmark" in md


def test_main_writes_the_table_beside_the_reports(tmp_path: Path, capsys: Any) -> None:
    assert levers_table.main([str(tmp_path)]) == 2
    assert "run scripts/levers.sh first" in capsys.readouterr().out
    search = doc([goal("sale", 0.6, 1.4, 0.6)], [method("sale", [10, 10])])
    (tmp_path / "search.json").write_text(json.dumps(search))
    assert levers_table.main([str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| base | lever | search |" in text
    assert "| sale | – | 0.600 ± 0.000, 1.40×, 60%; 10 × 2 |" in text


@pytest.mark.parametrize("value", [None, float("nan")])
def test_a_missing_figure_shows_as_a_dash(value: float | None) -> None:
    search = doc([goal("sale", 0.6, value, 0.6)], [method("sale", [10])])  # type: ignore[arg-type]
    assert "| sale | – | 0.600, –, 60%; 10 × 1 |" in levers_table.markdown({"search": search})
