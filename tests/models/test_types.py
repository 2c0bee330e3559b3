"""The memory record's column types (sale.models.types): int8 embeddings with a float32 scale
(and the float16 ones before them), deflated text and JSON that give Python back what went in,
and a format that stays readable."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sale.models import types
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

DIALECTS = (sqlite.dialect(), postgresql.dialect())


@pytest.mark.parametrize("dialect", DIALECTS, ids=["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "value",
    [
        [],
        [{}],
        [{"bid_id": 1, "plan": "1. Restate — « ok » 😀\n" * 40, "jury": {"m": 3}, "score": None}],
        [{"attempt": 0, "cost_usd": 5.004e-05, "entropy": 0.3512832964074281}],
        {"nested": [1, [2.5, {"x": True}]], "nan": float("inf")},
    ],
)
def test_deflated_json_gives_back_the_value(value: object, dialect: Dialect) -> None:
    column = types.DeflatedJSON()
    stored = column.process_bind_param(value, dialect)
    assert isinstance(stored, bytes) and stored[0] == 1
    assert column.process_result_value(stored, dialect) == value
    assert column.process_bind_param(None, dialect) is None


def test_deflated_text_gives_back_the_text_and_is_smaller_when_it_repeats() -> None:
    column = types.DeflatedText()
    for text in ("", "p", "def add(a, b):\n    ∑ 😀\n" * 50):
        stored = column.process_bind_param(text, sqlite.dialect())
        assert stored is not None and column.process_result_value(stored, sqlite.dialect()) == text
    long = "Which city is the capital of the home country of the author? " * 10
    assert len(types.deflate(long.encode())) < len(long) / 5


def test_the_keys_every_record_repeats_cost_almost_nothing() -> None:
    attempts = [
        {"attempt": 0, "bid_id": 7, "agent": "small", "round": "first", "status": "done",
         "self_check": "passed", "verdict": "passed", "tokens": 417, "cost_usd": 5.004e-05}
    ]  # fmt: skip
    assert len(types.dump_json(attempts)) < len(json.dumps(attempts)) / 4


def test_a_value_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError, match="format 1"):
        types.inflate(b"\x02abc")
    with pytest.raises(ValueError, match="format 1"):
        types.inflate(b"")


def test_the_dictionary_of_format_1_never_changes() -> None:
    # Every stored value of format 1 was primed with these bytes: changing them makes every
    # record unreadable. A new dictionary is a new format byte.
    assert hashlib.sha256(types.ZDICT).hexdigest()[:16] == "049ecb28dca3c629"


def test_float16_vectors_round_to_float16_and_read_back_as_float32() -> None:
    rng = np.random.default_rng(0)
    unit = rng.standard_normal(384)
    unit /= np.linalg.norm(unit)
    column = types.Float16Vector()
    stored = column.process_bind_param(unit.tolist(), sqlite.dialect())
    assert stored is not None and len(stored) == 768
    back = np.asarray(column.process_result_value(stored, sqlite.dialect()))
    assert np.abs(back - unit).max() <= np.abs(unit).max() * 2**-11
    assert abs(float(back @ unit) / np.linalg.norm(back) - 1.0) < 1e-6
    assert types.unpack(stored).dtype == np.float32 and len(types.unpack(b"")) == 0
    assert column.process_bind_param([], sqlite.dialect()) == b""
    with pytest.raises(ValueError, match="float16"):
        types.pack([1e6])
    with pytest.raises(ValueError, match="float16"):
        types.pack([float("nan")])


def test_int8_vectors_keep_a_scale_and_one_byte_per_component() -> None:
    rng = np.random.default_rng(0)
    unit = rng.standard_normal(384)
    unit /= np.linalg.norm(unit)
    column = types.Int8Vector()
    stored = column.process_bind_param(unit.tolist(), sqlite.dialect())
    assert stored is not None and len(stored) == 4 + 384 and types.int8_dim(stored) == 384
    scale = float(np.frombuffer(stored[:4], dtype="<f4")[0])
    assert scale == pytest.approx(np.abs(unit).max() / 127)
    back = np.asarray(column.process_result_value(stored, sqlite.dialect()))
    assert np.abs(back - unit).max() <= scale / 2 * (1 + 1e-6)
    assert abs(float(back @ unit) / np.linalg.norm(back) - 1.0) < 1e-4
    # Magnitude kept: the largest component is exactly 127 steps.
    assert np.abs(back).max() == pytest.approx(np.abs(unit).max(), rel=1e-6)
    big = [3e5, -1.5e5, 0.0]
    assert types.unpack_int8(types.pack_int8(big)).tolist() == pytest.approx(big, rel=1e-2)
    rows = types.unpack_int8_rows(stored + types.pack_int8(-unit), 384)
    assert rows.dtype == np.float32 and rows.shape == (2, 384) and (rows[1] == -rows[0]).all()
    assert column.process_bind_param([], sqlite.dialect()) == b""
    assert column.process_result_value(b"", sqlite.dialect()) == []
    assert types.unpack_int8(types.pack_int8([0.0, 0.0])).tolist() == [0.0, 0.0]
    for bad in (float("nan"), float("inf"), 1e39):
        with pytest.raises(ValueError, match="float32"):
            types.pack_int8([0.5, bad])
