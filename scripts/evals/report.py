"""The evaluation's outputs: one JSON file and one Markdown table per benchmark, and PNG plots.

Written after every stage, so an interrupted evaluation still leaves its partial figures
(``"complete": false`` until every planned job has finished).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from sale.scripts.evals.metrics import COST_GOAL, OUTCOMES, OVERHEAD_GOAL


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pm(row: dict[str, Any], key: str, digits: int = 3, scale: float = 1.0) -> str:
    mean, std = row.get(key), row.get(f"{key}_std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    text = f"{mean * scale:.{digits}f}"
    if row.get("orders", 1) > 1 and std is not None and not math.isnan(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def _orders(row: dict[str, Any]) -> str:
    """The orders a row has records of, and how many it should have when that is more."""
    planned = int(row.get("planned_orders", row["orders"]))
    return f"{row['orders']} (of {planned})" if planned > row["orders"] else str(row["orders"])


def markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown: the main table, per-bin tables, the signals, the command."""
    lines = [
        f"# {doc['bench']}: every method on the {doc['pool']} pool",
        "",
        f"Command: `{doc['command']}`  ",
        f"Date: {doc['date']}; complete: {doc['complete']}; test tasks: {doc['n_tasks']}; "
        f"orders: {doc['orders']}; decoding: {doc['decoding']}.",
        "",
        "| method | pass@1 | total US$ | $/Mt | largest share | overhead (tokens) | "
        "overhead (wall) | tasks × orders | replay |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in doc["methods"]:
        lines.append(
            f"| {row['method']} | {_pm(row, 'pass_at_1')} | {_pm(row, 'cost_usd', 5)} | "
            f"{_pm(row, 'usd_per_mtok', 4)} | {_pm(row, 'largest_share', 2)} | "
            f"{_pm(row, 'overhead_token_share', 2)} | {_pm(row, 'overhead_wall_share', 2)} | "
            f"{row['n_tasks']} × {_orders(row)} | {'yes' if row['replayed'] else 'no'} |"
        )
    bins = sorted({b for row in doc["methods"] for b in row["bins"]})
    if bins:
        lines += ["", "Per complexity bin (pass@1, US$ per order):", ""]
        lines.append("| method | " + " | ".join(bins) + " |")
        lines.append("|---|" + "---|" * len(bins))
        for row in doc["methods"]:
            cells = []
            for b in bins:
                fig = row["bins"].get(b)
                cells.append(
                    "–" if fig is None else f"{_fmt(fig['pass_at_1'], 2)} (${fig['cost_usd']:.5f})"
                )
            lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    if doc.get("signals"):
        lines += [
            "",
            "Signals the scorer uses: correlation with success over the auctions of the test "
            "split's SALE runs and of the train split's (r_alone: every bid, labelled by "
            "whether its agent solved the task alone; r_executed: awarded bids, by their verdict).",
            "",
            "| signal | r_alone (n) | r_executed (n) | fitted weight |",
            "|---|---|---|---|",
        ]
        for s in doc["signals"]:
            lines.append(
                f"| {s['signal']} | {_fmt(s['r_alone'], 2)} ({s['n_alone']}) | "
                f"{_fmt(s['r_executed'], 2)} ({s['n_executed']}) | {_fmt(s['fitted_weight'], 4)} |"
            )
    if doc.get("goals"):
        lines += ["", *goals_markdown(doc["goals"])]
        lines += floor_markdown(doc)
    if doc.get("outcomes"):
        lines += ["", *outcomes_markdown(doc["outcomes"])]
    if doc.get("cost_split"):
        lines += ["", *cost_split_markdown(doc["cost_split"])]
    if doc.get("notes"):
        lines += ["", "Notes:", ""] + [f"- {n}" for n in doc["notes"]]
    versions = {row["method"]: row.get("code") or [] for row in doc["methods"]}
    if any(versions.values()):
        lines += [
            "",
            "The code (commit) that ran each method's jobs; – : not recorded (older runs):",
            "",
        ]
        lines += [f"- {m}: {', '.join(v) or '–'}" for m, v in versions.items()]
    return "\n".join(lines) + "\n"


def _yes(value: bool | None) -> str:
    return "–" if value is None else ("**yes**" if value else "no")


def goals_markdown(goals: list[dict[str, Any]]) -> list[str]:
    """The efficiency goals per SALE row (metrics.goals) as a Markdown table."""
    lines = [
        "Goals per SALE row, against the largest agent alone and the cascade on the same test "
        f"tasks: pass@1 at least the largest's; total cost at most {COST_GOAL:g}× its; better "
        "than the cascade on pass@1 or cost and worse on neither; the auction at most "
        f"{OVERHEAD_GOAL:.0%} of the tokens (coding). Rows marked provisional lack some task of "
        "an order; their costs are compared per task.",
        "",
        "| method | pass@1 vs largest | cost × largest | vs cascade (pass@1, US$) | "
        "auction tokens | complete |",
        "|---|---|---|---|---|---|",
    ]
    for g in goals:
        cascade = (
            "–"
            if g["cascade_goal"] is None
            else f"{_yes(g['cascade_goal'])} ({_fmt(g['cascade_pass_at_1'])}, "
            f"${g['cascade_cost_usd']:.5f})"
        )
        lines.append(
            f"| {g['method']} | {_yes(g['pass_goal'])}: {_fmt(g['pass_at_1'])} vs "
            f"{_fmt(g['largest_pass_at_1'])} | {_yes(g['cost_goal'])}: "
            f"{_fmt(g['cost_ratio'], 2)}× | {cascade} | {_yes(g['overhead_goal'])}: "
            f"{_fmt(g['overhead_token_share'], 2)} | "
            f"{'yes' if g['complete'] else 'provisional'} |"
        )
    return lines


def floor_markdown(doc: dict[str, Any]) -> list[str]:
    """The cost floor under the goals: the ``oracle-small`` row against the largest agent's."""
    rows = {r["method"]: r for r in doc["methods"]}
    floor, ref = rows.get("oracle-small"), rows.get(f"single:{doc.get('largest_agent')}")
    if floor is None or ref is None or not ref.get("cost_usd"):
        return []
    ratio = float(floor["cost_usd"]) / float(ref["cost_usd"])
    return [
        "",
        f"The floor: `oracle-small`, which knows which tasks each cheaper agent solves alone and "
        f"gives the largest agent the rest, passes {_fmt(floor['pass_at_1'])} at "
        f"{ratio:.2f}× the largest agent's cost. No method that cannot tell in advance when the "
        "largest agent will fail keeps its pass@1 for less, unless its plans make a cheaper "
        "agent pass where it fails alone.",
    ]


def outcomes_markdown(outcomes: list[dict[str, Any]]) -> list[str]:
    """Where each method's answers land (metrics.outcome_table) as a Markdown table."""
    lines = [
        "Where each method wins and loses, task by task against the single-agent runs (counts "
        "pooled over orders; a solver is an agent that solved the task alone; the self-check "
        "is of the final answer, on what its agent could see):",
        "",
        *(f"- {short}: {long}" for short, long in OUTCOMES.values()),
        "",
        "| method | judged | " + " | ".join(short for short, _ in OUTCOMES.values()) + " |",
        "|---|---|" + "---|" * len(OUTCOMES),
    ]
    for row in outcomes:
        cells = " | ".join(str(row[k]) for k in OUTCOMES)
        lines.append(f"| {row['method']} | {row['judged']} | {cells} |")
    return lines


def cost_split_markdown(split: list[dict[str, Any]]) -> list[str]:
    """Where each single agent's cost goes (metrics.cost_split) as a Markdown table."""
    lines = [
        "Where each agent's cost goes when it runs alone: on the tasks it passes, on those it "
        "fails, and on the runs a job limit (tokens, steps, cost, time) stopped. Whoever sends "
        "a task to an agent pays its cost there, pass or fail: only knowing beforehand which "
        "tasks an agent fails saves its failed-task share.",
        "",
        "| method | tasks | total US$ | passed: n, US$ (share) | failed: n, US$ (share) | "
        "stopped by a limit: n, US$ (share) |",
        "|---|---|---|---|---|---|",
    ]
    for row in split:
        cells = " | ".join(
            f"{row[f'{k}_n']}, ${row[f'{k}_cost_usd']:.5f} ({_fmt(row[f'{k}_cost_share'], 2)})"
            for k in ("passed", "failed", "limit")
        )
        lines.append(f"| {row['method']} | {row['n']} | ${row['cost_usd']:.5f} | {cells} |")
    return lines


def plots(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """pass@1 against total cost per method; the cheaper agents' win share along the stream."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in doc["methods"]:
        x, y = row["cost_usd"], row["pass_at_1"]
        if any(isinstance(v, float) and math.isnan(v) for v in (x, y)):
            continue
        ax.errorbar(
            x,
            y,
            xerr=row.get("cost_usd_std") or 0,
            yerr=row.get("pass_at_1_std") or 0,
            fmt="o",
            capsize=3,
        )
        ax.annotate(row["method"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    ax.set_xlabel("total US$ (every model call)")
    ax.set_ylabel("pass@1")
    ax.set_title(f"{doc['bench']}: pass@1 against cost ({doc['n_tasks']} test tasks)")
    ax.grid(alpha=0.3)
    written.append(_save(fig, out_dir / f"{doc['bench']}_pass_vs_cost.png"))

    curves = doc.get("win_share") or {}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for method, per_order in curves.items():
            for order, curve in per_order.items():
                ax.plot(range(1, len(curve) + 1), curve, label=f"{method} order {order}")
        ax.set_xlabel("jobs in the stream")
        ax.set_ylabel("cumulative share won by cheaper agents")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{doc['bench']}: cheaper agents' win share as memory grows")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / f"{doc['bench']}_win_share.png"))
    return written


def _save(fig: Any, path: Path) -> Path:
    """Lay out, write as PNG and close a figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(doc: dict[str, Any], out_dir: Path, with_plots: bool = True) -> list[Path]:
    """Write ``<bench>.json``, ``<bench>.md`` and the plots; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{doc['bench']}.json"
    md_path = out_dir / f"{doc['bench']}.md"
    json_path.write_text(json.dumps(_clean(doc), indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown(doc))
    paths = [json_path, md_path]
    if with_plots:
        paths += plots(doc, out_dir)
    return paths


def _clean(value: Any) -> Any:
    """NaN (an undefined figure) as null, so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
