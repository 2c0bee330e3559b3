"""Sandbox launchers started ahead of their run, so a run does not wait for an interpreter.

A namespace-mode run (:mod:`sale.workers.sandbox.runner`) is carried out by a launcher: a root
Python process started in fresh mount, PID and network namespaces, which builds the sealed
root and starts the program. Starting that interpreter is most of a short run's time, and
nothing in it depends on the run: the launcher reads the run's configuration from a pipe only
once it is up. So after each run the runner starts the next run's launcher and leaves it
waiting here; the next run takes it and sends its configuration. A launcher serves one run and
exits with it, so every run still gets namespaces, a sealed root and a sandbox user of its own;
only the moment its interpreter started moves.

One launcher waits per thread and process: its parent-death signal follows the thread that
started it, so only that thread uses it, and a forked child starts its own. A launcher that
died while it waited (or whose owner asks for another host's mode) is reaped and replaced; one
left waiting when its process ends reads end-of-file on its pipe, or gets its parent-death
signal, and exits.
"""

from __future__ import annotations

import logging
import os
import subprocess
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Launcher:
    """A started launcher waiting for its configuration on ``config_w``; it reports on the
    status pipe whose read end is ``status_r`` (``status_fd`` is the write end's number in the
    launcher)."""

    proc: subprocess.Popen[bytes]
    config_w: int
    status_r: int
    status_fd: int
    key: Hashable
    owner: int = field(default_factory=os.getpid)

    def send(self, config: bytes) -> None:
        """Hand the launcher its run's configuration (then end-of-file). Raises OSError
        (BrokenPipeError) when the launcher is gone."""
        try:
            view = memoryview(config)
            while view:
                view = view[os.write(self.config_w, view) :]
        finally:
            os.close(self.config_w)
            self.config_w = -1

    def discard(self) -> None:
        """End an unused launcher: it reads end-of-file and exits; reap it."""
        for fd in (self.config_w, self.status_r):
            if fd >= 0:
                os.close(fd)
        self.config_w = self.status_r = -1
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def spawn(
    argv: list[str], preexec: Callable[[], None], env: dict[str, str], key: Hashable
) -> Launcher:
    """Start a launcher: ``argv`` gets the configuration pipe's number appended; its standard
    streams are /dev/null until its configuration names the run's. Raises OSError or
    SubprocessError when it cannot start."""
    config_r, config_w = os.pipe()
    status_r, status_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [*argv, str(config_r)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd="/",
            env=env,
            preexec_fn=preexec,
            pass_fds=(config_r, status_w),
        )
    except BaseException:
        os.close(config_w)
        os.close(status_r)
        raise
    finally:
        os.close(config_r)
        os.close(status_w)
    return Launcher(proc, config_w, status_r, status_w, key)


_waiting = threading.local()


def take(key: Hashable) -> Launcher | None:
    """This thread's waiting launcher for ``key`` (a host's mode), if one is alive."""
    launcher: Launcher | None = getattr(_waiting, "launcher", None)
    _waiting.launcher = None
    if launcher is None:
        return None
    if launcher.owner != os.getpid():
        return None  # inherited over a fork: its parent's, not ours to use or reap
    if launcher.key != key or launcher.proc.poll() is not None:
        launcher.discard()
        return None
    return launcher


def keep(launcher: Launcher) -> None:
    """Leave ``launcher`` waiting for this thread's next run (replacing any other)."""
    previous = take(launcher.key)
    if previous is not None:
        previous.discard()
    _waiting.launcher = launcher
