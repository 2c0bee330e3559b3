"""The evaluation's metrics, computed from run records (pure functions, no I/O).

Per method and task order: pass@1; total US$ counting every model call (bids, jury, refinement,
execution; for the cascade every agent it tried); the paper's $/Mt (US$ per million tokens
spent); the largest agent's share of jobs; auction overhead as a share of tokens and of wall
time; the same per complexity bin. Across orders: mean and (population) standard deviation.
For SALE: the cheaper agents' cumulative win share along the stream, and for each signal the
scorer uses (each juror's score, the entropy, the plan length), its correlation with success.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

Record = Mapping[str, Any]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def order_figures(records: Sequence[Record], largest: str) -> dict[str, float]:
    """The figures of one method on one task order."""
    n = len(records)
    tokens = sum(int(r["tokens"]) for r in records)
    cost = sum(float(r["cost_usd"]) for r in records)
    wall = sum(float(r["wall_s"]) for r in records)
    return {
        "n": n,
        "pass_at_1": sum(bool(r["passed"]) for r in records) / n if n else math.nan,
        "cost_usd": cost,
        "tokens": tokens,
        "usd_per_mtok": cost / tokens * 1e6 if tokens else math.nan,
        "largest_share": sum(r["agent"] == largest for r in records) / n if n else math.nan,
        "overhead_token_share": (
            sum(int(r["auction_tokens"]) for r in records) / tokens if tokens else 0.0
        ),
        "overhead_wall_share": (
            sum(float(r["auction_wall_s"]) for r in records) / wall if wall else 0.0
        ),
        "wall_s": wall,
    }


def method_summary(
    records: Iterable[Record], largest: str, bins: Sequence[str] | None = None
) -> dict[str, Any]:
    """Mean ± std over orders of every figure, and the per-bin figures (pooled over orders)."""
    rows = list(records)
    by_order: dict[int, list[Record]] = defaultdict(list)
    for r in rows:
        by_order[int(r["order"])].append(r)
    per_order = [order_figures(by_order[k], largest) for k in sorted(by_order)]
    out: dict[str, Any] = {
        "orders": len(per_order),
        "n_tasks": per_order[0]["n"] if per_order else 0,
        "n_per_order": [int(f["n"]) for f in per_order],
    }
    for key in (
        "pass_at_1",
        "cost_usd",
        "usd_per_mtok",
        "largest_share",
        "overhead_token_share",
        "overhead_wall_share",
        "tokens",
        "wall_s",
    ):
        mean, std = _mean_std([float(f[key]) for f in per_order])
        out[key] = mean
        out[f"{key}_std"] = std
    out["replayed"] = any(r.get("replayed") for r in rows)
    # The code versions that ran the method's jobs (records from before this was kept: none).
    out["code"] = sorted({str(r["code"]) for r in rows if r.get("code")})
    per_bin: dict[str, list[Record]] = defaultdict(list)
    for r in rows:
        per_bin[str(r["bin"])].append(r)
    names = list(bins) if bins else sorted(per_bin)
    out["bins"] = {}
    for b in names:
        if b not in per_bin:
            continue
        fig = order_figures(per_bin[b], largest)
        out["bins"][b] = {
            "n": fig["n"] / max(1, len(per_order)),
            "pass_at_1": fig["pass_at_1"],
            "cost_usd": fig["cost_usd"] / max(1, len(per_order)),
            "largest_share": fig["largest_share"],
        }
    return out


#: The goals of the efficiency issue (#6), per SALE row, against the largest agent alone and
#: the cascade on the same test tasks.
COST_GOAL = 0.6  # total cost at most this share of the largest agent's
OVERHEAD_GOAL = 0.25  # auction tokens at most this share of a coding job's tokens


def goals(
    rows: Sequence[dict[str, Any]],
    live: Sequence[str],
    largest_method: str,
    n_tasks: int,
    coding: bool,
) -> list[dict[str, Any]]:
    """For each live method's row: pass@1 at least the largest agent's; total cost at most
    ``COST_GOAL`` × its; better than the cascade on pass@1 or cost and worse on neither; and
    (coding) the auction at most ``OVERHEAD_GOAL`` of the tokens. ``complete`` is False while
    the row or a reference row lacks a task of an order, or one of its ``planned_orders`` (a
    live row's, when the harness sets it): its verdicts are provisional, with costs compared per
    task (scaled to ``n_tasks``)."""
    by_name = {r["method"]: r for r in rows}
    ref, cascade = by_name.get(largest_method), by_name.get("cascade")
    if ref is None:
        return []

    def full(row: dict[str, Any]) -> bool:  # every planned order, each with every task
        counts = row.get("n_per_order") or [row["n_tasks"]]
        planned = int(row.get("planned_orders", len(counts)))
        return len(counts) >= planned and all(n == n_tasks for n in counts)

    def per_task(row: dict[str, Any]) -> float:  # a provisional row covers fewer tasks
        return float(row["cost_usd"]) / max(1, int(row["n_tasks"])) * n_tasks

    out = []
    for method in live:
        row = by_name.get(method)
        if row is None:
            continue
        p, c = float(row["pass_at_1"]), per_task(row)
        ratio = c / per_task(ref) if ref["cost_usd"] else math.nan
        beats = None
        if cascade is not None:
            pc, cc = float(cascade["pass_at_1"]), per_task(cascade)
            beats = p >= pc and c <= cc and (p > pc or c < cc)
        out.append(
            {
                "method": method,
                "complete": full(row) and full(ref) and (cascade is None or full(cascade)),
                "pass_at_1": p,
                "largest_pass_at_1": float(ref["pass_at_1"]),
                "pass_goal": p >= float(ref["pass_at_1"]),
                "cost_ratio": ratio,
                "cost_goal": ratio <= COST_GOAL,
                "cascade_pass_at_1": None if cascade is None else float(cascade["pass_at_1"]),
                "cascade_cost_usd": None if cascade is None else per_task(cascade),
                "cascade_goal": beats,
                "overhead_token_share": float(row["overhead_token_share"]),
                "overhead_goal": (
                    float(row["overhead_token_share"]) <= OVERHEAD_GOAL if coding else None
                ),
            }
        )
    return out


#: Where a method's answer to a task lands, judged against the single-agent runs of the same
#: task (``solved``: which agents solved it alone). The passed kinds say whether the method paid
#: more than it had to; the failed kinds say what lost it: a task no agent solves alone, an
#: agent that solved it alone failing here, or an answer from a non-solver (an agent that did
#: not solve the task alone, where another did), split by what the self-check said of it (on
#: what the agent could see, never the hidden tests).
OUTCOMES: dict[str, tuple[str, str]] = {
    "passed_cheapest": ("pass: cheapest", "passed, by the cheapest solver or a cheaper agent"),
    "passed_pricier": ("pass: pricier", "passed, by an agent pricier than the cheapest solver"),
    "passed_unsolved": ("pass: no solver", "passed where no agent alone did"),
    "failed_unsolved": ("fail: no solver", "failed where no agent alone passed"),
    "failed_solver": ("fail: by a solver", "failed, though its agent solved the task alone"),
    "other_unchecked": ("fail, not a solver: unchecked", "failed by a non-solver; no self-check"),
    "other_check_passed": (
        "fail, not a solver: check passed",
        "failed by a non-solver, though the self-check passed its answer",
    ),
    "other_check_failed": (
        "fail, not a solver: check failed",
        "failed by a non-solver; the self-check failed its answer and nothing escalated",
    ),
}


def outcome_kind(
    record: Record, solved: Mapping[str, bool], prices: Mapping[str, float]
) -> str | None:
    """The :data:`OUTCOMES` key of one record; None unless every agent of ``prices`` (the pool)
    has a single-agent run of the task (nothing to judge it by)."""
    if not prices or any(a not in solved for a in prices):
        return None
    agent = str(record["agent"])
    solvers = [a for a, ok in solved.items() if ok]
    if record["passed"]:
        if not solvers:
            return "passed_unsolved"
        cheapest = min(prices.get(a, math.inf) for a in solvers)
        return "passed_cheapest" if prices.get(agent, math.inf) <= cheapest else "passed_pricier"
    if not solvers:
        return "failed_unsolved"
    if solved.get(agent):
        return "failed_solver"
    check = record.get("self_check")
    if check is None:
        return "other_unchecked"
    return "other_check_passed" if check else "other_check_failed"


def outcome_table(
    records_by_method: Mapping[str, Sequence[Record]],
    solved: Mapping[str, Mapping[str, bool]],
    prices: Mapping[str, float],
) -> list[dict[str, Any]]:
    """Per method, how many of its records (pooled over orders) fall in each :data:`OUTCOMES`
    kind; ``judged`` counts the records whose task has its single-agent runs."""
    table = []
    for method, records in records_by_method.items():
        counts = dict.fromkeys(OUTCOMES, 0)
        for r in records:
            kind = outcome_kind(r, solved.get(str(r["task_id"]), {}), prices)
            if kind is not None:
                counts[kind] += 1
        table.append({"method": method, "judged": sum(counts.values()), **counts})
    return table


#: The stop reasons of a job limit (the trace ran out of budget rather than answering).
LIMIT_STOPS = frozenset({"max_tokens", "max_steps", "max_cost_usd", "max_seconds"})


def cost_split(records_by_method: Mapping[str, Sequence[Record]]) -> list[dict[str, Any]]:
    """Per method (meant for the single-agent runs), where its cost goes: the tasks it passed,
    the tasks it failed, and the runs a job limit stopped (``LIMIT_STOPS``). Whoever sends a
    task to an agent pays its cost there, pass or fail: only knowing beforehand which tasks the
    agent fails saves its failed-task share."""
    table = []
    for method, records in records_by_method.items():
        total = sum(float(r["cost_usd"]) for r in records)
        row: dict[str, Any] = {"method": method, "n": len(records), "cost_usd": total}
        groups = {
            "passed": [r for r in records if r["passed"]],
            "failed": [r for r in records if not r["passed"]],
            "limit": [r for r in records if r.get("stop_reason") in LIMIT_STOPS],
        }
        for name, chosen in groups.items():
            cost = sum(float(r["cost_usd"]) for r in chosen)
            row[f"{name}_n"] = len(chosen)
            row[f"{name}_cost_usd"] = cost
            row[f"{name}_cost_share"] = cost / total if total else math.nan
        table.append(row)
    return table


def win_share_curve(records: Iterable[Record], largest: str) -> dict[int, list[float]]:
    """Per order, the cumulative share of jobs awarded to agents other than the largest."""
    by_order: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_order[int(r["order"])].append(r)
    curves = {}
    for k, rows in sorted(by_order.items()):
        rows.sort(key=lambda r: int(r["position"]))
        wins = 0
        curve = []
        for i, r in enumerate(rows, 1):
            wins += r["agent"] != largest
            curve.append(wins / i)
        curves[k] = curve
    return curves


def cost_per_pass_curve(records: Iterable[Record]) -> dict[int, list[float | None]]:
    """Per order, the cumulative US$ per passed job along the stream (None before a pass)."""
    by_order: dict[int, list[Record]] = defaultdict(list)
    for r in records:
        by_order[int(r["order"])].append(r)
    curves: dict[int, list[float | None]] = {}
    for k, rows in sorted(by_order.items()):
        rows.sort(key=lambda r: int(r["position"]))
        cost, passed = 0.0, 0
        curve: list[float | None] = []
        for r in rows:
            cost += float(r["cost_usd"])
            passed += bool(r["passed"])
            curve.append(cost / passed if passed else None)
        curves[k] = curve
    return curves


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Pearson's r (point-biserial for a 0/1 outcome); None when undefined."""
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def signal_table(
    sale_records: Iterable[Record],
    solved: Mapping[str, Mapping[str, bool]],
    jurors: Sequence[str],
    weights: Mapping[str, float | None] | None = None,
) -> list[dict[str, Any]]:
    """Each scoring signal's correlation with success.

    A juror's signal is its γ (``gamma``: the score after the validity check and debiasing, as
    the scorer used it) where the record has it, else its raw score; a juror that abstained
    (e.g. a degenerate vector) adds no point. Two labels: ``r_alone`` labels every bid by
    whether its agent solved the task alone (the single-agent runs: every bid gets a label, the
    plan itself was not executed); ``r_executed`` uses only awarded bids, labelled by their own
    execution's verdict.
    """
    signals: dict[str, tuple[list[float], list[float], list[float], list[float]]] = {}

    def add(name: str, value: float | None, alone: bool | None, executed: bool | None) -> None:
        if value is None:
            return
        xs_a, ys_a, xs_e, ys_e = signals.setdefault(name, ([], [], [], []))
        if alone is not None:
            xs_a.append(value)
            ys_a.append(1.0 if alone else 0.0)
        if executed is not None:
            xs_e.append(value)
            ys_e.append(1.0 if executed else 0.0)

    for r in sale_records:
        awarded = (r["agent"], r.get("award_round"))
        for b in r.get("bids") or []:
            if b.get("status") != "ok":
                continue
            alone = solved.get(str(r["task_id"]), {}).get(str(b["agent"]))
            executed = bool(r["passed"]) if (b["agent"], b["round"]) == awarded else None
            add("entropy", b.get("entropy"), alone, executed)
            add("plan_tokens", b.get("tokens"), alone, executed)
            # γ, the scores as the scorer used them (validity check, debiasing); records from
            # before γ was kept in the run record carry only the raw scores.
            scored = b.get("gamma") if b.get("gamma") is not None else b.get("jury")
            for juror in jurors:
                score = (scored or {}).get(juror)
                add(f"jury:{juror}", None if score is None else float(score), alone, executed)
    table = []
    for name, (xs_a, ys_a, xs_e, ys_e) in signals.items():
        weight = None
        if weights is not None:
            weight = weights.get(name)
        table.append(
            {
                "signal": name,
                "r_alone": pearson(xs_a, ys_a),
                "n_alone": len(xs_a),
                "r_executed": pearson(xs_e, ys_e),
                "n_executed": len(xs_e),
                "fitted_weight": weight,
            }
        )
    return sorted(table, key=lambda row: str(row["signal"]))
