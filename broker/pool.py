"""The agent pool: which models bid, at what price, on which queue.

A pool file is TOML with one ``[[agents]]`` table per agent (optionally with ``rpm`` and
``tpm``, rate limits every worker shares) and an optional top-level ``daily_budget_usd``.
Loading validates everything up front and raises :class:`~sale.errors.PoolError` naming the
file, the agent and the field, so a typo never surfaces later as a confusing worker failure.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sale.errors import InputError, PoolError, UnknownAgentError
from sale.inputs import LIMITS, decode, parse_toml, read

CONTROL_QUEUE = "sale.control"
AGENT_QUEUE_PREFIX = "sale.agent."
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str,
    "model": str,
    "api_base": str,
    "api_key_env": str,
    "input_price": (int, float),
    "output_price": (int, float),
    "queue": str,
    "concurrency": int,
    "params": dict,
    "local_model": str,
    "action_format": str,
    "rpm": int,
    "tpm": int,
}
_REQUIRED = ("name", "model", "input_price", "output_price")


@dataclass(frozen=True)
class Agent:
    """One agent of the pool. Prices are US$ per million tokens."""

    name: str
    model: str
    input_price: float
    output_price: float
    queue: str
    api_base: str | None = None
    api_key_env: str | None = None
    concurrency: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    local_model: str | None = None
    action_format: Literal["text", "native"] = "text"
    rpm: int | None = None  # requests per minute, shared by every worker (broker/limits.py)
    tpm: int | None = None  # tokens (in + out) per minute, shared likewise

    def call_cost(self, tokens_in: int, tokens_out: int) -> float:
        """US$ of one call with these token counts, from the pool's prices."""
        return (tokens_in * self.input_price + tokens_out * self.output_price) / 1e6


@dataclass(frozen=True)
class Pool:
    """A validated pool, in file order."""

    path: str
    agents: tuple[Agent, ...]
    daily_budget_usd: float | None = None  # new jobs are refused once today's spend reaches it

    def get(self, name: str) -> Agent:
        """The agent called ``name``; raises UnknownAgentError naming the known ones."""
        for agent in self.agents:
            if agent.name == name:
                return agent
        raise UnknownAgentError(name, self.names, self.path)

    @property
    def names(self) -> list[str]:
        """Agent names in file order."""
        return [a.name for a in self.agents]

    @property
    def queues(self) -> list[str]:
        """Every queue the pool needs: the control queue and one per agent."""
        return [CONTROL_QUEUE, *sorted({a.queue for a in self.agents})]

    @property
    def largest(self) -> Agent:
        """The most expensive agent (by output price, then name)."""
        return max(self.agents, key=lambda a: (a.output_price, a.name))


def _check_agent(path: str, index: int, raw: Any) -> Agent:
    label = f"#{index + 1}"
    if not isinstance(raw, dict):
        raise PoolError(path, f"agent {label} must be a table, got {type(raw).__name__}")
    name = raw.get("name")
    who = name if isinstance(name, str) else label
    for key in raw:
        if key not in _FIELDS:
            allowed = ", ".join(sorted(_FIELDS))
            raise PoolError(path, f"unknown field (allowed: {allowed})", who, key)
    for key in _REQUIRED:
        if key not in raw:
            raise PoolError(path, "missing required field", who, key)
    for key, value in raw.items():
        expected = _FIELDS[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            raise PoolError(
                path,
                f"wrong type {type(value).__name__}, expected {_type_name(expected)}",
                who,
                key,
            )
    if not _NAME_RE.match(raw["name"]):
        raise PoolError(
            path, "must match [a-z0-9][a-z0-9._-]* (it becomes a queue name)", who, "name"
        )
    for key in ("input_price", "output_price"):
        if not math.isfinite(raw[key]) or raw[key] < 0:
            raise PoolError(path, "price must be >= 0 (US$ per million tokens)", who, key)
    concurrency = raw.get("concurrency", 1)
    if concurrency < 1:
        raise PoolError(path, "must be >= 1", who, "concurrency")
    for key in ("rpm", "tpm"):
        if key in raw and raw[key] < 1:
            raise PoolError(path, "must be >= 1 (per minute, shared by every worker)", who, key)
    action_format = raw.get("action_format", "text")
    if action_format not in ("text", "native"):
        raise PoolError(path, "must be 'text' or 'native'", who, "action_format")
    queue = raw.get("queue", AGENT_QUEUE_PREFIX + raw["name"])
    if queue == CONTROL_QUEUE:
        raise PoolError(path, f"{CONTROL_QUEUE} is reserved for orchestration", who, "queue")
    return Agent(
        name=raw["name"],
        model=raw["model"],
        input_price=float(raw["input_price"]),
        output_price=float(raw["output_price"]),
        queue=queue,
        api_base=raw.get("api_base"),
        api_key_env=raw.get("api_key_env"),
        concurrency=concurrency,
        params=dict(raw.get("params", {})),
        local_model=raw.get("local_model"),
        action_format=action_format,
        rpm=raw.get("rpm"),
        tpm=raw.get("tpm"),
    )


def _type_name(expected: type | tuple[type, ...]) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def parse_pool(text: str, path: str = "<pool>") -> Pool:
    """Validate pool TOML text (checked by `sale.inputs` first: size, NUL, nesting); raises
    PoolError on the first problem found."""
    try:
        data = parse_toml(decode(text, path, LIMITS["pool"]), path)
    except InputError as exc:
        raise PoolError(path, exc.problem) from exc
    extra = set(data) - {"agents", "daily_budget_usd"}
    if extra:
        raise PoolError(
            path, f"unknown top-level key(s) {sorted(extra)}; only [[agents]] and daily_budget_usd"
        )
    budget = data.get("daily_budget_usd")
    if budget is not None and (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not math.isfinite(budget)
        or budget <= 0
    ):
        raise PoolError(path, "daily_budget_usd must be a number > 0 (US$ per UTC day)")
    raw_agents = data.get("agents")
    if not raw_agents:
        raise PoolError(path, "the pool is empty: add at least one [[agents]] table")
    if not isinstance(raw_agents, list):
        raise PoolError(path, "`agents` must be an array of tables ([[agents]])")
    agents = [_check_agent(path, i, raw) for i, raw in enumerate(raw_agents)]
    seen: set[str] = set()
    for agent in agents:
        if agent.name in seen:
            raise PoolError(path, "duplicate agent name", agent.name, "name")
        seen.add(agent.name)
    return Pool(
        path=path,
        agents=tuple(agents),
        daily_budget_usd=None if budget is None else float(budget),
    )


def load_pool(path: Path) -> Pool:
    """Read and validate a pool file."""
    if not path.exists():
        raise PoolError(str(path), "file not found; pass --pool FILE or set SALE_POOL_FILE")
    try:
        text = read(path, str(path), LIMITS["pool"])
    except InputError as exc:
        raise PoolError(str(path), exc.problem) from exc
    return parse_pool(text, str(path))
