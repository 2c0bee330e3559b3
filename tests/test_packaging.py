"""The installed package beside a Celery user's own code.

A wheel is built from the checkout's package folders (copied to a temporary directory, so the
build writes nothing into the repository) and installed with its runtime dependencies into a
fresh virtual environment (no torch: the core install runs with ``SALE_EMBEDDER=none``). A user
project with its own top-level ``models`` and ``workers`` packages and its own Celery app then
chains a task after ``sale_signature(spec)``, while installed ``sale worker`` processes run the
job on the packaged scripted pool against a real redis-server. One environment per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.redis, pytest.mark.timeout(900)]

#: What a wheel is built from: the package folders and the files pyproject.toml reads.
SOURCES = ("pyproject.toml", "README.md", "sale", "broker", "models", "workers", "scripts")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")

OFFLINE = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
}

ADD = "def add(a, b):\n    return a + b\n"
SPEC = {
    "kind": "coding",
    "prompt": f"Write add(a, b) returning the sum.\n[[scripted ]]\n[[solution]]\n{ADD}"
    "[[/solution]]\n",
    "tests": "def check(candidate):\n    assert candidate(2, 3) == 5\n",
    "entry_point": "add",
}


@dataclass(frozen=True)
class Installed:
    """The sources copied from the checkout, their wheel and the venv it is installed in."""

    src: Path
    wheel: Path
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name


def run(cmd: list[str | Path], timeout: float, **kwargs: Any) -> str:
    """Run ``cmd`` to completion; its stdout, or a failure that shows what it said."""
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs
    )
    assert done.returncode == 0, f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the test venv's traces, with the offline switches."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("SALE_")
    }
    return {**env, **OFFLINE, **extra}


@pytest.fixture(scope="session")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """A wheel of the checkout, installed with its dependencies into a fresh venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=SKIP)
        else:
            shutil.copy2(path, src / name)
    dist = tmp / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "-w", dist, src], timeout=300)
    (wheel,) = dist.glob("sale_celery-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], timeout=120, env=clean_env())
    run(
        [venv / "bin" / "python", *pip[1:], "install", wheel],
        timeout=600,
        env=clean_env(),
    )
    return Installed(src, wheel, venv)


def test_the_wheel_installs_only_the_sale_namespace(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    modules = [n for n in names if n.endswith(".py")]
    assert modules and all(n.startswith("sale/") for n in modules), [
        n for n in modules if not n.startswith("sale/")
    ]
    # Every module of the package folders made it in (a subpackage missing from
    # pyproject's `packages` would not).
    folders = {"sale": "sale", "broker": "sale/broker", "models": "sale/models"}
    folders |= {"workers": "sale/workers", "scripts": "sale/scripts"}
    checkout = {
        f"{folders[folder]}/{path.relative_to(installed.src / folder).as_posix()}"
        for folder in folders
        for path in (installed.src / folder).rglob("*.py")
    }
    assert checkout - set(modules) == set()
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(installed.wheel).read(top_level).decode().split() == ["sale"]
    # Package data a checkout has and an install needs.
    for data in (
        "sale/broker/pools/scripted.toml",
        "sale/broker/pools/local.toml",
        "sale/workers/auction/weights/default.json",
        "sale/workers/prompts/bid.txt",
        "sale/scripts/evals/data/search_bench.jsonl",
        "sale/py.typed",
    ):
        assert data in names, data
    # In the venv, from a neutral directory: none of sale's folders is importable at top level,
    # and the core install brought no torch.
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps([n for n in ('broker', 'models', 'workers', 'scripts', 'torch', "
        "'sentence_transformers') if u.find_spec(n)]))"
    )
    out = run([installed.python, "-c", probe], timeout=60, cwd=installed.venv, env=clean_env())
    assert json.loads(out) == []


def test_an_installed_sale_takes_no_code_version_from_the_repository_around_it(
    installed: Installed,
) -> None:
    # A venv inside the user's own git repository: its commit is not sale's code version.
    repo = installed.venv.parent
    ident = ["-c", "user.name=user", "-c", "user.email=user@example.invalid"]
    run(["git", "init", "-q", repo], timeout=30)
    run(["git", "-C", repo, *ident, "commit", "-q", "--allow-empty", "-m", "user"], timeout=30)
    probe = "from sale.scripts.evals.runner import code_version; print(code_version())"
    out = run([installed.python, "-c", probe], timeout=60, cwd=repo, env=clean_env())
    assert out.strip() == "None"


USERAPP = '''
"""The user's own Celery app: a task of its own, chained after a SALE job."""
import json
import os

# The user's own packages, beside sale's (imported with the app: Celery puts the project
# directory on sys.path only while it imports the app module).
import models.tables
import sale.models.tables
import workers.tasks
from celery import Celery
from sale import sale_signature

REDIS = os.environ["USER_REDIS"]
app = Celery("user", broker=REDIS, backend=REDIS)


@app.task(name="userapp.collect")
def collect(summary):
    """Write what the SALE pipeline handed on, and which packages this process imports."""
    seen = {
        "summary": summary,
        "models": models.tables.OWNER,
        "workers": workers.tasks.OWNER,
        "sale_models": sale.models.tables.__file__,
    }
    with open(os.environ["USER_OUT"], "w", encoding="utf-8") as f:
        json.dump(seen, f)
    return seen


def run_job(spec):
    # sale's control worker sends the task after the job, with sale's routes: it names its
    # queue (which the sale workers' SALE_EXTRA_QUEUES declares).
    return (sale_signature(spec) | collect.s().set(queue="user")).apply_async()
'''

SUBMIT = '''
"""The user's script: SALE's pipeline, then the user's task, in one chain."""
import json
import sys

import models.tables
import workers.tasks
from userapp import app, run_job

app.set_current()
seen = run_job(json.loads(sys.argv[1])).get(timeout=float(sys.argv[2]))
print(json.dumps({
    "returned": seen,
    "models": models.tables.OWNER,
    "workers": workers.tasks.OWNER,
    "models_file": models.__file__,
    "workers_file": workers.__file__,
}))
'''


def write_user_project(root: Path) -> Path:
    """A project with its own ``models`` and ``workers`` packages, clashing with sale's names."""
    for package, module in (("models", "tables"), ("workers", "tasks")):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f'"""The user\'s own {package}."""\n')
        (root / package / f"{module}.py").write_text(f'OWNER = "user {package}.{module}"\n')
    (root / "userapp.py").write_text(textwrap.dedent(USERAPP))
    (root / "submit_job.py").write_text(textwrap.dedent(SUBMIT))
    return root


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start long-running processes in their own process groups; stop every group after."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, cmd: list[str | Path], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = (tmp_path / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [str(c) for c in cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
        log.close()
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        # A worker's pool children are in its group too; none may outlive the test.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def logs(tmp_path: Path) -> str:
    """The last lines of every process log, for a failure message."""
    return "\n".join(
        f"== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
        for p in sorted(tmp_path.glob("*.log"))
    )


def test_a_user_chain_runs_a_job_on_installed_workers_beside_its_own_packages(
    installed: Installed,
    redis_url: str,
    tmp_path: Path,
    spawn: Callable[..., subprocess.Popen[bytes]],
) -> None:
    # A database number of its own: the embedded test worker of the integration tests consumes
    # sale's queues on database 0 of the same server.
    broker = redis_url.rsplit("/", 1)[0] + "/7"
    project = write_user_project(tmp_path / "project")
    pool = run(
        [
            installed.python,
            "-c",
            "import pathlib, sale.broker; "
            "print(pathlib.Path(sale.broker.__file__).parent / 'pools' / 'scripted.toml')",
        ],
        timeout=60,
        cwd=tmp_path,
        env=clean_env(),
    ).strip()
    assert Path(pool).is_relative_to(installed.venv)
    sale_env = clean_env(
        SALE_POOL_FILE=pool,
        SALE_BROKER_URL=broker,
        SALE_DATABASE_URL=f"sqlite:///{tmp_path / 'sale.db'}",
        SALE_STATE_DIR=str(tmp_path / "state"),
        SALE_EMBEDDER="none",
        SALE_EXTRA_QUEUES="user",
    )
    user_env = clean_env(USER_REDIS=broker, USER_OUT=str(tmp_path / "collected.json"))
    for args in (["--control"], ["--agent", "small"], ["--agent", "medium"], ["--agent", "large"]):
        spawn(
            f"sale-{args[-1].lstrip('-')}",
            [installed.bin("sale"), "worker", *args, "--loglevel", "WARNING"],
            cwd=project,
            env=sale_env,
        )
    spawn(
        "user-worker",
        [installed.bin("celery"), "-A", "userapp", "worker", "-Q", "user", "-P", "solo"],
        cwd=project,
        env=user_env,
    )
    # The messages wait in redis until the workers are up; the script blocks on the result.
    try:
        out = run(
            [installed.python, "submit_job.py", json.dumps(SPEC), "240"],
            timeout=300,
            cwd=project,
            env=user_env,
        )
    except (AssertionError, subprocess.TimeoutExpired) as exc:
        raise AssertionError(f"{exc}\n{logs(tmp_path)}") from exc
    said = json.loads(out)
    # The user's script still imports its own packages after importing sale.
    assert said["models"] == "user models.tables" and said["workers"] == "user workers.tasks"
    assert Path(said["models_file"]).parent == project / "models"
    assert Path(said["workers_file"]).parent == project / "workers"
    # The user's task received the job summary that sale's last stage returns.
    seen = json.loads((tmp_path / "collected.json").read_text())
    assert seen == said["returned"]
    summary = seen["summary"]
    assert set(summary) == {"job_id", "status", "verdict", "award", "cost_usd", "memory_record_id"}
    assert summary["status"] == "done" and summary["verdict"] == "passed"
    assert summary["award"]["agent"] in ("small", "medium", "large")
    assert summary["memory_record_id"] is not None and summary["cost_usd"] > 0
    # In the user's worker, sale's models and the user's models are two packages side by side.
    assert seen["models"] == "user models.tables" and seen["workers"] == "user workers.tasks"
    assert Path(seen["sale_models"]).is_relative_to(installed.venv)
