"""The gate every model call of a job passes: cancellation, the job's budget, shared rate limits.

The stages never call the context's model caller bare: :func:`model_caller` wraps it for one
stage of one job (bids, jury, refinement and every step of an execution), and before each call

1. a cancel requested for the job (:mod:`sale.workers.cancel`), or a job already failed or
   cancelled, refuses the call with JobCancelledError / JobStoppedError;
2. the job's spend so far (every call in its ledger) plus what the next call can cost at most
   (its prompt at ~4 characters a token and its whole ``max_tokens`` of output, at the agent's
   prices) must stay within the job's ``max_cost_usd``; otherwise the job fails with that
   reason and the call is refused (BudgetExceededError);
3. an agent with ``rpm``/``tpm`` in the pool file takes its slot from the limiter every worker
   shares (:mod:`sale.broker.limits`).

A refusal is a ModelCallError, so each stage records it as it records a failed call (a failed
bid, an abstaining juror, an execution that stopped), which keeps what the job spent on the
record, and the next stage task does not start (:func:`sale.workers.cancel.stop_point`).

Waiting for a rate limit is a bounded wait in the caller, not a task retry: a slot frees
within one window (60 s) at most, the same order as a model call itself, and a retry would
throw away an execution's unsaved trace (its steps are stored when it ends) and pay for its
calls again. So the call waits, sleeping exactly as long as the limiter says the window needs
(no polling loop), up to ``SALE_RATE_LIMIT_MAX_WAIT_S``; past that it raises RateLimitedError,
a transient error, and the task layer retries the task with the limiter's countdown, which
frees the worker's slot. A provider's 429 with Retry-After pauses the agent for every worker
(a Redis key with that TTL). Every wait, refusal and pause is noted on the job (`sale show`);
a wait also shows as the task's ``WAITING`` state in Flower (:mod:`sale.workers.progress`).

A transient provider error (a 5xx, a timeout, a malformed body, a 429) is tried again in the
worker up to ``SALE_CALL_RETRIES`` times, with the task's backoff, before it reaches the stage
task's Celery retry: one failed step of a multi-step execution then costs a short wait, not a
restart of the whole loop (which, at a provider's 20 % fault rate, could spend every retry).

Every call that returns is written to the job's ledger at once
(:class:`~sale.models.tables.ModelCall`), before the stage goes on: a worker killed later in
the stage loses nothing from the job's cost. With the database out of reach the call is kept
and written before the next one.

Redis out of reach (a restart) never throws away a call that was made: its result is returned
and counted even when settling its reservation fails (the reservation keeps its estimate until
the window passes), and a 429's pause that cannot be stored leaves the 429 to the task's retry.
Before a call, an agent without limits goes ahead unchecked for a pause; an agent with limits
gets the broker error (no slot, no call), as any stage does.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sale.broker.limits import RateLimiter
from sale.broker.pool import Agent
from sale.models.db import session_scope
from sale.models.tables import ModelCall
from sale.workers.context import AuctionContext
from sale.workers.jobs import (
    add_note,
    fail_job,
    insert_once,
    job_spec,
    job_totals,
    load_job,
    paid_call,
)
from sale.workers.llm.types import LLMCall, LLMResult, Message
from sale.workers.progress import CALL_STATES, publish_current
from sale.workers.recovery import TRANSPORT_ERRORS
from sqlalchemy.exc import SQLAlchemyError

from sale.errors import (
    BudgetExceededError,
    JobCancelledError,
    JobStoppedError,
    PermanentModelError,
    RateLimitedError,
    TransientModelError,
)

log = logging.getLogger(__name__)

#: Characters per prompt token in the estimate of a call's price before it is made.
CHARS_PER_TOKEN = 4


def prompt_tokens(messages: list[Message]) -> int:
    """An estimate of a prompt's tokens from its characters, rounded up."""
    chars = sum(len(str(m.get("content") or "")) for m in messages)
    return -(-chars // CHARS_PER_TOKEN)


class Gate:
    """A job's model caller for one stage: ``inner`` behind the checks of the module doc."""

    def __init__(self, ctx: AuctionContext, job_id: str, inner: LLMCall) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.inner = inner
        # Paid calls the ledger has not taken yet (the database out of reach): written before
        # the next call, and counted in the budget until then.
        self.pending: list[ModelCall] = []

    def __call__(
        self, agent: Agent, messages: list[Message], *, stage: str, max_tokens: int, **kw: Any
    ) -> LLMResult:
        """One model call, tried again in this worker on a transient provider error (up to
        ``SALE_CALL_RETRIES`` times) before the error goes to the stage task's own retry. A
        failed try is not billed (the provider answered no completion), so nothing is lost
        from the cost; a wait past the rate-limit bound goes to the task at once."""
        settings = self.ctx.settings
        for attempt in range(settings.call_retries + 1):
            try:
                return self._once(agent, messages, stage=stage, max_tokens=max_tokens, **kw)
            except RateLimitedError:
                raise  # the task's countdown: waiting here would hold the slot too long
            except TransientModelError as exc:
                if attempt == settings.call_retries:
                    raise
                wait = settings.backoff_s(attempt)
                if exc.retry_after:
                    if exc.retry_after > settings.rate_limit_max_wait_s:
                        raise
                    # shared: the next try waits out the agent's pause in _acquire
                    wait = 0.0 if self._shared() else exc.retry_after
                log.warning("job %s: %s call of %s, try %d/%d in %.1fs: %s", self.job_id,
                            stage, agent.name, attempt + 2, settings.call_retries + 1, wait,
                            exc)  # fmt: skip
                time.sleep(wait)
        raise AssertionError("unreachable: the last try returns or raises")

    def _once(
        self, agent: Agent, messages: list[Message], *, stage: str, max_tokens: int, **kw: Any
    ) -> LLMResult:
        prompt = prompt_tokens(messages)
        tokens = prompt + max_tokens
        self._check(agent, stage, agent.call_cost(prompt, max_tokens))
        limited = bool(agent.rpm or agent.tpm)
        member = None
        if limited or self._shared():
            try:
                member = self._acquire(agent, stage, tokens)
            except TRANSPORT_ERRORS as exc:
                if limited:
                    raise
                log.warning("job %s: %s call of %s not checked for a provider pause (Redis: %s)",
                            self.job_id, stage, agent.name, exc)  # fmt: skip
        used = tokens  # a failed call keeps its reservation
        try:
            result = self.inner(agent, messages, stage=stage, max_tokens=max_tokens, **kw)
            used = result.tokens_in + result.tokens_out
        except TransientModelError as exc:
            if exc.retry_after and not isinstance(exc, RateLimitedError):
                self._pause(agent, exc.retry_after)
            raise
        finally:
            if member is not None:
                self._settle(agent, member, used)
        self._record(agent, stage, result)
        return result

    # --- the ledger ---------------------------------------------------------------------------
    def _record(self, agent: Agent, stage: str, result: LLMResult) -> None:
        """Write the call to the ledger now, so a worker killed before its stage ends loses
        nothing from the job's cost."""
        self.pending.append(paid_call(self.job_id, stage, agent.name, result))
        self._flush()

    def _flush(self) -> None:
        while self.pending:
            try:
                insert_once(self.ctx, self.pending[0])
            except SQLAlchemyError as exc:
                log.warning("job %s: %d paid call(s) not in the ledger yet (database: %s)",
                            self.job_id, len(self.pending), exc)  # fmt: skip
                return
            self.pending.pop(0)

    # --- cancellation and budget ------------------------------------------------------------
    def _check(self, agent: Agent, stage: str, next_usd: float) -> None:
        self._flush()
        with session_scope(self.ctx.db_url) as s:
            job = load_job(s, self.job_id, self.ctx.db_url)
            requested, status, reason = job.cancel_requested_at, job.status, job.status_reason
            limit = job_spec(job).limits.max_cost_usd
            _tokens, spent = job_totals(s, self.job_id)
        if requested is not None or status == "cancelled":
            raise JobCancelledError(
                agent.name, agent.model, self.job_id, f"job cancelled: {stage} call not made"
            )
        if status == "failed":
            raise JobStoppedError(
                agent.name, agent.model, self.job_id, f"job failed ({reason}): call not made"
            )
        spent += sum(c.cost_usd for c in self.pending)
        if spent + next_usd > limit:
            why = (
                f"budget: max_cost_usd US${limit:.6f} would be passed: US${spent:.6f} spent, "
                f"the next {stage} call of {agent.name} can cost up to US${next_usd:.6f}"
            )
            fail_job(self.ctx, self.job_id, why)
            raise BudgetExceededError(agent.name, agent.model, self.job_id, why)

    # --- shared rate limits -----------------------------------------------------------------
    def _shared(self) -> bool:
        """Whether the broker is the Redis the limits and pauses live in (an agent without
        limits still waits out a provider's pause there)."""
        return (self.ctx.settings.broker_url or "").startswith(("redis://", "rediss://", "unix://"))

    def _limiter(self, agent: Agent) -> RateLimiter:
        url = self.ctx.settings.broker_url or ""
        if not self._shared():
            raise PermanentModelError(
                agent.name,
                agent.model,
                "rpm/tpm in the pool file need a Redis broker to share the limit between "
                "workers; set SALE_BROKER_URL=redis://... (or remove rpm/tpm)",
            )
        return RateLimiter(url)

    def _acquire(self, agent: Agent, stage: str, tokens: int) -> str:
        """Take the agent's slot, waiting up to the bound; returns the reservation."""
        limiter = self._limiter(agent)
        bound = self.ctx.settings.rate_limit_max_wait_s
        waited = 0.0
        while True:
            grant = limiter.acquire(agent.name, agent.rpm, agent.tpm, tokens)
            if grant.granted:
                break
            if waited + grant.wait_s > bound:
                add_note(
                    self.ctx,
                    self.job_id,
                    f"rate limit ({self._limits(agent, grant.reason)}): a {stage} call of "
                    f"{agent.name} would wait past {bound:g} s; the task is retried in "
                    f"{grant.wait_s:.1f} s",
                )
                raise RateLimitedError(
                    agent.name,
                    agent.model,
                    f"rate limit ({grant.reason}) of {agent.name}: retry in {grant.wait_s:.1f} s",
                    retry_after=grant.wait_s,
                )
            publish_current(
                "WAITING",
                self.job_id,
                stage=stage,
                agent=agent.name,
                wait_s=round(grant.wait_s, 3),
                limit=self._limits(agent, grant.reason),
            )
            time.sleep(grant.wait_s)  # as long as the window needs, within the bound
            waited += grant.wait_s
        if waited:
            publish_current(CALL_STATES.get(stage, "EXECUTING"), self.job_id, agent=agent.name)
            log.info("job %s: %s call of %s waited %.1fs", self.job_id, stage, agent.name, waited)
            add_note(
                self.ctx,
                self.job_id,
                f"rate limit ({self._limits(agent)}): a {stage} call of {agent.name} waited "
                f"{waited:.1f} s",
            )
        return grant.member

    def _settle(self, agent: Agent, member: str, used: int) -> None:
        """Settle a reservation to what the call used; with Redis out of reach it keeps its
        estimate, and the call (paid for) still counts."""
        try:
            RateLimiter(self.ctx.settings.broker_url or "").settle(agent.name, member, used)
        except TRANSPORT_ERRORS as exc:
            log.warning("job %s: %s's reservation not settled (Redis: %s)", self.job_id,
                        agent.name, exc)  # fmt: skip

    def _limits(self, agent: Agent, reason: str = "") -> str:
        if reason == "paused":
            return "provider pause"
        parts = [f"rpm {agent.rpm}" if agent.rpm else "", f"tpm {agent.tpm}" if agent.tpm else ""]
        return ", ".join(p for p in parts if p)

    def _pause(self, agent: Agent, seconds: float) -> None:
        """A provider's 429 with Retry-After: pause the agent for every worker."""
        if self._shared():
            try:
                RateLimiter(self.ctx.settings.broker_url or "").pause(agent.name, seconds)
            except TRANSPORT_ERRORS as exc:
                log.warning("job %s: %s's pause not stored (Redis: %s)", self.job_id, agent.name,
                            exc)  # fmt: skip
        add_note(
            self.ctx,
            self.job_id,
            f"provider rate limit (429) on {agent.name}: every worker pauses it for "
            f"{seconds:.1f} s",
        )


def model_caller(ctx: AuctionContext, job_id: str) -> LLMCall:
    """The context's model caller behind the gate, for one stage of ``job_id``."""
    return Gate(ctx, job_id, ctx.llm)
