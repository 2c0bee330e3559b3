"""The `sale` command line: run batches, submit and inspect jobs, run workers, Flower, models.

Every command takes ``--pool FILE``; with no broker configured, `sale run` and `sale up` start
the embedded runtime (bundled Redis, workers, local model servers) and stop it on exit. One
module per command group: ``jobs`` (submit, status, show, run), ``control`` (jobs, cancel),
``memory`` (fit, memory export/import), ``services`` (worker, flower, up), ``models``,
``sandbox`` and ``evals`` (eval); ``common`` holds what they share.
"""

from __future__ import annotations

from collections.abc import Callable

import typer
from sale.scripts.cli import control, evals, jobs, memory, models, sandbox, services


def build_app() -> typer.Typer:
    """The `sale` application with every command group registered."""
    app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])
    commands: list[Callable[..., None]] = [jobs.submit, jobs.status, jobs.show, jobs.run]
    commands += [control.jobs, control.cancel]
    commands += [memory.fit, services.worker, services.flower, services.up]
    for command in commands:
        app.command()(command)
    app.command("eval")(evals.eval_command)
    app.add_typer(models.models_app, name="models")
    app.add_typer(sandbox.sandbox_app, name="sandbox")
    app.add_typer(memory.memory_app, name="memory")
    return app


app = build_app()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
