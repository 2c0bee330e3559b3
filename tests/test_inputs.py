"""Every entrance refuses bad input the same way, driven by generated bad inputs (hypothesis):
random bytes, NULs, deep nesting, invalid JSON/TOML and JSON values of the wrong types reach
`submit()`, `sale_signature()`, `validate_spec`, pool and weights files, `import_memory` and
the CLI (`sale submit`, `sale run`, `sale memory import`, `--pool`, `SALE_WEIGHTS_FILE`). The
Python API raises a SaleError subclass with a one-line message; the CLI exits 2 without a
traceback; afterwards the database holds no job and no record and the broker no message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sale.broker.pool import load_pool, parse_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.tables import Job, MemoryRecord
from sale.workers.auction.weights import load_weights, parse_weights
from sale.workers.canvas import sale_signature, submit
from sale.workers.context import AuctionContext
from sale.workers.memory.transfer import FIELDS, import_memory
from sale.workers.spec import validate_spec
from sqlmodel import select

from sale.errors import MemoryImportError, PoolError, SaleError, SpecError, WeightsError
from sale.inputs import LIMITS, MAX_DEPTH
from tests.conftest import ROOT, SCRIPTED_POOL

FAST = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
BROKER_DB = 9  # a redis database of its own, so "nothing was sent" is a plain DBSIZE


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _deep(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "list" else '{"a":' * depth + "1" + "}" * depth


def _invalid_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return True
    return False


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
#: Bytes no entrance may accept: not UTF-8, NUL bytes, nesting past MAX_DEPTH (also far past
#: Python's recursion limit), and text that is not JSON.
bad_bytes = st.one_of(
    st.binary(min_size=1, max_size=64).filter(_not_utf8),
    st.text(max_size=16).map(lambda t: f'{{"kind": "coding", "prompt": "{t}\x00"}}'.encode()),
    st.builds(_deep, st.integers(MAX_DEPTH + 1, 20_000), st.sampled_from(["list", "dict"])).map(
        str.encode
    ),
    st.text(min_size=1, max_size=24).filter(_invalid_json).map(str.encode),
)
#: Specs of the right shape with a value of the wrong type, or a NUL/lone surrogate inside.
wrong_specs = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict)),
    st.fixed_dictionaries(
        {
            "kind": st.sampled_from(["coding", "search"]),
            "prompt": json_values.filter(lambda v: not isinstance(v, str)),
        }
    ),
    st.fixed_dictionaries(
        {
            "kind": json_values.filter(lambda v: v not in ("coding", "search")),
            "prompt": st.just("Add two numbers."),
        }
    ),
    st.text(max_size=8).map(lambda t: {"kind": "search", "prompt": f"{t}\x00?"}),
    st.just({"kind": "search", "prompt": "lone \ud800 surrogate"}),
    st.integers(MAX_DEPTH + 1, 200).map(
        lambda d: {"kind": "search", "prompt": "x", "limits": json.loads(_deep(d, "dict"))}
    ),
)


def one_line_sale_error(call: Callable[[], Any], expected: type[SaleError]) -> SaleError:
    with pytest.raises(SaleError) as info:
        call()
    assert isinstance(info.value, expected), repr(info.value)
    message = str(info.value)
    assert message and "\n" not in message, message
    return info.value


# --- the Python API -------------------------------------------------------------------------


@pytest.fixture
def quiet_stack(redis_url: str, tmp_path: Path) -> Iterator[tuple[AuctionContext, redis.Redis]]:
    """A context whose database and broker must stay empty: a fresh SQLite file and a redis
    database of its own behind the current Celery app."""
    from celery._state import get_current_app
    from sale.broker.app import create_app
    from sale.workers.memory.embed import minilm_embed

    broker = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    config = Settings(
        broker_url=broker,
        database_url=f"sqlite:///{tmp_path / 'quiet.db'}",
        pool_file=SCRIPTED_POOL,
        state_dir=tmp_path,
    )
    pool = load_pool(SCRIPTED_POOL)
    init_db(config.effective_database_url)
    previous = get_current_app()
    create_app(config, pool).set_current()
    client = redis.Redis.from_url(broker)
    client.flushdb()
    ctx = AuctionContext(
        settings=config, pool=pool, weights=load_weights(None), llm=None, embed=minilm_embed
    )
    try:
        yield ctx, client
    finally:
        previous.set_current()


def assert_nothing_stored_or_sent(ctx: AuctionContext, client: redis.Redis) -> None:
    with session_scope(ctx.settings.effective_database_url) as s:
        assert s.exec(select(Job)).all() == []
        assert s.exec(select(MemoryRecord)).all() == []
    assert client.dbsize() == 0


@FAST
@given(
    data=st.one_of(
        bad_bytes, bad_bytes.map(lambda b: b.decode("utf-8", "surrogateescape")), wrong_specs
    )
)
def test_submit_and_sale_signature_refuse_bad_specs_before_storing_or_sending(
    quiet_stack: tuple[AuctionContext, redis.Redis], data: Any
) -> None:
    ctx, client = quiet_stack
    one_line_sale_error(lambda: validate_spec(data), SpecError)
    one_line_sale_error(lambda: submit(data, ctx), SpecError)
    one_line_sale_error(lambda: sale_signature(data), SpecError)
    assert_nothing_stored_or_sent(ctx, client)


def test_an_oversized_spec_is_refused_with_the_limit_named() -> None:
    big = json.dumps({"kind": "search", "prompt": "x" * (LIMITS["spec"] + 1)})
    error = one_line_sale_error(lambda: validate_spec(big), SpecError)
    assert f"larger than {LIMITS['spec']:,} bytes" in str(error)


POOL_AGENT = '[[agents]]\nname = "a"\nmodel = "scripted/x"\ninput_price = 0\noutput_price = 1\n'
wrong_pools = st.one_of(
    json_values.map(lambda v: "agents = " + json.dumps(v)).filter(lambda t: "[{" not in t),
    json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int) or v < 1).map(
        lambda v: POOL_AGENT + f"concurrency = {json.dumps(v)}\n"
    ),
    st.builds(_deep, st.integers(MAX_DEPTH + 1, 5_000), st.just("list")).map(
        lambda d: POOL_AGENT + f"params = {{x = {d}}}\n"
    ),
    st.sampled_from(["nan", "inf", "-1"]).map(
        lambda p: POOL_AGENT.replace("output_price = 1", f"output_price = {p}")
    ),
)


@FAST
@given(raw=st.one_of(bad_bytes, wrong_pools.map(str.encode)))
def test_pool_files_refuse_bad_input(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "pool.toml"
    path.write_bytes(raw)
    error = one_line_sale_error(lambda: load_pool(path), PoolError)
    assert str(path) in str(error)
    if not _not_utf8(raw):
        one_line_sale_error(lambda: parse_pool(raw.decode()), PoolError)


wrong_weights = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict)),
    json_values.map(lambda v: {"version": "v", "w_c": v, "w_h": 0.1}).filter(
        lambda d: isinstance(d["w_c"], bool) or not isinstance(d["w_c"], int | float)
    ),
    json_values.map(lambda v: {"version": "v", "w_c": 1, "w_h": 1, "jurors": v}).filter(
        lambda d: (
            d["jurors"] not in ({},)
            and not (
                isinstance(d["jurors"], dict)
                and all(
                    isinstance(w, int | float) and not isinstance(w, bool)
                    for w in d["jurors"].values()
                )
            )
        )
    ),
    st.just({"version": "v", "w_c": 1e400, "w_h": 0}),
)


@FAST
@given(
    raw=st.one_of(
        bad_bytes,
        wrong_weights.map(lambda v: json.dumps(v).encode()),
        st.just(b'{"version": "v", "w_c": NaN, "w_h": 0}'),
    )
)
def test_weights_files_refuse_bad_input(tmp_path: Path, raw: bytes) -> None:
    path = tmp_path / "weights.json"
    path.write_bytes(raw)
    one_line_sale_error(lambda: load_weights(path), WeightsError)
    if not _not_utf8(raw):
        one_line_sale_error(lambda: parse_weights(raw.decode()), WeightsError)


GOOD_RECORD = {
    "job_id": "j1",
    "kind": "coding",
    "task_text": "add",
    "bids": [],
    "attempts": [],
    "award_agent": "a",
    "award_round": "first",
    "provisional_agent": "a",
    "verdict": "passed",
    "total_tokens": 3,
    "total_cost_usd": 0.5,
}
_not_text = json_values.filter(lambda v: not isinstance(v, str))
_WRONG_FIELD = {
    **{
        name: _not_text
        for name in (
            "job_id",
            "task_text",
            "award_agent",
            "award_round",
            "provisional_agent",
            "verdict",
        )
    },
    "kind": json_values.filter(lambda v: v not in ("coding", "search")),
    "bids": json_values.filter(lambda v: not isinstance(v, list))
    | st.lists(json_values.filter(lambda v: not isinstance(v, dict)), min_size=1, max_size=3),
    "total_tokens": json_values.filter(lambda v: isinstance(v, bool) or not isinstance(v, int))
    | st.integers(max_value=-1),
    "total_cost_usd": json_values.filter(
        lambda v: isinstance(v, bool) or not isinstance(v, int | float)
    )
    | st.floats(max_value=-0.001),
}
_WRONG_FIELD["attempts"] = _WRONG_FIELD["bids"]
assert set(_WRONG_FIELD) == set(FIELDS)
wrong_records = st.one_of(
    json_values.filter(lambda v: not isinstance(v, dict)),
    st.sampled_from(FIELDS).flatmap(
        lambda name: _WRONG_FIELD[name].map(lambda value: {**GOOD_RECORD, name: value})
    ),
    st.sampled_from(FIELDS).map(lambda name: {k: v for k, v in GOOD_RECORD.items() if k != name}),
    st.integers(MAX_DEPTH, 200).map(
        lambda d: {**GOOD_RECORD, "bids": [json.loads(_deep(d, "dict"))]}
    ),
    st.just({**GOOD_RECORD, "task_text": "a\x00b"}),
)


def _never_embed(texts: list[str]) -> list[list[float]]:
    raise AssertionError(f"a refused import must not embed {texts!r}")


@FAST
@given(items=st.lists(wrong_records, min_size=1, max_size=3))
def test_import_memory_refuses_bad_records_and_writes_nothing(
    quiet_stack: tuple[AuctionContext, redis.Redis], items: list[Any]
) -> None:
    ctx, client = quiet_stack
    db = ctx.settings.effective_database_url
    one_line_sale_error(
        lambda: import_memory(db, [GOOD_RECORD, *items], _never_embed), MemoryImportError
    )
    one_line_sale_error(
        lambda: import_memory(db, [*items, GOOD_RECORD], _never_embed, keep_ids=True),
        MemoryImportError,
    )
    assert_nothing_stored_or_sent(ctx, client)


def test_import_memory_refuses_a_job_twice_in_one_file(
    quiet_stack: tuple[AuctionContext, redis.Redis],
) -> None:
    ctx, client = quiet_stack
    db = ctx.settings.effective_database_url
    error = one_line_sale_error(
        lambda: import_memory(db, [GOOD_RECORD, GOOD_RECORD], _never_embed), MemoryImportError
    )
    assert "appears twice" in str(error)
    assert_nothing_stored_or_sent(ctx, client)


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def cli_env(redis_url: str, tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, redis.Redis]]:
    broker = redis_url.rsplit("/", 1)[0] + f"/{BROKER_DB}"
    client = redis.Redis.from_url(broker)
    client.flushdb()
    database = tmp_path / "cli.db"
    env = {
        "SALE_DATABASE_URL": f"sqlite:///{database}",
        "SALE_BROKER_URL": broker,
        "SALE_POOL_FILE": str(SCRIPTED_POOL),
        "SALE_STATE_DIR": str(tmp_path),
    }
    yield env, database, client
    from sale.broker.settings import get_settings
    from sale.workers.context import set_context

    get_settings.cache_clear()
    set_context(None)


def assert_refused(result: Any) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output
    assert "error" in result.output


def assert_cli_stored_nothing(database: Path, client: redis.Redis) -> None:
    if database.exists():
        with session_scope(f"sqlite:///{database}") as s:
            assert s.exec(select(Job)).all() == []
            assert s.exec(select(MemoryRecord)).all() == []
    assert client.dbsize() == 0


@FAST
@given(
    raw=st.one_of(
        bad_bytes, wrong_specs.map(lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
    ),
    command=st.sampled_from([["submit"], ["run"], ["memory", "import"]]),
)
def test_the_cli_refuses_bad_files_with_exit_code_2(
    cli_env: tuple[dict[str, str], Path, redis.Redis],
    tmp_path: Path,
    raw: bytes,
    command: list[str],
) -> None:
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    env, database, client = cli_env
    path = tmp_path / f"input-{uuid.uuid4().hex}"
    path.write_bytes(raw)
    assert_refused(CliRunner().invoke(app, [*command, str(path)], env=env))
    assert_cli_stored_nothing(database, client)


@FAST
@given(raw=st.one_of(bad_bytes, wrong_pools.map(str.encode)))
def test_the_cli_refuses_a_bad_pool_file_with_exit_code_2(
    cli_env: tuple[dict[str, str], Path, redis.Redis], tmp_path: Path, raw: bytes
) -> None:
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    env, database, client = cli_env
    pool = tmp_path / "pool.toml"
    pool.write_bytes(raw)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"kind": "search", "prompt": "Capital of France?"}))
    assert_refused(CliRunner().invoke(app, ["submit", str(spec), "--pool", str(pool)], env=env))
    assert_cli_stored_nothing(database, client)


@FAST
@given(raw=st.one_of(bad_bytes, wrong_weights.map(lambda v: json.dumps(v).encode())))
def test_the_cli_refuses_a_bad_weights_file_with_exit_code_2(
    cli_env: tuple[dict[str, str], Path, redis.Redis], tmp_path: Path, raw: bytes
) -> None:
    from sale.scripts.cli import app
    from typer.testing import CliRunner

    env, database, client = cli_env
    weights = tmp_path / "weights.json"
    weights.write_bytes(raw)
    result = CliRunner().invoke(
        app, ["status", "nojob"], env={**env, "SALE_WEIGHTS_FILE": str(weights)}
    )
    assert_refused(result)
    assert "weights.json" in result.output.replace("\n", "")
    assert_cli_stored_nothing(database, client)


@pytest.mark.parametrize("command", [["submit"], ["run"], ["memory", "import"], ["sandbox", "run"]])
def test_random_bytes_are_refused_by_the_installed_command(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(256) + b"\xff\xfe")
    env = {
        **os.environ,
        "SALE_POOL_FILE": str(SCRIPTED_POOL),
        "SALE_STATE_DIR": str(tmp_path),
        "SALE_DATABASE_URL": f"sqlite:///{tmp_path / 'sub.db'}",
    }
    done = subprocess.run(
        [sys.executable, "-m", "sale.scripts.cli", *command, str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "not UTF-8 text" in " ".join(done.stderr.split())
