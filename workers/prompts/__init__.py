"""Prompt templates (package data), rendered strictly: a missing variable is an error.

Every prompt that concerns a job starts with the task text, so a model server that caches
prompt prefixes can reuse it across the job's bid, jury and refine calls.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from string import Template


@cache
def _template(name: str) -> Template:
    text = (resources.files("workers.prompts") / f"{name}.txt").read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: object) -> str:
    """Render template ``name``; raises KeyError naming a missing variable."""
    try:
        return _template(name).substitute({k: str(v) for k, v in values.items()}).strip()
    except KeyError as exc:
        raise KeyError(f"prompt template {name!r} needs variable {exc.args[0]!r}") from exc
