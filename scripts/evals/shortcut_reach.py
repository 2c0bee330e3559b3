"""Can the memory shortcut fire on a benchmark's test tasks at all?

The shortcut (``SALE_MEMORY_SHORTCUT``) gives a job to an agent without an auction when
at least ``memory_shortcut_min`` past jobs of the memory are at least ``memory_shortcut`` similar
to it (cosine of their MiniLM task embeddings, as the memory compares them). In a ``sale eval``
task order the memory holds only that order's earlier test jobs, so the shortcut can fire for a
task only if it has ``memory_shortcut_min`` other test tasks that similar. This prints, per
benchmark and task count, the highest similarity between two test tasks and the highest
similarity of any task to its k-th nearest other task (k = the minimum): below that threshold
the shortcut can fire, above it never. Writes ``<out>/shortcut_reach.md``. Usage::

    python -m sale.scripts.evals.shortcut_reach [--limit 10 --limit 30] [--min 3] [--out DIR]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from sale.scripts.evals.benchmarks import BENCHMARKS, load_benchmark

Embed = Callable[[list[str]], list[list[float]]]


def reach(prompts: Sequence[str], embed: Embed, least: int) -> tuple[float, float]:
    """(the highest similarity between two of the prompts, the highest similarity of any prompt
    to its ``least``-th nearest other prompt; nan when there are not that many others)."""
    if len(prompts) < 2:
        return float("nan"), float("nan")
    vectors = np.asarray(embed(list(prompts)), dtype=float)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    nearest = np.sort(sims, axis=1)[:, ::-1]  # each row: its others, most similar first
    kth = float(nearest[:, least - 1].max()) if least < len(prompts) else float("nan")
    return float(sims.max()), kth


def markdown(rows: list[tuple[str, int, float, float]], least: int) -> str:
    lines = [
        "# Can the memory shortcut fire on the test tasks?",
        "",
        f"The shortcut needs {least} earlier jobs of the memory at least as similar to a job as "
        "its threshold (`SALE_MEMORY_SHORTCUT_MIN`, `SALE_MEMORY_SHORTCUT`); in a `sale eval` "
        "task order the memory holds only that order's earlier test jobs. Cosine similarity of "
        "the MiniLM task embeddings the memory uses. Written by "
        "`python -m sale.scripts.evals.shortcut_reach`.",
        "",
        f"| benchmark | test tasks | most similar pair | highest k-th nearest, k = {least} (the "
        "shortcut fires only at a threshold this low or lower) |",
        "|---|---|---|---|",
    ]
    for bench, n, pair, kth in rows:
        lines.append(f"| {bench} | {n} | {pair:.3f} | {kth:.3f} |")
    return "\n".join(lines) + "\n"


def main(
    limit: Annotated[list[int] | None, typer.Option(help="first N test tasks (repeatable)")] = None,
    least: Annotated[int, typer.Option("--min", help="memory_shortcut_min")] = 3,
    out: Annotated[Path, typer.Option(help="where shortcut_reach.md goes")] = Path(
        "docs/results/levers"
    ),
) -> None:
    from sale.workers.memory.embed import minilm_embed

    rows = []
    for bench in BENCHMARKS:
        tasks = load_benchmark(bench, "test")
        for n in limit or [10, 30]:
            pair, kth = reach([t.spec.prompt for t in tasks[:n]], minilm_embed, least)
            rows.append((bench, min(n, len(tasks)), pair, kth))
            typer.echo(
                f"{bench} {n} tasks: most similar pair {pair:.3f}, "
                f"highest k-th nearest (k = {least}) {kth:.3f}"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "shortcut_reach.md").write_text(markdown(rows, least))
    typer.echo(f"wrote {out / 'shortcut_reach.md'}")


if __name__ == "__main__":
    typer.run(main)
