"""The model seam's plain types: what a model call takes and returns, with no litellm import.

Everything outside :mod:`sale.workers.llm.provider` depends on these alone and receives the
model caller as an :class:`LLMCall`, so tests inject the scripted double or any function of that
shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sale.broker.pool import Agent

Message = dict[str, Any]
"""A chat message: ``role`` and ``content``, and for native tool use an assistant message's
``tool_calls`` or a ``tool`` message's ``tool_call_id``."""


@dataclass(frozen=True)
class ToolCall:
    """One native tool call of a reply; ``arguments`` is the raw JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LLMResult:
    """One completed model call."""

    text: str
    tokens_in: int
    tokens_out: int
    top_logprobs: list[list[float]] | None  # per output position, the top-k log-probabilities
    cost_usd: float
    latency_s: float
    model: str
    tool_calls: tuple[ToolCall, ...] = ()


class LLMCall(Protocol):
    """The signature of :func:`call_model`; tests may inject any function of this shape."""

    def __call__(
        self,
        agent: Agent,
        messages: list[Message],
        *,
        stage: str,
        max_tokens: int,
        logprobs: bool = False,
        top_logprobs: int = 5,
        timeout: float = 300.0,
        tools: list[dict[str, Any]] | None = None,
    ) -> LLMResult: ...
