"""Task spec validation at the boundary: user input in, a TaskSpec or a SpecError out.

Text and bytes go through `sale.inputs` first (size, UTF-8, NUL, nesting), and so does a dict
(nesting, NUL and lone surrogates in its strings), so every spec refused is refused with a
SpecError before anything is stored or sent."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sale.models.schemas import Limits, TaskSpec

from sale.errors import InputError, SpecError
from sale.inputs import LIMITS, check_value, decode, parse_json


def validate_spec(data: Any, source: str = "task spec") -> TaskSpec:
    """Parse a task spec from a dict, a JSON string or bytes; raises SpecError listing problems."""
    try:
        if isinstance(data, str | bytes | bytearray):
            data = parse_json(decode(data, source, LIMITS["spec"]), source)
        if not isinstance(data, dict):
            raise SpecError([f"must be a JSON object, got {type(data).__name__}"], source)
        check_value(data, source)
    except InputError as exc:
        raise SpecError([exc.problem], source) from exc
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "spec"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                model = Limits if err["loc"][:1] == ("limits",) else TaskSpec
                msg = "unknown field (allowed: " + ", ".join(model.model_fields) + ")"
            problems.append(f"{loc}: {msg}")
        raise SpecError(problems, source) from exc
