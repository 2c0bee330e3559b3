"""The evaluation driver behind `sale eval`: plan, run the live stages, replay, fit, report."""

from __future__ import annotations

import dataclasses
import json
import random
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sale.broker.pool import Pool
from sale.broker.settings import JURY_WEIGHTS_FILE, Settings
from sale.scripts.evals import metrics, report
from sale.scripts.evals.methods import (
    OUTCOME_METHODS,
    ClassifierRouter,
    KnnRouter,
    Pick,
    TrainingSet,
    VerifiedAwardReplay,
    cheapest_first,
    pick_by_auction,
    pick_cascade_checked,
    pick_from_outcomes,
    pick_random,
    replay,
    replay_first_attempt,
)
from sale.scripts.evals.runner import (
    MEASURED_BASE,
    Plan,
    Segment,
    env_settings,
    is_auction_replay,
    is_live,
    live_segment,
    router_source,
    stream_name,
    task_order,
    train_segment,
    variant_env,
    variant_weights,
)
from sale.scripts.evals.store import RunStore

Embed = Callable[[list[str]], list[list[float]]]
REPORT_EVERY_S = 300.0  # rewrite the (partial) results at most this often while jobs run


def single_outcomes(store: RunStore, split: str) -> dict[str, dict[str, dict[str, Any]]]:
    """task_id -> agent -> the agent's single-agent run record."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in store.select(split=split):
        if str(r["method"]).startswith("single:"):
            out.setdefault(str(r["task_id"]), {})[str(r["method"]).split(":", 1)[1]] = r
    return out


def solved_alone(store: RunStore, split: str) -> dict[str, dict[str, bool]]:
    """task_id -> agent -> whether the agent's single-agent run passed."""
    return {
        t: {a: bool(r["passed"]) for a, r in per.items()}
        for t, per in single_outcomes(store, split).items()
    }


def replay_records(
    plan: Plan, store: RunStore, pool: Pool, embed: Embed | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run records of the replay methods for every order (not stored: cheap to recompute)."""
    prices = {a.name: a.output_price for a in pool.agents}
    test = single_outcomes(store, "test")
    notes: list[str] = []
    routers: dict[str, Any] = {}
    wanted = [m for m in plan.methods if m in ("knn", "classifier")]
    if wanted:
        if embed is None:
            raise ValueError("the routers need the MiniLM embedder")
        train = single_outcomes(store, "train")
        try:
            texts = {t.task_id: t.spec.prompt for t in plan.train}
            train_set = TrainingSet.build(
                {k: v for k, v in train.items() if k in texts}, texts, pool.names, embed
            )
        except ValueError as exc:
            notes.append(f"routers skipped: {exc}")
            wanted = []
        else:
            if "knn" in wanted:
                routers["knn"] = KnnRouter(train_set, prices)
            if "classifier" in wanted:
                routers["classifier"] = ClassifierRouter(train_set, prices)
            notes.append(
                f"routers trained on {len(train_set.task_ids)} train tasks' single-agent outcomes"
            )
    vectors: dict[str, list[float]] = {}
    verified = "verified-award" in plan.methods
    if verified and embed is None:
        raise ValueError("the verified award's replay needs the MiniLM embedder")
    if (routers or verified) and embed is not None:
        ids = [t.task_id for t in plan.test]
        vectors = dict(zip(ids, embed([t.spec.prompt for t in plan.test]), strict=True))
    train_vectors: dict[str, list[float]] = {}
    if verified and embed is not None:
        ids = [t.task_id for t in plan.train]
        train_vectors = dict(zip(ids, embed([t.spec.prompt for t in plan.train]), strict=True))
        notes.append(
            "verified-award is SALE_AWARD=verified replayed on the single-agent runs (no bids; "
            "the generic plan, as they ran): memory prefilled with the train split's "
            f"single-agent outcomes ({len(train_vectors)} tasks x every agent), then growing "
            "with the attempts the award ran, a fresh memory per order"
        )
    from sale.workers.agent.selfcheck import has_visible_checks

    measured = env_settings(dict(MEASURED_BASE))

    def recorded(method: str) -> dict[str, dict[str, Any]]:  # a live row's finished jobs
        return {
            str(r["task_id"]): r
            for r in store.select(method=method, split="test")
            if int(r["order"]) == 0 and r.get("status") == "done"
        }

    auctions = recorded("sale-nomem")
    # Each auction-router row: the recorded auctions it replays and the settings they ran with.
    routers_of: dict[str, tuple[dict[str, dict[str, Any]], Settings]] = {}
    for method in plan.methods:
        source = router_source(method)
        if source is not None:
            routers_of[method] = (recorded(source), env_settings(variant_env(source)))
            if method != "auction-router":
                notes.append(
                    f"{method} is {source}+plan_mode=generic replayed from the recorded {source} "
                    f"auctions, as auction-router is from sale-nomem's"
                    + ("" if routers_of[method][0] else f" (no {source} job is recorded yet)")
                )
    if "auction-router" in plan.methods and auctions:
        notes.append(
            "auction-router is sale-nomem+plan_mode=generic replayed: the recorded sale-nomem "
            "auctions pick the agent (the award, then self-check fallbacks as the job makes "
            "them), and each pick replays that agent's single-agent run, whose prompt (a direct "
            "job's generic plan) is the one plan_mode=generic executes; one order, as sale-nomem"
        )
    if "sale-nomem-nofallback" in plan.methods and auctions:
        untracked = sum(not r.get("executions") for r in auctions.values())
        notes.append(
            "sale-nomem-nofallback is sale-nomem+self_check_fallback=0 replayed: each recorded "
            "sale-nomem job's auction and its first execution attempt, the award's, which is "
            "all such a job runs; one order, as sale-nomem"
            + (
                f"; {untracked} sale-nomem record(s) predate the recording of attempts and "
                "are left out"
                if untracked
                else ""
            )
        )
    records = []
    for order in range(plan.orders):
        rng = random.Random(1000 + order)
        award = (
            VerifiedAwardReplay(
                single_outcomes(store, "train"),
                train_vectors,
                prices,
                max_len=1 + measured.self_check_fallback,
            )
            if verified
            else None
        )
        for position, task in enumerate(task_order(plan.test, order)):
            outcomes = test.get(task.task_id, {})
            if not all(a in outcomes for a in pool.names):
                continue  # single-agent runs not finished for this task yet
            for method in plan.methods:
                pick: Pick
                rec: dict[str, Any] | None = None
                if method == "random":
                    pick = pick_random(pool.names, rng)
                elif method in OUTCOME_METHODS:
                    pick = pick_from_outcomes(method, outcomes, prices, pool.largest.name)
                elif method == "cascade-top2":
                    pick = pick_cascade_checked(outcomes, cheapest_first(prices)[-2:])
                elif method == "verified-award" and award is not None:
                    checkable = has_visible_checks(task.spec, measured.self_check_smoke)
                    pick = award.pick(vectors[task.task_id], outcomes, checkable)
                elif method in routers:
                    pick = routers[method].pick(vectors[task.task_id])
                elif method in routers_of and order == 0 and task.task_id in routers_of[method][0]:
                    auction = routers_of[method][0][task.task_id]
                    settings = routers_of[method][1]
                    picked = pick_by_auction(
                        auction["bids"],
                        outcomes,
                        prices,
                        settings.self_check_fallback,
                        settings.self_check_escalation,
                    )
                    if picked is None:
                        continue
                    pick = picked
                elif method == "sale-nomem-nofallback" and order == 0:
                    rec = replay_first_attempt(auctions.get(task.task_id) or {})
                    if rec is None:
                        continue
                else:
                    continue
                if rec is None:  # a pick: the picked agent's single-agent run
                    rec = replay(pick, outcomes)
                    rec["self_check"] = outcomes[pick.agent].get("self_check")
                    if method in routers_of:  # the auction was paid for, live
                        for key in ("tokens", "cost_usd", "wall_s"):
                            rec[f"auction_{key}"] = auction[f"auction_{key}"]
                            rec[key] += auction[f"auction_{key}"]
                rec.update(
                    method=method,
                    order=order,
                    position=position,
                    split="test",
                    task_id=task.task_id,
                    bin=task.bin,
                )
                records.append(rec)
    return records, notes


def train_auctions(store: RunStore, pool: Pool) -> tuple[int, list[Any]]:
    """The train split's SALE auctions as training auctions, each targeted at the cheapest bid
    whose agent solved the task alone; returns (how many auctions are stored, the auctions).

    Job ids are ``<bench>:<task id>``, so auctions of several benchmarks can be fitted together.
    """
    from sale.workers.auction.fit import auctions_from_memory, auctions_from_outcomes

    prices = {a.name: a.output_price for a in pool.agents}
    runs = list(store.select(method="sale-train", split="train"))
    unknown = sorted({str(b["agent"]) for r in runs for b in r["bids"]} - set(pool.names))
    if unknown:
        raise ValueError(
            f"{store.path}: the train auctions have bids from {', '.join(unknown)}, not in the "
            f"pool {pool.path} ({', '.join(pool.names)}); fit with the pool that ran them (--pool)"
        )
    records = [{"job_id": r["task_id"], "bids": r["bids"], "verdict": r["verdict"]} for r in runs]
    solved = solved_alone(store, "train")
    features = auctions_from_memory(records, "auction", prices=prices)
    auctions = auctions_from_outcomes(features, solved)
    bench = {str(r["task_id"]): str(r.get("bench", "")) for r in runs}
    return len(records), [
        dataclasses.replace(a, task_id=f"{bench[a.task_id]}:{a.task_id}")
        if bench.get(a.task_id)
        else a
        for a in auctions
    ]


TARGET_RULE = (
    "targets = the cheapest bid whose agent solved the task alone (single-agent runs, "
    "temperature 0)"
)


def shown_path(path: str | Path) -> str:
    """A path as a weights file's ``source`` names it: relative to this checkout when inside
    it, else with the home directory as ``~``, so a file fitted on one machine does not spell
    out its layout."""
    resolved = Path(path).resolve()
    checkout = Path(__file__).resolve().parents[2]
    for root, prefix in ((checkout, ""), (Path.home().resolve(), "~/")):
        if resolved.is_relative_to(root):
            return prefix + str(resolved.relative_to(root))
    return str(path)


def _fit_document(
    auctions: list[Any], pool: Pool, stem: str, day: str, what: str, jury: bool
) -> tuple[Any, dict[str, Any]]:
    """Fit ``auctions`` and make its weights document (version ``<stem>-<day>``; the source says
    ``what`` was fitted, with the target rule and the pool). Without ``jury`` the fit uses
    entropy and plan cost alone and the document weighs every pool juror 0, so a section still
    names the whole pool and the scorer calls no juror (``SALE_JURY_MIN_WEIGHT``)."""
    from sale.workers.auction.fit import fit_weights, weights_document

    result = fit_weights(auctions, pool.names if jury else [])
    doc = weights_document(
        result,
        f"{stem}{'' if jury else '-nojury'}-{day}",
        f"{what}, {TARGET_RULE}{'' if jury else ', without jurors'}; pool {shown_path(pool.path)}",
    )
    if not jury:
        doc["jurors"] = dict.fromkeys(pool.names, 0.0)
        doc["default_juror_weight"] = 0.0
    return result, doc


def fit_from_train(
    store: RunStore, pool: Pool, out: Path, bench: str, *, jury: bool = True
) -> tuple[Path | None, str]:
    """Fit the weights on the train split (SALE's bids + single-agent outcomes as labels).
    Without ``jury`` the fit uses entropy and plan cost alone and writes every juror's weight
    as 0, so the scorer calls none (``SALE_JURY_MIN_WEIGHT``)."""
    from sale.workers.auction.fit import write_weights

    n_records, auctions = train_auctions(store, pool)
    if not n_records:
        return None, "no SALE runs on the train split to fit on"
    usable = [a for a in auctions if a.target is not None]
    if not usable:
        return None, (
            f"no train task was solved by any agent alone ({n_records} auctions): "
            "nothing to fit; the default weights stay"
        )
    result, doc = _fit_document(
        auctions,
        pool,
        f"fit-{bench}",
        datetime.now(UTC).strftime("%Y%m%d"),
        f"sale eval --bench {bench}: {n_records} SALE auctions on the train split "
        f"({len(usable)} with a solver)",
        jury,
    )
    write_weights(out, doc)
    return (
        out,
        f"weights fitted{'' if jury else ' without jurors'} on {len(usable)}/{n_records} train "
        f"auctions: routed {result.routed}/{result.total}",
    )


def _eval_dir_auctions(d: Path, pool: Pool) -> tuple[list[str], list[Any], str]:
    """One `sale eval` work directory's train auctions: (its benchmarks, the auctions, a line
    saying how many and how many have a solver). ValueError naming the directory when it holds
    no run store or no train auctions."""
    path = d / "runs.jsonl"
    if not path.is_file():
        raise ValueError(
            f"{d} is not a `sale eval` work directory (no runs.jsonl); pass the --work-dir "
            "of a run (default ~/.local/state/sale/eval/<bench>-<pool>)"
        )
    n_records, found = train_auctions(RunStore(path), pool)
    if not n_records:
        raise ValueError(
            f"{d} holds no SALE auctions on the train split; run `sale eval` there without "
            "--no-fit first"
        )
    benches = sorted({a.task_id.partition(":")[0] if ":" in a.task_id else "?" for a in found})
    with_solver = sum(a.target is not None for a in found)
    what = (
        f"{'/'.join(benches)}: {n_records} train auctions ({with_solver} with a solver) in "
        f"{shown_path(d)}"
    )
    return benches, found, what


def _no_solver(work_dirs: list[Path], kind: str = "") -> ValueError:
    return ValueError(
        f"no {kind + ' ' if kind else ''}train task in {', '.join(map(str, work_dirs))} was "
        "solved by any agent alone: nothing to fit"
    )


def fit_from_eval_dirs(
    work_dirs: list[Path], pool: Pool, out: Path, version: str | None = None
) -> tuple[Any, str]:
    """Fit one weights file on the train auctions of several `sale eval` work directories (e.g.
    one per benchmark) and write it to ``out``; returns (the fit, a one-line summary).

    Raises ValueError naming the directory when one holds no run store or no train auctions,
    and when no auction at all has a solver to target.
    """
    from sale.workers.auction.fit import fit_weights, weights_document, write_weights

    auctions: list[Any] = []
    parts: list[str] = []
    for d in work_dirs:
        _, found, what = _eval_dir_auctions(d, pool)
        parts.append(what)
        auctions.extend(found)
    if not any(a.target is not None for a in auctions):
        raise _no_solver(work_dirs)
    result = fit_weights(auctions, pool.names)
    doc = weights_document(
        result,
        version or f"fit-eval-{datetime.now(UTC).strftime('%Y%m%d')}",
        f"the train splits of sale eval ({'; '.join(parts)}), {TARGET_RULE}; "
        f"pool {shown_path(pool.path)}",
    )
    write_weights(out, doc)
    return result, "; ".join(parts)


def fit_kinds_from_eval_dirs(
    work_dirs: list[Path],
    pool: Pool,
    out: Path,
    base: Path | None = None,
    version: str | None = None,
    *,
    jury: bool = True,
) -> dict[str, Any]:
    """Fit one weights section per job kind (HumanEval: coding, search: search) on the train
    auctions of `sale eval` work directories, and write ``base`` (a weights file; default the
    packaged hand-set weights) with those sections to ``out``: jobs of a fitted kind are scored
    with its section, others with ``base``'s top level; ``base``'s sections for other kinds
    stay. Without ``jury`` each section is fitted on entropy and plan cost alone, every juror
    at 0. Returns {kind: the fit}. ValueError as :func:`fit_from_eval_dirs`, per kind.
    """
    from sale.scripts.evals.benchmarks import BENCH_KIND
    from sale.workers.auction.fit import write_weights
    from sale.workers.auction.weights import handset_weights_path, parse_weights

    base_path = base or handset_weights_path()
    if not base_path.is_file():
        raise ValueError(
            f"--base {base_path}: no such file; give a weights file to add the kinds to, e.g. "
            "workers/auction/weights/default.json, or leave --base out for the hand-set weights"
        )
    text = base_path.read_text(encoding="utf-8")
    parse_weights(text, str(base_path))  # a broken base fails here, naming the file
    doc = json.loads(text)
    by_kind: dict[str, tuple[list[Any], list[str]]] = {}
    for d in work_dirs:
        benches, found, what = _eval_dir_auctions(d, pool)
        for bench in benches:
            if bench not in BENCH_KIND:
                raise ValueError(f"{d}: benchmark {bench!r} has no known job kind")
            auctions, parts = by_kind.setdefault(BENCH_KIND[bench], ([], []))
            auctions.extend(a for a in found if a.task_id.startswith(f"{bench}:"))
            parts.append(what)
    day = datetime.now(UTC).strftime("%Y%m%d")
    kinds = dict(doc.get("kinds") or {})
    results = {}
    for kind, (auctions, parts) in sorted(by_kind.items()):
        if not any(a.target is not None for a in auctions):
            raise _no_solver(work_dirs, kind)
        results[kind], kinds[kind] = _fit_document(
            auctions,
            pool,
            f"fit-{kind}",
            day,
            f"the {kind} jobs of the train splits of sale eval ({'; '.join(parts)})",
            jury,
        )
    doc["kinds"] = kinds
    doc["version"] = version or f"fit-kinds-{day}"
    write_weights(out, doc)
    return results


def carried_over_notes(store: RunStore) -> list[str]:
    """One note per origin of run records copied in from another work directory (a record
    says so in ``carried_over``), with how many and of which methods."""
    origins: dict[str, list[str]] = {}
    for r in store.select():
        if r.get("carried_over"):
            origins.setdefault(str(r["carried_over"]), []).append(str(r["method"]))
    return [
        f"{len(methods)} run records ({', '.join(sorted(set(methods)))}) were {why}"
        for why, methods in origins.items()
    ]


def stored_fit_note(weights_path: Path) -> str:
    """What a rewrite of the tables says of the fit the run made (its weights file, if any)."""
    from sale.workers.auction.weights import load_weights

    if not weights_path.exists():
        return "no weights were fitted on the train split: SALE used the default weights"
    return (
        f"SALE used the weights fitted on the train split ({shown_path(weights_path)}): "
        + load_weights(weights_path).source
    )


def restore_records(store: RunStore, path: Path) -> int:
    """Add to ``store`` the records of the copy at ``path`` that it lacks, so a run goes on
    from a copy kept elsewhere (the work directory did not survive, or the copy was extended on
    another machine); returns how many. A memory stream gets its memory back from its records
    when it goes on (:meth:`sale.scripts.evals.runner.LiveRunner.sync_memory`)."""
    if not path.exists():
        return 0
    added = 0
    why = f"restored from {shown_path(path)} (their jobs ran in another work directory)"
    for key, record in RunStore(path).records.items():
        if not store.has(*key):
            store.add({**record, "carried_over": record.get("carried_over") or why})
            added += 1
    return added


def build_doc(
    bench: str,
    plan: Plan,
    store: RunStore,
    pool: Pool,
    embed: Embed | None,
    *,
    command: str,
    complete: bool,
    weights: dict[str, Any] | None,
    notes: list[str],
) -> dict[str, Any]:
    """The results document of one benchmark (what report.write stores)."""
    largest = pool.largest.name
    test_ids = {t.task_id for t in plan.test}
    live: dict[str, list[dict[str, Any]]] = {}
    for r in store.select(split="test"):
        if r["task_id"] in test_ids and r["method"] in plan.methods:
            if str(r["method"]).startswith("single:") and int(r["order"]) != 0:
                continue
            order = int(r["order"])
            if order >= plan.orders:
                continue
            stream = stream_name(str(r["method"]), order, len(plan.test))
            if is_live(str(r["method"])) and order > 0 and r.get("stream") != stream:
                continue  # a shuffled stream of another --limit
            live.setdefault(str(r["method"]), []).append(r)
    replayed, replay_notes = replay_records(plan, store, pool, embed)
    for r in replayed:
        live.setdefault(str(r["method"]), []).append(r)
    bins = sorted({t.bin for t in plan.test})
    rows = []
    for method in plan.methods:
        records = live.get(method, [])
        if not records:
            continue
        row = {"method": method, **metrics.method_summary(records, largest, bins)}
        if is_live(method):  # an order not yet started leaves no record to count
            row["planned_orders"] = plan.orders_of(method)
        rows.append(row)
    solved = solved_alone(store, "test")
    # The signals are read from every auction with labels: the test split's live SALE runs and
    # the train split's (where every juror is called whatever the weights say).
    train_ids = {t.task_id for t in plan.train}
    sale_rows = [r for m in plan.live for r in live.get(m, [])] + [
        r for r in store.select(method="sale-train", split="train") if r["task_id"] in train_ids
    ]
    solved.update(solved_alone(store, "train"))
    weight_map: dict[str, float | None] | None = None
    if weights is not None:
        weight_map = {"entropy": float(weights.get("w_h", 0.0))}
        for juror in pool.names:
            w = (weights.get("jurors") or {}).get(juror, weights.get("default_juror_weight"))
            weight_map[f"jury:{juror}"] = None if w is None else float(w)
        weight_map["plan_tokens"] = float(weights.get("w_c", 0.0))
    return {
        "bench": bench,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "complete": complete,
        "pool": shown_path(pool.path),
        "agents": {a.name: a.output_price for a in pool.agents},
        "largest_agent": largest,
        "decoding": "temperature 0 (pool params); replay methods reuse the single-agent runs",
        "n_tasks": len(plan.test),
        "n_train_tasks": len(plan.train),
        "orders": plan.orders,
        "methods": rows,
        "win_share": {
            m: metrics.win_share_curve(live[m], largest)
            for m in [*plan.live, "verified-award"]
            if m in live
        },
        "cost_per_pass": {
            m: metrics.cost_per_pass_curve(live[m]) for m in ["verified-award"] if m in live
        },
        "signals": metrics.signal_table(sale_rows, solved, pool.names, weight_map),
        "outcomes": metrics.outcome_table(
            {m: live[m] for m in plan.methods if m in live and not m.startswith("single:")},
            solved_alone(store, "test"),
            {a.name: a.output_price for a in pool.agents},
        ),
        "cost_split": metrics.cost_split(
            {m: live[m] for m in plan.methods if m in live and m.startswith("single:")}
        ),
        "goals": metrics.goals(
            rows,
            plan.live + [m for m in plan.methods if is_auction_replay(m)],
            f"single:{largest}",
            len(plan.test),
            coding=bool(plan.test) and plan.test[0].spec.kind == "coding",
        ),
        "weights": weights,
        "notes": notes + replay_notes + carried_over_notes(store),
    }


class WorkDirBusy(RuntimeError):
    """Another `sale eval` is running jobs in this work directory."""


@contextmanager
def work_dir_lock(work_dir: Path) -> Iterator[None]:
    """Hold the work directory for one run: a second run there would clear the first's redis
    files and interleave jobs in its databases. The lock is released when the process ends,
    however it ends."""
    import fcntl
    import os

    work_dir.mkdir(parents=True, exist_ok=True)
    with open(work_dir / "eval.lock", "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "?"
            raise WorkDirBusy(
                f"another `sale eval` (pid {holder}) is running jobs in {work_dir}; wait for it, "
                "stop it (Ctrl-C keeps its finished jobs), or give this run another --work-dir. "
                "Two runs on other work directories can run side by side"
            ) from None
        fh.truncate(0)
        fh.write(str(os.getpid()))
        fh.flush()
        yield


@contextmanager
def _partial_results_on(error: type[BaseException], write: Callable[[], Any]) -> Iterator[None]:
    """On ``error``, write the partial results before it propagates."""
    try:
        yield
    except error:
        write()
        raise


def evaluate(
    bench: str,
    plan: Plan,
    settings: Settings,
    pool: Pool,
    work_dir: Path,
    out_dir: Path,
    *,
    on_progress: Callable[[str, int], None],
    embed: Embed | None,
    plots: bool = True,
    report_only: bool = False,
    records: Path | None = None,
) -> dict[str, Any]:
    """Run what is not yet stored, then write the results; returns the document. With
    ``records``, that copy of the run records (see :func:`restore_records`) is rewritten with
    every report."""
    from sale.scripts.evals.runner import JobFailed, LiveRunner, live_work
    from sale.workers.auction.weights import load_weights

    work_dir.mkdir(parents=True, exist_ok=True)
    store = RunStore(work_dir / "runs.jsonl")
    # The command that makes these results: a --report-only rewrite names the run it reports.
    args = [a for a in sys.argv[1:] if a not in ("eval", "--report-only")]
    command = "sale eval " + " ".join(shlex.quote(a) for a in args)
    notes: list[str] = []
    weights_path = work_dir / "weights.json"
    nojury_path = work_dir / "weights-nojury.json"
    # Before a fit (the train split) and without one, SALE scores with the configured weights,
    # else the packaged fit that has a jury, as the recorded runs did (see MEASURED_BASE), not
    # with the shipped default weights (no jury): that is what weights=default picks.
    unfitted = settings.weights_file or JURY_WEIGHTS_FILE

    def doc(complete: bool) -> dict[str, Any]:
        wfile = weights_path if weights_path.exists() else unfitted
        weights = load_weights(wfile)
        raw = dataclasses.asdict(weights)
        d = build_doc(
            bench,
            plan,
            store,
            pool,
            embed,
            command=command,
            complete=complete,
            weights=raw,
            notes=notes,
        )
        report.write(d, out_dir, with_plots=plots)
        if records is not None:
            store.write_copy(records)
        return d

    last_write = [time.monotonic()]

    def progress(text: str, done: int) -> None:
        on_progress(text, done)
        if time.monotonic() - last_write[0] > REPORT_EVERY_S:  # partial results stay current
            doc(False)
            last_write[0] = time.monotonic()

    on_default = [m for m in plan.live if variant_weights(m) == "default"]
    if on_default:
        notes.append(
            f"{', '.join(on_default)} scored with the default weights "
            f"({settings.effective_weights_file or 'workers/auction/weights/default.json'}), "
            "not the fitted ones"
        )
    on_handset = [m for m in plan.live if variant_weights(m) == "handset"]
    if on_handset:
        notes.append(
            f"{', '.join(on_handset)} scored with the packaged hand-set weights "
            "(workers/auction/weights/handset.json: each juror 1/3), not the fitted ones"
        )
    on_nojury = [m for m in plan.live if variant_weights(m) == "nojury"]
    if on_nojury:
        notes.append(
            f"{', '.join(on_nojury)} scored with weights fitted on the train split without "
            f"jurors ({nojury_path.name}: entropy and plan cost; no juror called)"
        )
    one_order = [m for m in plan.live if plan.orders > 1 and plan.orders_of(m) == 1]
    if one_order:
        notes.append(
            f"{', '.join(one_order)} ran in one task order: without refinement or the memory "
            "shortcut no auction reads the memory, so another order would repeat the same jobs"
        )

    def left() -> dict[str, int]:  # what the whole run still has to run, every order
        return live_work(plan.whole(), store)

    if report_only:
        todo = left()
        notes.append(
            "tables rewritten from the stored runs (--report-only); jobs still to run: "
            + (", ".join(f"{k} {v}" for k, v in todo.items() if v) or "none")
        )
        if plan.fit:
            notes.append(stored_fit_note(weights_path))
        return doc(not sum(todo.values()))
    if plan.only_orders is not None:
        notes.append(
            "this process ran task order(s) "
            + ", ".join(map(str, sorted(plan.only_orders)))
            + " of the SALE methods only (--only-orders); the others are merged through --records"
        )
    if sum(live_work(plan, store).values()):
        runner = LiveRunner(settings, pool, work_dir, on_progress=progress)
        with (
            work_dir_lock(work_dir),
            runner.running(),
            _partial_results_on(JobFailed, lambda: doc(False)),
        ):
            work = [
                (t, a)
                for t in plan.test + plan.train
                for a in plan.singles
                if not store.has(f"single:{a}", 0, t.split, t.task_id)
            ]
            runner.run_direct(store, work, Segment("single", dict(MEASURED_BASE)))
            doc(False)
            if plan.fit:
                runner.run_stream(store, "sale-train", 0, plan.train, train_segment(unfitted))
                _, why = fit_from_train(store, pool, weights_path, bench)
                notes.append(why)
            nojury = None
            if plan.fit and on_nojury:
                nojury, why = fit_from_train(store, pool, nojury_path, bench, jury=False)
                notes.append(why)
            default = settings.effective_weights_file
            fitted = weights_path if weights_path.exists() else unfitted
            # Orders outer, methods inner: a run stopped early has every method's first order.
            for order in range(plan.orders):
                for method in plan.live:
                    if not plan.runs_order(method, order):
                        continue
                    segment = live_segment(method, order, len(plan.test), fitted, default, nojury)
                    if env_settings(segment.env).award == "verified":
                        seeded = runner.seed_verified_memory(store, plan.train, segment)
                        if seeded:
                            print(
                                f"{segment.name}: memory warm-started with {seeded} train-split "
                                "single-agent outcomes",
                                file=sys.stderr,
                            )
                    runner.run_stream(store, method, order, task_order(plan.test, order), segment)
                    doc(False)
    elif plan.fit and not weights_path.exists():
        _, why = fit_from_train(store, pool, weights_path, bench)
        notes.append(why)
    if plan.fit and weights_path.exists() and not any("fitted" in n for n in notes):
        notes.append(stored_fit_note(weights_path))
    return doc(not sum(left().values()))
