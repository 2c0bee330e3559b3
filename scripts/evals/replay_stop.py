"""What a repeat stop (``SALE_REPEAT_STOP``) and an auction without jurors would have done to
the recorded runs of a ``sale eval`` work directory, without a model call.

At temperature 0 an execution is the same, reply for reply, up to the point where a stop would
cut it. Feeding an execution's recorded replies back through the agent loop with the stop on
therefore gives the run the stop would have made: the loop stops where it would have, keeps the
candidate answer it would have kept, and that answer is judged by the job's own verdict (the
hidden tests, the reference answer) and self-check. A replayed trace the stop does not cut must
end with the recorded answer: the script counts those as its fidelity check.

Replayed: every single-agent run; the methods that only pick agents, derived from those as
``sale eval`` derives them (the oracles, the cascade); and the SALE methods that read no memory
(each job stands alone), their fallbacks re-decided as the job decides them. With ``--no-jury``
their recorded bids are also re-scored with a jury-less fit of the train split. A job whose
replay reaches a bid that never executed is unknown. SALE with memory cannot be replayed: a
changed job changes the next auctions, so its rows must run live.

    python -m sale.scripts.evals.replay_stop --work-dir ~/sale-eval/humaneval --stop 2 --no-jury
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from sale.broker.pool import Agent, Pool, load_pool
from sale.broker.settings import Settings
from sale.models.db import session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Bid, Execution, ExecutionStep, Job, JuryCall
from sale.scripts.evals.harness import fit_from_train, shown_path
from sale.scripts.evals.methods import OUTCOME_METHODS, cheapest_first, pick_from_outcomes, replay
from sale.scripts.evals.runner import env_settings, is_live, reads_memory, stream_name, variant_env
from sale.scripts.evals.store import RunStore
from sale.workers.agent.loop import EXECUTORS
from sale.workers.agent.selfcheck import has_visible_checks, self_check
from sale.workers.agent.verdict import judge_answer
from sale.workers.auction.scoring import BidTerms, Candidate, fallback_pick, ranking, score_bids
from sale.workers.auction.weights import Weights, load_weights
from sale.workers.llm.types import LLMResult, Message
from sale.workers.prompts import PromptStyle
from sale.workers.stages.bidding import ok_bids
from sqlmodel import col, select

#: The per-call output cap of the recorded runs (the default of ``execute_max_tokens``).
EXECUTE_MAX_TOKENS: int = Settings.model_fields["execute_max_tokens"].default


class ReplayExhausted(RuntimeError):
    """The loop asked for more replies than were recorded: the replay diverged."""


class ReplayModel:
    """A model function that answers each call with the next recorded reply; ``used`` holds
    the replies it gave."""

    def __init__(self, replies: Sequence[ExecutionStep]) -> None:
        self.left = list(replies)
        self.used: list[ExecutionStep] = []

    def __call__(self, agent: Agent, messages: list[Message], *, stage: str, **_: Any) -> LLMResult:
        if not self.left:
            raise ReplayExhausted(f"{agent.name}: no recorded reply left")
        step = self.left.pop(0)
        self.used.append(step)
        return LLMResult(
            text=step.content or "",
            tokens_in=step.tokens_in,
            tokens_out=step.tokens_out,
            top_logprobs=None,
            cost_usd=step.cost_usd,
            latency_s=step.latency_s,
            model=agent.model,
        )


@dataclass
class Recorded:
    """One stored execution (attempt) of a job."""

    job_id: str
    task_id: str
    attempt: int
    bid_id: int
    agent: str
    spec: TaskSpec
    plan: str
    answer: str | None
    self_check: bool | None  # what the job's self-check said (None: not checked)
    replies: list[ExecutionStep]
    record: dict[str, Any]  # the job's run record in the work directory's runs.jsonl


def replay_outcome(rec: Recorded, agent: Agent, stop: int) -> dict[str, Any]:
    """The outcome record (as :mod:`sale.scripts.evals.methods` reads it) of ``rec`` under a repeat
    stop of ``stop`` replies; ``cut`` says whether the stop ended it early, ``faithful``
    whether an uncut replay ended with the recorded answer (None when cut)."""
    model = ReplayModel(rec.replies)
    outcome = EXECUTORS[rec.spec.kind](
        rec.spec,
        rec.plan,
        agent,
        model,
        min(EXECUTE_MAX_TOKENS, rec.spec.limits.max_tokens),
        style=PromptStyle(repeat_stop=stop),
    )
    cut = outcome.stop_reason == "repeated_actions"
    verdict = judge_answer(rec.spec, outcome.answer)
    check = None
    if has_visible_checks(rec.spec):
        observations = [s.observation or "" for s in outcome.steps]
        check = self_check(rec.spec, outcome.answer, observations=observations).value == "passed"
    return {
        "task_id": rec.task_id,
        "agent": rec.agent,
        "verdict": verdict.value,
        "passed": verdict.value == "passed",
        "self_check": check,
        "tokens": outcome.tokens_in + outcome.tokens_out,
        "cost_usd": outcome.cost_usd,
        # the loop times each replayed call itself: the run's wall time is the recorded calls'
        "wall_s": sum(r.latency_s for r in model.used),
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
                bid_id=execution.bid_id,
                agent=execution.agent,
                spec=TaskSpec.model_validate(job.spec),
                plan=bid.plan or "",  # only the prompts read it: the replies are recorded
                answer=execution.answer,
                self_check=None
                if execution.self_check is None
                else execution.self_check == "passed",
                replies=[st for st in steps if st.role == "assistant"],
                record=wanted[job.id],
            )


def recorded_runs(work_dir: Path, store: RunStore, split: str = "test") -> Iterator[Recorded]:
    """The execution of every finished single-agent job of ``split`` in ``work_dir``'s
    ``store`` (and in the work directories its carried-over records came from)."""
    by_db: dict[Path, dict[str, dict[str, Any]]] = {}
    for r in store.select(split=split):
        if str(r["method"]).startswith("single:") and r.get("status") == "done":
            by_db.setdefault(single_db(work_dir, r), {})[str(r["job_id"])] = r
    for db, wanted in by_db.items():
        if db.exists():
            yield from (rec for rec in recorded_executions(db, wanted) if rec.attempt == 0)


@dataclass
class Auction:
    """A memoryless SALE job as recorded: its first-round bids, what its jury cost, and the
    execution of every bid that executed (by bid id)."""

    job_id: str
    kind: str
    bids: list[Bid]
    jury_cost_usd: float
    jury_tokens: int
    executions: dict[int, Recorded]


def recorded_auctions(db: Path, wanted: dict[str, dict[str, Any]]) -> dict[str, Auction]:
    """The auctions of the jobs of ``wanted`` (job id -> run record) stored in ``db``."""
    auctions: dict[str, Auction] = {}
    with session_scope(f"sqlite:///{db}") as s:
        for job_id in wanted:
            job = s.get(Job, job_id)
            if job is None:
                continue
            calls = s.exec(select(JuryCall).where(JuryCall.job_id == job_id)).all()
            auctions[job_id] = Auction(
                job_id=job_id,
                kind=job.kind,
                bids=ok_bids(s, job_id, "first"),
                jury_cost_usd=sum(c.cost_usd for c in calls),
                jury_tokens=sum(c.tokens_in + c.tokens_out for c in calls),
                executions={},
            )
    for rec in recorded_executions(db, wanted):
        auctions[rec.job_id].executions[rec.bid_id] = rec
    return auctions


def ranked_bids(auction: Auction, pool: Pool, weights: Weights | None) -> list[Bid]:
    """The bids best first: by their recorded scores, or re-scored with ``weights`` and no
    jury (entropy and plan cost alone, as a jury-less fit scores them: no juror is called)."""
    scores: dict[int, float] = {}
    if weights is None:
        for b in auction.bids:
            assert b.id is not None
            scores[b.id] = float(b.score if b.score is not None else float("inf"))
    else:
        w = weights.for_kind(auction.kind, pool.names)
        terms = [
            BidTerms(pool.get(b.agent).output_price, b.tokens_out, b.entropy, {})
            for b in auction.bids
        ]
        for b, scored in zip(auction.bids, score_bids(terms, w.w_c, w.w_h, {}), strict=True):
            assert b.id is not None
            scores[b.id] = scored.score
    by_id = {b.id: b for b in auction.bids}
    order = ranking(
        [Candidate(i, by_id[i].agent, pool.get(by_id[i].agent).output_price, sc)
         for i, sc in scores.items()]
    )  # fmt: skip
    return [by_id[c.bid_id] for c in order]


def replay_job(
    ranked: Sequence[Bid],
    executions: dict[int, Recorded],
    pool: Pool,
    stop: int,
    fallbacks: int,
    escalation: str = "up",
) -> dict[str, Any]:
    """A SALE job's executions replayed under the stop: the best bid of ``ranked`` first,
    then, while its self-check fails and fallbacks are left, the next one as the job picks it
    (``escalation`` "ranking": the next-best bid of an agent that has not executed; "up": of
    an agent pricier than every one that has). ``executions``: the recorded execution of each
    bid that executed. A turn that reaches a bid that never executed makes the outcome
    ``unknown``."""
    cost = tokens = cut = 0.0
    done: list[dict[str, Any]] = []  # each replayed execution (for the fidelity count)
    executed: list[str] = []
    prices = {a.name: a.output_price for a in pool.agents}
    for _ in range(fallbacks + 1):
        nxt = fallback_pick(ranked, executed, prices, escalation)
        if nxt is None:
            break
        rec = executions.get(nxt.id or -1)
        if rec is None:
            return {"unknown": True, "cut": int(cut), "executions": done}
        out = replay_outcome(rec, pool.get(rec.agent), stop)
        done.append(out)
        executed.append(rec.agent)
        cost, tokens, cut = cost + out["cost_usd"], tokens + out["tokens"], cut + out["cut"]
        if out["self_check"] is not False:
            break
    if not done:
        return {"unknown": True, "cut": 0, "executions": done}
    total = {"cost_usd": cost, "tokens": tokens, "cut": int(cut), "unknown": False}
    return {**done[-1], **total, "executions": done}


def replay_sale(
    auctions: dict[str, Auction],
    records: dict[str, dict[str, Any]],
    pool: Pool,
    stop: int,
    settings: Settings,
    weights: Weights | None,
    executions: list[dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Per task, the replayed outcome of each recorded auction (``records``: its run record by
    job id) under ``stop``, ranked by the recorded scores or re-scored with jury-less
    ``weights`` (whose auction then costs its recorded bids alone: no juror is called). Every
    replayed execution is appended to ``executions``."""
    by_task = {}
    for job_id, auction in auctions.items():
        ranked = ranked_bids(auction, pool, weights)
        out = replay_job(
            ranked,
            auction.executions,
            pool,
            stop,
            settings.self_check_fallback,
            settings.self_check_escalation,
        )
        executions.extend(out.pop("executions"))
        before = records[job_id]
        if not out["unknown"]:
            jury = weights is not None
            out["cost_usd"] += before["auction_cost_usd"] - jury * auction.jury_cost_usd
            out["tokens"] += before["auction_tokens"] - jury * auction.jury_tokens
        by_task[str(before["task_id"])] = out
    return by_task


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
        "known_passed": sum(bool(r.get("passed")) for r in recs if not r.get("unknown")),
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
    rows.update({m: [] for m in OUTCOME_METHODS})
    largest = pool.largest.name
    for t in tasks:
        for a in prices:
            rows[f"single:{a}"].append(outcomes[t][a])
        for m in OUTCOME_METHODS:
            rows[m].append(replay(pick_from_outcomes(m, outcomes[t], prices, largest), outcomes[t]))
    for method, by_task in sale.items():
        rows[method] = [by_task[t] for t in tasks if t in by_task]
    base = sum(float(r["cost_usd"]) for r in rows[f"single:{largest}"])
    return [row(method, recs, base) for method, recs in rows.items()]


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        f"# {doc['bench']}: recorded runs replayed under a repeat stop of {doc['stop']}",
        "",
        f"Command: `{doc['command']}`  ",
        f"Runs: {doc['work_dir']}. Fidelity: {doc['faithful']} of {doc['uncut']} replayed "
        "executions the stop did not cut ended with the recorded answer. SALE rows: methods "
        "without memory only (each job stands alone, so its replay is exact). A "
        "`+weights=nojury` row re-scores the same bids with a jury-less fit of the train split "
        "and drops the jury's cost; its 'recorded' columns are its replay without a stop. "
        "Unknown: jobs whose replay reaches a bid that never executed (a fallback the stop "
        "makes necessary, or another award); each counts as a failure that costs nothing, so "
        "a row with unknowns bounds pass@1 and cost from below."
        + (
            f" {doc['untraced']} single-agent runs had no trace here and are left out."
            if doc.get("untraced")
            else ""
        ),
        "",
        "| method | tasks | pass@1 recorded | pass@1 with stop | US$ recorded | US$ with stop | "
        "× largest recorded | × largest with stop | executions cut | unknown | "
        "passed of the known (with stop) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for before, after in zip(doc["recorded"], doc["stopped"], strict=True):
        lines.append(
            f"| {before['method']} | {before['n_tasks']} | {before['pass_at_1']:.3f} | "
            f"{after['pass_at_1']:.3f} | {before['cost_usd']:.5f} | {after['cost_usd']:.5f} | "
            f"{before['cost_ratio']:.2f} | {after['cost_ratio']:.2f} | {after['cut']} | "
            f"{after['unknown']} | {after['known_passed']}/{after['n_tasks'] - after['unknown']} |"
        )
    return "\n".join(lines) + "\n"


def replayable(record: dict[str, Any], stop: int) -> bool:
    """Whether a run replays exactly under ``stop``: a run recorded under a repeat stop of its
    own (``repeat_stop``; records without it ran with none) can only be cut earlier, never let
    run past where its own stop ended it."""
    recorded = int(record.get("repeat_stop") or 0)
    return not recorded or 0 < stop <= recorded


def check_replayable(store: RunStore, stop: int) -> None:
    """Refuse a replay that would need replies that were never made, saying what to pass."""
    looser = sorted(
        {int(r["repeat_stop"]) for r in store.select(split="test") if not replayable(r, stop)}
    )
    if looser:
        raise typer.BadParameter(
            f"runs in this work directory were recorded with SALE_REPEAT_STOP={looser[0]}, so "
            f"--stop {stop} would need replies they never made; pass --stop between 1 and "
            f"{looser[0]}",
            param_hint="--stop",
        )


def sale_jobs(
    work_dir: Path, store: RunStore
) -> Iterator[tuple[str, Settings, dict[str, Any], Path]]:
    """The test split's SALE methods whose replay is exact (they read no memory and run the
    bid's own plan): (method, its workers' settings, its records of order 0 by job id, their
    database)."""
    methods = sorted({str(r["method"]) for r in store.select(split="test")})
    for method in methods:
        if not is_live(method):
            continue
        settings = env_settings(variant_env(method))
        if reads_memory(method) or "generic" in (settings.plan_mode, settings.coding_plan_mode):
            continue
        records = {
            str(r["job_id"]): r
            for r in store.select(method=method, split="test")
            if int(r["order"]) == 0 and r.get("status") == "done"
        }
        yield method, settings, records, work_dir / f"{stream_name(method, 0, len(records))}.db"


def main(
    work_dir: Annotated[
        Path, typer.Option(help="a `sale eval` work directory with single-agent runs")
    ],
    stop: Annotated[
        int, typer.Option(min=0, help="replies in a row that only repeat an action (0: none)")
    ] = 2,
    no_jury: Annotated[
        bool,
        typer.Option(
            "--no-jury",
            help="also re-score the memoryless SALE auctions with a jury-less fit of the train "
            "split (row <method>+weights=nojury; its 'recorded' columns are its replay without "
            "a stop)",
        ),
    ] = False,
    pool_file: Annotated[Path, typer.Option("--pool")] = Path("broker/pools/local.toml"),
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
    check_replayable(store, stop)
    for rec in recorded_runs(work_dir, store):
        recorded.setdefault(rec.task_id, {})[rec.agent] = rec.record
        after = replay_outcome(rec, pool.get(rec.agent), stop)
        stopped.setdefault(rec.task_id, {})[rec.agent] = after
        executions.append(after)
    singles = [
        r
        for r in store.select(split="test")
        if str(r["method"]).startswith("single:") and r.get("status") == "done"
    ]
    untraced = len(singles) - sum(len(v) for v in stopped.values())
    if untraced:
        typer.echo(
            f"note: {untraced} of {len(singles)} single-agent runs have no trace in "
            f"{work_dir} (restored from a records copy, or carried over from a directory that "
            "is gone) and are left out of the replay"
        )
    if not stopped:
        typer.echo(f"error: no single-agent run of {work_dir} has a trace here: nothing to replay")
        raise typer.Exit(1)
    sale_before: dict[str, dict[str, dict[str, Any]]] = {}
    sale_after: dict[str, dict[str, dict[str, Any]]] = {}
    nojury = None
    if no_jury:
        nojury_file = Path(tempfile.mkdtemp()) / "weights-nojury.json"
        fitted, why = fit_from_train(store, pool, nojury_file, work_dir.name, jury=False)
        typer.echo(why)
        nojury = load_weights(fitted) if fitted else None
    for method, settings, records, db in sale_jobs(work_dir, store):
        auctions = recorded_auctions(db, records) if db.exists() else {}
        sale_before[method] = {str(r["task_id"]): r for r in records.values()}
        sale_after[method] = replay_sale(auctions, records, pool, stop, settings, None, executions)
        if nojury is not None:
            variant = f"{method}+weights=nojury"
            own = max((int(r.get("repeat_stop") or 0) for r in records.values()), default=0)
            sale_before[variant] = replay_sale(  # under the stop the runs were recorded with
                auctions, records, pool, own, settings, nojury, executions
            )
            sale_after[variant] = replay_sale(
                auctions, records, pool, stop, settings, nojury, executions
            )
    uncut = [o for o in executions if not o["cut"]]
    shown = shown_path(work_dir)
    bench = str(next(iter(store.select(split="test")), {}).get("bench", work_dir.name))
    doc = {
        "bench": bench,
        "command": f"python -m sale.scripts.evals.replay_stop --work-dir {shown} --stop {stop}"
        + (" --no-jury" if no_jury else ""),
        "work_dir": shown,
        "stop": stop,
        "untraced": untraced,
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
