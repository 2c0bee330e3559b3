"""Prompt templates (package data), rendered strictly: a missing variable is an error.

Every user prompt that concerns a job starts with the task block (``task.txt``). Chat templates
put the system message first, though, so only with ``task_first_prompts`` does a job's every
call (bid, jury, refine, execution) start with the same bytes: :func:`task_first` moves the
task block to the head of the system message, and a model server that caches prompt prefixes
(llama.cpp) reuses it across the job's calls. The executing agent's plan section is
``plan_follow`` (execute the plan) or ``plan_guidance_<kind>`` (advice it may revise).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from string import Template
from typing import Literal


@cache
def _template(name: str) -> Template:
    text = (resources.files("sale.workers.prompts") / f"{name}.txt").read_text(encoding="utf-8")
    return Template(text)


def render(name: str, **values: object) -> str:
    """Render template ``name``; raises KeyError naming a missing variable."""
    try:
        return _template(name).substitute({k: str(v) for k, v in values.items()}).strip()
    except KeyError as exc:
        raise KeyError(f"prompt template {name!r} needs variable {exc.args[0]!r}") from exc


@dataclass(frozen=True)
class PromptStyle:
    """How a job's execution is laid out: its prompts (settings ``task_first_prompts`` and
    ``plan_mode``) and when its loop gives up on a model repeating itself (``repeat_stop``:
    replies in a row that only repeat an action already run; 0: never)."""

    task_first: bool = False
    plan_mode: Literal["follow", "guidance", "generic"] = "follow"
    repeat_stop: int = 0


DEFAULT_STYLE = PromptStyle()
"""Today's layout: the system message first, the plan to be followed."""


def task_block(kind: str, prompt: str) -> str:
    """The task block every job prompt starts with: ``TASK (<kind>):`` and the task text."""
    return render("task", kind=kind, prompt=prompt)


def task_first(system: str, user: str, task: str) -> tuple[str, str]:
    """(system, user) with the task block at the head of the system message.

    The block is taken off the head of ``user`` (every job template starts with it), so the
    task is sent once; a user message that does not start with it is left whole.
    """
    if user.startswith(task):
        user = user[len(task) :].lstrip()
    return f"{task}\n\n{system}", user


def plan_section(kind: str, plan: str, style: PromptStyle) -> str:
    """The plan part of the executing agent's system prompt: ``guidance``, else the plan to
    follow (with ``generic`` the caller passes the generic plan in place of the bid's)."""
    if style.plan_mode == "guidance":
        return render(f"plan_guidance_{kind}", plan=plan)
    return render("plan_follow", plan=plan)
