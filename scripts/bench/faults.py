"""Benchmark: the queue under faults — nothing lost, nothing stuck, nothing paid twice.

A real cluster on loopback (:mod:`sale.scripts.bench.cluster`: redis-server with AOF, one
`sale worker` per queue) runs coding jobs against an OpenAI-compatible HTTP stub provider served
by this script. The stub answers like the scripted test double (so every job can pass) and
injects faults at a given rate: 429 with Retry-After, 500, a hang past the client's timeout, a
malformed body. It bills every call it answers, so the recorded cost can be checked against
what a provider would charge. A schedule SIGKILLs agent workers (a supervisor starts a
replacement, as compose's restart policy would), kills the control worker once and restarts
Redis once. Per scenario it reports jobs done / failed (with reasons) / stuck / lost,
duplicate rows, recorded vs billed cost, and the time from the last fault to the last job's end;
results go to docs/benchmarks/faults.json and faults.md (a run replaces its scenario's row and
keeps the others).

Two more deployment shapes: ``--replicas N`` runs N workers per agent queue (a kill takes one
random replica of the agent), ``--hosts N`` runs the workers on N hosts — network namespaces on a
bridge (:class:`~sale.scripts.bench.cluster.Hosts`, root and iproute2), the control worker on the
first, the agent workers spread over all; Redis and the stub provider listen on the bridge.

    python -m sale.scripts.bench.faults --jobs 30
    python -m sale.scripts.bench.faults --jobs 30 --replicas 3
    python -m sale.scripts.bench.faults --jobs 30 --hosts 3
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import typer
from sale.scripts.bench.cluster import (
    SCRIPTED_POOL,
    Cluster,
    Hosts,
    free_port,
    job_rows,
    wait_terminal,
)

ROOT = Path(__file__).resolve().parents[2]
AGENTS = (("small", 0.03), ("medium", 0.12), ("large", 0.36))
FAULTS = ("429", "500", "hang", "malformed")
ADD = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


# --- the stub provider --------------------------------------------------------------------


@dataclass
class Stub:
    """An OpenAI-compatible chat-completions server with injected faults; bills what it answers."""

    fault_rate: float = 0.2
    hang_s: float = 8.0
    latency_s: float = 0.0  # every answer waits this long (a remote provider's response time)
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = 0
    billed: dict[str, list[int]] = field(default_factory=dict)  # model -> [tokens in, out]
    faults: Counter[str] = field(default_factory=Counter)
    calls: int = 0
    answered: int = 0  # calls billed (answered with a completion)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        """Serve on ``host`` (loopback) in a thread; returns the base URL (``…/v1``)."""
        rng = random.Random(self.seed)
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with stub._lock:
                    stub.calls += 1
                    fault = rng.choice(FAULTS) if rng.random() < stub.fault_rate else None
                    if fault:
                        stub.faults[fault] += 1
                if fault == "429":
                    self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "1"})
                elif fault == "500":
                    self._send(500, {"error": {"message": "internal error"}})
                elif fault == "hang":
                    time.sleep(stub.hang_s)  # past the client's timeout
                    self._send(504, {"error": {"message": "gateway timeout"}})
                elif fault == "malformed":
                    self._raw(200, b'{"id": "x", "choices": [{"message": ')
                else:
                    time.sleep(stub.latency_s)  # the provider's response time
                    self._send(200, stub.answer(body))

            def _send(self, code: int, doc: Any, headers: dict[str, str] | None = None) -> None:
                self._raw(code, json.dumps(doc).encode(), headers)

            def _raw(self, code: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (its timeout); nothing was delivered

        self.port = self.port or free_port()
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://{self.host}:{self.port}/v1"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        """A scripted reply to a chat request, billed to its model."""
        from sale.workers.llm.scripted import scripted_reply

        messages = body.get("messages", [])
        text = "\n".join(str(m.get("content") or "") for m in messages)
        if "integers from 0 to 5" in text or "PLAN A:" in text:
            stage = "jury"
        elif "TOOLS" in str(messages[0].get("content", "")) if messages else False:
            stage = "execute"
        else:
            stage = "bid"
        model = str(body.get("model", "small")).split("/")[-1]
        reply = scripted_reply(model, stage, messages)
        tokens_in, tokens_out = reply.prompt_tokens, len(reply.tokens)
        with self._lock:
            self.answered += 1
            billed = self.billed.setdefault(model, [0, 0])
            billed[0] += tokens_in
            billed[1] += tokens_out
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": reply.text},
        }
        if body.get("logprobs"):
            choice["logprobs"] = {
                "content": [
                    {
                        "token": tok,
                        "logprob": alts[0][1],
                        "bytes": None,
                        "top_logprobs": [
                            {"token": t, "logprob": lp, "bytes": None} for t, lp in alts
                        ],
                    }
                    for tok, alts in zip(reply.tokens, reply.top_logprobs, strict=True)
                ]
            }
        return {
            "id": f"stub-{self.calls}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens_in,
                "completion_tokens": tokens_out,
                "total_tokens": tokens_in + tokens_out,
            },
        }

    def billed_usd(self) -> float:
        prices = dict(AGENTS)
        return sum((i + o) * prices[m] / 1e6 for m, (i, o) in self.billed.items())


def pool_file(path: Path, api_base: str) -> Path:
    """A pool of three agents served by the stub, priced like the scripted pool."""
    entries = [
        f'[[agents]]\nname = "{name}"\nmodel = "openai/{name}"\napi_base = "{api_base}"\n'
        f"input_price = {price}\noutput_price = {price}\nconcurrency = 2\n"
        for name, price in AGENTS
    ]
    path.write_text("# The fault benchmark's stub provider.\n\n" + "\n".join(entries))
    return path


# --- a scenario ---------------------------------------------------------------------------


@dataclass
class Scenario:
    """A fault schedule: seconds after the jobs are sent."""

    name: str
    jobs: int
    agent_kill_every_s: float = 15.0
    agent_kills: int = 4
    control_kill_at_s: float | None = 20.0
    redis_restart_at_s: float | None = 35.0
    redis_down_s: float = 3.0
    fault_rate: float = 0.2
    tools: int = 1
    deadline_s: float = 600.0
    replicas: int = 1  # workers per agent queue
    hosts: int = 0  # network namespaces the workers run in (0: all on this host's loopback)

    def agent_workers(self) -> dict[str, list[str]]:
        return agent_workers(self.replicas)


def agent_workers(replicas: int) -> dict[str, list[str]]:
    """Each agent's workers: its name, or ``NAME#1``… for several replicas."""
    return {
        a: [a] if replicas == 1 else [f"{a}#{i}" for i in range(1, replicas + 1)] for a, _ in AGENTS
    }


def spec(i: int, tools: int) -> dict[str, Any]:
    return {
        "kind": "coding",
        "name": f"fault-{i}",
        "prompt": f"Write add(a, b) returning the sum (job {i}).\n[[scripted small.tools={tools} "
        f"medium.tools={tools} large.tools={tools}]]\n[[solution]]\n{ADD}[[/solution]]\n",
        "tests": TESTS,
        "entry_point": "add",
    }


def run(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    """Run one scenario; returns its figures."""
    with ExitStack() as stack:
        hosts = stack.enter_context(Hosts(scenario.hosts)) if scenario.hosts else None
        stub = Stub(fault_rate=scenario.fault_rate, host=hosts.address if hosts else "127.0.0.1")
        api_base = stub.start()
        stack.callback(stub.stop)
        return run_on(scenario, workdir, stub, api_base, hosts)


def run_on(
    scenario: Scenario, workdir: Path, stub: Stub, api_base: str, hosts: Hosts | None
) -> dict[str, Any]:
    """Run one scenario against a started stub (and namespaces); returns its figures."""
    env = {
        "SALE_LLM_TIMEOUT_S": "5",
        "SALE_MAX_RETRIES": "6",
        "SALE_RETRY_BACKOFF_S": "0.5",
        "SALE_RETRY_BACKOFF_MAX_S": "4",
        "SALE_LEASE_TTL_S": "10",
        "SALE_WATCHDOG_INTERVAL_S": "2",
        "SALE_BENCH_REDIS_DOWN_S": str(scenario.redis_down_s),
    }
    workdir.mkdir(parents=True, exist_ok=True)
    pool = pool_file(workdir / "pool.toml", api_base)
    events: list[tuple[float, str]] = []
    agent_workers = scenario.agent_workers()
    names = ["control", *(w for ws in agent_workers.values() for w in ws)]
    cluster_at = Cluster(
        workdir / "cluster",
        pool_file=pool,
        env_extra=env,
        host=hosts.address if hosts else "127.0.0.1",
        netns=hosts.place(names) if hosts else {},
    )
    with cluster_at as cluster:
        for name in names:
            cluster.start_worker(name)
        t0 = time.monotonic()
        schedule: list[tuple[float, str]] = [
            (scenario.agent_kill_every_s * (k + 1), "kill-agent")
            for k in range(scenario.agent_kills)
        ]
        if scenario.control_kill_at_s is not None:
            schedule.append((scenario.control_kill_at_s, "kill-control"))
        if scenario.redis_restart_at_s is not None:
            schedule.append((scenario.redis_restart_at_s, "restart-redis"))
        schedule.sort()
        faults = threading.Thread(
            target=inject, args=(cluster, schedule, t0, events, names, agent_workers)
        )
        faults.start()  # the faults run while the jobs are being submitted and worked on
        ids, refused, slowest = [], 0, 0.0
        for i in range(scenario.jobs):
            while True:
                asked = time.monotonic()
                try:
                    ids.append(cluster.submit(spec(i, scenario.tools)))
                    break
                except RuntimeError:  # `sale submit` refused (exit 2): the broker is down
                    refused += 1
                    slowest = max(slowest, time.monotonic() - asked)
                    time.sleep(1)
        answer = f", the slowest refusal in {slowest:.1f} s" if refused else ""
        events.append(
            (time.monotonic() - t0, f"{len(ids)} jobs submitted ({refused} refused{answer})")
        )
        faults.join()
        last_fault = max((t for t, e in events if not e.endswith(")")), default=0.0)
        stub_faults_until = time.monotonic()
        deadline = time.monotonic() + scenario.deadline_s
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            status = wait_terminal(cluster.db_url, ids, timeout=2)
            revive(cluster, names)
            if all(s in ("done", "failed", "cancelled") for s in status.values()):
                break
        rows = {job_id: job_rows(cluster.db_url, job_id) for job_id in ids}
        ended = last_end(cluster.db_url, ids)
        pending = pending_ids(cluster, ids)
    return summarise(
        scenario, ids, status, rows, stub, events, last_fault, t0, ended, pending, stub_faults_until
    )


def inject(
    cluster: Cluster,
    schedule: list[tuple[float, str]],
    t0: float,
    events: list[tuple[float, str]],
    names: list[str],
    agent_workers: dict[str, list[str]],
) -> None:
    """Run the fault schedule (seconds after ``t0``), restarting dead workers in between; an
    agent kill takes one random replica of a random agent."""
    rng = random.Random(1)
    for at, action in schedule:
        while time.monotonic() - t0 < at:
            time.sleep(0.2)
            revive(cluster, names)
        if action == "kill-agent":
            replicas = agent_workers[rng.choice([a for a, _ in AGENTS])]
            victim = replicas[0] if len(replicas) == 1 else rng.choice(replicas)
            cluster.kill_worker(victim)
            cluster.start_worker(victim)
            action = f"kill-agent {victim}"
        elif action == "kill-control":
            cluster.kill_worker("control")
            time.sleep(2)
            cluster.start_worker("control")
        else:
            cluster.restart_redis(scenario_down(cluster))
        events.append((time.monotonic() - t0, action))


def scenario_down(cluster: Cluster) -> float:
    """How long Redis stays down in a restart."""
    return float(cluster.env_extra.get("SALE_BENCH_REDIS_DOWN_S", "3"))


def revive(cluster: Cluster, names: list[str]) -> None:
    """Start any worker that died (a restart policy)."""
    for name in names:
        if not cluster.alive(name):
            cluster.start_worker(name)


def last_end(db_url: str, ids: list[str]) -> float | None:
    """The wall-clock (epoch seconds) of the last job's end."""
    from sale.models.db import session_scope
    from sale.models.tables import Job
    from sqlmodel import col, select

    with session_scope(db_url) as s:
        stamps = s.exec(select(Job.updated_at).where(col(Job.id).in_(ids))).all()
    if not stamps:
        return None
    return max(t.replace(tzinfo=UTC).timestamp() for t in stamps)


def pending_ids(cluster: Cluster, ids: list[str]) -> set[str]:
    """Jobs with a message still waiting or taken on the broker (a stuck job with none is lost):
    a control stage's message carries its job's id, an agent stage's names it first in its
    arguments."""
    from kombu import Connection

    queues = ["sale.control", *(f"sale.agent.{a}" for a, _ in AGENTS)]
    seen: list[str] = []
    try:
        with Connection(cluster.broker_url) as conn:
            channel: Any = conn.default_channel
            client = channel.client
            raws = [
                raw
                for queue in queues
                for priority in channel.priority_steps
                for raw in client.lrange(channel._q_for_pri(queue, priority), 0, -1)
            ]
            bodies = [json.loads(raw) for raw in raws]
            bodies += [json.loads(raw)[0] for raw in client.hvals(channel.unacked_key)]
    except Exception:  # boundary: a benchmark reading a broker that may be gone
        return set()
    for body in bodies:
        headers = body.get("headers", {})
        seen.append(f"{headers.get('id')} {headers.get('argsrepr', '')}")
    return {job_id for job_id in ids if any(job_id in s for s in seen)}


def summarise(
    scenario: Scenario,
    ids: list[str],
    status: dict[str, str],
    rows: dict[str, dict[str, Any]],
    stub: Stub,
    events: list[tuple[float, str]],
    last_fault: float,
    t0: float,
    ended: float | None,
    pending: set[str],
    _until: float,
) -> dict[str, Any]:
    done = [j for j in ids if status.get(j) == "done"]
    failed = {j: rows[j]["reason"] for j in ids if status.get(j) == "failed"}
    stuck = [j for j in ids if status.get(j) not in ("done", "failed", "cancelled")]
    lost = [j for j in stuck if j not in pending]
    duplicates = sum(
        len(r[k]) - len(set(r[k]))
        for r in rows.values()
        for k in ("bids", "jury_calls", "executions")
    ) + sum(max(0, r["memory_records"] - 1) for r in rows.values())
    recorded = sum(r["recorded_cost"] for r in rows.values())
    billed = stub.billed_usd()
    offset = time.time() - time.monotonic()
    to_end = None if ended is None else ended - (offset + t0 + last_fault)
    return {
        "scenario": scenario.name,
        "jobs": len(ids),
        "done": len(done),
        "failed": len(failed),
        "failed_reasons": sorted(Counter(str(r)[:160] for r in failed.values()).items()),
        "stuck": len(stuck),
        "lost": len(lost),
        "duplicate_rows": duplicates,
        "recorded_usd": recorded,
        "billed_usd": billed,
        "unrecorded_share": (billed - recorded) / billed if billed else 0.0,
        "provider_calls": stub.calls,
        "billed_calls": stub.answered,
        "recorded_calls": sum(r["recorded_calls"] for r in rows.values()),
        "provider_faults": dict(stub.faults),
        "last_fault_to_last_end_s": to_end,
        "events": [(round(t, 1), e) for t, e in events],
        "settings": {
            "fault_rate": scenario.fault_rate,
            "agent_kills": scenario.agent_kills,
            "agent_kill_every_s": scenario.agent_kill_every_s,
            "control_kill_at_s": scenario.control_kill_at_s,
            "redis_restart_at_s": scenario.redis_restart_at_s,
            "redis_down_s": scenario.redis_down_s,
            "lease_ttl_s": 10,
            "watchdog_interval_s": 2,
            "replicas": scenario.replicas,
            "hosts": scenario.hosts,
        },
    }


def _calls(r: dict[str, Any]) -> str:
    if "billed_calls" not in r:  # a run from before the ledger counted calls
        return "–"
    return f"{r['billed_calls']} / {r['recorded_calls']}"


def table(results: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | jobs | done | failed | stuck | lost | duplicate rows | recorded US$ | "
        "billed US$ | unrecorded | billed / recorded calls | last fault → last end |\n"
        + "|---" * 12
        + "|\n"
    )
    lines = [
        f"| {r['scenario']} | {r['jobs']} | {r['done']} | {r['failed']} | {r['stuck']} | "
        f"{r['lost']} | {r['duplicate_rows']} | {r['recorded_usd']:.6f} | {r['billed_usd']:.6f} | "
        f"{100 * r['unrecorded_share']:.1f} % | {_calls(r)} | "
        + (f"{r['last_fault_to_last_end_s']:.1f} s |" if r["last_fault_to_last_end_s"] else "– |")
        for r in results
    ]
    return head + "\n".join(lines) + "\n"


def shape(replicas: int, hosts: int) -> str:
    """A full scenario's name: its deployment shape."""
    parts = [f"{replicas} workers per agent"] if replicas > 1 else []
    parts += [f"{hosts} hosts (network namespaces)"] if hosts else []
    return "full" + (", " + ", ".join(parts) if parts else "")


def merged(out: Path, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The results already in ``out`` (each with its command, date and cores) with this run's
    in place of those of the same scenario."""
    kept: list[dict[str, Any]] = []
    if out.exists():
        old = json.loads(out.read_text())
        for r in old.get("results", []):
            r.setdefault("command", old.get("command"))
            r.setdefault("date", old.get("date"))
            r.setdefault("cores", old.get("cores", 2))
            kept.append(r)
    names = {r["scenario"] for r in results}
    return [r for r in kept if r["scenario"] not in names] + results


def refused_submits(count: int, workdir: Path) -> dict[str, Any]:
    """Time ``count`` `sale submit` runs (the whole process, as a user waits for it) with
    nothing listening on the broker's port; each must exit 2 and store no job."""
    from sale.scripts.bench.cluster import SALE

    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "spec.json"
    path.write_text(json.dumps(spec(0, 1)))
    env = dict(os.environ)
    env.update(
        SALE_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0",
        SALE_DATABASE_URL=f"sqlite:///{workdir / 'sale.db'}",
        SALE_STATE_DIR=str(workdir),
        SALE_POOL_FILE=str(SCRIPTED_POOL),
    )
    seconds, codes = [], []
    load = os.getloadavg()[0]
    for _ in range(count):
        asked = time.monotonic()
        done = subprocess.run([SALE, "submit", str(path)], env=env, capture_output=True,
                              text=True, timeout=120, check=False)  # fmt: skip
        seconds.append(round(time.monotonic() - asked, 2))
        codes.append(done.returncode)
    from sale.models.db import session_scope
    from sale.models.tables import Job
    from sqlmodel import select

    with session_scope(env["SALE_DATABASE_URL"]) as s:
        stored = len(s.exec(select(Job)).all())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    return {"seconds": seconds, "exit_codes": codes, "jobs_stored": stored,
            "load_average": round(load, 2), "date": stamp}  # fmt: skip


def main(
    jobs: int = 30,
    out: Path = ROOT / "docs" / "benchmarks" / "faults.json",
    short: bool = typer.Option(False, help="the test suite's short scenario only"),
    replicas: int = typer.Option(1, help="workers per agent queue"),
    hosts: int = typer.Option(0, help="run the workers in this many network namespaces (root)"),
    refusals: int = typer.Option(0, help="only time this many submits with the broker down"),
) -> None:
    """Run the fault scenarios and write the results."""
    if refusals:
        probe = refused_submits(refusals, Path(tempfile.mkdtemp(prefix="sale-refusals-")))
        probe["command"] = "python -m sale.scripts.bench.faults " + " ".join(sys.argv[1:])
        held = json.loads(out.read_text()) if out.exists() else {"results": []}
        held["refusals"] = probe
        out.write_text(json.dumps(held, indent=2) + "\n")
        write_markdown(out, held)
        print(json.dumps(probe))
        return
    scenarios = (
        [
            Scenario(
                "short",
                3,
                agent_kill_every_s=6,
                agent_kills=1,
                control_kill_at_s=None,
                redis_restart_at_s=10,
                deadline_s=120,
                replicas=replicas,
                hosts=hosts,
            )
        ]
        if short
        else [Scenario(shape(replicas, hosts), jobs, replicas=replicas, hosts=hosts)]
    )
    work = Path(tempfile.mkdtemp(prefix="sale-faults-"))
    results = [run(s, work / s.name.split(",")[0]) for s in scenarios]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    command = ("python -m sale.scripts.bench.faults " + " ".join(sys.argv[1:])).strip()
    for r in results:
        r.update(command=command, date=stamp, cores=os.cpu_count())
    everything = merged(out, results)
    doc: dict[str, Any] = {"results": everything}
    if out.exists() and "refusals" in json.loads(out.read_text()):
        doc["refusals"] = json.loads(out.read_text())["refusals"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    write_markdown(out, doc)
    print(table(results))


def write_markdown(out: Path, doc: dict[str, Any]) -> None:
    """``out`` with the suffix .md: the scenarios' table, their runs and events, and the timed
    refusals."""
    everything = doc["results"]
    probe = doc.get("refusals")
    refused = (
        f"\nA `sale submit` with nothing listening on the broker's port, the whole process timed "
        f"as a user waits for it: exit {sorted(set(probe['exit_codes']))} in "
        f"{', '.join(f'{x:.2f}' for x in probe['seconds'])} s, {probe['jobs_stored']} jobs "
        f"stored (load average {probe['load_average']}; `{probe['command']}`, {probe['date']}). "
        "The refusals timed during the scenarios above include the machine's load.\n"
        if probe
        else ""
    )
    reasons = "".join(
        f"\n- {r['scenario']}: " + "; ".join(f"{n}× {why}" for why, n in r["failed_reasons"])
        for r in everything
        if r["failed_reasons"]
    )
    out.with_suffix(".md").write_text(
        "# The queue under faults\n\n"
        "Real redis-server (AOF), real `sale worker` processes, the script's HTTP stub provider "
        "with 20 % faults (429 + Retry-After, 500, hang past the 5 s client timeout, malformed "
        "body), agent workers SIGKILLed (and restarted) every 15 s, the control worker killed "
        "once, Redis restarted once (3 s down); leases TTL 10 s, watchdog every 2 s. Shapes: "
        "one worker per queue on loopback (full); three workers per agent queue on one host, a "
        "kill taking one random replica; the workers on three hosts — network namespaces on a "
        "bridge, Redis and the provider on the bridge's address, the SQLite file shared — with "
        "the control worker on the first. Recorded: the jobs' cost as their ledgers hold it "
        "(one row per model call, written as the call returns); billed: what the stub "
        "answered with a completion, in US$ and in calls. Not covered by these guarantees: a "
        "worker SIGKILLed in the instant between taking a message from its queue (BRPOP) and "
        "storing it as unacknowledged (kombu's next command) loses that message, and a call "
        "whose answer is on its way to a worker as it dies is billed and not recorded.\n\n"
        + table(everything)
        + "\nRuns (each on the date and machine given):\n\n"
        + "".join(
            f"- {r['scenario']}: `{r['command']}`, {r['date']}, {r['cores']} cores\n"
            for r in everything
        )
        + "".join(
            f"\nWhat happened in {r['scenario']} (seconds after the first submission): "
            + "; ".join(f"{t} {e}" for t, e in r["events"])
            + f". Provider: {r['provider_calls']} calls, faults {r['provider_faults']}.\n"
            for r in everything
        )
        + (f"\nFailed jobs' reasons:{reasons}\n" if reasons else "")
        + refused
    )


if __name__ == "__main__":
    typer.run(main)
