"""Column types of a memory record: an int8 embedding, and text and JSON stored deflated.

A memory record is written once and read by id, so its bytes on disk are most of its cost.
:class:`Int8Vector` stores the task embedding (384 floats from all-MiniLM-L6-v2) in a binary column
(``BLOB`` on SQLite, ``BYTEA`` on PostgreSQL) as one little-endian float32 scale (the largest
magnitude over 127) and one int8 per component, 388 bytes for 384 dimensions, and gives Python a
``list[float]``; the memory index reads the raw bytes (:func:`unpack_int8_rows`, float32 for the
search). A component moves by at most half a step (~6e-4 for a unit vector of 384 dimensions), a
cosine similarity by ~4e-4 (its standard deviation): more than the gap between some neighbours, so
retrieval exchanges a few of them for their next ones (docs/benchmarks/retrieval.md measures
recall@8 against exact float32 search). :class:`Float16Vector` (768 bytes, :func:`pack`) is the
format before, which migrations 0007 and 0009 read and write. An empty embedding
(``SALE_EMBEDDER=none``) is zero bytes. :class:`DeflatedText` and :class:`DeflatedJSON` keep a
``str`` and a JSON value (lists, dicts) as they were in Python and store them as one format byte and
a raw deflate stream primed with :data:`ZDICT` (the JSON keys and values every record repeats), a
third to a half of their size for the bids' plans, attempts and task text. No query filters on these
columns: they are read whole, by id. The format byte lets a later encoding sit beside this one; the
dictionary of format 1 never changes.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Byte order and width of a stored embedding.
DTYPE = np.dtype("<f2")
#: The largest magnitude float16 holds (beyond it a value would become infinite).
F16_MAX = 65504.0
#: An int8 embedding: its components, after one little-endian float32 scale per vector.
INT8 = np.dtype("i1")
SCALE = np.dtype("<f4")
F32_MAX = float(np.finfo(np.float32).max)

#: The preset dictionary of format 1: what a memory record's JSON repeats, as
#: workers/stages/updating.py writes it (the most frequent last, nearest the data).
ZDICT = (
    b'"round":"direct""round":"verified""round":"refined""status":"failed""error"null,'
    b'{"attempt":1,"bid_id":1,"agent":"","round":"first","status":"done",'
    b'"self_check":"failed","verdict":"failed","tokens":0,"cost_usd":0.0}'
    b'[{"attempt":0,"bid_id":1,"agent":"","round":"first","status":"done",'
    b'"self_check":"passed","verdict":"passed","tokens":0,"cost_usd":0.0}]'
    b'{"bid_id":1,"agent":"","round":"first","status":"ok","plan":"","tokens":0,'
    b'"entropy":0.0,"jury":{},"gamma":{},"cost":0.0,"value":0.0,"score":-0.0,'
    b'"auction_label":"lose","verified_label":"lose"},'
    b'[{"bid_id":1,"agent":"","round":"first","status":"ok","plan":"1. ","tokens":0,'
    b'"entropy":0.0,"jury":{},"gamma":{},"cost":0.0,"value":0.0,"score":0.0,'
    b'"auction_label":"win","verified_label":"win"},'
)
_FORMAT = 1
_WBITS = -15  # a raw deflate stream: no zlib header or checksum (the database keeps the bytes)


def pack(vector: Sequence[float] | npt.NDArray[Any]) -> bytes:
    """A vector as stored: little-endian float16 bytes (ValueError beyond float16's range)."""
    array = np.asarray(vector, dtype=np.float64)
    if array.size and not np.abs(array).max() <= F16_MAX:
        raise ValueError(f"an embedding value beyond float16's range (±{F16_MAX:g})")
    return array.astype(DTYPE).tobytes()


def unpack(blob: bytes | memoryview | None) -> npt.NDArray[np.float32]:
    """A stored vector as a float32 array (empty for no bytes)."""
    if not blob:
        return np.zeros(0, dtype=np.float32)
    return np.frombuffer(bytes(blob), dtype=DTYPE).astype(np.float32)


def pack_int8(vector: Sequence[float] | npt.NDArray[Any]) -> bytes:
    """A vector as :class:`Int8Vector` stores it: its scale (the largest magnitude over 127) as
    little-endian float32, then each component over the scale rounded to an int8 (ValueError
    for a value that is not finite or beyond float32's range). No bytes for no components."""
    array = np.asarray(vector, dtype=np.float64)
    if not array.size:
        return b""
    top = float(np.abs(array).max())
    if not top <= F32_MAX:
        raise ValueError(f"an embedding value that is not finite or beyond float32 (±{F32_MAX:g})")
    scale = np.float32(top / 127.0)
    steps = np.rint(array / float(scale)) if scale else np.zeros_like(array)
    return scale.astype(SCALE).tobytes() + np.clip(steps, -127, 127).astype(INT8).tobytes()


def int8_dim(blob: bytes | memoryview | None) -> int:
    """How many components the :func:`pack_int8` bytes ``blob`` hold (0 for none)."""
    return max(0, len(blob or b"") - SCALE.itemsize)


def unpack_int8(blob: bytes | memoryview | None) -> npt.NDArray[np.float32]:
    """The :func:`pack_int8` bytes as a float32 vector (empty for no bytes)."""
    dim = int8_dim(blob)
    if not dim:
        return np.zeros(0, dtype=np.float32)
    row: npt.NDArray[np.float32] = unpack_int8_rows(bytes(blob or b""), dim)[0]
    return row


def unpack_int8_rows(blobs: bytes, dim: int) -> npt.NDArray[np.float32]:
    """The :func:`pack_int8` bytes of vectors of ``dim`` components, concatenated, as one
    float32 row per vector."""
    raw = np.frombuffer(blobs, dtype=np.uint8).reshape(-1, SCALE.itemsize + dim)
    scales = raw[:, : SCALE.itemsize].copy().view(SCALE).astype(np.float32)
    values: npt.NDArray[np.float32] = raw[:, SCALE.itemsize :].view(INT8).astype(np.float32)
    return values * scales


def deflate(data: bytes) -> bytes:
    """``data`` as stored: the format byte, then raw deflate primed with :data:`ZDICT`."""
    packer = zlib.compressobj(9, zlib.DEFLATED, _WBITS, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT)
    return bytes([_FORMAT]) + packer.compress(data) + packer.flush()


def inflate(blob: bytes | memoryview) -> bytes:
    """The bytes :func:`deflate` stored."""
    raw = bytes(blob)
    if not raw or raw[0] != _FORMAT:
        raise ValueError(f"not a deflated value of format {_FORMAT}")
    unpacker = zlib.decompressobj(_WBITS, ZDICT)
    return unpacker.decompress(raw[1:]) + unpacker.flush()


def dump_json(value: Any) -> bytes:
    """A JSON value as stored (compact, UTF-8, deflated)."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return deflate(text.encode())


def load_json(blob: bytes | memoryview) -> Any:
    """The JSON value :func:`dump_json` stored."""
    return json.loads(inflate(blob))


class Float16Vector(TypeDecorator[list[float]]):
    """A ``list[float]`` in Python, packed float16 bytes in the database."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[float] | None:
        return None if value is None else [float(x) for x in unpack(value).tolist()]


class Int8Vector(TypeDecorator[list[float]]):
    """A ``list[float]`` in Python, a float32 scale and int8 components in the database."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack_int8(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[float] | None:
        return None if value is None else [float(x) for x in unpack_int8(value).tolist()]


class DeflatedText(TypeDecorator[str]):
    """A ``str`` in Python, deflated UTF-8 bytes in the database."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> bytes | None:
        return None if value is None else deflate(value.encode())

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> str | None:
        return None if value is None else inflate(value).decode()


class DeflatedJSON(TypeDecorator[Any]):
    """A JSON value (lists, dicts, numbers, strings) in Python, deflated JSON in the database
    (Python's ``None`` is SQL NULL)."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> bytes | None:
        return None if value is None else dump_json(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> Any:
        return None if value is None else load_json(value)
