"""Benchmark: where the local model servers spend their time, read from their own logs.

llama.cpp logs, for every request, how many prompt tokens it had to process (the rest came from
the slot's prompt cache), how long that took, how many tokens it generated and how long that
took, and how it picked the slot (by the longest common prefix, or the least recently used one
when nothing cached was similar enough). Summed per model over one server run (the last one in
the log, or every run since ``--since``), these say how much of a model's time goes to
re-reading prompts and how much of each prompt the cache saved: the figures to beat with
task-first prompts or more slots. Results go to docs/benchmarks/serving.json.

    python -m sale.scripts.bench.serving                        # every local model of the pool
    python -m sale.scripts.bench.serving --since "2026-11-27 07:05" --until "2026-11-27 07:58"
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated

import typer

_START = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+ INFO serving ")
_PROMPT = re.compile(r"task (\d+) \| prompt eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
_GEN = re.compile(r"task (\d+) \|\s+eval time =\s+([\d.]+) ms /\s+(\d+) tokens")
_RELEASE = re.compile(r"task (\d+) \| stop processing: n_tokens = (\d+)")
_SLOT = re.compile(r"selected slot by (LRU|LCP similarity)")


@dataclass
class ServingFigures:
    """One model server's requests, summed."""

    requests: int = 0
    prompt_tokens_processed: int = 0
    prompt_tokens_cached: int = 0
    prompt_s: float = 0.0
    generated_tokens: int = 0
    generation_s: float = 0.0
    slot_by_prefix: int = 0
    slot_by_lru: int = 0
    runs: list[str] = field(default_factory=list)  # the server starts covered

    @property
    def cached_share(self) -> float:
        total = self.prompt_tokens_processed + self.prompt_tokens_cached
        return self.prompt_tokens_cached / total if total else 0.0

    @property
    def prompt_time_share(self) -> float:
        busy = self.prompt_s + self.generation_s
        return self.prompt_s / busy if busy else 0.0

    def summary(self) -> dict[str, float | int | list[str]]:
        out: dict[str, float | int | list[str]] = asdict(self)
        out["cached_share"] = round(self.cached_share, 3)
        out["prompt_time_share"] = round(self.prompt_time_share, 3)
        out["prompt_tok_per_s"] = (
            round(self.prompt_tokens_processed / self.prompt_s, 2) if self.prompt_s else 0.0
        )
        out["gen_tok_per_s"] = (
            round(self.generated_tokens / self.generation_s, 2) if self.generation_s else 0.0
        )
        return out


def server_runs(lines: Iterable[str]) -> list[tuple[str, list[str]]]:
    """The log split at each server start: (start time, its lines)."""
    runs: list[tuple[str, list[str]]] = []
    for line in lines:
        start = _START.match(line)
        if start:
            runs.append((start.group(1), []))
        elif runs:
            runs[-1][1].append(line)
    return runs


def figures(runs: list[tuple[str, list[str]]]) -> ServingFigures:
    """The summed figures of the given server runs. A request counts once its release line
    (the prompt and the tokens it generated) is logged."""
    out = ServingFigures()
    for started, lines in runs:
        out.runs.append(started)
        pending: dict[str, dict[str, float]] = {}
        for line in lines:
            if m := _SLOT.search(line):
                if m.group(1) == "LRU":
                    out.slot_by_lru += 1
                else:
                    out.slot_by_prefix += 1
            elif m := _PROMPT.search(line):
                pending.setdefault(m.group(1), {}).update(p_ms=float(m.group(2)), p=int(m.group(3)))
            elif m := _GEN.search(line):
                pending.setdefault(m.group(1), {}).update(g_ms=float(m.group(2)), g=int(m.group(3)))
            elif (m := _RELEASE.search(line)) and m.group(1) in pending:
                req = pending.pop(m.group(1))
                if not {"p", "g"} <= req.keys():
                    continue
                out.requests += 1
                out.prompt_tokens_processed += int(req["p"])
                out.prompt_tokens_cached += max(0, int(m.group(2)) - int(req["g"]) - int(req["p"]))
                out.prompt_s += req["p_ms"] / 1000
                out.generated_tokens += int(req["g"])
                out.generation_s += req["g_ms"] / 1000
    return out


def main(
    logs: Annotated[
        list[Path] | None,
        typer.Argument(help="server logs; default: those of the local pool's models"),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="every server run started at or after this time (YYYY-MM-DD HH:MM)"),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(help="with --since: only the runs started before this time"),
    ] = None,
    out: Annotated[Path, typer.Option(help="where the JSON goes")] = Path(
        "docs/benchmarks/serving.json"
    ),
) -> None:
    """Sum each model server's prompt and generation work from its log."""
    if not logs:
        from sale.broker.pool import load_pool
        from sale.broker.settings import Settings
        from sale.scripts.local.model_server import server_log

        settings = Settings()
        pool = load_pool(settings.effective_pool_file)
        names = sorted({a.local_model for a in pool.agents if a.local_model})
        logs = [p for p in (server_log(settings.state_dir, n) for n in names) if p.exists()]
    if not logs:
        raise typer.BadParameter(
            "no server logs found (start the servers with `sale models up`); or pass their paths"
        )
    results = {}
    for path in logs:
        runs = server_runs(path.read_text(encoding="utf-8", errors="replace").splitlines())
        chosen = (
            [r for r in runs if r[0] >= since and (until is None or r[0] < until)]
            if since
            else runs[-1:]
        )
        fig = figures(chosen)
        results[path.stem] = fig.summary()
        typer.echo(
            f"{path.stem}: {fig.requests} requests since {chosen[0][0] if chosen else '–'}; "
            f"prompt {fig.prompt_tokens_processed} tokens processed, {fig.prompt_tokens_cached} "
            f"from the cache ({fig.cached_share:.0%}), {fig.prompt_s:.0f} s; generated "
            f"{fig.generated_tokens} tokens in {fig.generation_s:.0f} s; prompts take "
            f"{fig.prompt_time_share:.0%} of the busy time; slot by prefix {fig.slot_by_prefix}, "
            f"by LRU {fig.slot_by_lru}"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"since": since, "until": until, "models": results}
    out.write_text(json.dumps(doc, indent=1) + "\n")
    typer.echo(f"results: {out}")


if __name__ == "__main__":
    typer.run(main)
