"""The verified award's results: a table, a Pareto plot and a stream plot per benchmark.

Reads the ``<bench>.json`` documents that ``sale eval --out DIR`` wrote (with the
``verified-award`` and ``cascade-top2`` replays among their methods) and writes, in DIR:
``results.json`` (every method's pass@1 and cost as a multiple of the largest agent alone's,
the shipped default's row marked ``"default": true``), ``summary.md`` (the same as tables),
``<bench>_pareto.png`` (pass@1 against cost, the Pareto frontier of the non-oracle methods and
the oracle marked) and ``<bench>_stream.png`` (the verified award's cheaper-agent win share and
cost per passed job along the stream, per task order).

    python -m sale.scripts.evals.verified_report docs/results/verified
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: The shipped default configuration's row: the verified award run live through the queue
#: (its replay is ``verified-award``).
DEFAULT_ROW = "sale-nomem+award=verified"
ORACLES = ("oracle", "oracle-small")


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method of one benchmark's document with its cost relative to the largest alone."""
    alone = next(r for r in doc["methods"] if r["method"] == f"single:{doc['largest_agent']}")
    out = []
    for r in doc["methods"]:
        out.append(
            {
                "method": r["method"],
                "pass_at_1": r["pass_at_1"],
                "pass_at_1_std": r.get("pass_at_1_std") or 0.0,
                "cost_usd": r["cost_usd"],
                "cost_x": r["cost_usd"] / alone["cost_usd"],
                "largest_share": r.get("largest_share"),
                "orders": r.get("orders"),
                "replayed": bool(r.get("replayed")),
                "default": r["method"] == DEFAULT_ROW,
            }
        )
    return out


def pareto(table: list[dict[str, Any]]) -> list[str]:
    """The non-oracle methods no other non-oracle method dominates (at least the pass@1 at no
    more cost, one of them strictly), cheapest first."""
    pool = [r for r in table if r["method"] not in ORACLES]
    front = [
        r
        for r in pool
        if not any(
            o["pass_at_1"] >= r["pass_at_1"]
            and o["cost_x"] <= r["cost_x"]
            and (o["pass_at_1"] > r["pass_at_1"] or o["cost_x"] < r["cost_x"])
            for o in pool
        )
    ]
    return [r["method"] for r in sorted(front, key=lambda r: r["cost_x"])]


def plot_pareto(bench: str, table: list[dict[str, Any]], front: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in table:
        oracle = r["method"] in ORACLES
        ax.errorbar(
            r["cost_x"],
            r["pass_at_1"],
            yerr=r["pass_at_1_std"],
            fmt="*" if oracle else ("s" if r["method"] in front else "o"),
            color="grey" if oracle else ("C3" if r["method"] == "verified-award" else "C0"),
            capsize=2,
        )
        label = r["method"] + (" (default)" if r["default"] else "")
        ax.annotate(label, (r["cost_x"], r["pass_at_1"]), xytext=(4, 3),
                    textcoords="offset points", fontsize=6)  # fmt: skip
    pts = sorted((r["cost_x"], r["pass_at_1"]) for r in table if r["method"] in front)
    ax.step([x for x, _ in pts], [y for _, y in pts], where="post", color="C1", alpha=0.6,
            label="Pareto frontier (non-oracle)")  # fmt: skip
    ax.set_xlabel("cost × the largest agent alone (every model call)")
    ax.set_ylabel("pass@1 (test split)")
    ax.set_title(f"{bench}: pass@1 against cost; oracles as stars")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_stream(bench: str, doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for order, curve in (doc.get("win_share") or {}).get("verified-award", {}).items():
        left.plot(range(1, len(curve) + 1), curve, label=f"order {order}")
    for order, curve in (doc.get("cost_per_pass") or {}).get("verified-award", {}).items():
        xs = [i for i, v in enumerate(curve, 1) if v is not None]
        right.plot(xs, [curve[i - 1] for i in xs], label=f"order {order}")
    left.set_ylim(-0.02, 1.02)
    left.set_title("cheaper agents' cumulative win share")
    right.set_title("cumulative US$ per passed job")
    for ax in (left, right):
        ax.set_xlabel("jobs in the stream")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{bench}: verified-award along the stream (replay)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    lines = [f"# Verified award: results ({results['date']})", ""]
    for bench, b in results["benchmarks"].items():
        lines += [
            f"## {bench} ({b['n_tasks']} test tasks, {b['orders']} orders)",
            "",
            "| method | pass@1 | ± | cost × largest | largest share | Pareto |",
            "|---|---|---|---|---|---|",
        ]
        for r in b["methods"]:
            name = r["method"] + (" **(default)**" if r["default"] else "")
            share = "–" if r["largest_share"] is None else f"{r['largest_share']:.2f}"
            lines.append(
                f"| {name} | {r['pass_at_1']:.3f} | {r['pass_at_1_std']:.3f} | "
                f"{r['cost_x']:.2f} | {share} | {'yes' if r['method'] in b['pareto'] else ''} |"
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(out_dir: Path) -> dict[str, Any]:
    """Write the files of the module docstring for every ``<bench>.json`` in ``out_dir``."""
    results: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(),
        "command": f"python -m sale.scripts.evals.verified_report {out_dir}",
        "benchmarks": {},
    }
    for bench in ("humaneval", "search"):
        path = out_dir / f"{bench}.json"
        if not path.is_file():
            continue
        doc = json.loads(path.read_text())
        table = rows(doc)
        front = pareto(table)
        results["benchmarks"][bench] = {
            "source": str(path),
            "eval_command": doc["command"],
            "n_tasks": doc["n_tasks"],
            "orders": doc["orders"],
            "methods": table,
            "pareto": front,
        }
        plot_pareto(bench, table, front, out_dir / f"{bench}_pareto.png")
        plot_stream(bench, doc, out_dir / f"{bench}_stream.png")
    if not results["benchmarks"]:
        raise ValueError(
            f"{out_dir}: no humaneval.json or search.json; run `sale eval --out` first"
        )
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "summary.md").write_text(markdown(results))
    return results


if __name__ == "__main__":
    try:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/results/verified"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
