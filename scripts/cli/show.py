"""The text form of `sale show`: a job's view (:func:`sale.workers.views.job_view`) rendered for a
terminal. How the job was given out comes first (the auction's bids and award, a direct job's
agent, or a memory shortcut), then every execution attempt with its self-check and trace (a
self-check fallback has several), the job's notes, and what each stage cost. Pure: it reads
the view dict only, so tests render it without a database.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

CUT = 300  # characters of a step's content or observation shown; `--json` has everything


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def bids_table(bids: list[dict[str, Any]]) -> Table:
    """The auction's bids, one row each, in the order they were made."""
    table = Table("agent", "round", "status", "tokens", "entropy", "jury", "C", "V", "score")
    for b in bids:
        table.add_row(
            b["agent"],
            b["round"],
            b["status"],
            str(b["tokens"]),
            _num(b["entropy"], ".3f"),
            " ".join(f"{k}:{v}" for k, v in b["jury"].items()),
            _num(b["cost"], ".3f"),
            _num(b["value"], ".3f"),
            _num(b["score"], ".3f"),
        )
    return table


def allocation_line(view: dict[str, Any]) -> str:
    """How the job was given out, in one line."""
    award = view["award"]
    if award is None:
        return "award: none yet"
    mode = view.get("mode", "auction")
    if mode == "direct":
        return f"direct job on {award['agent']}: no auction, a generic plan"
    if mode == "shortcut":
        return f"memory shortcut to {award['agent']}: its own bid, no jury, no refinement"
    return (
        f"provisional winner: {view['provisional_winner']}; "
        f"award: {award['agent']} ({award['round']} bid, score {award['score']:.3f})"
    )


def attempt_lines(attempt: dict[str, Any]) -> list[str]:
    """One execution attempt: who ran it, how it stopped, its self-check and verdict, the steps."""
    check = attempt.get("self_check")
    checked = "" if check is None else f", self-check {check}"
    if check == "failed" and attempt.get("self_check_detail"):
        checked += f" ({str(attempt['self_check_detail'])[:120]})"
    lines = [
        f"execution {attempt['attempt']} by {attempt['agent']}: {attempt['status']}, "
        f"stop {attempt['stop_reason']}, {attempt['tokens']} tokens{checked}, "
        f"verdict {attempt['verdict']}"
    ]
    for st in attempt["steps"]:
        tool = f" {st['tool_name']}({json.dumps(st['tool_args'])})" if st["tool_name"] else ""
        lines.append(f"  [{st['index']}] {st['role']}{tool}: {(st['content'] or '')[:CUT]}")
        if st["observation"]:
            lines.append(f"      → {st['observation'][:CUT]}")
    return lines


def usage_line(view: dict[str, Any]) -> str:
    """Total cost and tokens, split by stage (bid, jury, refine, execute)."""
    stages = ", ".join(
        f"{stage} {u['tokens']}" for stage, u in view.get("usage", {}).items() if u["tokens"]
    )
    return (
        f"cost ${view['cost_usd']:.8f}, tokens {view['tokens']} "
        f"(auction {view['auction_tokens']}{'; ' + stages if stages else ''})"
    )


def render(view: dict[str, Any], console: Console) -> None:
    """Print a job's view: header, allocation, attempts, notes, cost."""
    name = f" {view['name']}" if view.get("name") else ""
    console.print(
        f"[bold]{view['job_id']}[/bold]{name} {view['kind']} — {view['status']} — "
        f"verdict {view['verdict']}"
    )
    if view.get("status_reason"):
        console.print(f"reason: {view['status_reason']}")
    if view["bids"] and view.get("mode", "auction") != "direct":
        console.print(bids_table(view["bids"]))
    console.print(allocation_line(view))
    for attempt in view.get("executions") or ([view["execution"]] if view["execution"] else []):
        for line in attempt_lines(attempt):
            console.print(line, markup=False, highlight=False)
    for note in view.get("notes") or []:
        console.print(f"note: {note}", markup=False, highlight=False)
    console.print(usage_line(view))


def winner_cell(view: dict[str, Any]) -> str:
    """The award's agent, followed by every self-check fallback's agent in order
    (``a → b → c``); ``-`` before the award."""
    award = view["award"]
    if award is None:
        return "-"
    chain = [award["agent"]]
    for attempt in view.get("executions") or []:
        if attempt["attempt"] > 0:
            chain.append(attempt["agent"])
    return " → ".join(chain)


def answered_by(view: dict[str, Any]) -> str | None:
    """The agent whose execution gave the job its answer: the last attempt's, else the award's."""
    executions = view.get("executions") or []
    if executions:
        return str(executions[-1]["agent"])
    return str(view["award"]["agent"]) if view["award"] else None
