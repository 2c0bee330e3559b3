"""Reading what a user hands in, the same way at every entrance.

A task spec (`sale submit`, `submit()`, `sale_signature()`), a batch (`sale run`), a pool file,
a weights file and a memory export (`sale memory import`) all pass through here before they
are parsed: at most ``limit`` bytes (:data:`LIMITS` names each entrance's), UTF-8 text, no NUL,
JSON without NaN/Infinity, JSON or TOML nested at most :data:`MAX_DEPTH` levels, and strings
that can be stored (no NUL, no lone surrogate). Every problem is an :class:`InputError` whose
one-line message names the source, the problem and the fix; each entrance re-raises it as its
own error (SpecError, PoolError, WeightsError, MemoryImportError), so nothing reaches a
database or a broker and no caller meets a UnicodeDecodeError or a RecursionError.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from sale.errors import InputError

__all__ = ["LIMITS", "MAX_DEPTH", "check_value", "decode", "parse_json", "parse_toml", "read"]

MiB = 1024**2
#: Largest accepted input per entrance, in bytes. A spec's prompt is at most 200,000
#: characters (up to 800 kB of UTF-8), so 4 MiB leaves room for its tests; a batch holds many
#: specs; a memory export grows with the memory (about 5 kB a record).
LIMITS = {
    "spec": 4 * MiB,
    "batch": 64 * MiB,
    "pool": 1 * MiB,
    "weights": 1 * MiB,
    "memory": 512 * MiB,
}
#: Deepest accepted nesting of objects and arrays (a memory record, the deepest input, uses 4).
MAX_DEPTH = 32


def read(path: Path, source: str, limit: int) -> str:
    """The text of the file at ``path``, checked by :func:`decode`."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except FileNotFoundError:
        raise InputError(source, "file not found; check the path") from None
    except IsADirectoryError:
        raise InputError(source, "is a directory; pass a file") from None
    except OSError as exc:
        raise InputError(source, f"cannot be read ({exc.strerror}); check the path") from None
    return decode(data, source, limit)


def decode(data: bytes | bytearray | str, source: str, limit: int) -> str:
    """``data`` as text: refuses more than ``limit`` bytes, non-UTF-8 bytes and NUL."""
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                source, f"has a lone surrogate at character {exc.start}; pass valid Unicode text"
            ) from None
    elif isinstance(data, bytes | bytearray):
        raw = bytes(data)
    else:
        raise InputError(source, f"must be text or bytes, got {type(data).__name__}")
    if len(raw) > limit:
        raise InputError(source, f"is larger than {limit:,} bytes; split it or shorten it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            source,
            f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
        ) from None
    if "\x00" in text:
        raise InputError(
            source, f"contains a NUL byte at offset {raw.index(0)}; remove it (text only)"
        )
    return text.removeprefix("\ufeff")  # a UTF-8 byte-order mark is harmless


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; write a finite number")


def parse_json(text: str, source: str) -> Any:
    """Parse JSON ``text`` (already decoded) and check the value with :func:`check_value`."""
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise InputError(source, f"not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno}); fix the syntax") from None  # fmt: skip
    except ValueError as exc:
        raise InputError(source, str(exc)) from None
    except RecursionError:
        raise InputError(source, _too_deep()) from None
    check_value(value, source)
    return value


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML ``text`` (already decoded) and check it with :func:`check_value`."""
    try:
        value = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(source, f"not valid TOML ({exc}); fix the syntax") from None
    except RecursionError:
        raise InputError(source, _too_deep()) from None
    check_value(value, source)
    return value


def _too_deep() -> str:
    return f"is nested deeper than {MAX_DEPTH} levels; flatten it"


def check_value(value: Any, source: str) -> None:
    """Refuse nesting deeper than :data:`MAX_DEPTH` and strings (keys included) that hold a
    NUL or a lone surrogate, which no database column stores."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item, source)
        elif isinstance(item, dict | list | tuple):
            if depth >= MAX_DEPTH:
                raise InputError(source, _too_deep())
            if isinstance(item, dict):
                for key in item:
                    if isinstance(key, str):
                        _check_string(key, source)
                stack.extend((child, depth + 1) for child in item.values())
            else:
                stack.extend((child, depth + 1) for child in item)


def _check_string(text: str, source: str) -> None:
    if "\x00" in text:
        raise InputError(source, "a string holds a NUL character (\\u0000); remove it")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(
            source, "a string holds a lone surrogate (e.g. \\ud800); pass valid Unicode"
        ) from None
