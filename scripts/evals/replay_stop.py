"""What a repeat stop (``SALE_REPEAT_STOP``) does to the recorded single-agent runs, without a
model call.

At temperature 0 an execution is the same, reply for reply, up to the point where a stop would
cut it. Feeding an execution's recorded replies back through the agent loop with the stop on
therefore gives the run the stop would have made: the loop stops where it would have, keeps the
candidate answer it would have kept, and that answer is judged by the job's own verdict (the
hidden tests, the reference answer) and self-check. A replayed trace the stop does not cut must
end with the recorded answer: the script counts those as its fidelity check.

From the replayed single-agent outcomes it derives the methods that only pick agents (the
oracle, the cascade) the way ``sale eval`` does, so the stop's effect on the baselines and on
the cost goals can be read before a live lever row is run. SALE's own rows must run live.

    python -m scripts.evals.replay_stop --work-dir ~/sale-eval/humaneval --stop 2
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlmodel import col, select

from models.db import session_scope
from models.schemas import TaskSpec
from models.tables import Bid, Execution, ExecutionStep, Job
from scripts.evals.harness import shown_path
from scripts.evals.methods import cheapest_first, pick_cascade, pick_oracle, replay
from scripts.evals.runner import env_settings, is_live, reads_memory, segment_name, variant_env
from scripts.evals.store import RunStore
from workers.execution import EXECUTORS
from workers.llm import LLMCall, LLMResult, Message
from workers.pool import Agent, Pool, load_pool
from workers.prompts import PromptStyle
from workers.selfcheck import has_visible_checks, self_check
from workers.verdict import judge_answer

#: The per-call output cap of the runs (settings ``execute_max_tokens``, its default).
EXECUTE_MAX_TOKENS = 768


class ReplayExhausted(RuntimeError):
    """The loop asked for more replies than were recorded: the replay diverged."""


def replay_llm(replies: Sequence[ExecutionStep]) -> LLMCall:
    """A model function that answers each call with the next recorded reply."""
    queue = list(replies)

    def llm(agent: Agent, messages: list[Message], *, stage: str, **_: Any) -> LLMResult:
        if not queue:
            raise ReplayExhausted(f"{agent.name}: no recorded reply left")
        step = queue.pop(0)
        return LLMResult(
            text=step.content or "",
            tokens_in=step.tokens_in,
            tokens_out=step.tokens_out,
            top_logprobs=None,
            cost_usd=step.cost_usd,
            latency_s=step.latency_s,
            model=agent.model,
        )

    return llm


@dataclass
class Recorded:
    """One stored execution (attempt) of a job."""

    job_id: str
    task_id: str
    attempt: int
    agent: str
    spec: TaskSpec
    plan: str
    answer: str | None
    self_check: bool | None  # what the job's self-check said (None: not checked)
    replies: list[ExecutionStep]


def replay_outcome(rec: Recorded, agent: Agent, stop: int) -> dict[str, Any]:
    """The outcome record (as :mod:`scripts.evals.methods` reads it) of ``rec`` under a repeat
    stop of ``stop`` replies; ``cut`` says whether the stop ended it early, ``faithful``
    whether an uncut replay ended with the recorded answer (None when cut)."""
    outcome = EXECUTORS[rec.spec.kind](
        rec.spec,
        rec.plan,
        agent,
        replay_llm(rec.replies),
        min(EXECUTE_MAX_TOKENS, rec.spec.limits.max_tokens),
        style=PromptStyle(repeat_stop=stop),
    )
    cut = outcome.stop_reason == "repeated_actions"
    verdict = judge_answer(rec.spec, outcome.answer)
    check = None
    if has_visible_checks(rec.spec):
        observations = [s.observation or "" for s in outcome.steps]
        check = self_check(rec.spec, outcome.answer, observations=observations).value == "passed"
    kept = [s for s in outcome.steps if s.role == "assistant"]
    return {
        "task_id": rec.task_id,
        "agent": rec.agent,
        "verdict": verdict.value,
        "passed": verdict.value == "passed",
        "self_check": check,
        "tokens": outcome.tokens_in + outcome.tokens_out,
        "cost_usd": outcome.cost_usd,
        "wall_s": sum(s.latency_s for s in kept),
        "stop_reason": outcome.stop_reason,
        "cut": cut,
        "faithful": None if cut else outcome.answer == rec.answer,
    }


def single_db(work_dir: Path, record: dict[str, Any]) -> Path:
    """The database holding a single-agent run: the work directory's, or for a record carried
    over from another work directory (``carried_over`` names its runs.jsonl), that one's."""
    origin = re.search(r"carried over from (\S+)/runs\.jsonl", str(record.get("carried_over")))
    return (Path(origin.group(1)) if origin else work_dir) / "single.db"


def recorded_executions(db: Path, wanted: dict[str, dict[str, Any]]) -> Iterator[Recorded]:
    """Every execution, attempt by attempt, of the jobs of ``wanted`` (job id -> run record)
    stored in the database ``db``."""
    with session_scope(f"sqlite:///{db}") as s:
        rows = s.exec(
            select(Execution, Job, Bid)
            .where(Execution.job_id == Job.id, Execution.bid_id == Bid.id)
            .where(col(Job.id).in_(list(wanted)))
            .order_by(col(Execution.job_id), col(Execution.attempt))
        ).all()
        for execution, job, bid in rows:
            steps = s.exec(
                select(ExecutionStep)
                .where(ExecutionStep.execution_id == execution.id)
                .order_by(col(ExecutionStep.index))
            ).all()
            yield Recorded(
                job_id=job.id,
                task_id=str(wanted[job.id]["task_id"]),
                attempt=execution.attempt,
                agent=execution.agent,
                spec=TaskSpec.model_validate(job.spec),
                # The plan it executed: a generic-plan run's would be DIRECT_PLAN, not replayed.
                plan=bid.plan or "",
                answer=execution.answer,
                self_check=None
                if execution.self_check is None
                else execution.self_check == "passed",
                replies=[st for st in steps if st.role == "assistant"],
            )


def recorded_runs(work_dir: Path, split: str = "test") -> Iterator[Recorded]:
    """The execution of every finished single-agent job of ``split`` in ``work_dir`` (and in
    the work directories its carried-over records came from)."""
    store = RunStore(work_dir / "runs.jsonl")
    by_db: dict[Path, dict[str, dict[str, Any]]] = {}
    for r in store.select(split=split):
        if str(r["method"]).startswith("single:") and r.get("status") == "done":
            by_db.setdefault(single_db(work_dir, r), {})[str(r["job_id"])] = r
    for db, wanted in by_db.items():
        if db.exists():
            yield from (rec for rec in recorded_executions(db, wanted) if rec.attempt == 0)


def replay_job(
    attempts: Sequence[Recorded], pool: Pool, stop: int, fallbacks: int
) -> dict[str, Any]:
    """A SALE job's executions replayed under the stop, following the recorded fallbacks as
    long as the self-check says what it said then. A check that now passes (or has nothing to
    check) ends the job there. A check that now fails where it passed then would have handed
    the job on to a bid that never executed: the outcome is ``unknown``."""
    cost = tokens = cut = 0.0
    done: list[dict[str, Any]] = []  # each replayed execution (for the fidelity count)
    for k, rec in enumerate(attempts):
        out = replay_outcome(rec, pool.get(rec.agent), stop)
        done.append(out)
        cost, tokens, cut = cost + out["cost_usd"], tokens + out["tokens"], cut + out["cut"]
        if out["self_check"] is False and rec.self_check is not False and k < fallbacks:
            return {"unknown": True, "cut": int(cut), "executions": done}
        if out["self_check"] is not False or k == len(attempts) - 1:
            total = {"cost_usd": cost, "tokens": tokens, "cut": int(cut), "unknown": False}
            return {**out, **total, "executions": done}
    return {"unknown": True, "cut": int(cut), "executions": done}  # nothing executed


def row(method: str, recs: Sequence[dict[str, Any]], base: float) -> dict[str, Any]:
    """One method's figures over its records; ``unknown`` records count as failures."""
    cost = sum(float(r.get("cost_usd", 0.0)) for r in recs)
    return {
        "method": method,
        "n_tasks": len(recs),
        "pass_at_1": sum(bool(r.get("passed")) for r in recs) / len(recs) if recs else None,
        "cost_usd": cost,
        "cost_ratio": cost / base if base else None,
        "cut": sum(int(r.get("cut") or 0) for r in recs),
        "unknown": sum(bool(r.get("unknown")) for r in recs),
    }


def summarise(
    outcomes: dict[str, dict[str, dict[str, Any]]],
    sale: dict[str, dict[str, dict[str, Any]]],
    pool: Pool,
) -> list[dict[str, Any]]:
    """Per agent alone, the oracle, the cascade and each replayed SALE method: pass@1 and cost
    over the tasks every agent ran, the cost also as a multiple of the largest agent's."""
    prices = {a.name: a.output_price for a in pool.agents}
    tasks = sorted(t for t, runs in outcomes.items() if all(a in runs for a in prices))
    rows: dict[str, list[dict[str, Any]]] = {f"single:{a}": [] for a in cheapest_first(prices)}
    rows["oracle"], rows["cascade"] = [], []
    for t in tasks:
        for a in prices:
            rows[f"single:{a}"].append(outcomes[t][a])
        rows["oracle"].append(replay(pick_oracle(outcomes[t], prices), outcomes[t]))
        rows["cascade"].append(replay(pick_cascade(outcomes[t], prices), outcomes[t]))
    for method, by_task in sale.items():
        rows[method] = [by_task[t] for t in tasks if t in by_task]
    largest = f"single:{pool.largest.name}"
    base = sum(float(r["cost_usd"]) for r in rows[largest])
    return [row(method, recs, base) for method, recs in rows.items()]


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# {doc['bench']}: recorded runs replayed under a repeat stop of {doc['stop']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Runs: {doc['work_dir']}. Fidelity: {doc['faithful']} of {doc['uncut']} replayed "
        "executions the stop did not cut ended with the recorded answer. SALE rows: methods "
        "without memory only (each job stands alone, so its replay is exact); unknown: jobs "
        "whose replayed self-check failed where the recorded one passed, so a fallback that "
        "never ran would have followed (counted as failures).",
        "",
        "| method | tasks | pass@1 recorded | pass@1 with stop | US$ recorded | US$ with stop | "
        "× largest recorded | × largest with stop | executions cut | unknown |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for before, after in zip(doc["recorded"], doc["stopped"], strict=True):
        lines.append(
            f"| {before['method']} | {before['n_tasks']} | {before['pass_at_1']:.3f} | "
            f"{after['pass_at_1']:.3f} | {before['cost_usd']:.5f} | {after['cost_usd']:.5f} | "
            f"{before['cost_ratio']:.2f} | {after['cost_ratio']:.2f} | {after['cut']} | "
            f"{after['unknown']} |"
        )
    return "\n".join(lines) + "\n"


def sale_jobs(work_dir: Path, store: RunStore) -> Iterator[tuple[str, dict[str, Any], Path]]:
    """The test split's SALE methods whose replay is exact (they read no memory, run the
    bid's own plan and no repeat stop of their own): (method, its records by job id, its
    database)."""
    methods = sorted({str(r["method"]) for r in store.select(split="test")})
    for method in methods:
        if not is_live(method):
            continue
        settings = env_settings(variant_env(method))
        if reads_memory(method) or settings.plan_mode == "generic" or settings.repeat_stop:
            continue
        records = {
            str(r["job_id"]): r
            for r in store.select(method=method, split="test")
            if int(r["order"]) == 0 and r.get("status") == "done"
        }
        yield method, records, work_dir / f"{segment_name(method)}-o0.db"


def main(
    work_dir: Annotated[
        Path, typer.Option(help="a `sale eval` work directory with single-agent runs")
    ],
    stop: Annotated[
        int, typer.Option(min=1, help="replies in a row that only repeat an action")
    ] = 2,
    pool_file: Annotated[Path, typer.Option("--pool")] = Path("examples/pools/local.toml"),
    out: Annotated[Path, typer.Option(help="where the JSON and Markdown go")] = Path(
        "docs/results/levers"
    ),
) -> None:
    """Replay the single-agent runs (and memoryless SALE runs) of WORK_DIR under a repeat stop."""
    pool = load_pool(pool_file)
    recorded: dict[str, dict[str, dict[str, Any]]] = {}
    stopped: dict[str, dict[str, dict[str, Any]]] = {}
    executions: list[dict[str, Any]] = []
    store = RunStore(work_dir / "runs.jsonl")
    for rec in recorded_runs(work_dir):
        before = store.get(f"single:{rec.agent}", 0, "test", rec.task_id)
        if before is None:
            continue
        recorded.setdefault(rec.task_id, {})[rec.agent] = before
        after = replay_outcome(rec, pool.get(rec.agent), stop)
        stopped.setdefault(rec.task_id, {})[rec.agent] = after
        executions.append(after)
    sale_before: dict[str, dict[str, dict[str, Any]]] = {}
    sale_after: dict[str, dict[str, dict[str, Any]]] = {}
    for method, records, db in sale_jobs(work_dir, store):
        fallbacks = env_settings(variant_env(method)).self_check_fallback
        attempts: dict[str, list[Recorded]] = {}
        for rec in recorded_executions(db, records) if db.exists() else ():
            attempts.setdefault(rec.job_id, []).append(rec)
        for job_id, chain in attempts.items():
            before = records[job_id]
            after = replay_job(chain, pool, stop, fallbacks)
            executions += after.pop("executions")
            auction = {"cost_usd": before["auction_cost_usd"], "tokens": before["auction_tokens"]}
            if not after["unknown"]:
                after["cost_usd"] += auction["cost_usd"]
                after["tokens"] += auction["tokens"]
            sale_before.setdefault(method, {})[before["task_id"]] = before
            sale_after.setdefault(method, {})[before["task_id"]] = after
    uncut = [o for o in executions if not o["cut"]]
    shown = shown_path(work_dir)
    bench = str(next(iter(store.select(split="test")), {}).get("bench", work_dir.name))
    doc = {
        "bench": bench,
        "command": f"python -m scripts.evals.replay_stop --work-dir {shown} --stop {stop}",
        "work_dir": shown,
        "stop": stop,
        "uncut": len(uncut),
        "faithful": sum(bool(o["faithful"]) for o in uncut),
        "recorded": summarise(recorded, sale_before, pool),
        "stopped": summarise(stopped, sale_after, pool),
        "runs": stopped,
        "sale_runs": sale_after,
    }
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{bench}_repeat_stop_{stop}_replay"
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    text = markdown(doc)
    stem.with_suffix(".md").write_text(text)
    typer.echo(text)
    typer.echo(f"results: {stem}.json, {stem}.md")


if __name__ == "__main__":
    typer.run(main)
