"""The coding agent's sandbox, run by hand."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from sale.scripts.cli.common import (
    err,
    fail,
)

sandbox_app = typer.Typer(no_args_is_help=True, help="The coding agent's sandbox.")


@sandbox_app.command("run")
def sandbox_run(file: Path) -> None:
    """Run FILE exactly as the coding agent's tool would; print output and why it stopped."""
    from sale.workers.sandbox.runner import run_python

    from sale.errors import InputError
    from sale.inputs import LIMITS, read

    try:
        code = read(file, str(file), LIMITS["spec"])
    except InputError as exc:
        fail(exc)
    result = run_python(code)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    err.print(
        f"exit code {result.exit_code}; stopped: {result.stopped or 'no'}; "
        f"{result.duration_s:.2f}s; network isolation: {result.network_isolation}; "
        f"file system isolation: {result.filesystem_isolation}"
    )
    raise typer.Exit(0 if result.ok else 1)
