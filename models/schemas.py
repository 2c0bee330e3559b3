"""I/O schemas: the task spec a user submits.

The task spec is strict: an unknown field, a wrong type or a field that does not fit the job kind
is a validation error; ``sale.workers.spec.validate_spec`` turns it into a SpecError listing every
problem, raised before anything is written or enqueued.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Kind = Literal["coding", "search"]


class Limits(BaseModel):
    """Budgets for one job's execution; each one hit is recorded as the stop reason."""

    model_config = ConfigDict(extra="forbid")

    max_steps: int = Field(default=8, ge=1, le=200)
    max_tokens: int = Field(default=8192, ge=64, le=1_000_000)
    max_seconds: float = Field(default=900.0, gt=0, le=86_400)
    max_cost_usd: float = Field(default=1.0, gt=0)


class TaskSpec(BaseModel):
    """What a user submits: one job."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    kind: Kind
    prompt: str = Field(min_length=1, max_length=200_000)
    name: str | None = Field(default=None, max_length=200, description="a label, e.g. HumanEval/0")
    tests: str | None = Field(default=None, min_length=1)
    entry_point: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    answer: str | None = Field(default=None, min_length=1)
    limits: Limits = Field(default_factory=Limits)

    @model_validator(mode="after")
    def _fits_kind(self) -> TaskSpec:
        problems = []
        if not self.prompt.strip():
            problems.append("prompt: must not be blank")
        if self.kind == "search" and (self.tests is not None or self.entry_point is not None):
            problems.append("tests/entry_point: only coding jobs carry tests")
        if self.kind == "coding" and self.answer is not None:
            problems.append("answer: only search jobs carry a reference answer")
        if self.entry_point is not None and self.tests is None:
            problems.append("entry_point: given without tests")
        if problems:
            raise ValueError("; ".join(problems))
        return self
