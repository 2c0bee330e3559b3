"""Task spec validation at the boundary: user input in, a TaskSpec or a SpecError out."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from sale.models.schemas import Limits, TaskSpec

from sale.errors import SpecError


def validate_spec(data: Any, source: str = "task spec") -> TaskSpec:
    """Parse a task spec from a dict, a JSON string or bytes; raises SpecError listing problems."""
    if isinstance(data, (str, bytes)):
        try:
            data = json.loads(data)
        except json.JSONDecodeError as exc:
            raise SpecError([f"not valid JSON: {exc}"], source) from exc
    if not isinstance(data, dict):
        raise SpecError([f"must be a JSON object, got {type(data).__name__}"], source)
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
