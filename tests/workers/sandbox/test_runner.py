"""Tests for sale.workers.sandbox.runner: ordinary programs, every hostile case the README promises
to
contain, and the HumanEval runner. Hostile cases run in both isolation modes where the host
allows it: "namespaces" (needs root with CAP_SYS_ADMIN) and "fallback", which is forced by
pretending namespaces are unavailable, as for a root container without CAP_SYS_ADMIN."""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import secrets
import socket
import tempfile

import psutil
import pytest
from sale.workers.sandbox import runner as sandbox
from sale.workers.sandbox import warm
from sale.workers.sandbox.runner import MARKER_VARIABLE, SandboxLimits, run_python, run_tests

pytestmark = pytest.mark.timeout(120)

MiB = 1024**2
# Small limits keep hostile cases quick on a 2-core machine; the wall limit is a backstop.
FAST = SandboxLimits(
    wall_seconds=20.0,
    cpu_seconds=2,
    memory_bytes=256 * MiB,
    file_size_bytes=1 * MiB,
    max_processes=16,
    output_bytes=2_000,
)
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="only root can drop privileges to nobody")


@pytest.fixture(params=["namespaces", "fallback"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per isolation mode; skip namespaces where the host lacks them."""
    host = sandbox._environment()
    if request.param == "namespaces" and not host.namespaces:
        pytest.skip("namespace mode needs root with CAP_SYS_ADMIN and an unmasked /proc")
    if request.param == "fallback":
        fallback = dataclasses.replace(host, namespaces=False, seal=None)
        monkeypatch.setattr(sandbox, "_environment", lambda: fallback)
    return str(request.param)


def live_sandbox_processes() -> list[psutil.Process]:
    """Processes still running (not zombies) that carry a sandbox run's marker."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and MARKER_VARIABLE in proc.environ():
                found.append(proc)
        except psutil.Error:  # gone, or not ours to inspect
            continue
    return found


def processes_of(uid: int) -> set[int]:
    """Pids of every process (zombies included) whose real uid is ``uid``."""
    pids = set()
    for proc in psutil.process_iter():
        try:
            if proc.uids().real == uid:
                pids.add(proc.pid)
        except psutil.Error:
            continue
    return pids


def sandbox_uid() -> int:
    return pwd.getpwnam("nobody").pw_uid if IS_ROOT else os.getuid()


# Ordinary programs


def test_prints_output(mode: str) -> None:
    result = run_python("print('hello')", limits=FAST)
    assert result.ok
    assert (result.exit_code, result.stdout, result.stderr) == (0, "hello\n", "")
    assert result.stopped is None
    expected = {"namespaces": "netns", "fallback": "audit_hook"}[mode]
    assert result.network_isolation == expected


def test_exit_code_propagates() -> None:
    result = run_python("import sys\nsys.exit(3)", limits=FAST)
    assert result.exit_code == 3
    assert result.stopped is None
    assert not result.ok


def test_stdin_reaches_the_program() -> None:
    result = run_python("print(input()[::-1])", stdin="abc\n", limits=FAST)
    assert result.stdout == "cba\n"


def test_files_are_written_next_to_the_program_and_importable() -> None:
    files = {"helper.py": "def answer():\n    return 42\n", "data/input.txt": "hello"}
    code = "import helper\nprint(helper.answer(), open('data/input.txt').read())"
    result = run_python(code, files=files, limits=FAST)
    assert result.stdout == "42 hello\n", result.stderr


def test_traceback_shows_only_the_program() -> None:
    result = run_python("def f():\n    raise ValueError('boom')\nf()", limits=FAST)
    assert result.exit_code == 1
    assert result.stderr.startswith('Traceback (most recent call last):\n  File "main.py"')
    assert result.stderr.endswith("ValueError: boom\n")


def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_TEST_SECRET", "hunter2")
    code = "import os\nprint(sorted(os.environ))\nprint(os.environ['HOME'] == os.getcwd())"
    result = run_python(code, limits=FAST)
    keys = ["HOME", "LANG", "PATH", MARKER_VARIABLE, "TMPDIR"]
    assert result.stdout == f"{keys}\nTrue\n"


def test_huge_output_is_truncated_with_a_marker() -> None:
    limits = dataclasses.replace(FAST, output_bytes=1_000)
    result = run_python("print('x' * 100_000)", limits=limits)
    assert result.ok
    assert result.stdout == "x" * 1_000 + "…[truncated 99001 bytes]"


def test_endless_output_stops_at_the_file_size_limit() -> None:
    result = run_python("while True:\n    print('y' * 1000)", limits=FAST)
    assert result.stopped == "file_size_limit"
    assert len(result.stdout) <= FAST.output_bytes + len("…[truncated 9999999 bytes]")


def test_killing_signal_is_reported() -> None:
    code = "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"
    result = run_python(code, limits=FAST)
    assert (result.exit_code, result.stopped) == (None, "killed_by_signal:SIGSEGV")


# Limits


def test_infinite_loop_times_out_and_its_directory_is_removed(mode: str) -> None:
    limits = dataclasses.replace(FAST, wall_seconds=1.0, cpu_seconds=30)
    code = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    pass"
    result = run_python(code, limits=limits)
    assert (result.exit_code, result.stopped) == (None, "timeout")
    workdir = result.stdout.strip()
    assert os.path.basename(workdir).startswith("sale-sandbox-")
    assert not os.path.exists(workdir)


def test_cpu_bound_loop_hits_the_cpu_limit() -> None:
    limits = dataclasses.replace(FAST, cpu_seconds=1)
    result = run_python("while True:\n    pass", limits=limits)
    assert (result.exit_code, result.stopped) == (None, "cpu_limit")


@pytest.mark.parametrize(
    "code",
    ["x = bytearray(8 * 1024**3)", "chunks = []\nwhile True:\n    chunks.append(bytes(10**6))"],
    ids=["one-allocation", "growing"],
)
def test_memory_bomb_hits_the_memory_limit(code: str) -> None:
    result = run_python(code, limits=FAST)
    assert result.stopped == "memory_limit"
    assert "MemoryError" in result.stderr


def test_huge_file_hits_the_file_size_limit_and_does_not_survive() -> None:
    code = (
        "import os\nprint(os.path.abspath('big.bin'), flush=True)\n"
        "with open('big.bin', 'wb') as f:\n    f.write(bytes(10 * 1024**2))"
    )
    result = run_python(code, limits=FAST)
    assert result.stopped == "file_size_limit"
    assert "File too large" in result.stderr
    assert not os.path.exists(result.stdout.strip())


def test_fork_bomb_is_contained_and_leaves_no_process(mode: str) -> None:
    before = processes_of(sandbox_uid())
    result = run_python("import os\nwhile True:\n    os.fork()", limits=FAST)
    assert result.stopped in {"process_limit", "timeout"}
    assert not result.ok
    assert live_sandbox_processes() == []
    if mode == "namespaces" and IS_ROOT:  # the namespace's init reaps: not even zombies
        assert processes_of(sandbox_uid()) - before == set()


def test_daemon_that_leaves_the_session_is_killed(mode: str) -> None:
    code = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        time.sleep(300)\n    os._exit(0)\nos.wait()\nprint('started')"
    )
    result = run_python(code, limits=FAST)
    assert result.ok and result.stdout == "started\n", result
    assert live_sandbox_processes() == []


def test_daemon_with_a_scrubbed_environment_is_killed(mode: str) -> None:
    if mode == "fallback":
        pytest.skip("fallback finds leftovers by their environment; its hook forbids exec")
    seconds = str(100_000 + secrets.randbelow(100_000))  # finds our sleep among others
    code = (
        "import os\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        f"        os.execve('/bin/sleep', ['sleep', '{seconds}'], {{}})\n"
        "    os._exit(0)\nos.wait()\nprint('started')"
    )
    result = run_python(code, limits=FAST)
    assert result.ok, result
    survivors = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["cmdline"] == ["sleep", seconds]:
            survivors.append(proc)
            proc.kill()
    assert survivors == []


# Reaching outside


@needs_root
def test_root_only_files_are_unreadable(mode: str) -> None:
    code = (
        "import os\nfor probe in (lambda: os.listdir('/root'), lambda: open('/etc/shadow')):\n"
        "    try:\n        probe()\n    except OSError as exc:\n"
        "        print(type(exc).__name__)\n    else:\n        print('readable')\n"
        "print(os.getuid())"
    )
    result = run_python(code, limits=FAST)
    # Sealed, they do not exist at all; in the fallback they exist but `nobody` may not read.
    refused = {"namespaces": "FileNotFoundError", "fallback": "PermissionError"}[mode]
    assert result.stdout == f"{refused}\n{refused}\n{sandbox_uid()}\n"


def test_sealed_root_hides_the_host_files(mode: str) -> None:
    if mode == "fallback":
        pytest.skip("the fallback cannot seal the file system (documented)")
    probes = ["/etc/passwd", sandbox.__file__, os.path.expanduser("~"), "/root", os.getcwd()]
    code = f"import os\nfor path in {probes!r}:\n    print(path, os.path.exists(path))\n"
    result = run_python(code, limits=FAST)
    assert result.filesystem_isolation == "sealed_root", result
    assert result.stdout == "".join(f"{path} False\n" for path in probes), result


def test_sealed_root_shows_only_the_python_installation_and_the_working_directory(
    mode: str,
) -> None:
    if mode == "fallback":
        pytest.skip("the fallback cannot seal the file system (documented)")
    # Every file the program can see, outside its own /proc and /dev, must be the
    # interpreter, its standard library, a shared library, or in the working directory.
    code = (
        "import json, os, sys\n"
        "cwd, exe = os.getcwd(), os.path.realpath(sys.executable)\n"
        "library = [p for p in sys.path[1:] if os.path.isdir(p)]\n"
        "seen, unexpected = [], []\n"
        "for top, dirs, names in os.walk('/'):\n"
        "    if top == '/':\n        dirs[:] = [d for d in dirs if d not in ('proc', 'dev')]\n"
        "    for name in names:\n"
        "        seen.append(path := os.path.join(top, name))\n"
        "        if not (path.startswith(cwd + '/') or path == exe or '.so' in name\n"
        "                or any(path.startswith(lib + '/') for lib in library)):\n"
        "            unexpected.append(path)\n"
        "print(json.dumps({'unexpected': unexpected, 'files': len(seen),\n"
        "    'main': cwd + '/main.py' in seen, 'exe': exe in seen,\n"
        "    'packages': [p for p in seen if 'site-packages/' in p or 'dist-packages/' in p]}))\n"
    )
    result = run_python(code, limits=FAST)
    view = json.loads(result.stdout)
    assert view["unexpected"] == [], view["unexpected"]
    assert view["main"] and view["exe"] and view["packages"] == []
    assert view["files"] > 100  # the standard library is there to walk


def test_sealed_root_keeps_the_standard_library_and_a_writable_working_directory(
    mode: str,
) -> None:
    code = (
        "import json, re, math, collections, itertools, functools, heapq, typing, hashlib\n"
        "import os, tempfile\n"
        "print(hashlib.sha256(b'sale').hexdigest()[:12], math.comb(5, 2))\n"
        "with open('note.txt', 'w') as out:\n    out.write('kept')\n"
        "print(open('note.txt').read())\n"
        "with tempfile.TemporaryFile(dir='/tmp') as scratch:\n    scratch.write(b'x')\n"
        "print(open('/dev/null').read() == '', len(os.urandom(4)))\n"
    )
    result = run_python(code, limits=FAST)
    assert result.ok, result
    assert result.stdout == "1f7101fe7101 10\nkept\nTrue 4\n", result
    expected = {"namespaces": "sealed_root", "fallback": "none"}[mode]
    assert result.filesystem_isolation == expected


def test_fallback_says_that_it_does_not_seal(mode: str) -> None:
    if mode == "namespaces":
        pytest.skip("namespace mode seals the file system")
    result = run_python("import os\nprint(os.path.exists('/etc/passwd'))", limits=FAST)
    assert (result.filesystem_isolation, result.stdout) == ("none", "True\n")


def test_network_connection_to_the_host_fails(mode: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        code = (
            "import socket\ntry:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'x')\n"
            "except OSError as exc:\n    print('failed', type(exc).__name__)\n"
            "else:\n    print('connected')"
        )
        result = run_python(code, limits=FAST)
        with pytest.raises(BlockingIOError):  # nothing ever connected to the listener
            listener.accept()
    assert result.stdout.startswith("failed "), result
    assert result.network_isolation == {"namespaces": "netns", "fallback": "audit_hook"}[mode]


@needs_root
def test_caller_cannot_be_signalled(mode: str) -> None:
    code = (
        f"import os\ntry:\n    os.kill({os.getpid()}, 0)\n"
        "except OSError as exc:\n    print(type(exc).__name__)\nelse:\n    print('reachable')"
    )
    result = run_python(code, limits=FAST)
    expected = {"namespaces": "ProcessLookupError", "fallback": "PermissionError"}[mode]
    assert result.stdout == f"{expected}\n"


def test_host_processes_and_scratch_files_stay_private(mode: str) -> None:
    if mode == "fallback":
        pytest.skip("fallback shares /proc and /tmp with the host (documented)")
    scratch = os.path.join(tempfile.gettempdir(), f"sale-sandbox-probe-{secrets.token_hex(4)}")
    code = (
        "import os\ncmdlines = []\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
        "    try:\n        cmdlines.append(open(f'/proc/{pid}/cmdline', 'rb').read())\n"
        "    except OSError:\n        pass\n"
        "print(any(b'pytest' in line for line in cmdlines))\n"
        f"open({scratch!r}, 'w').write('x')\nprint(os.path.exists({scratch!r}))"
    )
    result = run_python(code, limits=FAST)
    assert result.stdout == "False\nTrue\n", result
    assert not os.path.exists(scratch)


# Launchers started ahead of their run (namespace mode)


def namespaces_only() -> None:
    if not sandbox._environment().namespaces:
        pytest.skip("namespace mode needs root with CAP_SYS_ADMIN and an unmasked /proc")


def test_each_run_takes_the_launcher_started_after_the_last_one_and_it_serves_one_run() -> None:
    namespaces_only()
    host = sandbox._environment()
    run_python("pass", limits=FAST)
    waiting = warm.take(host)
    assert waiting is not None and waiting.proc.poll() is None  # started, waiting for a run
    warm.keep(waiting)

    result = run_python("print('sealed')", limits=FAST)
    assert result.ok and result.stdout == "sealed\n"
    assert result.filesystem_isolation == "sealed_root"
    assert waiting.proc.returncode is not None  # it ran this run, then exited with it
    following = warm.take(host)
    assert following is not None and following.proc.pid != waiting.proc.pid
    warm.keep(following)


def test_a_launcher_that_died_while_it_waited_is_replaced() -> None:
    namespaces_only()
    host = sandbox._environment()
    run_python("pass", limits=FAST)
    waiting = warm.take(host)
    assert waiting is not None
    waiting.proc.kill()
    waiting.proc.wait()
    warm.keep(waiting)

    result = run_python("print('again')", limits=FAST)
    assert result.ok and result.stdout == "again\n", result


def test_a_waiting_launcher_exits_when_its_owner_lets_it_go() -> None:
    namespaces_only()
    run_python("pass", limits=FAST)
    waiting = warm.take(sandbox._environment())
    assert waiting is not None
    waiting.discard()
    assert waiting.proc.returncode == 0


# HumanEval runner

CANDIDATE = "def add(a, b):\n    return a + b\n"
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_run_tests_passes_a_correct_candidate() -> None:
    result = run_tests(CANDIDATE, TESTS, "add", limits=FAST)
    assert result.ok, result


def test_run_tests_fails_a_wrong_candidate() -> None:
    result = run_tests(CANDIDATE.replace("a + b", "a - b"), TESTS, "add", limits=FAST)
    assert not result.ok
    assert "AssertionError" in result.stderr


def test_run_tests_fails_a_syntactically_broken_candidate() -> None:
    result = run_tests("def add(a, b)\n    return a +", TESTS, "add", limits=FAST)
    assert not result.ok
    assert "SyntaxError" in result.stderr


def test_run_tests_without_entry_point_runs_the_tests_as_written() -> None:
    tests = TESTS + "check(add)\nprint('checked')\n"
    result = run_tests(CANDIDATE, tests, None, limits=FAST)
    assert result.ok and result.stdout == "checked\n", result


# Bad arguments


@pytest.mark.parametrize("name", ["../escape.py", "/etc/evil", "main.py", ".", "a/../../b"])
def test_files_outside_the_sandbox_are_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="relative path"):
        run_python("pass", files={name: "x"})


def test_entry_point_must_be_an_identifier() -> None:
    with pytest.raises(ValueError, match="identifier"):
        run_tests(CANDIDATE, TESTS, "add); import os; (add")


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="wall_seconds"):
        SandboxLimits(wall_seconds=0)
