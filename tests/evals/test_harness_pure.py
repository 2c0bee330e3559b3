"""The evaluation harness's pure parts: replay methods, metrics, the run store, the report."""

from __future__ import annotations

import dataclasses
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sale.scripts.evals import metrics, report
from sale.scripts.evals.methods import (
    ClassifierRouter,
    KnnRouter,
    Pick,
    TrainingSet,
    cost_aware_choice,
    pick_cascade,
    pick_oracle,
    pick_oracle_small,
    pick_random,
    replay,
)
from sale.scripts.evals.store import RunStore

PRICES = {"small": 0.03, "medium": 0.12, "large": 0.36}


def outcome(agent: str, passed: bool, check: bool | None, cost: float = 1.0) -> dict[str, object]:
    return {
        "agent": agent,
        "verdict": "passed" if passed else "failed",
        "passed": passed,
        "self_check": check,
        "tokens": 100,
        "cost_usd": cost,
        "wall_s": 2.0,
    }


def test_oracle_takes_the_cheapest_agent_that_passed() -> None:
    outs = {
        "small": outcome("small", False, False),
        "medium": outcome("medium", True, True),
        "large": outcome("large", True, True),
    }
    assert pick_oracle(outs, PRICES).agent == "medium"
    none = {a: outcome(a, False, False) for a in PRICES}
    assert pick_oracle(none, PRICES).agent == "small"


def test_the_small_oracle_keeps_the_largest_agent_for_what_the_others_miss() -> None:
    outs = {
        "small": outcome("small", False, False),
        "medium": outcome("medium", True, True),
        "large": outcome("large", True, True),
    }
    assert pick_oracle_small(outs, PRICES, "large") == Pick("medium", ("medium",))
    # nobody passes: the oracle gives the task to the cheapest agent, this one to the largest
    none = {a: outcome(a, False, False) for a in PRICES}
    assert pick_oracle_small(none, PRICES, "large").agent == "large"
    assert pick_oracle(none, PRICES).agent == "small"
    only_large = {**none, "large": outcome("large", True, True)}
    assert pick_oracle_small(only_large, PRICES, "large").agent == "large"


def test_cascade_escalates_on_failed_self_check_and_pays_for_every_try() -> None:
    outs = {
        "small": outcome("small", False, False, cost=1.0),
        "medium": outcome("medium", False, None, cost=2.0),  # no examples: cannot verify
        "large": outcome("large", True, False, cost=4.0),
    }
    pick = pick_cascade(outs, PRICES)
    assert pick.tried == ("small", "medium", "large")
    rec = replay(pick, outs)
    assert rec["agent"] == "large" and rec["passed"] is True
    assert rec["cost_usd"] == 7.0 and rec["tokens"] == 300 and rec["replayed"] is True
    outs["small"] = outcome("small", False, True, cost=1.0)  # a self-check that lies
    pick = pick_cascade(outs, PRICES)
    assert pick.tried == ("small",) and replay(pick, outs)["passed"] is False


def test_the_auction_router_takes_the_award_then_falls_back_as_the_job_does() -> None:
    from sale.scripts.evals.methods import pick_by_auction

    def bid(agent: str, score: float | None, status: str = "ok") -> dict[str, object]:
        return {"agent": agent, "round": "first", "status": status, "score": score}

    bids = [
        bid("large", 0.2),
        bid("small", -0.5),
        bid("medium", 0.1),
        bid("medium", None, "failed"),
    ]
    outs = {
        "small": outcome("small", False, False),  # the award fails its self-check
        "medium": outcome("medium", True, True),
        "large": outcome("large", True, True),
    }
    assert pick_by_auction(bids, outs, PRICES, 2, "up") == Pick("medium", ("small", "medium"))
    assert pick_by_auction(bids, outs, PRICES, 0, "up") == Pick("small", ("small",))
    # "up" never goes back to a cheaper agent; "ranking" takes the next-best bid.
    cheap_last = [bid("medium", -1.0), bid("large", 0.0), bid("small", -0.5)]
    outs["medium"] = outcome("medium", False, False)
    assert pick_by_auction(cheap_last, outs, PRICES, 2, "up").tried == ("medium", "large")
    assert pick_by_auction(cheap_last, outs, PRICES, 2, "ranking").tried == (
        "medium",
        "small",
        "large",
    )
    unchecked = {**outs, "small": outcome("small", False, None)}  # no check: no fallback
    assert pick_by_auction(bids, unchecked, PRICES, 2, "up") == Pick("small", ("small",))
    assert pick_by_auction([bid("small", None, "failed")], outs, PRICES, 2, "up") is None


def test_the_auction_router_row_pays_the_recorded_auction_and_the_picked_runs(
    tmp_path: Path,
) -> None:
    from sale.broker.pool import load_pool
    from sale.models.schemas import TaskSpec
    from sale.scripts.evals.benchmarks import BenchTask
    from sale.scripts.evals.harness import replay_records
    from sale.scripts.evals.runner import Plan

    pool = load_pool(Path("broker/pools/scripted.toml"))
    spec = TaskSpec(kind="search", prompt="q?", answer="a")
    task = BenchTask("search", "t0", "test", "short", spec)
    store = RunStore(tmp_path / "runs.jsonl")
    for agent, passed, check in (("small", False, False), ("medium", True, True),
                                 ("large", True, True)):  # fmt: skip
        store.add({**_single("search", "t0", agent, passed), "split": "test",
                   "self_check": check, "cost_usd": {"small": 0.1, "medium": 0.5,
                   "large": 1.0}[agent]})  # fmt: skip
    bids = [{"agent": "small", "round": "first", "status": "ok", "score": -1.0},
            {"agent": "large", "round": "first", "status": "ok", "score": 0.5}]  # fmt: skip
    store.add({"method": "sale-nomem", "order": 0, "split": "test", "task_id": "t0",
               "status": "done", "bids": bids, "auction_tokens": 40, "auction_cost_usd": 0.05,
               "auction_wall_s": 3.0})  # fmt: skip
    plan = Plan([task], [], ["auction-router"], orders=2, fit=False)
    records, notes = replay_records(plan, store, pool, None)
    [rec] = records  # one order, as sale-nomem
    assert (rec["method"], rec["order"], rec["agent"], rec["tried"]) == (
        "auction-router",
        0,
        "large",
        ["small", "large"],
    )  # the small award failed its check; "up" skips to the pricier bid that is left
    assert rec["passed"] and rec["replayed"]
    assert rec["cost_usd"] == pytest.approx(0.05 + 0.1 + 1.0)
    assert (rec["auction_cost_usd"], rec["auction_tokens"], rec["tokens"]) == (0.05, 40, 240)
    assert any(n.startswith("auction-router is sale-nomem+plan_mode=generic") for n in notes)
    # auction-router+X replays the recorded sale-nomem+X auctions, with X's own settings: here
    # no fallback, so the small award's failed check ends the job.
    source = "sale-nomem+self_check_fallback=0+bid_max_tokens=64"
    store.add({"method": source, "order": 0, "split": "test", "task_id": "t0",
               "status": "done", "bids": bids, "auction_tokens": 20, "auction_cost_usd": 0.02,
               "auction_wall_s": 1.0})  # fmt: skip
    router = "auction-router+self_check_fallback=0+bid_max_tokens=64"
    missing = "auction-router+bid_max_tokens=32"  # its source never ran
    plan = Plan([task], [], ["auction-router", router, missing], orders=2, fit=False)
    records, notes = replay_records(plan, store, pool, None)
    by_method = {r["method"]: r for r in records}
    assert set(by_method) == {"auction-router", router}
    rec = by_method[router]
    assert (rec["agent"], rec["tried"], rec["passed"]) == ("small", ["small"], False)
    assert rec["cost_usd"] == pytest.approx(0.02 + 0.1) and rec["auction_tokens"] == 20
    assert by_method["auction-router"]["agent"] == "large"  # its own source, as before
    assert f"{router} is {source}+plan_mode=generic replayed" in " ".join(notes)
    assert "(no sale-nomem+bid_max_tokens=32 job is recorded yet)" in " ".join(notes)


def test_auction_router_rows_name_a_memoryless_source_that_runs_its_own_plan() -> None:
    from sale.broker.pool import load_pool
    from sale.scripts.evals.runner import expand_methods, is_auction_replay, router_source

    pool = load_pool(Path("broker/pools/scripted.toml"))
    assert router_source("auction-router") == "sale-nomem"
    assert router_source("auction-router+weights=nojury") == "sale-nomem+weights=nojury"
    assert router_source("sale-nomem") is None and not is_auction_replay("sale")
    assert is_auction_replay("sale-nomem-nofallback") and is_auction_replay("auction-router+a=1")
    good = "auction-router+weights=nojury+bid_max_tokens=128"
    assert expand_methods([f"sale-nomem,{good}"], pool) == ["sale-nomem", good]
    for bad, why in (
        ("auction-router+refine=true", "reads the memory"),
        ("auction-router+memory_shortcut=0.9", "reads the memory"),
        ("auction-router+plan_mode=guidance", "already executes the generic plan"),
        ("auction-router+coding_plan_mode=follow", "already executes the generic plan"),
        ("auction-router+nope=1", "'nope' is not a setting"),
        ("auction-router+task_first_prompts=true", "task_first_prompts would change"),
        ("auction-router+self_check_smoke=true+repeat_stop=0", "self_check_smoke, repeat_stop"),
        ("auction-router+weights=odd", "is not one of"),
    ):
        with pytest.raises(ValueError, match=why):
            expand_methods([bad], pool)


def _attempt(n: int, agent: str, verdict: str, check: str | None, **extra: object) -> dict:
    return {"attempt": n, "agent": agent, "verdict": verdict, "self_check": check,
            "stop_reason": "final_answer", "tokens": 100 * (n + 1),
            "cost_usd": 0.01 * (n + 1), **extra}  # fmt: skip


def test_a_job_without_fallbacks_is_its_auction_and_first_attempt() -> None:
    from sale.scripts.evals.methods import replay_first_attempt

    job = {"auction_tokens": 50, "auction_cost_usd": 0.002, "auction_wall_s": 4.0,
           "execution_wall_s": 30.0,
           "executions": [_attempt(1, "large", "passed", "passed", latency_s=20.0),
                          _attempt(0, "small", "failed", "failed", latency_s=10.0)]}  # fmt: skip
    rec = replay_first_attempt(job)
    assert rec is not None
    # attempt 0 (listed second) is the award's: it failed its check, and without a fallback
    # the job ends there; it pays the auction and that attempt only
    assert (rec["agent"], rec["tried"], rec["passed"], rec["self_check"]) == (
        "small", ["small"], False, False)  # fmt: skip
    assert (rec["tokens"], rec["auction_tokens"]) == (150, 50)
    assert rec["cost_usd"] == pytest.approx(0.012)
    assert rec["wall_s"] == pytest.approx(4.0 + 30.0 * 10 / 30)  # its share of model seconds
    # a record from before latency was recorded: the wall is split by tokens
    for e in job["executions"]:
        del e["latency_s"]
    assert replay_first_attempt(job)["wall_s"] == pytest.approx(4.0 + 30.0 * 100 / 300)
    assert replay_first_attempt({**job, "executions": []}) is None  # attempts not recorded


def test_the_nofallback_row_replays_sale_nomem_jobs_and_names_what_it_leaves_out(
    tmp_path: Path,
) -> None:
    from sale.broker.pool import load_pool
    from sale.models.schemas import TaskSpec
    from sale.scripts.evals.benchmarks import BenchTask
    from sale.scripts.evals.harness import replay_records
    from sale.scripts.evals.runner import Plan

    pool = load_pool(Path("broker/pools/scripted.toml"))
    tasks = [BenchTask("search", f"t{i}", "test", "short",
                       TaskSpec(kind="search", prompt=f"q{i}?", answer="a"))
             for i in range(2)]  # fmt: skip
    store = RunStore(tmp_path / "runs.jsonl")
    for task in tasks:
        for agent in PRICES:
            store.add({**_single("search", task.task_id, agent, True), "split": "test"})
    auction = {"method": "sale-nomem", "order": 0, "split": "test", "status": "done",
               "auction_tokens": 40, "auction_cost_usd": 0.05, "auction_wall_s": 3.0,
               "execution_wall_s": 9.0}  # fmt: skip
    store.add(
        {
            **auction,
            "task_id": "t0",
            "executions": [
                _attempt(0, "small", "failed", "failed"),
                _attempt(1, "large", "passed", "passed"),
            ],
        }
    )
    store.add({**auction, "task_id": "t1", "executions": []})  # predates the attempts
    plan = Plan(tasks, [], ["sale-nomem-nofallback"], orders=2, fit=False)
    records, notes = replay_records(plan, store, pool, None)
    [rec] = records  # t1 has no attempts; one order, as sale-nomem
    assert (rec["method"], rec["order"], rec["task_id"], rec["agent"], rec["passed"]) == (
        "sale-nomem-nofallback", 0, "t0", "small", False)  # fmt: skip
    assert rec["cost_usd"] == pytest.approx(0.06) and rec["replayed"] is True
    [note] = [n for n in notes if n.startswith("sale-nomem-nofallback")]
    assert "1 sale-nomem record(s) predate" in note


def test_random_is_seeded_and_covers_the_pool() -> None:
    a = [pick_random(list(PRICES), random.Random(5)).agent for _ in range(3)]
    b = [pick_random(list(PRICES), random.Random(5)).agent for _ in range(3)]
    assert a == b
    rng = random.Random(0)
    assert {pick_random(list(PRICES), rng).agent for _ in range(60)} == set(PRICES)


def test_cost_aware_choice_takes_the_cheapest_within_the_margin() -> None:
    assert cost_aware_choice({"small": 0.55, "medium": 0.6, "large": 0.9}, PRICES) == "large"
    assert cost_aware_choice({"small": 0.85, "medium": 0.6, "large": 0.9}, PRICES) == "small"
    assert cost_aware_choice({"small": 0.1, "medium": 0.85, "large": 0.9}, PRICES) == "medium"


def _train() -> TrainingSet:
    # Two clusters of tasks: "easy" ones (x-axis) the small agent solves, "hard" ones (y-axis)
    # only the large agent solves.
    outcomes = {}
    texts = {}
    for i in range(6):
        easy = i < 3
        outcomes[f"t{i}"] = {
            "small": outcome("small", easy, easy),
            "medium": outcome("medium", easy, easy),
            "large": outcome("large", True, True),
        }
        texts[f"t{i}"] = ("easy" if easy else "hard") + str(i)

    def embed(items: list[str]) -> list[list[float]]:
        out = []
        for t in items:
            v = np.array([1.0, 0.05 * len(t)]) if t.startswith("easy") else np.array([0.05, 1.0])
            out.append(list(v / np.linalg.norm(v)))
        return out

    return TrainingSet.build(outcomes, texts, list(PRICES), embed)


def test_knn_router_routes_easy_tasks_to_the_small_agent() -> None:
    router = KnnRouter(_train(), PRICES, k=3)
    assert router.pick([1.0, 0.0]).agent == "small"
    assert router.pick([0.0, 1.0]).agent == "large"


def test_classifier_router_learns_the_split_and_handles_one_class() -> None:
    router = ClassifierRouter(_train(), PRICES, c=100.0)
    assert "large" in router.constant  # always passed: a constant, not a classifier
    assert router.pick([1.0, 0.0]).agent == "small"
    assert router.pick([0.0, 1.0]).agent == "large"


def test_training_set_needs_every_agent() -> None:
    with pytest.raises(ValueError, match="single-agent"):
        TrainingSet.build(
            {"t": {"small": outcome("small", True, True)}},
            {"t": "x"},
            ["small", "large"],
            lambda t: [[1.0]],
        )


def record(
    method: str, order: int, pos: int, agent: str, passed: bool, **kw: object
) -> dict[str, object]:
    base: dict[str, object] = {
        "method": method,
        "order": order,
        "position": pos,
        "split": "test",
        "task_id": f"t{pos}",
        "bin": "short" if pos % 2 == 0 else "long",
        "agent": agent,
        "passed": passed,
        "tokens": 1000,
        "auction_tokens": 250,
        "cost_usd": 0.5,
        "wall_s": 10.0,
        "auction_wall_s": 4.0,
    }
    base.update(kw)
    return base


def test_method_summary_figures_and_std_over_orders() -> None:
    rows = [
        record("sale", 0, 0, "small", True),
        record("sale", 0, 1, "large", False),
        record("sale", 1, 0, "large", True),
        record("sale", 1, 1, "large", True),
    ]
    s = metrics.method_summary(rows, "large")
    assert s["orders"] == 2 and s["n_tasks"] == 2
    assert s["pass_at_1"] == pytest.approx(0.75) and s["pass_at_1_std"] == pytest.approx(0.25)
    assert s["largest_share"] == pytest.approx(0.75)
    assert s["cost_usd"] == pytest.approx(1.0)
    assert s["usd_per_mtok"] == pytest.approx(1.0 / 2000 * 1e6)
    assert s["overhead_token_share"] == pytest.approx(0.25)
    assert s["overhead_wall_share"] == pytest.approx(0.4)
    assert s["bins"]["short"]["pass_at_1"] == 1.0 and s["bins"]["long"]["pass_at_1"] == 0.5
    assert s["code"] == []  # records from before the code version was kept
    mixed = [record("sale", 0, 0, "small", True, code="abc"), record("sale", 1, 0, "s", True)]
    mixed.append(record("sale", 1, 1, "small", True, code="def-dirty"))
    assert metrics.method_summary(mixed, "large")["code"] == ["abc", "def-dirty"]


def test_goals_compare_each_sale_row_with_the_largest_agent_and_the_cascade() -> None:
    def row(method: str, agents_passed: list[tuple[str, bool]], cost: float, orders: int = 1):
        recs = [
            record(
                method, o, i, a, ok, cost_usd=cost, auction_tokens=0 if "single" in method else 200
            )
            for o in range(orders)
            for i, (a, ok) in enumerate(agents_passed)
        ]
        return {"method": method, **metrics.method_summary(recs, "large")}

    largest = row("single:large", [("large", True), ("large", True), ("large", False)], 1.0)
    cascade = row("cascade", [("large", True), ("small", True), ("large", False)], 0.8)
    cheap = row("sale", [("small", True), ("small", True), ("large", False)], 0.2, orders=2)
    worse = row("sale+x=1", [("small", True), ("small", False), ("small", False)], 0.1)
    partial = row("sale-nomem", [("small", True), ("small", True)], 0.1)
    rows = [largest, cascade, cheap, worse, partial]
    got = {
        g["method"]: g
        for g in metrics.goals(rows, ["sale", "sale+x=1", "sale-nomem"], "single:large", 3, True)
    }
    sale = got["sale"]
    assert (sale["pass_goal"], sale["cost_goal"], sale["cascade_goal"]) == (True, True, True)
    assert sale["cost_ratio"] == pytest.approx(0.2) and sale["complete"]
    assert sale["overhead_goal"] is True  # 200 of 1000 tokens
    # cheaper than the cascade but worse on pass@1: not better without losing
    assert (got["sale+x=1"]["pass_goal"], got["sale+x=1"]["cascade_goal"]) == (False, False)
    assert got["sale-nomem"]["complete"] is False  # 2 of the 3 test tasks
    assert got["sale-nomem"]["cost_ratio"] == pytest.approx(0.1)  # per task: 0.1 vs 1.0
    # A row with every task of the orders it has begun still lacks the orders it has not.
    one_of_two = row("sale+y=2", [("small", True), ("small", True), ("large", False)], 0.2)
    assert metrics.goals([largest, one_of_two], ["sale+y=2"], "single:large", 3, True)[0][
        "complete"
    ]
    one_of_two["planned_orders"] = 2
    (g,) = metrics.goals([largest, one_of_two], ["sale+y=2"], "single:large", 3, True)
    assert g["complete"] is False and g["cost_ratio"] == pytest.approx(0.2)
    one_of_two.update(replayed=False, bins={}, code=[])
    doc = {"bench": "b", "pool": "p", "command": "c", "date": "d", "complete": False}
    doc.update(n_tasks=3, orders=2, decoding="t0", methods=[one_of_two])
    assert "| 3 × 1 (of 2) | no |" in report.markdown(doc)
    search = metrics.goals(rows, ["sale"], "single:large", 3, coding=False)
    assert search[0]["overhead_goal"] is None
    assert metrics.goals([cheap], ["sale"], "single:large", 3, True) == []  # no reference
    md = "\n".join(report.goals_markdown(list(got.values())))
    assert "| sale | **yes**: 0.667 vs 0.667 | **yes**: 0.20× |" in md
    assert "| sale-nomem |" in md and "provisional" in md


def test_win_share_curve_is_cumulative_per_order() -> None:
    rows = [
        record("sale", 0, i, a, True) for i, a in enumerate(["large", "small", "medium", "large"])
    ]
    assert metrics.win_share_curve(rows, "large") == {0: [0.0, 0.5, 2 / 3, 0.5]}


def test_pearson_and_signal_table() -> None:
    assert metrics.pearson([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    assert metrics.pearson([1, 1, 1], [0, 1, 0]) is None
    bids = [
        {
            "agent": "small",
            "round": "first",
            "status": "ok",
            "tokens": 50,
            "entropy": 0.1,
            "jury": {"large": 1},
        },
        {
            "agent": "large",
            "round": "first",
            "status": "ok",
            "tokens": 90,
            "entropy": 0.3,
            "jury": {"large": 5},
        },
    ]
    rows = [record("sale", 0, i, "large", True, award_round="first", bids=bids) for i in range(3)]
    solved = {f"t{i}": {"small": False, "large": True} for i in range(3)}
    table = {
        s["signal"]: s for s in metrics.signal_table(rows, solved, ["large"], {"jury:large": 0.5})
    }
    assert table["jury:large"]["r_alone"] == pytest.approx(1.0)
    assert table["jury:large"]["n_alone"] == 6 and table["jury:large"]["fitted_weight"] == 0.5
    assert table["entropy"]["n_executed"] == 3  # only the awarded bid carries its own verdict
    # γ (the scores as the scorer used them) wins over the raw scores: standardised scores that
    # reverse the order, and an abstention (no γ) that drops the point.
    bids[0]["gamma"], bids[1]["gamma"] = {"large": 4.0}, {"large": 2.0}
    table = {s["signal"]: s for s in metrics.signal_table(rows, solved, ["large"])}
    assert table["jury:large"]["r_alone"] == pytest.approx(-1.0)
    bids[0]["gamma"] = {}
    table = {s["signal"]: s for s in metrics.signal_table(rows, solved, ["large"])}
    assert table["jury:large"]["n_alone"] == 3


def test_store_resumes_and_ignores_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "runs.jsonl"
    store = RunStore(path)
    store.add(record("sale", 0, 0, "small", True))
    store.add(record("sale", 1, 0, "small", False))
    with open(path, "a") as fh:
        fh.write('{"method": "sale", "ord')  # killed mid-write
    again = RunStore(path)
    assert again.has("sale", 0, "test", "t0") and again.has("sale", 1, "test", "t0")
    assert not again.has("sale", 2, "test", "t0")
    assert len(list(again.select(method="sale"))) == 2


def test_report_writes_strict_json_markdown_and_plots(tmp_path: Path) -> None:
    rows = [record("sale", 0, i, "small", i == 0, code="0de53dd") for i in range(2)]
    summary = {"method": "sale", **metrics.method_summary(rows, "large")}
    summary["usd_per_mtok"] = math.nan
    doc = {
        "bench": "humaneval",
        "command": "sale eval --limit 2",
        "date": "2026-11-26",
        "complete": False,
        "pool": "local.toml",
        "n_tasks": 2,
        "orders": 1,
        "decoding": "temperature 0",
        "methods": [summary],
        "win_share": {"sale": metrics.win_share_curve(rows, "large")},
        "signals": [],
        "notes": ["partial"],
    }
    paths = report.write(doc, tmp_path)
    data = json.loads((tmp_path / "humaneval.json").read_text())
    assert data["methods"][0]["usd_per_mtok"] is None
    md = (tmp_path / "humaneval.md").read_text()
    assert "| sale | 0.500 |" in md and "sale eval --limit 2" in md
    assert "- sale: 0de53dd" in md  # which code ran the method's jobs
    pngs = [p for p in paths if p.suffix == ".png"]
    assert len(pngs) == 2 and all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)


def test_sale_variants_parse_into_worker_settings() -> None:
    from pathlib import Path as P

    from sale.broker.pool import load_pool
    from sale.scripts.evals.runner import (
        MEASURED_BASE,
        expand_methods,
        segment_name,
        stream_name,
        variant_env,
    )

    pool = load_pool(P(__file__).resolve().parents[2] / "broker" / "pools" / "scripted.toml")
    assert variant_env("sale") == {**MEASURED_BASE, "SALE_REFINE": "true"}
    assert variant_env("sale-nomem+jury_mode=per_bid") == {
        **MEASURED_BASE,
        "SALE_REFINE": "false",
        "SALE_JURY_MODE": "per_bid",
    }
    methods = expand_methods(["single,sale+mechanism=paper"], pool)
    assert methods == ["single:small", "single:medium", "single:large", "sale+mechanism=paper"]
    with pytest.raises(ValueError, match="'nope' is not a setting"):
        expand_methods(["sale+nope=1"], pool)
    with pytest.raises(ValueError, match="jury_mode"):
        expand_methods(["sale+jury_mode=weird"], pool)
    with pytest.raises(ValueError, match="unknown method 'sales'"):
        expand_methods(["sales"], pool)
    assert "/" not in segment_name("sale+memory_k=4") and "+" not in segment_name("sale+x=1")
    assert stream_name("sale", 0, 30) == "sale-o0" and stream_name("sale", 1, 30) == "sale-o1-n30"


def test_weights_choice_picks_the_segments_weights_file_and_is_not_a_worker_setting() -> None:
    from pathlib import Path as P

    from sale.scripts.evals.runner import MEASURED_BASE, live_segment, variant_env, variant_weights
    from sale.workers.auction.weights import load_weights

    fitted, default = P("/w/weights.json"), P("/pkg/default.json")
    assert variant_weights("sale") == "fitted"
    assert variant_weights("sale+weights=default+jury_debias=rotate") == "default"
    assert variant_env("sale+weights=default+jury_debias=rotate") == {
        **MEASURED_BASE,
        "SALE_REFINE": "true",
        "SALE_JURY_DEBIAS": "rotate",
    }
    plain = live_segment("sale", 1, 30, fitted, default)
    assert (plain.name, plain.weights_file) == ("sale-o1-n30", fitted)
    chosen = live_segment("sale+weights=default", 0, 30, fitted, default)
    assert chosen.weights_file == default and chosen.name == "sale_weights_default-o0"
    assert chosen.env == {**MEASURED_BASE, "SALE_REFINE": "true"}
    hand = live_segment("sale+weights=handset+jury_debias=rotate", 1, 10, fitted, default)
    assert hand.weights_file is not None and hand.weights_file.name == "handset.json"
    assert hand.name == "sale_weights_handset_jury_debias_rotate-o1-n10"
    assert load_weights(hand.weights_file).default_juror_weight == pytest.approx(1 / 3)
    with pytest.raises(
        ValueError, match="weights='mine' is not one of fitted, default, handset, nojury"
    ):
        variant_env("sale+weights=mine")
    nojury = P("/w/weights-nojury.json")
    nj = live_segment("sale+weights=nojury", 0, 30, fitted, default, nojury)
    assert nj.weights_file == nojury and nj.env == {**MEASURED_BASE, "SALE_REFINE": "true"}
    with pytest.raises(ValueError, match="no weights fitted without jurors"):
        live_segment("sale+weights=nojury", 0, 30, fitted, default)


def test_code_version_names_this_checkout() -> None:
    import subprocess

    from sale.scripts.evals.runner import code_version

    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    if not head:
        pytest.skip("not a git checkout")
    assert code_version() in (head, f"{head}-dirty")


def _train_run(bench: str, task: str, jury_by_agent: dict[str, int]) -> dict[str, object]:
    bids = [
        {
            "agent": agent,
            "entropy": 0.2,
            "jury": {"medium": score, "large": score},
            "round": "first",
            "status": "ok",
            "tokens": 100,
        }
        for agent, score in jury_by_agent.items()
    ]
    return {
        "method": "sale-train",
        "order": 0,
        "split": "train",
        "task_id": task,
        "bench": bench,
        "bids": bids,
        "verdict": "failed",
    }


def _single(bench: str, task: str, agent: str, passed: bool) -> dict[str, object]:
    return {
        **outcome(agent, passed, None),
        "method": f"single:{agent}",
        "order": 0,
        "split": "train",
        "task_id": task,
        "bench": bench,
    }


def _eval_dir(root: Path, bench: str, solvers: dict[str, list[str]]) -> Path:
    store = RunStore(root / bench / "runs.jsonl")
    for task, solved_by in solvers.items():
        store.add(_train_run(bench, task, {"small": 1, "medium": 3, "large": 5}))
        for agent in PRICES:
            store.add(_single(bench, task, agent, agent in solved_by))
    return root / bench


def test_fit_from_eval_dirs_pools_the_benchmarks_train_auctions(tmp_path: Path) -> None:
    from sale.broker.pool import load_pool
    from sale.scripts.evals.harness import fit_from_eval_dirs
    from sale.workers.auction.weights import load_weights

    pool = load_pool(Path("broker/pools/scripted.toml"))
    coding = _eval_dir(tmp_path, "humaneval", {"t/1": ["small", "large"], "t/2": ["large"]})
    search = _eval_dir(tmp_path, "search", {"t/1": ["small"], "t/2": [], "t/3": ["medium"]})
    out = tmp_path / "weights.json"
    result, what = fit_from_eval_dirs([coding, search], pool, out, "fit-test")
    # The same task id in two benchmarks stays two auctions; t/2 of search has no solver.
    assert (result.total, result.skipped) == (4, 1)
    weights = load_weights(out)
    assert weights.version == "fit-test"
    assert f"humaneval: 2 train auctions (2 with a solver) in {coding}" in weights.source
    assert f"search: 3 train auctions (2 with a solver) in {search}" in weights.source
    assert "cheapest bid whose agent solved the task alone" in weights.source
    assert what.count("train auctions") == 2


def test_fit_from_train_without_jury_weighs_every_juror_zero(tmp_path: Path) -> None:
    from sale.broker.pool import load_pool
    from sale.scripts.evals.harness import fit_from_train
    from sale.workers.auction.weights import load_weights
    from sale.workers.stages.jury_scores import called_jurors

    pool = load_pool(Path("broker/pools/scripted.toml"))
    coding = _eval_dir(tmp_path, "humaneval", {"t/1": ["small", "large"], "t/2": ["large"]})
    store = RunStore(coding / "runs.jsonl")
    with_jury, why = fit_from_train(store, pool, tmp_path / "w.json", "humaneval")
    assert with_jury is not None and "weights fitted on 2/2 train auctions" in why
    out, why = fit_from_train(store, pool, tmp_path / "nj.json", "humaneval", jury=False)
    assert out is not None and "fitted without jurors on 2/2" in why
    weights = load_weights(out)
    assert weights.jurors == dict.fromkeys(pool.names, 0.0) and weights.w_h == pytest.approx(1.0)
    assert "without jurors" in weights.source and "-nojury-" in weights.version
    assert called_jurors(pool.names, weights, 0.05) == []  # no juror is called


def test_per_kind_fit_writes_one_section_per_benchmark_kind_over_the_base(tmp_path: Path) -> None:
    from sale.scripts.cli import app
    from sale.workers.auction.weights import load_weights
    from typer.testing import CliRunner

    pool = "broker/pools/scripted.toml"
    coding = _eval_dir(tmp_path, "humaneval", {"t/1": ["small", "large"], "t/2": ["large"]})
    search = _eval_dir(tmp_path, "search", {"t/1": ["small"], "t/2": [], "t/3": ["medium"]})
    out = tmp_path / "w.json"
    args = ["fit", "--pool", pool, "--out", str(out), "--per-kind", "--version", "v9"]
    res = CliRunner().invoke(app, [*args, "--from-eval", str(coding)])
    assert res.exit_code == 0, res.output
    first = load_weights(out)
    assert first.version == "v9" and set(first.kinds) == {"coding"}
    assert "hand-set" in first.source  # the top level is the packaged hand-set weights
    assert first.for_kind("search") is first
    assert (
        f"humaneval: 2 train auctions (2 with a solver) in {coding}" in first.kinds["coding"].source
    )
    # A second fit over the first file adds the search section and keeps the coding one.
    res = CliRunner().invoke(app, [*args, "--base", str(out), "--from-eval", str(search)])
    assert res.exit_code == 0, res.output
    both = load_weights(out)
    assert set(both.kinds) == {"coding", "search"}
    assert both.kinds["coding"] == dataclasses.replace(
        first.kinds["coding"], path=both.kinds["coding"].path
    )
    assert "search: 3 train auctions (2 with a solver)" in both.kinds["search"].source
    res = CliRunner().invoke(app, ["fit", "--pool", pool, "--per-kind"])
    assert res.exit_code == 2 and "go with --from-eval" in " ".join(res.output.split())
    # --no-jury: the sections weigh every juror 0, so none is called for that kind.
    nj = tmp_path / "nj.json"
    res = CliRunner().invoke(
        app,
        [
            "fit",
            "--pool",
            pool,
            "--out",
            str(nj),
            "--per-kind",
            "--no-jury",
            "--from-eval",
            str(coding),
        ],
    )
    assert res.exit_code == 0, res.output
    section = load_weights(nj).kinds["coding"]
    assert section.jurors == {"small": 0.0, "medium": 0.0, "large": 0.0}
    assert section.w_h == pytest.approx(1.0) and "without jurors" in section.source
    res = CliRunner().invoke(app, ["fit", "--pool", pool, "--no-jury", "--from-eval", str(coding)])
    assert res.exit_code == 2 and "--no-jury goes with" in " ".join(res.output.split())
    res = CliRunner().invoke(
        app, [*args, "--base", str(tmp_path / "no.json"), "--from-eval", str(search)]
    )
    assert res.exit_code == 2 and "no.json: no such file" in " ".join(res.output.split())


def test_fit_from_eval_dirs_names_what_is_wrong(tmp_path: Path) -> None:
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    pool = "broker/pools/scripted.toml"
    runner = CliRunner()

    def said(res: Any) -> str:  # rich wraps long lines
        return " ".join(res.output.split())

    empty = tmp_path / "nothing"
    empty.mkdir()
    res = runner.invoke(app, ["fit", "--from-eval", str(empty), "--pool", pool])
    assert res.exit_code == 2 and "no runs.jsonl" in said(res)
    RunStore(tmp_path / "singles" / "runs.jsonl").add(_single("humaneval", "t/1", "small", True))
    res = runner.invoke(app, ["fit", "--from-eval", str(tmp_path / "singles"), "--pool", pool])
    assert res.exit_code == 2 and "holds no SALE auctions on the train split" in said(res)
    store = RunStore(tmp_path / "other" / "runs.jsonl")
    store.add(_train_run("humaneval", "t/1", {"small": 1, "tiny": 2}))
    res = runner.invoke(app, ["fit", "--from-eval", str(tmp_path / "other"), "--pool", pool])
    assert res.exit_code == 2 and "bids from tiny, not in the pool" in said(res)
    unsolved = _eval_dir(tmp_path, "none", {"t/1": []})
    res = runner.invoke(app, ["fit", "--from-eval", str(unsolved), "--pool", pool])
    assert res.exit_code == 2 and "was solved by any agent alone" in said(res)
    solved = _eval_dir(tmp_path, "humaneval", {"t/1": ["small"], "t/2": ["large"]})
    out = tmp_path / "w.json"
    res = runner.invoke(app, ["fit", "--from-eval", str(solved), "--pool", pool, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "routed" in said(res) and json.loads(out.read_text())["source"].startswith("fitted")


def test_methods_that_read_no_memory_run_one_order() -> None:
    from sale.scripts.evals.runner import Plan, reads_memory

    assert reads_memory("sale") and reads_memory("sale+self_check_fallback=0")
    assert not reads_memory("sale-nomem")
    assert not reads_memory("sale-nomem+jury_debias=rotate")
    assert reads_memory("sale-nomem+memory_shortcut=0.9")  # the shortcut reads the memory
    assert reads_memory("sale-nomem+mechanism=paper")  # the paper refines, whatever is asked
    plan = Plan([], [], ["sale", "sale-nomem"], 3, False)
    assert (plan.orders_of("sale"), plan.orders_of("sale-nomem")) == (3, 1)


def test_only_orders_picks_the_orders_this_process_runs_and_rejects_others(tmp_path: Path) -> None:
    from sale.broker.pool import load_pool
    from sale.scripts.cli.evals import _order_list
    from sale.scripts.evals.runner import live_work, make_plan

    pool = load_pool(Path("broker/pools/scripted.toml"))

    def plan_of(methods: list[str], only: list[int]) -> Any:
        return make_plan(
            "humaneval",
            methods,
            pool,
            limit=2,
            train_limit=0,
            orders=2,
            fit=False,
            only_orders=only,
        )

    plan = plan_of(["sale", "sale-nomem"], [1])
    store = RunStore(tmp_path / "runs.jsonl")
    assert [plan.runs_order("sale", k) for k in (0, 1)] == [False, True]
    assert not plan.runs_order("sale-nomem", 0)  # its one order is not this process's
    assert live_work(plan, store) == {"single": 0, "sale": 2, "sale-nomem": 0}
    assert live_work(plan.whole(), store) == {"single": 0, "sale": 4, "sale-nomem": 2}
    with pytest.raises(ValueError, match="numbered 0 to 1"):
        plan_of(["sale"], [2])
    assert _order_list("0, 1") == [0, 1] and _order_list(None) is None
    with pytest.raises(ValueError, match="separated by commas"):
        _order_list("first")


def test_a_rewrite_of_the_tables_names_the_fit_of_the_run(tmp_path: Path) -> None:
    from sale.scripts.evals.harness import stored_fit_note

    path = tmp_path / "weights.json"
    assert "SALE used the default weights" in stored_fit_note(path)
    source = "fitted by sale.workers.auction.fit on 15 SALE auctions (12 with a solver)"
    path.write_text(json.dumps({"version": "fit-x", "w_c": 0.1, "w_h": 0.9, "source": source}))
    note = stored_fit_note(path)
    assert note.startswith("SALE used the weights fitted on the train split (") and source in note


def test_the_train_split_calls_every_juror_whatever_the_default() -> None:
    from sale.broker.settings import Settings
    from sale.scripts.evals.runner import env_settings, train_segment

    segment = train_segment()
    settings = env_settings(segment.env)
    from sale.broker.settings import JURY_WEIGHTS_FILE

    # scored as the recorded train splits were: the fit with a jury, not the shipped default
    assert segment.name == "sale-train" and segment.weights_file == JURY_WEIGHTS_FILE
    assert settings.jury_min_weight == 0.0 < Settings(_env_file=None).jury_min_weight
    assert settings.refine


def test_records_carried_over_from_another_run_are_noted(tmp_path: Path) -> None:
    from sale.scripts.evals.harness import carried_over_notes

    store = RunStore(tmp_path / "runs.jsonl")
    store.add(_single("humaneval", "t/1", "small", True))
    assert carried_over_notes(store) == []
    why = "carried over from /old/runs.jsonl (same decoding)"
    for agent in ("small", "large"):
        store.add({**_single("humaneval", "t/2", agent, False), "carried_over": why})
    assert carried_over_notes(store) == [f"2 run records (single:large, single:small) were {why}"]


def test_a_finished_job_is_one_log_line_with_an_eta_from_each_stages_pace() -> None:
    from sale.scripts.cli.evals import Eta, job_line

    eta = Eta({"single": 4, "sale-train": 2, "sale": 3, "sale+x=1": 2}, 0.0)
    assert eta.left() == "~0:00:00 left (+ 11 jobs not yet timed)"
    eta.finished("single:small HumanEval/1 passed", 60.0)
    eta.finished("single:large HumanEval/1 failed", 100.0)  # singles pace: 50 s
    assert eta.left() == "~0:01:40 left (+ 7 jobs not yet timed)"
    eta.finished("sale-train o0 HumanEval/7 passed", 400.0)  # 300 s: every SALE stage's pace
    assert eta.left() == "~0:31:40 left"  # 2×50 + (1 + 3 + 2)×300
    eta.finished("sale o0 HumanEval/3 passed", 600.0)  # sale's own pace: 200 s
    assert eta.left() == "~0:21:40 left"  # 2×50 + 1×300 + 2×200 + 2×250
    line = job_line("sale o0 HumanEval/3 passed", 4, 11, 600.0, eta.left())
    assert line == "[4/11] sale o0 HumanEval/3 passed · elapsed 0:10:00 · ~0:21:40 left"


def test_a_job_that_ran_without_a_model_is_found_by_its_marked_error() -> None:
    from sale.scripts.evals.runner import retries_spent

    from sale.errors import RETRIES_SPENT

    view: dict[str, Any] = {
        "bids": [{"agent": "small", "error": None}, {"agent": "medium", "error": "bad request"}],
        "jury_calls": [{"juror": "large", "error": "no JSON in the reply"}],
        "executions": [{"agent": "small", "error": None}],
    }
    assert retries_spent(view) is None  # the model's own failures are outcomes
    view["executions"].append({"agent": "large", "error": RETRIES_SPENT + "connection refused"})
    assert retries_spent(view) == f"execution by large: {RETRIES_SPENT}connection refused"


def test_one_run_at_a_time_holds_a_work_directory(tmp_path: Path) -> None:
    import os

    from sale.scripts.evals.harness import WorkDirBusy, work_dir_lock

    busy = pytest.raises(WorkDirBusy, match=f"pid {os.getpid()}")
    with work_dir_lock(tmp_path), busy, work_dir_lock(tmp_path):  # the second one is refused
        pass
    with work_dir_lock(tmp_path):  # released when the first run ends
        pass
    with work_dir_lock(tmp_path / "new" / "work"):  # a work directory not made yet is made
        assert (tmp_path / "new" / "work" / "eval.lock").exists()


def test_outcome_table_says_where_each_answer_lands() -> None:
    prices = {"small": 0.1, "medium": 0.5, "large": 1.0}
    solved = {
        "t0": {"small": False, "medium": True, "large": True},
        "t1": {"small": False, "medium": False, "large": False},
        "t2": {"small": False, "medium": True, "large": True},
        "t3": {"small": True, "medium": True, "large": True},
        "t4": {"small": False, "medium": False, "large": True},
        "t5": {"small": False, "medium": False, "large": True},
        "t6": {"small": False, "medium": False, "large": True},
        "t7": {"small": True},  # the other agents' runs are missing: not judged
        "t8": {"small": True, "medium": False, "large": False},
    }
    recs = [
        record("sale", 0, 0, "medium", True),  # the cheapest solver
        record("sale", 0, 1, "large", True),  # no agent alone solved it
        record("sale", 0, 2, "large", True),  # the medium would have done
        record("sale", 0, 3, "large", False),  # its agent solved it alone
        record("sale", 0, 4, "small", False, self_check=None),
        record("sale", 0, 5, "small", False, self_check=True),
        record("sale", 0, 6, "medium", False, self_check=False),
        record("sale", 0, 7, "small", True),
        record("sale", 1, 1, "small", False),  # nobody solved t1
        record("sale", 0, 8, "large", False, self_check=False),  # pricier, yet not a solver
    ]
    [row] = metrics.outcome_table({"sale": recs}, solved, prices)
    assert row == {
        "method": "sale",
        "judged": 9,
        "passed_cheapest": 1,
        "passed_pricier": 1,
        "passed_unsolved": 1,
        "failed_unsolved": 1,
        "failed_solver": 1,
        "other_unchecked": 1,
        "other_check_passed": 1,
        "other_check_failed": 2,
    }
    md = "\n".join(report.outcomes_markdown([row]))
    assert "| sale | 9 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 2 |" in md
    assert "- fail: by a solver: failed, though its agent solved the task alone" in md


def test_cost_split_says_how_much_of_an_agent_s_cost_its_failures_take() -> None:
    recs = [
        record("single:large", 0, 0, "large", True, cost_usd=0.1, stop_reason="final_answer"),
        record("single:large", 0, 1, "large", True, cost_usd=0.3, stop_reason="max_tokens"),
        record("single:large", 0, 2, "large", False, cost_usd=0.4, stop_reason="max_tokens"),
        record("single:large", 0, 3, "large", False, cost_usd=0.2, stop_reason="final_answer"),
    ]
    [row] = metrics.cost_split({"single:large": recs})
    assert row["n"] == 4 and row["cost_usd"] == pytest.approx(1.0)
    assert (row["passed_n"], row["failed_n"], row["limit_n"]) == (2, 2, 2)
    assert row["passed_cost_usd"] == pytest.approx(0.4)
    assert row["failed_cost_share"] == pytest.approx(0.6)
    assert row["limit_cost_share"] == pytest.approx(0.7)
    md = "\n".join(report.cost_split_markdown([row]))
    assert "| single:large | 4 | $1.00000 | 2, $0.40000 (0.40) | 2, $0.60000 (0.60) |" in md


def test_shown_path_hides_the_machine_layout() -> None:
    from sale.scripts.evals.harness import shown_path

    checkout = Path(__file__).resolve().parents[2]
    assert shown_path(checkout / "broker" / "pools" / "local.toml") == "broker/pools/local.toml"
    assert shown_path(Path.home() / "sale-eval" / "search") == "~/sale-eval/search"
    assert shown_path("/nowhere/else") == "/nowhere/else"


@pytest.mark.parametrize("bench", ["humaneval", "search"])
def test_every_lever_row_of_the_lever_script_is_a_valid_method(bench: str, tmp_path: Path) -> None:
    import subprocess

    from sale.broker.pool import load_pool
    from sale.scripts.evals.runner import expand_methods, is_live, variant_env

    checkout, calls, env = _script_in_checkout(tmp_path, "levers.sh")
    (checkout / "docs" / "results" / "levers").mkdir(parents=True)
    (checkout / "docs" / "results" / "levers" / f"{bench}.runs.jsonl").write_text("")
    run = subprocess.run(["bash", str(checkout / "scripts" / "levers.sh"), bench], env=env)
    assert run.returncode == 0
    evals = [line for line in calls.read_text().splitlines() if line.startswith("eval")]
    methods = evals[-1].split("--methods ")[1].split()[0]
    pool = load_pool(Path("broker/pools/local.toml"))
    expanded = expand_methods([methods], pool)  # an unknown method or setting raises, naming it
    live = [m for m in expanded if is_live(m)]
    assert len(live) == 15 and "sale" in live and "sale-nomem" in live
    assert live[-1] == "sale-nomem+weights=nojury+bid_max_tokens=128+plan_mode=generic"  # default
    for lever in live:
        env_of = variant_env(lever)
        # the rows on `sale` read the memory, the rows on `sale-nomem` never
        assert (env_of["SALE_REFINE"] == "true") is (lever.split("+")[0] == "sale"), lever
    routers = [m for m in expanded if m.startswith("auction-router+")]
    assert "auction-router+weights=nojury+bid_max_tokens=128" in routers
    assert len(routers) == 7  # every row of auction settings alone has its replayed twin
    assert all("sale-nomem+" + m.removeprefix("auction-router+") in live for m in routers)


def test_the_lever_script_reversed_runs_the_same_rows_last_first(tmp_path: Path) -> None:
    import subprocess

    rows, last = {}, {}
    for reverse in ("0", "1"):
        checkout, calls, env = _script_in_checkout(tmp_path / reverse, "levers.sh")
        (checkout / "docs" / "results" / "levers").mkdir(parents=True)
        (checkout / "docs" / "results" / "levers" / "humaneval.runs.jsonl").write_text("")
        run = subprocess.run(
            ["bash", str(checkout / "scripts" / "levers.sh"), "humaneval"],
            env={**env, "LEVERS_REVERSE": reverse},
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0
        rows[reverse] = [
            line.removeprefix("== humaneval: ")
            for line in run.stderr.splitlines()
            if line.startswith("== humaneval: ")
        ]
        evals = [line for line in calls.read_text().splitlines() if line.startswith("eval")]
        methods = [line.split("--methods ")[1].split()[0] for line in evals]
        assert len(methods) == len(rows[reverse])
        # each run keeps the previous runs' methods and adds its row's
        for before, after, row in zip(methods, methods[1:], rows[reverse][1:], strict=False):
            assert after == f"{before},{row}"
        last[reverse] = set(methods[-1].split(","))
    assert rows["0"][0].startswith("sale-nomem+weights=nojury") and len(rows["0"]) == 14
    assert rows["1"] == rows["0"][::-1]
    assert last["1"] == last["0"]  # the last run of either holds every row


def test_the_goals_name_the_cost_floor_of_routing() -> None:
    doc = {
        "largest_agent": "large",
        "methods": [
            {"method": "single:large", "pass_at_1": 0.6, "cost_usd": 2.0},
            {"method": "oracle-small", "pass_at_1": 0.6, "cost_usd": 1.5},
        ],
    }
    [_, text] = report.floor_markdown(doc)
    assert "passes 0.600 at 0.75× the largest agent's cost" in text
    doc["methods"].pop()  # no floor row (e.g. --methods without it): nothing said
    assert report.floor_markdown(doc) == []


def test_the_outcome_methods_dispatch_to_their_picks() -> None:
    from sale.scripts.evals.methods import OUTCOME_METHODS, pick_from_outcomes

    outs = {
        "small": outcome("small", False, True),
        "medium": outcome("medium", True, True),
        "large": outcome("large", True, True),
    }
    picks = {m: pick_from_outcomes(m, outs, PRICES, "large") for m in OUTCOME_METHODS}
    assert picks == {
        "oracle": pick_oracle(outs, PRICES),
        "oracle-small": pick_oracle_small(outs, PRICES, "large"),
        "cascade": pick_cascade(outs, PRICES),
    }
    assert picks["cascade"].agent == "small"  # its self-check passed a wrong answer
    with pytest.raises(ValueError, match="'random' is not one of oracle, oracle-small, cascade"):
        pick_from_outcomes("random", outs, PRICES, "large")


def test_a_run_goes_on_from_a_copy_of_its_records_kept_elsewhere(tmp_path: Path) -> None:
    """The copy written with each report restores a run on a machine whose work directory is
    gone, and brings a work directory up to date with a copy another machine extended."""
    from sale.scripts.evals.harness import restore_records

    old = RunStore(tmp_path / "old" / "runs.jsonl")
    for i in range(2):
        old.add(record("single:small", 0, i, "small", True))
        old.add({**record("sale", 1, i, "small", True), "stream": "sale-o1-n2"})
    copy = tmp_path / "repo" / "search.runs.jsonl"
    old.write_copy(copy)
    assert len(copy.read_text().splitlines()) == 4

    store = RunStore(tmp_path / "new" / "runs.jsonl")
    store.add(record("single:small", 0, 0, "small", False))  # this machine's own run is kept
    assert restore_records(store, copy) == 3
    assert store.get("single:small", 0, "test", "t0")["passed"] is False
    assert store.has("sale", 1, "test", "t1") and store.has("single:small", 0, "test", "t1")
    restored = [r for r in store.select() if r.get("carried_over")]
    assert len(restored) == 3 and all("restored from" in r["carried_over"] for r in restored)
    assert restore_records(RunStore(tmp_path / "new" / "runs.jsonl"), copy) == 0
    assert restore_records(store, tmp_path / "missing.jsonl") == 0
    store.drop([("sale", 1, "test", "t0")])
    assert not RunStore(tmp_path / "new" / "runs.jsonl").has("sale", 1, "test", "t0")


def _memory(job: str, text: str, record_id: int | None, verdict: str = "passed") -> dict:
    from sale.workers.memory.transfer import FIELDS

    memory: dict[str, object] = {name: None for name in FIELDS}
    bids = [{"agent": "small", "round": "first", "status": "ok", "plan": f"plan {job}",
             "auction_label": "win", "verified_label": "win"}]  # fmt: skip
    memory |= {"job_id": job, "kind": "search", "task_text": text, "bids": bids, "attempts": [],
               "award_agent": "small", "award_round": "first", "provisional_agent": "small",
               "verdict": verdict, "total_tokens": 10, "total_cost_usd": 0.001,
               "created_at": "2026-11-27T10:00:00+00:00"}  # fmt: skip
    if record_id is not None:
        memory["id"] = record_id
    return memory


def test_a_memory_stream_gets_its_memory_back_from_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sale.workers.memory.embed
    from sale.broker.pool import load_pool
    from sale.broker.settings import Settings
    from sale.models.db import init_db
    from sale.scripts.evals.runner import LiveRunner, Segment, memory_since
    from sale.workers.memory.transfer import export_memory

    monkeypatch.setattr(
        sale.workers.memory.embed, "minilm_embed", lambda texts: [[1.0, 0.0] for _ in texts]
    )
    pool = load_pool(Path("broker/pools/scripted.toml"))
    runner = LiveRunner(Settings(_env_file=None), pool, tmp_path / "work")
    segment = Segment("sale-o0")
    store = RunStore(tmp_path / "work" / "runs.jsonl")
    # Job t1 came after a job whose execution failed (not stored, but its memory record was
    # written and read by t1): t1's record carries both, with their ids (gaps kept).
    both = [_memory("jx", "failed one", 2, "failed"), _memory("j1", "q1", 3)]
    store.add({**record("sale", 0, 1, "small", True), "job_id": "j1", "stream": "sale-o0",
               "memory": both})  # fmt: skip
    store.add({**record("sale", 0, 0, "small", True), "job_id": "j0", "stream": "sale-o0",
               "memory": [_memory("j0", "q0", 1)]})  # fmt: skip
    runner.sync_memory(store, "sale", 0, "test", segment)
    url = runner.db_url("sale-o0")
    rebuilt = export_memory(url)
    assert [r["job_id"] for r in rebuilt] == ["j0", "jx", "j1"]
    assert {m["job_id"]: m["id"] for m in memory_since(url, set())} == {"j0": 1, "jx": 2, "j1": 3}
    assert memory_since(url, {"j0", "jx"}) == [{**_memory("j1", "q1", 3), "kind": "search"}]
    runner.sync_memory(store, "sale", 0, "test", segment)  # the database has them: no-op
    assert len(export_memory(url)) == 3

    # A malformed memory record is named, with what to do, and nothing is written.
    from sale.scripts.evals.runner import RecordsError

    bad = RunStore(tmp_path / "bad" / "runs.jsonl")
    broken = {k: v for k, v in _memory("j5", "q5", 1).items() if k != "bids"}
    bad.add({**record("sale", 0, 0, "small", True), "job_id": "j5", "stream": "sale-o0",
             "memory": [broken]})  # fmt: skip
    lost = LiveRunner(Settings(_env_file=None), pool, tmp_path / "bad")
    with pytest.raises(RecordsError, match=r"sale-o0: .*lacks bids.*delete this stream's"):
        lost.sync_memory(bad, "sale", 0, "test", segment)
    assert export_memory(lost.db_url("sale-o0")) == []

    # Records written before they carried the memory, without their database: start afresh.
    old = RunStore(tmp_path / "old" / "runs.jsonl")
    old.add({**record("sale", 1, 0, "small", True), "job_id": "j9", "stream": "sale-o1-n2"})
    stale = LiveRunner(Settings(_env_file=None), pool, tmp_path / "old")
    init_db(stale.db_url("sale-o1-n2"))  # a database that lacks their memory is set aside
    stale.sync_memory(old, "sale", 1, "test", Segment("sale-o1-n2"))
    assert not old.has("sale", 1, "test", "t0")
    assert [p.name.split(".stale-")[0] for p in (tmp_path / "old").glob("*.stale-*")] == [
        "sale-o1-n2.db"
    ]
    assert not (tmp_path / "old" / "sale-o1-n2.db").exists()
    # The stream's new database is a new file, not the one set aside.
    init_db(stale.db_url("sale-o1-n2"))
    assert export_memory(stale.db_url("sale-o1-n2")) == []
    assert (tmp_path / "old" / "sale-o1-n2.db").exists()
    assert not RunStore(tmp_path / "old" / "runs.jsonl").has("sale", 1, "test", "t0")


def test_the_lever_script_runs_in_its_own_work_dir_from_a_copy_of_the_full_runs_records(
    tmp_path: Path,
) -> None:
    import subprocess

    checkout, calls, env = _script_in_checkout(tmp_path, "levers.sh")
    run, _full, copy = _seeded_from_the_full_run(checkout, env, "levers.sh", "levers")
    lines = [line for line in calls.read_text().splitlines() if line.startswith("eval")]
    tables = [line for line in calls.read_text().splitlines() if not line.startswith("eval")]
    assert len(lines) == 14  # one eval per row (`sale` is one, the default live the last)
    first = lines[0].split("--methods ")[1].split()[0].split(",")
    assert first[0] == "single" and "sale" not in first  # the cheap rows come before `sale`
    assert first[-2:] == [
        "sale-nomem+weights=nojury+bid_max_tokens=128",
        "auction-router+weights=nojury+bid_max_tokens=128",
    ]
    assert lines[3].split("--methods ")[1].split()[0].endswith(",sale")
    # each eval adds its row to the ones before: the last has them all
    assert lines[-1].split("--methods ")[1].split()[0].startswith(lines[0].split()[-3])
    for line in lines:
        assert f"--work-dir {tmp_path}/sale-eval/search-levers" in line
        assert "--records docs/results/levers/search.runs.jsonl" in line
    # after each row, the lever table is rewritten from the reports
    assert tables == ["-m sale.scripts.evals.levers_table docs/results/levers"] * 14
    copy.write_text("kept\n")  # a second run goes on from its own copy
    assert subprocess.run(run, env=env, capture_output=True).returncode == 0
    assert copy.read_text() == "kept\n"


def test_the_lever_script_takes_the_defaults_jobs_from_the_candidates_run(tmp_path: Path) -> None:
    import subprocess

    checkout, _calls, env = _script_in_checkout(tmp_path, "levers.sh")
    levers = checkout / "docs" / "results" / "levers" / "search.runs.jsonl"
    levers.parent.mkdir(parents=True)
    levers.write_text('{"method": "sale-nomem"}\n')
    default = '{"method": "sale-nomem+weights=nojury+bid_max_tokens=128+plan_mode=generic"}\n'
    candidates = checkout / "docs" / "results" / "candidates" / "search.runs.jsonl"
    candidates.parent.mkdir(parents=True)
    candidates.write_text(
        '{"method": "sale-nomem+weights=nojury+bid_max_tokens=128"}\n' + default + default
    )
    run = ["bash", str(checkout / "scripts" / "levers.sh"), "search"]
    for _ in range(2):  # taken once: a second run finds them in its records already
        assert subprocess.run(run, env=env, capture_output=True).returncode == 0
        assert levers.read_text() == '{"method": "sale-nomem"}\n' + default + default


def test_the_full_run_script_keeps_its_records_in_the_repository(tmp_path: Path) -> None:
    import subprocess

    script = Path(__file__).resolve().parents[2] / "scripts" / "fullrun.sh"
    fake = tmp_path / "sale"
    fake.write_text('#!/usr/bin/env bash\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SALE": str(fake), "HOME": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(script), "search", "/w", "--report-only"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    args = run.stdout.split()
    assert args[:2] == ["eval", "--bench"] and args[-1] == "--report-only"
    for pair in (
        "--work-dir /w",
        "--records docs/results/full-run-stop2/search.runs.jsonl",
        "--out docs/results/full-run-stop2",
        "--limit 30 --train-limit 15 --orders 2 --methods all",
    ):
        assert pair in run.stdout
    default = subprocess.run(
        ["bash", str(script), "humaneval"], env=env, capture_output=True, text=True
    )
    assert f"--work-dir {tmp_path}/sale-eval/humaneval " in default.stdout
    wrong = subprocess.run(["bash", str(script), "mbpp"], env=env, capture_output=True, text=True)
    assert wrong.returncode == 2 and "unknown benchmark mbpp" in wrong.stderr


def test_a_segment_records_the_repeat_stop_its_workers_run_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sale.scripts.evals.runner import env_settings, variant_env

    monkeypatch.delenv("SALE_REPEAT_STOP", raising=False)
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    assert env_settings(variant_env("sale")).repeat_stop == 2  # the default
    assert env_settings(variant_env("sale+repeat_stop=0")).repeat_stop == 0
    assert env_settings(variant_env("sale+mechanism=paper")).repeat_stop == 0  # the paper's
    monkeypatch.setenv("SALE_REPEAT_STOP", "3")  # the driver's environment reaches the workers
    assert env_settings({}).repeat_stop == 3
    assert env_settings(variant_env("sale+mechanism=paper")).repeat_stop == 0


def test_every_job_of_the_harness_runs_the_measured_settings_whatever_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sale.broker.settings import PAPER_MECHANISM, Settings
    from sale.scripts.evals.runner import (
        MEASURED_BASE,
        env_settings,
        pinned_in_environment,
        variant_env,
    )

    # every lever the paper switches off is pinned (refine is the method's own: sale/sale-nomem)
    levers = {f"SALE_{key.upper()}" for key in PAPER_MECHANISM} - {"SALE_REFINE"}
    assert levers <= set(MEASURED_BASE)
    assert "SALE_BID_MAX_TOKENS" in MEASURED_BASE
    monkeypatch.setenv("SALE_BID_MAX_TOKENS", "128")  # as if the project's default had moved
    monkeypatch.setenv("SALE_CODING_PLAN_MODE", "generic")
    monkeypatch.delenv("SALE_MECHANISM", raising=False)
    assert Settings().bid_max_tokens == 128
    measured = env_settings(variant_env("sale-nomem"))
    assert (measured.bid_max_tokens, measured.coding_plan_mode) == (256, "inherit")
    lever = env_settings(variant_env("sale-nomem+bid_max_tokens=128"))
    assert lever.bid_max_tokens == 128 and not lever.refine  # the method's own setting wins
    paper = env_settings(variant_env("sale+mechanism=paper"))
    assert (paper.jury_mode, paper.self_check_fallback) == ("per_bid", 0)  # the paper's, over both
    # the command names what it ignores
    assert pinned_in_environment(Settings()) == ["SALE_BID_MAX_TOKENS", "SALE_CODING_PLAN_MODE"]
    monkeypatch.delenv("SALE_BID_MAX_TOKENS")
    monkeypatch.delenv("SALE_CODING_PLAN_MODE")
    assert pinned_in_environment(Settings()) == []


def test_the_candidates_script_runs_its_rows_on_the_full_runs_records(tmp_path: Path) -> None:
    import subprocess

    from sale.broker.pool import load_pool
    from sale.scripts.evals.runner import expand_methods

    checkout, calls, env = _script_in_checkout(tmp_path, "candidates.sh")
    run, full, copy = _seeded_from_the_full_run(checkout, env, "candidates.sh", "candidates")
    # with the lever runs' records, their jobs of the candidate row are taken too, nothing else
    copy.unlink()
    levers = checkout / "docs" / "results" / "levers" / "search.runs.jsonl"
    levers.parent.mkdir(parents=True)
    row = '{"method": "sale-nomem+weights=nojury+bid_max_tokens=128", "order": 0}\n'
    levers.write_text('{"method": "sale-nomem", "order": 0}\n' + row)
    assert subprocess.run(run, env=env).returncode == 0
    assert copy.read_text() == full.read_text() + row
    eval_line, table_line = calls.read_text().splitlines()[-2:]
    assert f"--work-dir {tmp_path}/sale-eval/search-candidates" in eval_line
    assert "--limit 30 --train-limit 15 --orders 2" in eval_line
    assert "--records docs/results/candidates/search.runs.jsonl" in eval_line
    methods = eval_line.split("--methods ")[1].split()[0]
    expanded = expand_methods([methods], load_pool(Path("broker/pools/local.toml")))
    assert expanded[-3:] == [
        "sale-nomem+weights=nojury+bid_max_tokens=128",
        "auction-router+weights=nojury+bid_max_tokens=128",
        "sale-nomem+weights=nojury+bid_max_tokens=128+plan_mode=generic",  # the default, live
    ]
    assert table_line == "-m sale.scripts.evals.levers_table docs/results/candidates"


def _script_in_checkout(tmp_path: Path, name: str) -> tuple[Path, Path, dict[str, str]]:
    """scripts/<name> copied into an empty checkout under ``tmp_path``, run with a fake ``sale``
    and ``python`` that append their arguments to a calls file: (the checkout, the calls file,
    the environment to run it with)."""
    import shutil

    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).resolve().parents[2] / "scripts" / name, checkout / "scripts")
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake"
    fake.write_text(f'#!/usr/bin/env bash\necho "$@" >> {calls}\n')
    fake.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "SALE": str(fake), "PYTHON": str(fake), "HOME": str(tmp_path)}
    return checkout, calls, env


def _seeded_from_the_full_run(
    checkout: Path, env: dict[str, str], name: str, out: str
) -> tuple[list[str], Path, Path]:
    """Run scripts/<name> on search: refused (exit 2) without the full run's records, then,
    with them, run from its own copy under docs/results/<out>, seeded from them. Returns (the
    command, the full run's records, the copy)."""
    import subprocess

    run = ["bash", str(checkout / "scripts" / name), "search"]
    missing = subprocess.run(run, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "run the full run first" in missing.stderr
    full = checkout / "docs" / "results" / "full-run-stop2" / "search.runs.jsonl"
    full.parent.mkdir(parents=True)
    full.write_text('{"method": "single:small"}\n')
    done = subprocess.run(run, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    copy = checkout / "docs" / "results" / out / "search.runs.jsonl"
    assert copy.read_text() == full.read_text()  # its own copy, seeded from the full run's
    return run, full, copy
