"""A real, throwaway PostgreSQL server for the auction-memory tests.

``postgres_url`` starts one for the session (:func:`sale.scripts.bench.postgres.throwaway_server`:
a cluster in a temporary directory on a free loopback port, run as the ``postgres`` OS user
under root, as in CI) with the ``sale_test`` database, and yields its SQLAlchemy URL; the
cluster is stopped and its directory removed at the end of the session. Without the binaries,
that user or psycopg the tests skip locally, naming the install command; under CI (``CI`` set)
they fail instead, so a green CI cannot hide a PostgreSQL test that never ran.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from sale.scripts.bench.postgres import Unavailable, throwaway_server

DATABASE = "sale_test"
INSTALL_DRIVER = '.venv/bin/pip install "psycopg[binary]>=3.2,<4"  (the `postgres` extra)'


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg://postgres@127.0.0.1:<port>/sale_test`` on a throwaway server."""
    if importlib.util.find_spec("psycopg") is None:
        _unavailable(f"psycopg is not installed; {INSTALL_DRIVER}")
    with ExitStack() as stack:
        try:
            url = stack.enter_context(throwaway_server(DATABASE))
        except Unavailable as exc:
            _unavailable(str(exc))
        yield url
