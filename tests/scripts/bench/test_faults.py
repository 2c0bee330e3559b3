"""The fault benchmark's short scenario, run for real: three jobs against the HTTP stub
provider with 20 % faults, one agent worker SIGKILLed (and restarted), Redis restarted once.
Every job ends done, no row is written twice, and every call the provider billed is in the
recorded cost, bar a call whose answer was on its way to the worker that was killed."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest
from sale.scripts.bench.faults import Scenario, Stub, run


def test_the_stub_provider_bills_what_it_answers_and_injects_faults() -> None:
    stub = Stub(fault_rate=0.0)
    base = stub.start()
    try:
        body = {"model": "small", "messages": [{"role": "user", "content": "plan please"}]}
        request = urllib.request.Request(
            f"{base}/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            reply = json.loads(response.read())
        stub.fault_rate = 1.0
        got: bytes | None = None
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                got = response.read()
        except OSError as exc:  # 429, 500, or the 504 after a hang: an HTTPError
            got = str(exc).encode()
    finally:
        stub.stop()
    usage = reply["usage"]
    assert reply["choices"][0]["message"]["content"].startswith("Plan by small")
    assert stub.billed == {"small": [usage["prompt_tokens"], usage["completion_tokens"]]}
    assert sum(stub.faults.values()) == 1
    fault = next(iter(stub.faults))
    if fault == "malformed":
        with pytest.raises(ValueError):
            json.loads(got or b"")
    else:
        assert got is not None and ("HTTP Error" in got.decode())


def test_the_short_fault_scenario_ends_every_job_once_and_fully_charged(tmp_path: Path) -> None:
    scenario = Scenario(
        "short",
        3,
        agent_kill_every_s=6,
        agent_kills=1,
        control_kill_at_s=None,
        redis_restart_at_s=10,
        deadline_s=120,
    )
    result = run(scenario, tmp_path)

    assert (result["done"], result["failed"], result["stuck"], result["lost"]) == (3, 0, 0, 0)
    assert result["duplicate_rows"] == 0
    assert result["recorded_usd"] <= result["billed_usd"] + 1e-12
    # Every call is in the ledger as it returns. What a SIGKILL can still take is a call whose
    # answer the provider had sent and the killed process had not yet written: one per process
    # of the killed worker (concurrency 2).
    assert result["billed_calls"] >= result["recorded_calls"] > 0
    assert result["billed_calls"] - result["recorded_calls"] <= 2 * scenario.agent_kills
