"""What every `sale` command shares: the consoles, the common options, settings with the
command line's overrides, signal handling, and the one way a command fails on bad input."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from sale.broker.settings import Settings, get_settings

console = Console(width=None if sys.stdout.isatty() else 150)
err = Console(stderr=True)

PoolOpt = Annotated[
    Path | None, typer.Option("--pool", help="agent pool TOML (default: the local pool)")
]


def settings_for(pool: Path | None, broker_url: str | None = None) -> Settings:
    """Settings with the CLI's overrides, exported so child processes see the same."""
    if pool is not None:
        if not pool.exists():
            err.print(f"[red]pool file {pool} not found[/red]")
            raise typer.Exit(2)
        os.environ["SALE_POOL_FILE"] = str(pool.resolve())
    if broker_url:
        os.environ["SALE_BROKER_URL"] = broker_url
    get_settings.cache_clear()
    try:
        return get_settings()
    except ValidationError as exc:
        problems = "; ".join(
            (f"SALE_{'_'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
            + e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        err.print(f"[red]error:[/red] invalid settings: {escape(problems)}")
        raise typer.Exit(2) from None


#: Signals received by the handler of :func:`interruptible`, kept because the exception it
#: raises can be lost: Python ignores (only prints) an exception raised while it runs an at-fork
#: or similar callback, e.g. when the signal lands during a subprocess's fork.
_SIGNALS: list[int] = []


def interruptible() -> None:
    """Make SIGTERM and SIGINT raise KeyboardInterrupt so the embedded runtime is stopped.

    (A process started in the background by a non-interactive shell ignores SIGINT, and the
    default SIGTERM would skip the clean-up and orphan the children.) Long loops also call
    :func:`stop_if_signalled`, so a signal whose exception was lost still stops them.
    """

    def _raise(signum: int, _frame: Any) -> None:
        _SIGNALS.append(signum)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
    signal.signal(signal.SIGINT, _raise)


def stop_if_signalled() -> None:
    """Raise KeyboardInterrupt if a signal arrived whose exception was lost (see _SIGNALS)."""
    if _SIGNALS:
        raise KeyboardInterrupt(f"signal {_SIGNALS[-1]}")


def fail(exc: BaseException) -> None:
    """Print ``exc`` as a user error and exit with status 2 (no traceback)."""
    # Escaped: messages name extras such as `sale-celery[embed]`, which rich reads as markup.
    err.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(2)


def context() -> Any:
    """The process's auction context (settings, pool, model caller, weights)."""
    from sale.workers.context import get_context

    return get_context()


def ensure_broker(settings: Settings) -> Settings:
    """Use the configured broker, else a running `sale up` stack; fail clearly otherwise."""
    if settings.broker_url:
        return settings
    from sale.scripts.local.runtime import running_broker

    url = running_broker(settings)
    if url is None:
        err.print(
            "[red]error:[/red] no broker: set SALE_BROKER_URL to your Redis, or start the "
            "embedded runtime with `sale up` in another terminal (or use `sale run`, which "
            "starts it for the batch)."
        )
        raise typer.Exit(2)
    return settings_for(None, url)


AgentOpt = Annotated[
    str | None,
    typer.Option("--agent", help="run on this pool agent directly: no auction, a generic plan"),
]


def check_agent(settings: Settings, agent: str | None) -> None:
    """Fail with the pool's unknown-agent error before anything is stored or started."""
    from sale.broker.pool import load_pool

    from sale.errors import SaleError

    if agent is None:
        return
    try:
        load_pool(settings.effective_pool_file).get(agent)
    except SaleError as exc:
        fail(exc)
