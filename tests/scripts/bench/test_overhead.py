"""The overhead benchmark's CPU accounting: the stack's processes and the children they reaped."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

from sale.scripts.bench.overhead import _stack_cpu_s

# Burns CPU in a child it reaps, then in itself, says so and waits to be let go.
BURN = """
import subprocess, sys
subprocess.run([sys.executable, "-c", "sum(i * i for i in range(2_000_000))"], check=True)
sum(i * i for i in range(2_000_000))
print("done", flush=True)
sys.stdin.read()
"""


def test_the_cpu_of_a_stack_process_and_of_the_children_it_reaped_is_counted() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", BURN], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        import psutil

        times = psutil.Process(child.pid).cpu_times()
        assert times.children_user + times.children_system > 0  # the reaped grandchild
        stack = SimpleNamespace(children=[("worker-x", child)])
        assert _stack_cpu_s(stack) >= times.user + times.system + times.children_user
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    assert _stack_cpu_s(SimpleNamespace(children=[("worker-x", child)])) == 0.0  # reaped: gone
