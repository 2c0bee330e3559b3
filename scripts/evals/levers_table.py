"""The lever table: one row per lever, both benchmarks side by side.

Reads the reports ``sale eval`` wrote for the lever rows (``<dir>/humaneval.json`` and
``<dir>/search.json``, see ``scripts/levers.sh``) and writes ``<dir>/README.md``: for every SALE
row, its lever (the settings it adds to its base, ``sale`` or ``sale-nomem``), its pass@1 and
its total cost against the largest agent alone (task by task, as in the reports' goals), the
auction's share of its tokens, and the difference to its base on the same benchmark. Nothing is
run; a benchmark whose report is missing gets empty cells. Usage::

    python -m sale.scripts.evals.levers_table [DIR]    # default docs/results/levers
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

BENCHES = ("humaneval", "search")

#: Replayed rows and the lever each one is (docs/results/README.md: replayed from the recorded
#: ``sale-nomem`` auctions).
REPLAYED = {
    "auction-router": ("sale-nomem", "plan_mode=generic (replayed)"),
    "sale-nomem-nofallback": ("sale-nomem", "self_check_fallback=0 (replayed)"),
}


def lever_of(method: str) -> tuple[str, str]:
    """(base, lever) of a SALE row: ``sale+jury_debias=rotate`` is (``sale``,
    ``jury_debias=rotate``); a base row is its own base with the lever ``–``."""
    if method in REPLAYED:
        return REPLAYED[method]
    if method.startswith("auction-router+"):  # sale-nomem+X with the generic plan, replayed
        lever = method.removeprefix("auction-router+").replace("+", " + ")
        return "sale-nomem", f"{lever} + plan_mode=generic (replayed)"
    base, _, rest = method.partition("+")
    return base, (rest.replace("+", " + ") if rest else "–")


def _num(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


def rows_of(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per SALE row of one report: pass@1 (and its spread over orders), cost × the largest
    agent, the auction's token share, tasks × orders and whether every planned job is in."""
    methods = {r["method"]: r for r in doc.get("methods", [])}
    out: dict[str, dict[str, Any]] = {}
    for g in doc.get("goals", []):
        row = methods.get(g["method"], {})
        done = len(row.get("n_per_order") or [row.get("n_tasks", 0)])
        planned = int(row.get("planned_orders", done))
        runs = f"{row.get('n_tasks', '?')} × {done}" + (
            f" (of {planned})" if planned > done else ""
        )
        out[g["method"]] = {
            "pass": _num(g.get("pass_at_1")),
            "pass_std": _num(row.get("pass_at_1_std")) if done > 1 else None,
            "cost": _num(g.get("cost_ratio")),
            "overhead": _num(g.get("overhead_token_share")),
            "runs": runs,
            "complete": bool(g.get("complete")),
        }
    return out


def _cell(row: dict[str, Any] | None, base: dict[str, Any] | None) -> str:
    if row is None:
        return "–"
    text = "–" if row["pass"] is None else f"{row['pass']:.3f}"
    if row["pass_std"] is not None:
        text += f" ± {row['pass_std']:.3f}"
    text += ", " + ("–" if row["cost"] is None else f"{row['cost']:.2f}×")
    if row["overhead"] is not None:
        text += f", {row['overhead']:.0%}"
    if base is not None and base is not row and None not in (row["pass"], base["pass"]):
        delta = f"{row['pass'] - base['pass']:+.3f}"
        if None not in (row["cost"], base["cost"]):
            delta += f", {row['cost'] - base['cost']:+.2f}×"
        text += f" (Δ {delta})"
    text += f"; {row['runs']}"
    if not row["complete"]:
        text += ", provisional"
    return text


def markdown(docs: dict[str, dict[str, Any]]) -> str:
    """The lever table over the given reports (benchmark name -> report)."""
    per_bench = {bench: rows_of(doc) for bench, doc in docs.items()}
    methods: list[str] = []
    for rows in per_bench.values():
        methods += [m for m in rows if m not in methods]
    methods.sort(key=lambda m: (lever_of(m)[1] != "–", lever_of(m)[0], lever_of(m)[1]))
    sizes = sorted({int(doc.get("n_tasks", 0)) for doc in docs.values()})
    tasks = " or ".join(map(str, sizes))
    lines = [
        "# SALE configurations side by side",
        "",
        f"One row per SALE configuration on the first {tasks} test tasks of each benchmark (real "
        "local pool). A cell is pass@1 (± its spread over task orders), total cost × the largest "
        "agent alone (task by task, counting every bid, juror and execution call) and the "
        "auction's share of the tokens; then, in brackets, the difference to its base row on "
        "the same benchmark (pass@1, cost ×); then tasks × orders run. A row without memory "
        "runs one order: no auction of it reads the memory, so every order is the same jobs. "
        "Provisional rows lack some job; their cost is still compared task by task.",
        "",
        "Written by `python -m sale.scripts.evals.levers_table` from the reports beside it; each "
        "report names the command that reproduces it.",
        "",
        "| base | lever | " + " | ".join(docs) + " |",
        "|---|---|" + "---|" * len(docs),
    ]
    for method in methods:
        base, lever = lever_of(method)
        cells = [_cell(rows.get(method), rows.get(base)) for rows in per_bench.values()]
        lines.append(f"| {base} | {lever} | " + " | ".join(cells) + " |")
    refs = []
    for bench, doc in docs.items():
        largest = next(
            (r for r in doc.get("methods", []) if r["method"] == f"single:{doc['largest_agent']}"),
            None,
        )
        cascade = next((r for r in doc.get("methods", []) if r["method"] == "cascade"), None)
        if largest and cascade:
            refs.append(
                f"{bench}: the largest agent alone passes {largest['pass_at_1']:.3f} for "
                f"${largest['cost_usd']:.5f}; the cascade {cascade['pass_at_1']:.3f} for "
                f"${cascade['cost_usd']:.5f}"
            )
    if refs:
        lines += ["", "For reference, on the same tasks: " + "; ".join(refs) + "."]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else Path("docs/results/levers")
    docs = {}
    for bench in BENCHES:
        path = folder / f"{bench}.json"
        if path.is_file():
            docs[bench] = json.loads(path.read_text())
    if not docs:
        print(f"no humaneval.json or search.json in {folder}: run scripts/levers.sh first")
        return 2
    out = folder / "README.md"
    out.write_text(markdown(docs))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
