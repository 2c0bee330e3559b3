"""The one place that calls models: litellm in, a small typed result out.

``call_model`` sends one chat completion through litellm and returns an
:class:`~sale.workers.llm.types.LLMResult` (text, tokens in/out, per-token top-k
log-probabilities, cost from the pool's prices, latency, and the native tool calls when
``tools=`` OpenAI function schemas were sent). Importing this module changes nothing:
:func:`configure_litellm` (called by the first model call, or explicitly by a worker at start)
puts the offline switches into the environment, imports litellm, turns its own retries off and
registers the scripted test-double provider (``scripted/<profile>``). litellm's typed
exceptions are mapped onto our two kinds of model error, so the retry layers above it (the
call's in-process retries in :mod:`sale.workers.gate`, then the stage task's in Celery) retry
exactly the transient ones.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from sale.broker.pool import Agent
from sale.broker.settings import apply_offline_environment, read_secret
from sale.workers.llm.scripted import scripted_reply
from sale.workers.llm.types import LLMResult, Message, ToolCall

from sale.errors import PermanentModelError, TransientModelError

log = logging.getLogger(__name__)


@functools.cache
def configure_litellm() -> ModuleType:
    """Import and configure litellm for this process, once; returns the module.

    The offline switches go into the environment first (litellm reads them at import). A
    provider without logprobs then just returns none (H is missing); one without tools answers
    in plain text, which the agent loop reads with its text parser.
    """
    apply_offline_environment()
    import litellm

    litellm.suppress_debug_info = True
    litellm.drop_params = True
    litellm.num_retries = 0
    litellm.custom_provider_map = [
        *[p for p in litellm.custom_provider_map if p.get("provider") != "scripted"],
        {"provider": "scripted", "custom_handler": _scripted_provider(litellm)},
    ]
    module: ModuleType = litellm
    return module


def transient_errors() -> tuple[type[BaseException], ...]:
    """The allow-list of litellm errors worth retrying. Everything else is permanent."""
    litellm = configure_litellm()
    return (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.ServiceUnavailableError,
        litellm.InternalServerError,
        litellm.BadGatewayError,
    )


def _scripted_provider(litellm: Any) -> Any:
    """The litellm adapter of :mod:`sale.workers.llm.scripted` (a test double)."""

    class _ScriptedProvider(litellm.CustomLLM):  # type: ignore[misc]
        """litellm adapter of :mod:`sale.workers.llm.scripted` (a test double)."""

        def completion(self, model: str, messages: list[Message], *args: Any, **kwargs: Any) -> Any:
            litellm_params = kwargs.get("litellm_params") or {}
            metadata = litellm_params.get("metadata") or {}
            stage = str(metadata.get("sale_stage", "other"))
            offered = (kwargs.get("optional_params") or {}).get("tools") or []
            names = [str(t.get("function", {}).get("name", "")) for t in offered]
            profile = model.split("/", 1)[-1]
            reply = scripted_reply(profile, stage, messages, tools=names or None)
            if reply.fault is not None:
                if reply.fault.transient:
                    raise litellm.ServiceUnavailableError(
                        message=reply.fault.message, llm_provider="scripted", model=model
                    )
                raise litellm.BadRequestError(
                    message=reply.fault.message, llm_provider="scripted", model=model
                )
            content = [
                {
                    "token": tok,
                    "logprob": alts[0][1],
                    "bytes": None,
                    "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alts],
                }
                for tok, alts in zip(reply.tokens, reply.top_logprobs, strict=True)
            ]
            message: dict[str, Any] = {"role": "assistant", "content": reply.text}
            if reply.tool_calls:
                message["tool_calls"] = [
                    {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}
                    for id_, name, args in reply.tool_calls
                ]
            return litellm.ModelResponse(
                model=model,
                choices=[
                    {
                        "index": 0,
                        "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                        "message": message,
                        "logprobs": {"content": content},
                    }
                ],
                usage={
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": len(reply.tokens),
                    "total_tokens": reply.prompt_tokens + len(reply.tokens),
                },
            )

    return _ScriptedProvider()


def _extract_logprobs(choice: Any) -> list[list[float]] | None:
    lp = getattr(choice, "logprobs", None)
    if lp is None and isinstance(choice, dict):
        lp = choice.get("logprobs")
    content = getattr(lp, "content", None) if lp is not None else None
    if content is None and isinstance(lp, dict):
        content = lp.get("content")
    if not content:
        return None
    positions: list[list[float]] = []
    for item in content:
        tops = getattr(item, "top_logprobs", None)
        if tops is None and isinstance(item, dict):
            tops = item.get("top_logprobs")
        values = [float(t["logprob"] if isinstance(t, dict) else t.logprob) for t in (tops or [])]
        if values:
            positions.append(values)
    return positions or None


def _extract_tool_calls(message: Any) -> tuple[ToolCall, ...]:
    calls = getattr(message, "tool_calls", None) or []
    found = []
    for i, call in enumerate(calls):
        function = getattr(call, "function", None)
        name = getattr(function, "name", None) or ""
        arguments = getattr(function, "arguments", None)
        if not isinstance(arguments, str):  # some providers hand back a parsed object
            arguments = json.dumps(arguments) if arguments is not None else ""
        found.append(ToolCall(getattr(call, "id", None) or f"call_{i}", name, arguments))
    return tuple(found)


def call_model(
    agent: Agent,
    messages: list[Message],
    *,
    stage: str,
    max_tokens: int,
    logprobs: bool = False,
    top_logprobs: int = 5,
    timeout: float = 300.0,
    tools: list[dict[str, Any]] | None = None,
) -> LLMResult:
    """One chat completion for ``agent``; raises Transient/PermanentModelError on failure.

    ``tools`` (OpenAI function schemas) asks for native tool calls; a provider that cannot
    make them answers in text (litellm drops the parameter), and the result then has none."""
    kwargs: dict[str, Any] = dict(agent.params)
    kwargs.update(
        model=agent.model,
        messages=messages,
        max_tokens=max_tokens,
        timeout=timeout,
        num_retries=0,
        max_retries=0,
        metadata={"sale_stage": stage, "sale_agent": agent.name},
    )
    if agent.api_base:
        kwargs["api_base"] = agent.api_base
    key: str | None = None
    if agent.api_key_env:
        key = read_secret(agent.api_key_env)
        if key is None and not agent.api_base:
            raise PermanentModelError(
                agent.name,
                agent.model,
                f"the environment variable {agent.api_key_env} holding its API key is not set; "
                f"export {agent.api_key_env}=... before starting the worker",
            )
        kwargs["api_key"] = key or "sk-local"
    elif agent.api_base:
        kwargs["api_key"] = "sk-local"  # OpenAI-compatible local servers ignore the key
    if logprobs:
        kwargs.update(logprobs=True, top_logprobs=top_logprobs)
    if tools:
        kwargs["tools"] = tools
    litellm = configure_litellm()
    started = time.perf_counter()
    try:
        response = litellm.completion(**kwargs)
    except transient_errors() as exc:
        detail = _redact(f"{type(exc).__name__}: {exc}", key)
        wait = retry_after(exc) if isinstance(exc, litellm.RateLimitError) else None
        raise TransientModelError(agent.name, agent.model, detail, retry_after=wait) from None
    except Exception as exc:  # boundary: every other provider failure is permanent
        detail = _redact(f"{type(exc).__name__}: {exc}", key)
        raise PermanentModelError(agent.name, agent.model, detail) from None
    latency = time.perf_counter() - started
    choice = response.choices[0]
    text = (choice.message.content or "") if choice.message else ""
    usage = getattr(response, "usage", None)
    tokens_in = int(getattr(usage, "prompt_tokens", 0) or 0)
    tokens_out = int(getattr(usage, "completion_tokens", 0) or 0)
    if usage is None or (tokens_in == 0 and tokens_out == 0):
        tokens_in = int(litellm.token_counter(model=agent.model, messages=messages))
        tokens_out = int(litellm.token_counter(model=agent.model, text=text))
    return LLMResult(
        text=text,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        top_logprobs=_extract_logprobs(choice) if logprobs else None,
        cost_usd=agent.call_cost(tokens_in, tokens_out),
        latency_s=latency,
        model=agent.model,
        tool_calls=_extract_tool_calls(choice.message) if choice.message else (),
    )


def retry_after(exc: BaseException) -> float | None:
    """The seconds a provider's 429 asks to wait (its Retry-After header, in seconds), or
    None; the header is read from the HTTP response litellm keeps on the exception."""
    response = getattr(exc, "response", None)
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(response, "headers", None),
    ):
        if not headers:
            continue
        try:
            value = headers.get("retry-after") or headers.get("Retry-After")
        except AttributeError:
            continue
        try:
            seconds = float(value) if value is not None else None
        except (TypeError, ValueError):  # an HTTP date: rare; the task's own backoff applies
            seconds = None
        if seconds is not None and seconds >= 0:
            return seconds
    return None


def _redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret``: a provider's error may echo the API key it was sent, and
    the message goes on to logs, the database and Celery results. (The chained exception
    is dropped for the same reason: its traceback would carry the request's arguments.)"""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "[redacted]")
    return text


def default_llm() -> Callable[..., LLMResult]:
    """The production model caller."""
    return call_model
