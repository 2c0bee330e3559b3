"""Benchmark: the sandbox's start-up overhead per run, for a program that does almost nothing.

Each run of `run_python` pays for a fresh working directory, the launcher, the namespaces (or
the fallback's process setup), the sealed file system and the interpreter's own start; the
program itself is ``import json`` (what a HumanEval check imports at least). The first run,
which probes the host, is excluded. ``--mode unsealed`` times namespace mode without the
sealed root (as it ran before sealing), ``--mode fallback`` the fallback. Results go to
docs/benchmarks/sandbox_startup.json, one entry per ``--label``.

    python -m sale.scripts.bench.sandbox_startup --runs 30 --label sealed
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = "import json\nprint(json.dumps([1]))\n"


def main(
    runs: int = 30,
    label: str = "current",
    mode: str = "default",
    out: Path = ROOT / "docs" / "benchmarks" / "sandbox_startup.json",
) -> None:
    """Time ``runs`` sandbox runs and merge the figures into ``out`` under ``label``."""
    from sale.workers.sandbox import runner

    host = runner._environment()  # the one-off probe is not part of a run's cost
    if mode == "unsealed":  # namespace mode as it was before the file system was sealed
        host = dataclasses.replace(host, seal=None)
    elif mode == "fallback":  # as on a host without CAP_SYS_ADMIN
        host = dataclasses.replace(host, namespaces=False, seal=None)
    elif mode != "default":
        raise typer.BadParameter("--mode is default, unsealed or fallback")
    runner._environment = lambda: host  # type: ignore[assignment]
    seconds = []
    modes = set()
    for _ in range(runs):
        started = time.perf_counter()
        result = runner.run_python(PROGRAM)
        seconds.append(time.perf_counter() - started)
        if result.stdout != "[1]\n":
            raise SystemExit(f"sandbox run failed: {result!r}")
        modes.add(result.filesystem_isolation)
    seconds.sort()
    entry = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m sale.scripts.bench.sandbox_startup " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "mode": runner._mode(host),
        "filesystem_isolation": sorted(modes),
        "interpreter": host.interpreter,
        "runs": runs,
        "per_run_s": {
            "mean": round(statistics.fmean(seconds), 4),
            "p50": round(statistics.median(seconds), 4),
            "p95": round(seconds[max(0, int(0.95 * runs) - 1)], 4),
            "min": round(seconds[0], 4),
        },
    }
    results: dict[str, Any] = {"benchmark": "sandbox_startup", "runs": {}}
    if out.exists():
        results = json.loads(out.read_text())
    results["runs"][label] = entry
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    typer.run(main)
