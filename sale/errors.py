"""The project's exception tree.

Every error a user can cause or meet carries the data needed to say what was wrong and how to
fix it; none has side effects. The tree::

    SaleError
    ├── ConfigError                  settings, pool or weights file invalid
    │   ├── PoolError                agent pool TOML (file, agent, field)
    │   └── WeightsError             scoring weights JSON
    ├── InputError                   a file or value unreadable before parsing (size,
    │                                encoding, NUL, nesting); entrances re-raise it as theirs
    ├── SpecError                    a task spec that cannot be enqueued
    ├── MemoryImportError            a memory export that cannot be imported
    ├── UnknownAgentError            an agent name not in the pool
    ├── JobNotFoundError             a job id not in the auction memory
    ├── DailyBudgetError             the pool's daily budget is spent; nothing was submitted
    ├── ModelCallError               one model call failed for good (recorded, not fatal)
    │   ├── TransientModelError      worth retrying (rate limit, timeout, 5xx, connection)
    │   │   └── RateLimitedError     the pool's shared rate limit held the call past its wait
    │   ├── PermanentModelError      not worth retrying (bad request, auth, missing model)
    │   └── JobStoppedError          the call was refused: its job must stop
    │       ├── JobCancelledError    a cancel was requested (`sale cancel`, ``cancel()``)
    │       └── BudgetExceededError  the job's next call could pass its ``max_cost_usd``
    ├── JuryParseError               a juror reply without a valid score object
    ├── AuctionError                 the auction cannot go on (e.g. every bid failed)
    └── BrokerUnavailableError       the broker cannot be reached; nothing was submitted
"""

from __future__ import annotations


class SaleError(Exception):
    """Base of every error raised on purpose by this project."""


class ConfigError(SaleError):
    """A configuration file or value is invalid."""


class PoolError(ConfigError):
    """The agent pool file is invalid; names the file, the agent and the field."""

    def __init__(self, path: str, message: str, agent: str | None = None, field: str | None = None):
        self.path = path
        self.agent = agent
        self.field = field
        self.detail = message
        where = path
        if agent:
            where += f", agent {agent!r}"
        if field:
            where += f", field {field!r}"
        super().__init__(f"{where}: {message}")


class WeightsError(ConfigError):
    """The scoring weights file is invalid."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.detail = message
        super().__init__(f"{path}: {message}")


class InputError(SaleError, ValueError):
    """Input refused before parsing; ``source`` names it, ``problem`` says what and the fix."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")


class MemoryImportError(SaleError, ValueError):
    """A memory export that cannot be imported (nothing was written)."""


class SpecError(SaleError):
    """A task spec is malformed; ``problems`` lists each one as 'field: message'."""

    def __init__(self, problems: list[str], source: str = "task spec"):
        self.problems = problems
        self.source = source
        listed = "; ".join(" ".join(p.split()) for p in problems)
        super().__init__(
            f"{source} is invalid (nothing was enqueued): {listed}. A task spec is a JSON "
            "object with `kind` ('coding' or 'search'), `prompt`, and optionally `tests` and "
            "`entry_point` (coding), `answer` (search), `limits`."
        )


class UnknownAgentError(SaleError):
    """An agent name that the pool does not define."""

    def __init__(self, name: str, known: list[str], pool_path: str):
        self.name = name
        self.known = known
        self.pool_path = pool_path
        super().__init__(
            f"unknown agent {name!r}; the pool {pool_path} defines: {', '.join(known)}. "
            "Pass one of those names, or add the agent to the pool file."
        )


class JobNotFoundError(SaleError):
    """A job id that the auction memory does not hold."""

    def __init__(self, job_id: str, database: str):
        self.job_id = job_id
        self.database = database
        super().__init__(
            f"no job {job_id!r} in {database}; check the id (`sale submit` printed it) and "
            "that SALE_DATABASE_URL points at the same database as the workers."
        )


class DailyBudgetError(SaleError):
    """The pool's ``daily_budget_usd`` is spent for today (UTC); no job was submitted."""

    def __init__(self, pool: str, budget: float, spent: float):
        self.pool = pool
        self.budget = budget
        self.spent = spent
        super().__init__(
            f"the daily budget of pool {pool} is spent: US${spent:.6f} recorded since 00:00 UTC "
            f"of US${budget:.6f} (daily_budget_usd); no job was submitted. Raise "
            "daily_budget_usd in the pool file, or submit again after midnight UTC."
        )

    @property
    def refusal(self) -> str:
        """The reason a job stored before the check (a signature applied) ends with."""
        return (
            f"daily budget: pool {self.pool} spent US${self.spent:.6f} of US${self.budget:.6f} "
            "(daily_budget_usd) since 00:00 UTC; the job was not started"
        )


class ModelCallError(SaleError):
    """A model call failed; ``agent`` and ``model`` say which."""

    def __init__(self, agent: str, model: str, message: str):
        self.agent = agent
        self.model = model
        self.detail = message
        super().__init__(f"agent {agent!r} ({model}): {message}")


class TransientModelError(ModelCallError):
    """A failure worth retrying: rate limit, timeout, server error, lost connection.

    ``retry_after``: the seconds the provider asked to wait (a 429's Retry-After), or None.
    ``paid``: what the calls before it in the same execution cost (``calls``, ``tokens_in``,
    ``tokens_out``, ``cost_usd``), set by the agent loop, so a retried execution counts them."""

    def __init__(self, agent: str, model: str, message: str, retry_after: float | None = None):
        self.retry_after = retry_after
        self.paid: dict[str, float] | None = None
        super().__init__(agent, model, message)


class RateLimitedError(TransientModelError):
    """The pool's shared rate limit (``rpm``/``tpm``) kept a call waiting past its bound; the
    task is retried after ``retry_after`` seconds."""


#: Starts the error recorded on a bid, jury call or execution whose transient model errors
#: outlasted every retry (an unreachable or dead model server, not an answer of the model), so
#: readers such as `sale eval` can tell infrastructure failures from the model's own.
RETRIES_SPENT = "retries spent: "


class PermanentModelError(ModelCallError):
    """A failure not worth retrying: bad request, authentication, unknown model."""


class JobStoppedError(ModelCallError):
    """A model call refused before it was sent, because its job must stop (``reason``).

    Raised by the model-call gate; the stages record it like any failed call (so what the job
    spent stays recorded) and the job's next stage does not start."""

    def __init__(self, agent: str, model: str, job_id: str, reason: str):
        self.job_id = job_id
        self.reason = reason
        super().__init__(agent, model, reason)


class JobCancelledError(JobStoppedError):
    """The job's cancellation was requested; no further model call is made for it."""


class BudgetExceededError(JobStoppedError):
    """The job's next model call could take its spend past its ``max_cost_usd``."""


class JuryParseError(SaleError):
    """A juror's reply held no valid score object."""

    def __init__(self, reason: str, reply: str):
        self.reason = reason
        self.reply = reply
        super().__init__(f"jury reply rejected: {reason}")


class AuctionError(SaleError):
    """The auction for a job cannot continue."""

    def __init__(self, job_id: str, reason: str):
        self.job_id = job_id
        self.reason = reason
        super().__init__(f"job {job_id}: {reason}")


class BrokerUnavailableError(SaleError):
    """The broker could not be reached to send a job; nothing was stored or sent."""

    def __init__(self, url: str, detail: str):
        self.url = url
        self.detail = detail
        super().__init__(
            f"the broker at {url} is unreachable ({detail}); nothing was submitted. Start Redis "
            "(or `sale up`) or point SALE_BROKER_URL at a running one, then submit again."
        )
