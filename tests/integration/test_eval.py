"""`sale eval` end to end on the scripted pool: the embedded stack, every method, resume.

The scripted provider is a test double: these tests check the harness's plumbing (segments,
databases, records, replay, report, resume), never a claim about decision quality.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sale.models.db import session_scope
from sale.models.tables import Job
from sqlmodel import select

from tests.conftest import ROOT

POOL = ROOT / "broker" / "pools" / "scripted.toml"


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALE_")}
    env["SALE_STATE_DIR"] = str(tmp_path / "state")
    env["SALE_EXECUTE_MAX_TOKENS"] = "256"
    return env


def _eval(tmp_path: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "sale.scripts.cli",
        "eval",
        "--pool",
        str(POOL),
        "--work-dir",
        str(tmp_path / "work"),
        "--out",
        str(tmp_path / "out"),
        *args,
    ]


def _run(tmp_path: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _eval(tmp_path, *args),
        cwd=ROOT,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _records(tmp_path: Path) -> list[dict[str, object]]:
    path = tmp_path / "work" / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.timeout(1500)  # four worker restarts and ~20 scripted jobs: minutes, not seconds
def test_eval_runs_every_method_and_a_rerun_runs_nothing(tmp_path: Path) -> None:
    args = ["--bench", "humaneval", "--limit", "2", "--train-limit", "2", "--orders", "1"]
    proc = _run(tmp_path, *args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "humaneval.json").read_text())
    assert doc["complete"] is True and doc["n_tasks"] == 2 and doc["n_train_tasks"] == 2
    first_notes = doc["notes"]
    methods = {row["method"]: row for row in doc["methods"]}
    expected = {"single:small", "single:medium", "single:large", "random", "knn", "classifier"}
    expected |= {"cascade", "oracle", "oracle-small", "auction-router", "sale-nomem", "sale"}
    expected |= {"sale-nomem-nofallback", "cascade-top2", "verified-award"}
    assert set(methods) == expected
    for name, row in methods.items():
        assert row["n_tasks"] == 2, name
        replayed = (
            "random",
            "knn",
            "classifier",
            "cascade",
            "oracle",
            "oracle-small",
            "cascade-top2",
            "verified-award",
        )
        assert row["replayed"] is (name in (*replayed, "auction-router", "sale-nomem-nofallback"))
    # The auction router pays for sale-nomem's recorded auctions, and runs nothing of its own.
    router, nomem = methods["auction-router"], methods["sale-nomem"]
    assert router["overhead_token_share"] > 0.0 and router["orders"] == nomem["orders"] == 1
    # Without fallbacks a sale-nomem job is its auction and first attempt: never dearer.
    first = methods["sale-nomem-nofallback"]
    assert first["orders"] == 1 and first["overhead_token_share"] > 0.0
    assert 0.0 < first["cost_usd"] <= nomem["cost_usd"]
    assert methods["single:large"]["largest_share"] == 1.0
    assert methods["single:small"]["largest_share"] == 0.0
    assert methods["sale"]["overhead_token_share"] > 0.0  # bids and jury calls cost tokens
    assert methods["single:small"]["overhead_token_share"] == 0.0  # direct jobs: no auction
    assert methods["sale"]["cost_usd"] > 0.0
    assert "sale" in doc["win_share"] and len(doc["win_share"]["sale"]["0"]) == 2
    assert {s["signal"] for s in doc["signals"]} >= {"entropy", "plan_tokens", "jury:large"}
    for suffix in (".md", "_pass_vs_cost.png", "_win_share.png"):
        assert (tmp_path / "out" / f"humaneval{suffix}").stat().st_size > 0
    assert "| sale |" in proc.stdout
    # stderr is not a terminal here: every finished job is a log line with a rough ETA.
    logged = " ".join(proc.stderr.split())
    assert "[1/" in logged and "left" in logged
    records = _records(tmp_path)
    # single: 3 agents x (2 test + 2 train); SALE on train for the fit; two live SALE methods.
    assert len(records) == 12 + 2 + 2 + 2
    assert {r["split"] for r in records if r["method"] == "sale-train"} == {"train"}
    # The signal table reads the train split's auctions too (every juror is called there).
    train_bids = [
        b for r in records if r["method"] == "sale-train" for b in r["bids"] if b["status"] == "ok"
    ]
    entropy = next(s for s in doc["signals"] if s["signal"] == "entropy")
    assert len(train_bids) > 0 and entropy["n_alone"] >= len(train_bids)
    # Each live method wrote to its own database; SALE without memory never refined.
    work = tmp_path / "work"
    for db in ("single", "sale-train", "sale-nomem-o0", "sale-o0"):  # order 0: no -n suffix
        assert (work / f"{db}.db").exists(), db
    nomem = [r for r in records if r["method"] == "sale-nomem"]
    # A stream that reads the memory keeps each job's memory record in its run record (it can
    # go on from a copy of the records); one that does not read it has no need to.
    for r in records:
        if r["method"] in ("sale", "sale-train"):
            memory = {m["job_id"]: m for m in r["memory"]}
            assert memory[r["job_id"]]["bids"] and memory[r["job_id"]]["id"] >= 1, r["method"]
    assert all("memory" not in r for r in nomem)
    # Each record lists its execution attempts; the last is the answer that counts.
    for r in records:
        attempts = r["executions"]
        assert [a["attempt"] for a in attempts] == list(range(len(attempts))) and attempts
        assert attempts[-1]["agent"] == r["agent"] and attempts[-1]["verdict"] == r["verdict"]
        assert sum(a["cost_usd"] for a in attempts) <= r["cost_usd"] + 1e-12
    assert all(r["award_round"] == "first" for r in nomem)
    assert all(b["round"] == "first" for r in nomem for b in r["bids"])
    again = _run(tmp_path, *args, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "single 0, sale-train 0, sale-nomem 0, sale 0" in " ".join(again.stderr.split())
    assert len(_records(tmp_path)) == len(records)
    # A rewrite of the tables names the run it reports and the fit that run made.
    rewrite = _run(tmp_path, *args, "--report-only", timeout=300)
    assert rewrite.returncode == 0, rewrite.stderr[-4000:]
    doc = json.loads((tmp_path / "out" / "humaneval.json").read_text())
    assert "--report-only" not in doc["command"] and "--train-limit 2" in doc["command"]
    assert any(n.startswith("tables rewritten from the stored runs") for n in doc["notes"])
    # Two scripted train tasks that no agent solves: nothing was fitted, and the rewrite says so.
    assert any(n.startswith("no train task was solved") for n in first_notes)
    assert (
        "no weights were fitted on the train split: SALE used the default weights" in doc["notes"]
    )


@pytest.mark.timeout(1200)
def test_eval_interrupted_then_resumed_loses_and_repeats_nothing(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "humaneval.runs.jsonl"
    args = ["--bench", "humaneval", "--methods", "single", "--limit", "3", "--no-plots"]
    args += ["--records", str(copy)]
    proc = subprocess.Popen(
        _eval(tmp_path, *args),
        cwd=ROOT,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "work" / "runs.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if runs.exists() and runs.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the evaluation finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "rerun to go on" in " ".join(stderr.split())
    kept = _records(tmp_path)
    assert 2 <= len(kept) < 9
    assert len(copy.read_text().splitlines()) == len(kept)  # the copy is brought up to date
    resumed = _run(tmp_path, *args, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = _records(tmp_path)
    keys = [(r["method"], r["task_id"]) for r in records]
    assert len(keys) == len(set(keys)) == 9  # every (agent, task) once, none lost
    kept_ids = {r["job_id"] for r in kept}
    assert kept_ids <= {r["job_id"] for r in records}  # finished jobs were not run again
    with session_scope(f"sqlite:///{tmp_path / 'work' / 'single.db'}") as s:
        jobs = s.exec(select(Job)).all()
    assert len([j for j in jobs if j.status == "done"]) == 9
    # A job the interrupted run left in flight is cancelled, with why, not left "executing".
    from sale.scripts.evals.runner import ORPHANED

    left = [(j.status, j.status_reason) for j in jobs if j.status != "done"]
    assert left == [("cancelled", ORPHANED)] * len(left)


@pytest.mark.timeout(900)
def test_eval_goes_on_from_its_records_copy_in_a_new_work_dir(tmp_path: Path) -> None:
    """A machine whose work directory is gone goes on from the copy (e.g. in the repository)."""
    copy = tmp_path / "repo" / "humaneval.runs.jsonl"
    args = ["--bench", "humaneval", "--methods", "single:small", "--no-plots"]
    first = _run(tmp_path, *args, "--limit", "2", "--records", str(copy), timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    made = {json.loads(line)["job_id"] for line in copy.read_text().splitlines()}
    assert len(made) == 2
    shutil.rmtree(tmp_path / "work")  # the machine is gone; the copy is not
    again = _run(tmp_path, *args, "--limit", "3", "--records", str(copy), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    logged = " ".join(again.stderr.split())
    assert "restored 2 run records" in logged and "single 1;" in logged
    records = _records(tmp_path)
    assert len(records) == 3 and made <= {r["job_id"] for r in records}
    assert len(copy.read_text().splitlines()) == 3
    doc = json.loads((tmp_path / "out" / "humaneval.json").read_text())
    assert any("2 run records (single:small) were restored from" in n for n in doc["notes"])


@pytest.mark.timeout(900)
def test_a_memory_stream_goes_on_with_its_memory_in_a_new_work_dir(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "humaneval.runs.jsonl"
    args = ["--bench", "humaneval", "--methods", "sale", "--orders", "1", "--no-fit"]
    args += ["--no-plots", "--records", str(copy)]
    first = _run(tmp_path, *args, "--limit", "1", timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(tmp_path / "work")  # the machine is gone; the copy is not
    again = _run(tmp_path, *args, "--limit", "2", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "restored 1 run records" in " ".join(again.stderr.split())
    with session_scope(f"sqlite:///{tmp_path / 'work' / 'sale-o0.db'}") as s:
        from sale.models.tables import MemoryRecord

        kept = s.exec(select(MemoryRecord).order_by(MemoryRecord.id)).all()
    first_job = json.loads(copy.read_text().splitlines()[0])["job_id"]
    # The second job ran on the first one's memory, rebuilt from the copy with its id.
    assert (kept[0].job_id, kept[0].id, len(kept)) == (first_job, 1, 2)


@pytest.mark.timeout(900)
def test_a_run_split_by_order_over_two_work_dirs_merges_into_one_report(tmp_path: Path) -> None:
    args = ["--bench", "humaneval", "--methods", "sale", "--orders", "2", "--no-fit"]
    args += ["--limit", "1", "--no-plots"]
    mine, theirs = tmp_path / "mine.runs.jsonl", tmp_path / "theirs.runs.jsonl"
    # A second machine: its own work dir and records copy (the last --work-dir counts).
    other = ["--work-dir", str(tmp_path / "work2"), "--records", str(theirs)]
    first = _run(tmp_path, *args, "--only-orders", "0", "--records", str(mine), timeout=600)
    second = _run(tmp_path, *args, "--only-orders", "1", *other, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    for copy, order in ((mine, 0), (theirs, 1)):
        got = [json.loads(line) for line in copy.read_text().splitlines()]
        assert [(r["method"], r["order"]) for r in got] == [("sale", order)]
    half = json.loads((tmp_path / "out" / "humaneval.json").read_text())
    assert half["complete"] is False  # each half alone is not the whole run
    assert any("ran task order(s) 1 of the SALE methods only" in n for n in half["notes"])
    merged = _run(tmp_path, *args, "--report-only", "--records", str(theirs), timeout=600)
    assert merged.returncode == 0, merged.stderr[-3000:]
    assert "restored 1 run records" in " ".join(merged.stderr.split())
    doc = json.loads((tmp_path / "out" / "humaneval.json").read_text())
    assert doc["complete"] is True and doc["pool"] == "broker/pools/scripted.toml"
    assert next(r for r in doc["methods"] if r["method"] == "sale")["orders"] == 2
    assert len(theirs.read_text().splitlines()) == 2  # the copy now holds both orders
    bad = _run(tmp_path, *args, "--only-orders", "2", timeout=120)
    assert bad.returncode == 2 and "numbered 0 to 1" in " ".join(bad.stderr.split())


def test_eval_rejects_unknown_methods_and_benchmarks(tmp_path: Path) -> None:
    bad = _run(tmp_path, "--methods", "sale,magic", timeout=120)
    assert bad.returncode == 2 and "unknown method 'magic'" in bad.stderr
    bad = _run(tmp_path, "--bench", "mmlu", timeout=120)
    assert bad.returncode == 2 and "unknown benchmark 'mmlu'" in bad.stderr
    assert not (tmp_path / "work").exists()  # nothing was started or written


@pytest.mark.timeout(900)
def test_a_job_that_fails_on_a_dead_model_server_is_not_stored_and_runs_again(
    tmp_path: Path,
) -> None:
    # "small" talks to a port where nothing listens, like a model server that died: its direct
    # job fails after the retries. That is not the method's outcome, so nothing is stored.
    dead = "http://127.0.0.1:9/v1"
    pool = tmp_path / "pool.toml"
    pool.write_text(
        POOL.read_text().replace(
            'model = "scripted/small"', f'model = "openai/small"\napi_base = "{dead}"'
        )
    )
    args = ["--bench", "humaneval", "--methods", "single:small", "--limit", "1", "--no-plots"]
    cmd = [*_eval(tmp_path, *args), "--pool", str(pool)]  # the last --pool counts
    env = {**_env(tmp_path), "SALE_MAX_RETRIES": "1", "SALE_RETRY_BACKOFF_S": "0.05"}

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    for attempt in (1, 2):
        proc = run()
        said = " ".join(proc.stderr.split())
        assert proc.returncode == 1, proc.stderr[-3000:]
        assert "ended failed" in said and "It is not stored" in said, said[-2000:]
        assert "rerun the same command" in said
        runs = tmp_path / "work" / "runs.jsonl"
        assert not runs.exists() or not runs.read_text().strip()
        # The failed job is not adopted by the rerun: each attempt submitted its own.
        with session_scope(f"sqlite:///{tmp_path / 'work' / 'single.db'}") as s:
            jobs = s.exec(select(Job)).all()
        assert [j.status for j in jobs] == ["failed"] * attempt
