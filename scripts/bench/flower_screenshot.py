"""A picture of Flower's task list on a running queue, for the docs (docs/flower_tasks.png).

It starts the embedded runtime on the SCRIPTED test-double pool (bundled Redis, the control
worker and one worker per agent), `sale flower` on a free loopback port (auth off for this
run: the picture is all it serves), submits a few coding jobs one after another with every
juror called, waits until Flower has seen every task of them end, and has headless Chromium
(Debian's ``chromium``) take a screenshot of Flower's /tasks page. The picture shows the stages
as Flower names them: sale.bid, sale.jury and sale.execute on the agents' workers, and the
job's own row on the control worker, sale.update, whose UUID is the job id (the control stages
replace one another under it). The scripted answers say nothing about decision quality. The
committed picture was made on 2026-12-07 with:

    python -m sale.scripts.bench.flower_screenshot --jobs 3
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Annotated, Any

import typer

ROOT = Path(__file__).resolve().parents[2]
SPEC = {
    "kind": "coding",
    "prompt": "Write add(a, b) returning the sum.\n[[scripted ]]\n"
    "[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


def _tasks(url: str) -> dict[str, Any]:
    """Flower's task list (``/api/tasks``), or an empty one while Flower is not up yet."""
    try:
        with urllib.request.urlopen(f"{url}/api/tasks", timeout=5) as response:
            return dict(json.loads(response.read()))
    except (urllib.error.URLError, OSError, ValueError):
        return {}


def _wait_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def _flower_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthcheck", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def main(
    jobs: Annotated[int, typer.Option(min=1, max=20, help="jobs to submit first")] = 3,
    out: Annotated[Path, typer.Option(help="the PNG to write")] = ROOT
    / "docs"
    / "flower_tasks.png",
    chromium: Annotated[str, typer.Option(help="the headless browser")] = "chromium",
) -> None:
    """Run the stack, submit the jobs, and screenshot Flower's /tasks page."""
    browser = shutil.which(chromium)
    if browser is None:
        typer.echo(f"error: {chromium} not found; install it with `apt-get install chromium`")
        raise typer.Exit(2)
    state = Path(tempfile.mkdtemp(prefix="sale-flower-"))
    os.environ.update(
        SALE_STATE_DIR=str(state),
        SALE_POOL_FILE=str(ROOT / "broker" / "pools" / "scripted.toml"),
        SALE_DATABASE_URL=f"sqlite:///{state / 'sale.db'}",
        SALE_JURY_MIN_WEIGHT="0",  # every juror called, so the jury stage is in the picture
    )
    for name in ("SALE_BROKER_URL", "SALE_FLOWER_BASIC_AUTH"):
        os.environ.pop(name, None)
    from sale.broker.settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from sale.broker.pool import load_pool
    from sale.models.db import init_db
    from sale.scripts.local.runtime import EmbeddedStack, free_port

    init_db(settings.effective_database_url)
    pool = load_pool(settings.effective_pool_file)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flower: subprocess.Popen[bytes] | None = None
    with EmbeddedStack(settings, pool, serve_models=False) as stack:
        try:
            # Without auth Flower 2.2 keeps its API closed unless told otherwise; this Flower
            # is on loopback for the picture only.
            env = dict(os.environ, SALE_BROKER_URL=stack.broker_url)
            env["FLOWER_UNAUTHENTICATED_API"] = "true"
            with open(stack.log_dir / "flower.log", "ab") as log:
                flower = subprocess.Popen(
                    [sys.executable, "-m", "sale.scripts.cli", "flower", "--port", str(port)],
                    env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            stack.workers_ready()
            _wait_until("Flower", lambda: _flower_ready(url), 60)
            os.environ["SALE_BROKER_URL"] = stack.broker_url
            get_settings.cache_clear()
            import sale.broker.app  # noqa: F401  (configures the current Celery app)
            from celery.result import AsyncResult
            from sale.workers.canvas import submit
            from sale.workers.context import get_context

            ids: list[str] = []
            for _ in range(jobs):  # one after another: the newest job's stages top the list
                ids.append(submit(SPEC, get_context()))
                AsyncResult(ids[-1]).get(timeout=120, propagate=False)

            def all_seen() -> bool:
                tasks = _tasks(url)
                ended = all(t["state"] == "SUCCESS" for t in tasks.values())
                return ended and all(tasks.get(j, {}).get("name") == "sale.update" for j in ids)

            _wait_until("Flower to see every task end", all_seen, 60)
            profile = Path(tempfile.mkdtemp(prefix="sale-chromium-"))
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    "--virtual-time-budget=5000",  # let the page's table load its rows
                    f"--screenshot={out}",
                    "--window-size=1400,900",
                    f"{url}/tasks",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            shutil.rmtree(profile, ignore_errors=True)
        finally:
            if flower is not None:
                with suppress(ProcessLookupError):
                    os.killpg(flower.pid, signal.SIGTERM)
                try:
                    flower.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(flower.pid, signal.SIGKILL)
                    flower.wait()
    shutil.rmtree(state, ignore_errors=True)
    typer.echo(f"{out}: Flower's task list after {jobs} jobs ({', '.join(ids)})")


if __name__ == "__main__":
    typer.run(main)
