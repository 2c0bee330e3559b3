"""Serve the local pool's GGUF models over llama.cpp's OpenAI-compatible HTTP API (design §5).

Each model runs in its own process, ``python -m sale.scripts.local.model_server``, which builds an
in-process
``xllamacpp.Server`` on 127.0.0.1 and blocks until SIGTERM or SIGINT; the server lives exactly as
long as that process. ``start_server_process`` launches one in its own session (so it survives
the launching command and can be killed as a group) with its output in a log file;
``wait_healthy`` polls ``/health``; ``stop_server`` ends it. Which server runs where is recorded in
a small JSON state file in a run directory chosen by the caller, and ``status`` reports, per
model, the assembled file, its verification, and the server's liveness and health. Requests may
name the model by its alias (``openai/<alias>`` through litellm, api_base
``http://127.0.0.1:<port>/v1``): the server answers to any model name and reports the alias.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]  # no stubs shipped
from sale.scripts.local import models as local_models

logger = logging.getLogger(__name__)

STATE_FILE = "model_servers.json"
HOST = "127.0.0.1"
_PROJECT_ROOT = Path(__file__).resolve().parents[2]
_LOG_TAIL_LINES = 20
_SESSION_MARK = "=== sale model server:"


class ModelServerError(Exception):
    """Base of the errors raised while starting, probing or stopping a model server."""


class ServerStartError(ModelServerError):
    """A model server did not become healthy; carries its log's last lines."""

    def __init__(
        self, alias: str, port: int, reason: str, log_path: Path | None, log_tail: str
    ) -> None:
        self.alias = alias
        self.port = port
        self.reason = reason
        self.log_path = log_path
        self.log_tail = log_tail
        where = f"; log: {log_path}" if log_path else ""
        tail = f"\nlast lines of the log:\n{log_tail}" if log_tail else ""
        super().__init__(f"model server {alias!r} on port {port} {reason}{where}{tail}")


class PortInUse(ServerStartError):
    """The port already serves something this run directory did not record: ``served`` is the
    model alias it serves (None: not a model server, or it does not say)."""

    def __init__(self, alias: str, port: int, served: str | None) -> None:
        self.served = served
        what = f"a server of {served!r}" if served else "another process"
        super().__init__(
            alias,
            port,
            f"cannot start: the port is already in use by {what} (another sale stack such as "
            "`sale models up`, `sale up` or a running `sale eval`, or another program); stop "
            "it, or give this agent another port in the pool file's api_base",
            None,
            "",
        )


class ProbeError(ModelServerError):
    """A request to a running model server failed."""

    def __init__(self, alias: str, port: int, detail: str) -> None:
        self.alias = alias
        self.port = port
        self.detail = detail
        super().__init__(f"model server {alias!r} on port {port}: {detail}")


# --- the server process ------------------------------------------------------------------------


def build_params(
    model_path: Path,
    port: int,
    *,
    threads: int = 1,
    n_ctx: int = 4096,
    n_parallel: int = 1,
    alias: str | None = None,
) -> Any:
    """The ``xllamacpp.CommonParams`` for one model (typed Any: xllamacpp ships no stubs).

    ``n_ctx`` is the context of each concurrent request: llama.cpp splits its total context
    evenly across the ``n_parallel`` slots, so the total asked for is ``n_ctx * n_parallel``.
    """
    # Imported here, not at module level: xllamacpp is the optional `local` extra, no stubs.
    import xllamacpp  # type: ignore[import-untyped,unused-ignore]

    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.n_ctx = n_ctx * n_parallel
    params.n_parallel = n_parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # Idle busy-polling burns a core per server; with several servers on two cores it starves
    # the ones actually decoding.
    params.cpuparams.poll = 0
    params.hostnames = [HOST]
    params.port = port
    if alias:
        params.model_alias = {alias}
    return params


def serve(
    model_path: Path,
    port: int,
    *,
    threads: int = 1,
    n_ctx: int = 4096,
    n_parallel: int = 1,
    alias: str | None = None,
) -> None:
    """Serve ``model_path`` on 127.0.0.1:``port`` in this process until SIGTERM or SIGINT.

    Raises ``ModelServerError`` if llama.cpp cannot load the model or bind the port (its log on
    stderr says which).
    """
    import xllamacpp  # type: ignore[import-untyped,unused-ignore]

    if not model_path.is_file():
        raise ModelServerError(f"model file {model_path} does not exist")
    params = build_params(
        model_path, port, threads=threads, n_ctx=n_ctx, n_parallel=n_parallel, alias=alias
    )
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    # Blocked before the server starts so its native threads inherit the mask and the signal
    # can only be taken by sigwait below; otherwise it may land on a C++ thread and the Python
    # handler would not run until the main thread happened to wake.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise ModelServerError(
                f"llama.cpp could not start {model_path} on port {port}: {exc}"
            ) from exc
        logger.info("serving %s as %r on %s", model_path, alias, server.listening_address)
        received = signal.sigwait(stop_signals)
        logger.info("%s received, stopping the server", signal.Signals(received).name)
        # Dropping the last reference runs ~Server, which stops the HTTP loop and frees the model.
        del server
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry: ``python -m sale.scripts.local.model_server --model PATH --port N
    ...``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True, help="path of the .gguf file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ctx", type=int, default=4096, help="context per concurrent request")
    parser.add_argument("--parallel", type=int, default=1, help="concurrent requests (slots)")
    parser.add_argument("--alias", default=None, help="model name the server reports")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        serve(
            args.model,
            args.port,
            threads=args.threads,
            n_ctx=args.ctx,
            n_parallel=args.parallel,
            alias=args.alias,
        )
    except ModelServerError as exc:
        logger.error("%s", exc)
        return 1
    return 0


def server_command(
    alias: str,
    model_path: Path,
    port: int,
    *,
    threads: int = 1,
    n_ctx: int = 4096,
    n_parallel: int = 1,
) -> list[str]:
    """The argv that runs one model server with this interpreter."""
    options = {
        "--model": str(model_path.resolve()),
        "--port": str(port),
        "--threads": str(threads),
        "--ctx": str(n_ctx),
        "--parallel": str(n_parallel),
        "--alias": alias,
    }
    return [
        sys.executable,
        "-m",
        "sale.scripts.local.model_server",
        *(x for kv in options.items() for x in kv),
    ]


def default_log_path(alias: str) -> Path:
    """Where a server's output goes when the caller names no log file."""
    return Path(tempfile.gettempdir()) / f"sale-model-{alias}.log"


def start_server_process(
    alias: str,
    model_path: Path,
    port: int,
    threads: int = 1,
    log_path: Path | None = None,
    *,
    n_ctx: int = 4096,
    n_parallel: int = 1,
) -> subprocess.Popen[bytes]:
    """Launch a model server in its own session, output appended to ``log_path``.

    Returns at once; follow with ``wait_healthy``. The new session makes the pid its process
    group id, so ``stop_server`` can signal the whole group and a Ctrl-C in the launching
    terminal does not reach it.
    """
    log_path = (log_path or default_log_path(alias)).resolve()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = server_command(
        alias, model_path, port, threads=threads, n_ctx=n_ctx, n_parallel=n_parallel
    )
    with log_path.open("ab") as log:
        started = datetime.now(UTC).isoformat(timespec="seconds")
        log.write(f"{_SESSION_MARK} {alias} on port {port} at {started}\n".encode())
        log.flush()
        return subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # The project root, so `-m sale.scripts.local.model_server` resolves in an uninstalled
            # checkout.
            cwd=_PROJECT_ROOT,
            start_new_session=True,
        )


def log_tail(log_path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file's latest server session ('' if there is none)."""
    if log_path is None:
        return ""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(0, log_path.stat().st_size - 64 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    session = text.splitlines()
    marks = [i for i, line in enumerate(session) if line.startswith(_SESSION_MARK)]
    if marks:
        # The log is appended across restarts; earlier sessions would only mislead.
        session = session[marks[-1] :]
    return "\n".join(session[-lines:])


def port_in_use(port: int) -> bool:
    """True when something accepts connections on ``HOST:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((HOST, port)) == 0


def served_alias(port: int, timeout: float = 2.0) -> str | None:
    """The model alias the server on ``port`` serves (``/v1/models``), or None."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/v1/models", timeout=timeout) as r:
            data = json.loads(r.read().decode("utf-8", "replace")).get("data") or []
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None
    ids = [m.get("id") for m in data if isinstance(m, dict)]
    return str(ids[0]) if len(ids) == 1 and ids[0] else None


def _serving(record: ServerRecord | None, port: int) -> bool:
    """The recorded server is alive, on ``port``, and healthy."""
    return (
        record is not None
        and record.port == port
        and is_model_server(record.pid)
        and is_healthy(port)
    )


def healthy_record(alias: str, port: int, run_dir: Path) -> ServerRecord | None:
    """The server of ``alias`` recorded in ``run_dir``, if it is alive and healthy on ``port``."""
    current = read_state(run_dir).get(alias)
    return current if _serving(current, port) else None


def is_healthy(port: int, timeout: float = 1.0) -> bool:
    """True when ``GET /health`` on the port answers 200 (the model is loaded)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        # Refused, reset, or 503 while the model loads: all mean "not serving yet".
        return False


def wait_healthy(
    port: int,
    timeout: float = 120.0,
    *,
    alias: str = "?",
    process: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.1,
) -> float:
    """Poll ``/health`` until it answers 200; returns the seconds waited.

    Raises ``ServerStartError`` (with the log's last lines) if ``process`` exits first or
    ``timeout`` passes.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if is_healthy(port):
            return time.monotonic() - start
        if process is not None and process.poll() is not None:
            reason = f"exited with status {process.returncode} before becoming healthy"
            raise ServerStartError(alias, port, reason, log_path, log_tail(log_path))
        if time.monotonic() >= deadline:
            reason = f"was not healthy after {timeout:.0f} s"
            raise ServerStartError(alias, port, reason, log_path, log_tail(log_path))
        time.sleep(interval)


def is_model_server(pid: int) -> bool:
    """True when ``pid`` is a live model server process (not a zombie, not a reused pid)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return "sale.scripts.local.model_server" in process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def _running(pid: int) -> bool:
    # A zombie has finished; whether its parent reaps it promptly is not ours to wait for.
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):
            # Reap it if it is our child, so it does not linger as a zombie of this process.
            os.waitpid(pid, os.WNOHANG)
        if not _running(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def stop_server(pid: int, timeout: float = 10.0) -> bool:
    """SIGTERM the model server ``pid`` (and its group), SIGKILL after ``timeout``.

    Returns False without signalling anything when ``pid`` is not a model server, so a stale
    state file can never make this kill an unrelated process that reused the pid.
    """
    if not is_model_server(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        logger.warning("model server pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, timeout)
    return True


# --- state file --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRecord:
    """One running model server as recorded in the run directory's state file."""

    alias: str
    pid: int
    port: int
    model_path: str
    started_at: str
    log_path: str | None = None
    threads: int = 1

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ServerRecord:
        """Build a record from its JSON object."""
        return cls(
            alias=str(data["alias"]),
            pid=int(data["pid"]),
            port=int(data["port"]),
            model_path=str(data["model_path"]),
            started_at=str(data["started_at"]),
            log_path=None if data.get("log_path") is None else str(data["log_path"]),
            threads=int(data.get("threads", 1)),
        )


def read_state(run_dir: Path) -> dict[str, ServerRecord]:
    """The recorded servers by alias; empty when there is no state file yet."""
    path = run_dir / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelServerError(
            f"{path} is not valid JSON ({exc}); stop the servers by pid and delete it"
        ) from exc
    return {alias: ServerRecord.from_json(rec) for alias, rec in data.get("servers", {}).items()}


def write_state(run_dir: Path, records: Mapping[str, ServerRecord]) -> None:
    """Replace the state file atomically with ``records``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATE_FILE
    text = json.dumps({"servers": {a: asdict(r) for a, r in sorted(records.items())}}, indent=2)
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{STATE_FILE}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked_state(run_dir: Path) -> Iterator[dict[str, ServerRecord]]:
    """Read-modify-write the state under an exclusive lock; the yielded dict is written back."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / f"{STATE_FILE}.lock").open("a") as lock:
        # Two `sale` commands starting servers at once would otherwise drop each other's entry.
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = read_state(run_dir)
        yield records
        write_state(run_dir, records)


def server_log(run_dir: Path, alias: str) -> Path:
    """Where :func:`launch` writes the log of ``alias``'s server."""
    return run_dir / f"{alias}.log"


def launch(
    alias: str,
    port: int,
    *,
    run_dir: Path,
    cache_dir: Path | None = None,
    threads: int = 1,
    n_ctx: int = 4096,
    n_parallel: int = 1,
    timeout: float = 120.0,
) -> ServerRecord:
    """Start ``alias`` on ``port`` unless its recorded server is alive and healthy there.

    A recorded server that is alive elsewhere or unhealthy is stopped first. The model must
    already be assembled and verified (``local_models.assemble``); the new server is recorded in
    the state file once healthy, and one that fails to start is stopped.
    """
    model = local_models.get_model(alias)
    path = local_models.model_path(alias, cache_dir)
    local_models.verify_file(path, model.size, model.sha256)
    with locked_state(run_dir) as records:
        current = records.get(alias)
        if current is not None and _serving(current, port):
            return current
        if current is not None and is_model_server(current.pid):
            # Alive but on another port or unhealthy: replace it rather than leak a process.
            stop_server(current.pid)
        if port_in_use(port):
            # Not recorded here: starting anyway would fail to bind, and the health check would
            # be answered by the other process. The caller decides whether to use it.
            raise PortInUse(alias, port, served_alias(port))
        log_path = server_log(run_dir, alias)
        process = start_server_process(
            alias, path, port, threads, log_path, n_ctx=n_ctx, n_parallel=n_parallel
        )
        try:
            waited = wait_healthy(port, timeout, alias=alias, process=process, log_path=log_path)
        except ServerStartError:
            if process.poll() is None:
                stop_server(process.pid)
            process.wait()
            raise
        logger.info(
            "model server %s (pid %d) healthy on port %d after %.1f s",
            alias,
            process.pid,
            port,
            waited,
        )
        record = ServerRecord(
            alias=alias,
            pid=process.pid,
            port=port,
            model_path=str(path),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            log_path=str(log_path),
            threads=threads,
        )
        records[alias] = record
        return record


# --- status and probe --------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    """What ``sale models status`` shows for one model."""

    alias: str
    path: Path
    exists: bool
    size_ok: bool
    hash_ok: bool | None
    pid: int | None
    pid_alive: bool
    port: int | None
    healthy: bool
    tokens_per_second: float | None = None


def status(
    aliases: Iterable[str] | None = None,
    *,
    run_dir: Path,
    cache_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    verify_hash: bool = True,
    probe: bool = False,
) -> list[ModelStatus]:
    """Per model: the assembled file and its checks, and the recorded server's state.

    The port is the recorded server's, else ``ports[alias]`` (e.g. from the pool file), so a
    server started by other means is still seen as healthy. ``verify_hash`` hashes a file whose
    sidecar is stale (about 1 s per GB); without it an unknown hash is reported as None.
    ``probe`` times one short completion on each healthy server.
    """
    records = read_state(run_dir)
    result: list[ModelStatus] = []
    for alias in aliases if aliases is not None else local_models.MODELS:
        model = local_models.get_model(alias)
        check = local_models.check_file(
            local_models.model_path(alias, cache_dir),
            model.size,
            model.sha256,
            compute=verify_hash,
        )
        record = records.get(alias)
        port = record.port if record else (ports or {}).get(alias)
        healthy = port is not None and is_healthy(port)
        tps = probe_tokens_per_second(port, alias) if probe and healthy and port else None
        result.append(
            ModelStatus(
                alias=alias,
                path=check.path,
                exists=check.exists,
                size_ok=check.size_ok,
                hash_ok=check.hash_ok,
                pid=record.pid if record else None,
                pid_alive=bool(record and is_model_server(record.pid)),
                port=port,
                healthy=healthy,
                tokens_per_second=tps,
            )
        )
    return result


def chat_completion(port: int, body: Mapping[str, Any], timeout: float = 120.0) -> dict[str, Any]:
    """POST ``body`` to the server's ``/v1/chat/completions`` and return the JSON reply."""
    request = urllib.request.Request(
        f"http://{HOST}:{port}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    alias = str(body.get("model", "?"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            reply: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:500]
        raise ProbeError(alias, port, f"HTTP {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ProbeError(alias, port, f"chat completion failed: {exc}") from exc
    return reply


def probe_tokens_per_second(port: int, alias: str, timeout: float = 120.0) -> float:
    """Completion tokens per wall-clock second of one short greedy chat completion.

    The time includes the prompt's prefill (a few dozen tokens), so it is an end-to-end rate a
    caller sees, below llama.cpp's own decode-only figure; the first request after a server
    starts runs at about half the steady rate.
    """
    body = {
        "model": alias,
        "messages": [{"role": "user", "content": "Count from one to twenty in words."}],
        "max_tokens": 32,
        "temperature": 0,
    }
    start = time.perf_counter()
    reply = chat_completion(port, body, timeout)
    elapsed = time.perf_counter() - start
    try:
        tokens = int(reply["usage"]["completion_tokens"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ProbeError(alias, port, f"reply without usage.completion_tokens: {reply}") from exc
    return tokens / elapsed


if __name__ == "__main__":
    sys.exit(main())
