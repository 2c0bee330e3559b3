"""Column types: a task embedding stored as packed float32 bytes.

A memory record's embedding (384 floats from all-MiniLM-L6-v2) was a JSON list, about 8 KB of
text that every retrieval parsed back into floats. :class:`Float32Vector` stores it as
little-endian float32 bytes in a binary column (1,536 bytes for 384 dimensions, ``BLOB`` on
SQLite, ``BYTEA`` on PostgreSQL) and gives Python a ``list[float]`` as before; an empty
embedding (``SALE_EMBEDDER=none``) is zero bytes. The memory index reads the raw bytes
(:func:`unpack`) without building lists. float32 keeps cosine similarities to ~1e-7, far inside
what retrieval can tell apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import LargeBinary
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Byte order and width of a stored embedding.
DTYPE = np.dtype("<f4")


def pack(vector: Sequence[float] | npt.NDArray[Any]) -> bytes:
    """A vector as stored: little-endian float32 bytes."""
    return np.asarray(vector, dtype=DTYPE).tobytes()


def unpack(blob: bytes | memoryview | None) -> npt.NDArray[np.float32]:
    """A stored vector as a float32 array (empty for no bytes)."""
    if not blob:
        return np.zeros(0, dtype=DTYPE)
    return np.frombuffer(bytes(blob), dtype=DTYPE)


class Float32Vector(TypeDecorator[list[float]]):
    """A ``list[float]`` in Python, packed float32 bytes in the database."""

    impl = LargeBinary
    cache_ok = True

    def process_bind_param(self, value: Sequence[float] | None, dialect: Dialect) -> bytes | None:
        return None if value is None else pack(value)

    def process_result_value(self, value: bytes | None, dialect: Dialect) -> list[float] | None:
        return None if value is None else [float(x) for x in unpack(value).tolist()]
