"""Run untrusted Python (written by small models) in a separate, limited process.

`run_python` writes the program into a fresh temporary directory, starts it with the
interpreter in isolated mode (``-I``: no user site, ``PYTHON*`` variables ignored) and a
minimal environment (``PATH``, ``HOME`` and ``TMPDIR`` = that directory, ``LANG``; nothing
inherited from the caller), applies kernel resource limits (CPU, address space, file size,
processes and threads, open files, no core dumps), enforces a wall-clock timeout, captures
stdout/stderr through caller-owned files read back only up to ``output_bytes``, removes the
directory (also after a kill) and returns a `SandboxResult`. It never raises for anything the
program does. The isolation mode is chosen once per process by probing the host, and each
result records it (``network_isolation``, ``process_isolation``, ``filesystem_isolation``).

Namespace mode (root with CAP_SYS_ADMIN and an unmasked /proc, as in CI): the program runs
as ``nobody``, so RLIMIT_NPROC is enforced, in fresh network, PID and mount namespaces
behind a small root launcher. The network namespace holds only a down loopback, so no socket
reaches another host or this machine's services (abstract Unix sockets are per namespace
too). In the PID namespace the program cannot see or signal host processes, and when its main
process ends or is killed the kernel kills everything it started, including processes that
left its session. The file system is sealed: the launcher builds a fresh tmpfs root holding
only the interpreter, its standard library and the shared libraries they link (each bound
read-only at its own path; site- and dist-packages are masked, because no pool allows extra
packages), the working directory (read-write), private tmpfs /tmp, /var/tmp, /dev/shm and
/run/lock, a read-only /dev with null, zero, random and urandom, and a /proc showing only the
sandbox; pivot_root then detaches the host's tree from the namespace (``filesystem_isolation
= "sealed_root"``). What to bind is worked out once per process from the interpreter's
``sys.path`` and ``ldd``; a host where that fails (no ``ldd``, an architecture whose
pivot_root number is not known here) runs namespace mode unsealed and says so
(``filesystem_isolation = "none"``, a warning in the log). The launcher of a thread's next run
is started as a run ends and waits for its configuration (:mod:`sale.workers.sandbox.warm`),
so a run does not wait for an interpreter to start; each launcher still serves one run.

Fallback mode (anything else, e.g. a laptop, or a container without CAP_SYS_ADMIN): the
program runs in its own session, as ``nobody`` if the caller is root, else as the caller;
then RLIMIT_NPROC is the caller's current thread count plus ``max_processes``, because the
kernel counts every process of the user. Network use is refused by a Python audit hook that
also forbids ctypes and starting programs: it stops naive attempts, not a determined one (a
C extension written to disk, /proc/self/mem). Leftover processes are killed by process group
and by a per-run environment marker; escaping that takes leaving the session and
re-executing with a scrubbed environment after defeating the hook. Killed leftovers are
reaped by the host's init, so run workers under one that reaps (``docker run --init``):
unreaped zombies count against the process limit.

Not contained in namespace mode: the kernel's attack surface (no seccomp; unprivileged user
namespaces stay available), what the standard library itself reveals (its files, the shared
libraries' names and versions) and what any process may read in its own /proc (kernel
version, CPU and memory figures). Files the program writes are bounded each by
``file_size_bytes``, on the scratch mounts also in total; in the working directory, which
is on the host disk until the run ends, their number is bounded only by time. Concurrent
runs share the ``nobody`` user and hence its process budget.

Not contained in the fallback, which cannot seal (``filesystem_isolation = "none"``): reading
every world-readable file of the host (/etc/passwd, the project's source, other
applications' files); ``nobody`` cannot read root-only files such as /etc/shadow or /root,
but a program running as a non-root caller reads whatever the caller can. Writing wherever
``nobody`` may write; Unix sockets on the file system that ``nobody`` may open; /proc and
/tmp are the host's. When the caller is root and its interpreter is unreadable for
``nobody`` (a pyenv build under /root), a system interpreter is used instead in both modes
(same minor version preferred); it sees only its standard library and, in the fallback, its
own packages.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import math
import os
import pwd
import re
import resource
import secrets
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sale.workers.sandbox import warm

__all__ = [
    "MARKER_VARIABLE",
    "SandboxLimits",
    "SandboxResult",
    "SandboxUnavailableError",
    "run_python",
    "run_tests",
]

logger = logging.getLogger(__name__)

MARKER_VARIABLE = "SALE_SANDBOX_RUN"
_PROGRAM_NAME = "main.py"
_CLONE_NEWNS, _CLONE_NEWPID, _CLONE_NEWNET = 0x00020000, 0x20000000, 0x40000000
_PR_SET_PDEATHSIG = 1
_SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_GRACE_SECONDS = 5.0
_TAIL_BYTES = 4096

# Runs in the sandbox before the program: -I implies -P, so the working directory must be
# put on sys.path by hand for `files` to be importable; our own frames are cut from
# tracebacks so the program's stderr looks like a plain `python main.py`.
_BOOTSTRAP = r"""
import sys

_BLOCKED = frozenset({
    "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
    "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "socket.getnameinfo", "ctypes.dlopen", "ctypes.dlsym", "os.exec", "os.posix_spawn",
    "os.spawn", "os.system", "subprocess.Popen",
})

def _guard(event, args):
    # 1 is AF_UNIX: socketpair() must keep working for asyncio and friends.
    if event in _BLOCKED or (event == "socket.__new__" and args[1] != 1):
        raise PermissionError(f"sandbox: {event} is not allowed")

def _refuse(*args, **kwargs):
    raise PermissionError("sandbox: starting programs is not allowed")

def _main():
    import os, types
    if sys.argv[1] == "guard":
        import _posixsubprocess
        _posixsubprocess.fork_exec = _refuse  # multiprocessing spawns without an event
        sys.addaudithook(_guard)
    path = sys.argv[2]
    sys.argv[:] = [path]
    sys.path.insert(0, os.getcwd())
    module = types.ModuleType("__main__")
    module.__file__ = path
    sys.modules["__main__"] = module
    try:
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
            tb = tb.tb_next
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        sys.exit(1)

_main()
"""

# Runs as root in fresh mount/PID/network namespaces. It may be started before its run
# (sale.workers.sandbox.warm): it reads the run's configuration from the pipe named by its
# last argument, then takes the run's stdin, stdout and stderr. It forks the namespace's init
# (C1), which prepares the mounts, reaps everything, and forks the program (C2) that drops to
# the sandbox user and execs it with the run's environment. Only root processes outside the
# program's session stay in charge, so the program can neither signal nor ptrace them.
# Reports go to `status_fd` as lines: "S <wait status of the program>" or "E <why the sandbox
# failed>".
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys

config_fd = int(sys.argv[1])
data = b""
while chunk := os.read(config_fd, 65536):
    data += chunk
os.close(config_fd)
if not data:  # its owner went away before a run came
    os._exit(0)
cfg = json.loads(data)
for fd, path in enumerate(cfg["stdio"]):
    handle = os.open(path, os.O_RDONLY if fd == 0 else os.O_WRONLY)
    os.dup2(handle, fd)
    os.close(handle)
status_fd = cfg["status_fd"]
os.set_inheritable(status_fd, False)
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 262144

def report(kind, text):
    os.write(status_fd, f"{kind} {text}\n".encode())

def mount(source, target, fstype, flags, data=None):
    args = [None if a is None else a.encode() for a in (source, target, fstype, data)]
    if libc.mount(args[0], args[1], args[2], flags, args[3]) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {target}: {os.strerror(errno)}")

def place(target, directory):
    os.makedirs(target if directory else os.path.dirname(target), exist_ok=True)
    if not directory and not os.path.lexists(target):
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY, 0o644))

def bind(source, target, flags=MS_RDONLY | MS_NOSUID | MS_NODEV):
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_BIND | MS_REMOUNT | flags)

def seal(workdir, handle):
    # A fresh tmpfs becomes the root: the paths the interpreter needs, bound read-only at
    # their own names, a minimal /dev, private scratch mounts, the working directory and
    # this namespace's /proc. pivot_root then detaches the host's tree from the namespace.
    root, plan = cfg["seal"]["root"], cfg["seal"]["paths"]
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,nr_inodes=4096,mode=755")
    for kind, path, target in plan:
        here = root + path
        if kind == "link":
            os.makedirs(os.path.dirname(here), exist_ok=True)
            os.symlink(target, here)
        elif kind == "mask":  # a package directory the sandbox does not allow
            mount("tmpfs", here, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=755")
        else:
            place(here, kind == "dir")
            bind(path, here)
    dev = root + "/dev"
    place(dev, True)
    mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,nr_inodes=64,mode=755")
    for name in ("null", "zero", "random", "urandom"):
        place(f"{dev}/{name}", False)
        bind(f"/dev/{name}", f"{dev}/{name}", MS_NOSUID | MS_NOEXEC)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")
    place(dev + "/shm", True)
    mount(None, dev, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in cfg["scratch_dirs"]:
        place(root + path, True)
        mount("tmpfs", root + path, "tmpfs", MS_NOSUID | MS_NODEV, cfg["tmpfs_options"])
    place(root + workdir, True)
    bind(f"/proc/self/fd/{handle}", root + workdir, MS_NOSUID | MS_NODEV)
    place(root + "/proc", True)
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.chdir(root)
    if libc.syscall(cfg["seal"]["pivot_root"], b".", b".") != 0:
        raise OSError(ctypes.get_errno(), "pivot_root")
    if libc.umount2(b".", 2) != 0:  # MNT_DETACH: the host's tree leaves the namespace
        raise OSError(ctypes.get_errno(), "umount2 of the old root")
    os.chdir("/")
    mount(None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)

def prepare_filesystem():
    workdir = cfg["workdir"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # first: nothing may propagate to the host
    handle = os.open(workdir, os.O_PATH | os.O_DIRECTORY)
    if cfg["seal"] is not None:
        seal(workdir, handle)
        os.close(handle)
        return
    for path in cfg["scratch_dirs"]:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, cfg["tmpfs_options"])
    try:
        visible = os.path.samestat(os.stat(workdir), os.fstat(handle))
    except FileNotFoundError:
        visible = False
    if not visible:  # a scratch tmpfs now hides it: bind the real directory back
        os.makedirs(workdir, exist_ok=True)
        mount(f"/proc/self/fd/{handle}", workdir, None, MS_BIND)
    os.close(handle)
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)

def program():
    try:
        os.chdir(cfg["workdir"])
        os.setsid()
        for limit, soft, hard in cfg["rlimits"]:
            resource.setrlimit(limit, (soft, hard))
        if cfg["uid"] is not None:
            os.setgroups([])
            os.setgid(cfg["gid"])
            os.setuid(cfg["uid"])
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:
        report("E", f"cannot start the program: {exc!r}")
    os._exit(127)

def init():
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the launcher
    try:
        prepare_filesystem()
        child = os.fork()
    except BaseException as exc:
        report("E", repr(exc))
        os._exit(1)
    if child == 0:
        program()
    while True:
        pid, status = os.wait()
        if pid == child:
            break
    report("S", str(status))
    os._exit(0)  # the kernel now kills whatever is left in the namespace

c1 = 0
done = stopping = False

def stop(signum, frame):
    global stopping
    stopping = True
    if c1 > 0 and not done:
        os.kill(c1, signal.SIGKILL)

signal.signal(signal.SIGTERM, stop)
c1 = os.fork()
if c1 == 0:
    init()
if stopping:
    os.kill(c1, signal.SIGKILL)
os.waitid(os.P_PID, c1, os.WEXITED | os.WNOWAIT)  # the zombie keeps c1's pid reserved
done = True
os.waitpid(c1, 0)
os._exit(0)
"""


class SandboxUnavailableError(RuntimeError):
    """The host cannot provide the sandbox (no usable interpreter, launcher failure).

    Never raised because of what the sandboxed program does.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SandboxLimits:
    """Limits for one run; each is enforced by the kernel or by the caller's clock."""

    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 512 * 1024**2  # RLIMIT_AS
    file_size_bytes: int = 10 * 1024**2  # RLIMIT_FSIZE, also caps stdout/stderr on disk
    max_processes: int = 64  # processes and threads of the program, itself included
    output_bytes: int = 16_000  # stdout and stderr are each cut to this many bytes
    max_open_files: int = 256  # RLIMIT_NOFILE: bounds kernel memory a fork bomb can pin

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class SandboxResult:
    """What one run did. ``stopped`` is None when the program ran to completion."""

    exit_code: int | None  # None when killed by a signal
    stdout: str
    stderr: str
    stopped: str | None  # "timeout", "cpu_limit", "memory_limit", "file_size_limit",
    # "process_limit" or "killed_by_signal:<NAME>"
    duration_s: float
    network_isolation: str  # "netns" | "audit_hook"
    process_isolation: str  # "pid_namespace" | "process_group"
    # "sealed_root": only the interpreter, the working directory and private mounts exist;
    # "none": the host's file system is visible (the fallback, or a host that cannot seal)
    filesystem_isolation: str = "none"

    @property
    def ok(self) -> bool:
        """True when the program exited with status 0 and hit no limit."""
        return self.exit_code == 0 and self.stopped is None


@dataclass(frozen=True)
class _User:
    uid: int
    gid: int
    name: str


@dataclass(frozen=True)
class _Host:
    interpreter: str
    user: _User | None  # whom the program runs as; None means the caller itself
    namespaces: bool
    seal: _Seal | None = None  # namespace mode only: what the sealed root shows


# One entry of the sealed root: ("dir" | "file", path, "") bound read-only at its own path,
# ("link", path, target) a symlink copied from the host, ("mask", path, "") an empty
# read-only directory laid over a package directory the sandbox does not allow.
_Seal = tuple[tuple[str, str, str], ...]


def run_python(
    code: str,
    *,
    stdin: str = "",
    limits: SandboxLimits | None = None,
    files: Mapping[str, str] | None = None,
) -> SandboxResult:
    """Run ``code`` as ``main.py`` in a fresh sandbox and report what happened.

    ``files`` maps relative paths to text written next to the program (importable).
    Raises ValueError for bad arguments and SandboxUnavailableError when the host cannot
    sandbox at all; whatever the program does comes back as a `SandboxResult`.
    """
    extra = dict(files or {})
    for name in extra:
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts or parts[0] == _PROGRAM_NAME:
            raise ValueError(f"files: {name!r} must be a relative path below the sandbox")
    return _run(code, stdin, limits or SandboxLimits(), extra, _environment())


def run_tests(
    candidate: str, tests: str, entry_point: str | None, *, limits: SandboxLimits | None = None
) -> SandboxResult:
    """Run HumanEval-style ``tests`` against ``candidate``; it passes iff the result is ok.

    With ``entry_point`` the program ends with ``check(<entry_point>)``; without it the
    tests are expected to call what they check themselves.
    """
    program = candidate + "\n\n" + tests + "\n\n"
    if entry_point is not None:
        if not entry_point.isidentifier():
            raise ValueError(f"entry_point must be an identifier, got {entry_point!r}")
        program += f"check({entry_point})\n"
    return run_python(program, limits=limits)


@functools.cache
def _environment() -> _Host:
    """Probe once per process: sandbox user, interpreter, and whether namespaces work."""
    user = _sandbox_user()
    interpreter = _pick_interpreter(user)
    probe_limits = SandboxLimits(wall_seconds=30.0)
    candidates = []
    try:
        candidates.append(_Host(interpreter, user, True, _sealed_view(interpreter)))
    except SandboxUnavailableError as exc:
        logger.warning("sandbox: cannot seal the file system: %s", exc.reason)
    candidates += [_Host(interpreter, user, True), _Host(interpreter, user, False)]
    for host in candidates:
        try:
            result = _run("print('ok')", "", probe_limits, {}, host)
        except SandboxUnavailableError as exc:
            logger.warning("sandbox: %s mode unavailable: %s", _mode(host), exc.reason)
            continue
        if result.ok and result.stdout == "ok\n":
            logger.info(
                "sandbox: %s mode, interpreter %s, running as %s",
                _mode(host),
                interpreter,
                user.name if user else "the caller",
            )
            return host
        logger.warning("sandbox: %s mode probe failed: %r", _mode(host), result)
    raise SandboxUnavailableError("neither the namespace nor the fallback sandbox works")


def _mode(host: _Host) -> str:
    if not host.namespaces:
        return "fallback"
    return "sealed namespace" if host.seal is not None else "namespace (unsealed)"


# pivot_root(2) has no libc wrapper; the sealed root is offered where its number is known.
_PIVOT_ROOT_SYSCALL = {"x86_64": 155, "aarch64": 41}
_PACKAGE_DIRS = ("site-packages", "dist-packages")


def _sealed_view(interpreter: str) -> _Seal:
    """The paths a sealed root shows: the interpreter, its standard library (``sys.path``
    without site directories) and every shared library they link, each at its own path
    with the symlinks leading to it; package directories inside the library are masked.

    Raises SandboxUnavailableError when the host cannot seal (unknown architecture, no
    ``ldd``, an interpreter that does not report its library).
    """
    import platform

    if platform.machine() not in _PIVOT_ROOT_SYSCALL:
        raise SandboxUnavailableError(f"no pivot_root number known for {platform.machine()}")
    executable = os.path.realpath(interpreter)
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        shown = subprocess.run(
            [executable, "-I", "-S", "-c", "import json, sys; print(json.dumps(sys.path))"],
            env=env,
            cwd="/",
            capture_output=True,
            timeout=30,
            check=True,
        )
        library = [p for p in json.loads(shown.stdout) if os.path.isdir(p)]
        objects = [executable] + [
            os.path.join(directory, name)
            for top in library
            for directory, _, names in os.walk(top)
            for name in names
            if name.endswith(".so")
        ]
        linked = subprocess.run(
            ["ldd", *objects], env=env, cwd="/", capture_output=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise SandboxUnavailableError(f"cannot list what {executable} needs: {exc!r}") from exc
    if not library:
        raise SandboxUnavailableError(f"{executable} reports no standard library")
    entries: dict[str, tuple[str, str, str]] = {}
    for path in [executable, *library, *_linked_libraries(linked.stdout.decode())]:
        _expose(path, entries)
    for top in library:
        for name in _PACKAGE_DIRS:
            if os.path.isdir(os.path.join(top, name)):
                entries[os.path.join(top, name)] = ("mask", os.path.join(top, name), "")
    bound = [path for kind, path, _ in entries.values() if kind == "dir"]
    kept = [
        entry
        for path, entry in entries.items()
        if not any(path != top and path.startswith(top + "/") for top in bound)
        or entry[0] == "mask"
    ]
    return tuple(sorted(kept, key=lambda entry: (entry[0] == "mask", entry[1])))


def _linked_libraries(ldd_output: str) -> list[str]:
    """Paths in ``ldd`` output, as the dynamic loader looks them up (not resolved)."""
    found = []
    for line in ldd_output.splitlines():
        if not line[:1].isspace():
            continue  # a "<file>:" header
        text = line.strip().split(" => ", 1)[-1]
        path = text.split(" (", 1)[0].strip()
        if path.startswith("/"):
            found.append(path)
    return found


def _expose(path: str, entries: dict[str, tuple[str, str, str]]) -> None:
    """Record ``path`` for the sealed root, copying each symlink on the way to it."""
    current = "/"
    parts = PurePosixPath(os.path.normpath(path)).parts[1:]
    for index, part in enumerate(parts):
        current = os.path.join(current, part)
        if os.path.islink(current):
            target = os.readlink(current)
            entries[current] = ("link", current, target)
            resolved = os.path.join(os.path.dirname(current), target)
            _expose(os.path.join(resolved, *parts[index + 1 :]), entries)
            return
        if not os.path.exists(current):
            return
    kind = "dir" if os.path.isdir(current) else "file"
    entries[current] = (kind, current, "")


def _sandbox_user() -> _User | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:  # no passwd entry: use the kernel's conventional overflow ids
        return _User(65534, 65534, "nobody")
    return _User(entry.pw_uid, entry.pw_gid, "nobody")


def _pick_interpreter(user: _User | None) -> str:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    candidates += ["/usr/bin/python3"]
    for candidate in dict.fromkeys(candidates):
        if not os.path.isfile(candidate):
            continue
        try:
            done = subprocess.run(
                [candidate, "-I", "-c", "import ctypes, sys; print(sys.version_info >= (3, 8))"],
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                cwd="/",
                capture_output=True,
                timeout=30,
                check=False,
                user=user.uid if user else None,
                group=user.gid if user else None,
                extra_groups=[] if user else None,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.info("sandbox: interpreter %s unusable: %s", candidate, exc)
            continue
        if done.returncode == 0 and done.stdout.strip() == b"True":
            return candidate
    raise SandboxUnavailableError(f"no interpreter among {candidates} runs as the sandbox user")


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _rlimits(limits: SandboxLimits, uid: int) -> list[tuple[int, int, int]]:
    # RLIMIT_NPROC counts every thread of the real uid, so the budget sits on top of
    # what that uid already runs (other sandboxes, or the caller's own processes).
    tasks = _count_tasks(uid)
    wanted = [
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, limits.memory_bytes, limits.memory_bytes),
        (resource.RLIMIT_FSIZE, limits.file_size_bytes, limits.file_size_bytes),
        (resource.RLIMIT_NPROC, tasks + limits.max_processes, tasks + limits.max_processes),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    clamped = []
    for limit, soft, hard in wanted:
        ceiling = resource.getrlimit(limit)[1]  # an unprivileged child cannot go higher
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        clamped.append((limit, soft, hard))
    return clamped


def _count_tasks(uid: int) -> int:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            status = Path(entry.path, "status").read_text(errors="replace")
        except OSError:  # exited while we looked
            continue
        fields: dict[str, str] = {}
        for line in status.splitlines():
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if fields.get("Uid", "-1").split()[0] == str(uid):
            total += int(fields.get("Threads") or 1)
    return total


def _run(
    code: str, stdin: str, limits: SandboxLimits, files: dict[str, str], host: _Host
) -> SandboxResult:
    token = secrets.token_hex(8)
    workdir = tempfile.TemporaryDirectory(prefix="sale-sandbox-")
    try:
        with tempfile.TemporaryDirectory(prefix="sale-sandbox-io-") as io_dir:
            _populate(Path(workdir.name), code, files, host.user)
            return _execute(workdir.name, io_dir, token, stdin, limits, host)
    finally:
        try:
            workdir.cleanup()
        except OSError:
            logger.exception("sandbox %s: could not remove %s", token, workdir.name)


def _populate(root: Path, code: str, files: dict[str, str], user: _User | None) -> None:
    # Everything is written while the directory is still root-only and handed over
    # afterwards, so no other `nobody` process can plant symlinks for us to follow.
    (root / _PROGRAM_NAME).write_text(code, encoding="utf-8")
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    if user is None:
        return
    for directory, subdirs, names in os.walk(root, topdown=False):
        for name in subdirs + names:
            os.chown(os.path.join(directory, name), user.uid, user.gid, follow_symlinks=False)
    os.chown(root, user.uid, user.gid)


def _execute(
    workdir: str, io_dir: str, token: str, stdin: str, limits: SandboxLimits, host: _Host
) -> SandboxResult:
    paths = {name: os.path.join(io_dir, name) for name in ("stdin", "stdout", "stderr")}
    Path(paths["stdin"]).write_text(stdin, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    env[MARKER_VARIABLE] = token  # lets the fallback find processes that left the session
    uid = host.user.uid if host.user else os.getuid()
    rlimits = _rlimits(limits, uid)
    program = [host.interpreter, "-I", "-c", _BOOTSTRAP]
    program += ["plain" if host.namespaces else "guard", _PROGRAM_NAME]
    seal = None
    if host.namespaces and host.seal is not None:
        root = os.path.join(io_dir, "root")
        os.mkdir(root, 0o700)
        # The sealed root starts the resolved interpreter: a virtualenv's link would need
        # its pyvenv.cfg, and the sandbox allows no packages beyond the standard library.
        program[0] = os.path.realpath(host.interpreter)
        pivot_root = _PIVOT_ROOT_SYSCALL[os.uname().machine]
        seal = {"root": root, "paths": host.seal, "pivot_root": pivot_root}
    with (
        open(paths["stdin"], "rb") as child_in,
        open(paths["stdout"], "wb") as child_out,
        open(paths["stderr"], "wb") as child_err,
    ):
        started = time.monotonic()
        status_r = -1
        if host.namespaces:
            config: dict[str, object] = {
                "argv": program,
                "env": env,
                "stdio": [paths["stdin"], paths["stdout"], paths["stderr"]],
                "workdir": workdir,
                "uid": host.user.uid if host.user else None,
                "gid": host.user.gid if host.user else None,
                "rlimits": rlimits,
                "scratch_dirs": _SCRATCH_DIRS,
                "tmpfs_options": f"size={limits.file_size_bytes},nr_inodes=4096,mode=1777",
                "seal": seal,
            }
            launcher = _launch(host, config)
            proc, status_r = launcher.proc, launcher.status_r
        else:
            try:
                proc = subprocess.Popen(
                    program,
                    stdin=child_in,
                    stdout=child_out,
                    stderr=child_err,
                    cwd=workdir,
                    env=env,
                    preexec_fn=_preexec(host, rlimits),
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise SandboxUnavailableError(f"cannot start the sandbox: {exc!r}") from exc
        exited = False
        try:
            exited = _exits_within(proc.pid, limits.wall_seconds)
        finally:  # also when the caller is interrupted (e.g. a Celery soft time limit)
            status, usage = _finish(proc.pid, host, token, uid, running=not exited)
            proc.returncode = os.waitstatus_to_exitcode(status)
            report = _read_pipe(status_r) if host.namespaces else ""
        duration = time.monotonic() - started
    timed_out = not exited
    program_status: int | None = status
    if host.namespaces:
        program_status = _parse_report(report, timed_out, status, paths["stderr"])
    exit_code, stopped = _classify(program_status, timed_out, usage, paths["stderr"], limits)
    if host.namespaces:
        _start_next_launcher(host)
    return SandboxResult(
        exit_code=exit_code,
        stdout=_read_head(paths["stdout"], limits.output_bytes),
        stderr=_read_head(paths["stderr"], limits.output_bytes),
        stopped=stopped,
        duration_s=duration,
        network_isolation="netns" if host.namespaces else "audit_hook",
        process_isolation="pid_namespace" if host.namespaces else "process_group",
        filesystem_isolation="sealed_root" if seal is not None else "none",
    )


def _launch(host: _Host, config: dict[str, object]) -> warm.Launcher:
    """The run's launcher with its configuration sent: the one this thread left waiting, or,
    when none waits (the first run, or it died meanwhile), one started now."""
    launcher = warm.take(host)
    for _ in range(2):
        if launcher is None:
            launcher = _start_launcher(host)
        config["status_fd"] = launcher.status_fd
        try:
            launcher.send(json.dumps(config).encode())
        except OSError:  # it is gone (a broken pipe): start another, once
            launcher.discard()
            launcher = None
            continue
        return launcher
    raise SandboxUnavailableError("the sandbox launcher exits before it reads its configuration")


def _start_launcher(host: _Host) -> warm.Launcher:
    # -S as well as -I: the launcher needs only the standard library, not the site module.
    argv = [host.interpreter, "-I", "-S", "-c", _LAUNCHER]
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    try:
        return warm.spawn(argv, _preexec(host, []), env, host)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailableError(f"cannot start the sandbox: {exc!r}") from exc


def _start_next_launcher(host: _Host) -> None:
    """Start the next run's launcher now, so that run does not wait for its interpreter."""
    try:
        warm.keep(_start_launcher(host))
    except SandboxUnavailableError as exc:
        logger.warning("sandbox: the next run's launcher did not start: %s", exc.reason)


def _preexec(host: _Host, rlimits: list[tuple[int, int, int]]) -> Callable[[], None]:
    # Runs between fork and exec, possibly in a copy of a threaded worker: everything is
    # bound here, in the parent, so the child makes only plain system calls (no imports,
    # no logging, no locks that another thread might have held at fork time).
    libc = _libc()
    flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET
    user = host.user

    def namespaces() -> None:
        os.setsid()
        if libc.unshare(flags) != 0:
            raise OSError(ctypes.get_errno(), "unshare")
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))  # the launcher cleans up on SIGTERM

    def fallback() -> None:
        os.setsid()
        for limit, soft, hard in rlimits:
            resource.setrlimit(limit, (soft, hard))
        if user is not None:
            os.setgroups([])
            os.setgid(user.gid)
            os.setuid(user.uid)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))  # after setuid, which clears it

    return namespaces if host.namespaces else fallback


def _exits_within(pid: int, timeout: float) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:  # kernel older than 5.3: poll without reaping
        deadline = time.monotonic() + timeout
        while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(math.ceil(timeout * 1000)))
    finally:
        os.close(pidfd)


def _finish(
    pid: int, host: _Host, token: str, uid: int, *, running: bool
) -> tuple[int, resource.struct_rusage]:
    """Stop the run if needed, kill what is left of it, and reap it."""
    if running:
        _stop(pid, host)
    # Until wait4 below, the exited leader is a zombie holding its pid, so the group id
    # cannot have been reused by an unrelated process.
    _signal_group(pid)
    _, status, usage = os.wait4(pid, 0)
    if not host.namespaces:  # the PID namespace died with its init; here we must look
        _kill_marked(token, uid)
    return status, usage


def _stop(pid: int, host: _Host) -> None:
    if host.namespaces:
        # The launcher kills the namespace's init and reaps it; killing both at once
        # could orphan the init to a PID 1 that never reaps.
        os.kill(pid, signal.SIGTERM)
        if _exits_within(pid, _GRACE_SECONDS):
            return
        logger.warning("sandbox launcher %d ignored SIGTERM; killing its group", pid)
    _signal_group(pid)
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def _signal_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
        os.killpg(pgid, signal.SIGKILL)


def _kill_marked(token: str, uid: int) -> None:
    """SIGKILL processes carrying this run's marker, e.g. daemons that left the session."""
    needle = f"{MARKER_VARIABLE}={token}".encode()
    for _ in range(100):
        found = False
        for entry in os.scandir("/proc"):
            try:
                if not entry.name.isdigit() or entry.stat().st_uid != uid:
                    continue
                if needle in Path(entry.path, "environ").read_bytes().split(b"\0"):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found = True
            except OSError:  # gone, or not ours to read
                continue
        if not found:
            return
        time.sleep(0.01)
    logger.error("sandbox %s: processes keep reappearing after SIGKILL", token)


def _read_pipe(fd: int) -> str:
    # Every writer has exited by now; non-blocking only guards against a stray holder.
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 4096):
            data += chunk
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    return data.decode(errors="replace")


def _parse_report(report: str, timed_out: bool, launcher_status: int, stderr: str) -> int | None:
    """The program's wait status from the launcher's report; None if it was killed."""
    lines = report.splitlines()
    errors = [line[2:] for line in lines if line.startswith("E ")]
    if errors:
        raise SandboxUnavailableError("; ".join(errors))
    statuses = [int(line[2:]) for line in lines if line.startswith("S ")]
    if statuses:
        return statuses[-1]
    if timed_out:
        return None
    detail = _read_head(stderr, 500)
    raise SandboxUnavailableError(f"launcher ended ({launcher_status}) silently: {detail}")


_STDERR_STOPS = (
    ("memory_limit", re.compile(r"^MemoryError\b", re.M)),
    ("file_size_limit", re.compile(r"\[Errno 27\] File too large")),
    (
        "process_limit",
        re.compile(r"^(BlockingIOError: \[Errno 11\]|RuntimeError: can't start)", re.M),
    ),
)


def _classify(
    status: int | None,
    timed_out: bool,
    usage: resource.struct_rusage,
    stderr_path: str,
    limits: SandboxLimits,
) -> tuple[int | None, str | None]:
    """Exit code and stop reason; Python-level errors are read from stderr's tail."""
    if status is None:
        return None, "timeout"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGXCPU:
            return None, "cpu_limit"
        if number == signal.SIGXFSZ:
            return None, "file_size_limit"
        if number == signal.SIGKILL:
            if timed_out:
                return None, "timeout"
            if usage.ru_utime + usage.ru_stime >= limits.cpu_seconds:
                return None, "cpu_limit"  # hard limit: the program ignored SIGXCPU
            if usage.ru_maxrss * 1024 >= 0.9 * limits.memory_bytes:
                return None, "memory_limit"  # the OOM killer
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return None, f"killed_by_signal:{name}"
    code = os.WEXITSTATUS(status)
    if code != 0:
        tail = _read_tail(stderr_path, _TAIL_BYTES)
        for reason, pattern in _STDERR_STOPS:
            if pattern.search(tail):
                return code, reason
    return code, None


def _read_head(path: str, limit: int) -> str:
    with open(path, "rb") as stream:
        head = stream.read(limit)
        size = os.fstat(stream.fileno()).st_size
    text = head.decode("utf-8", errors="replace")
    return text + f"…[truncated {size - limit} bytes]" if size > limit else text


def _read_tail(path: str, limit: int) -> str:
    with open(path, "rb") as stream:
        stream.seek(max(0, os.fstat(stream.fileno()).st_size - limit))
        return stream.read().decode("utf-8", errors="replace")
