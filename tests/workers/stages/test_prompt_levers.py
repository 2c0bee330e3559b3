"""The prompt levers: ``task_first_prompts`` (every call of a job starts with the
same task block, for the model server's prefix cache) and ``plan_mode`` (the plan to follow, or
guidance to revise). Defaults must render exactly what they rendered before the levers."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sale.broker.pool import Agent, load_pool
from sale.broker.settings import Settings
from sale.models.db import init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Award, Bid
from sale.workers import jobs, prompts
from sale.workers.agent.loop import run_agent
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext
from sale.workers.llm.provider import call_model
from sale.workers.llm.types import LLMResult
from sale.workers.prompts import DEFAULT_STYLE, PromptStyle, render, task_block
from sale.workers.stages import awarding, bidding, judging
from sale.workers.stages import executing as attempts
from sqlmodel import select

from tests.conftest import SCRIPTED_POOL

PLAN = "1. Step one.\n2. Step two."
# sha256 of render(f"agent_system_{kind}", tools="<tools>", plan=PLAN) before the levers
# existed (the templates then ended "YOUR PLAN (follow it):\n$plan").
BEFORE = {
    "coding": "dc1b8911a1d8fc6f780505e7f0d90b326256c908fc4166342b220bb1cee26b93",
    "search": "e2665ccae1486d26351315c8cffca1e7d23ca0c1cd5dd4e56a7e85e0dd1a627c",
}
PROMPT = (
    "Write add(a, b) returning the sum.\n[[scripted small.junk=jury]]\n"
    "[[solution]]\ndef add(a, b):\n    return a + b\n[[/solution]]\n"
)
TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"


@dataclass
class RecordingLLM:
    """The real call site (scripted pool), keeping (agent, stage, messages) of every call."""

    calls: list[tuple[str, str, list[dict[str, Any]]]] = field(default_factory=list)

    def __call__(self, agent: Agent, messages: list[Any], **kw: Any) -> LLMResult:
        self.calls.append((agent.name, kw["stage"], copy.deepcopy(messages)))
        return call_model(agent, messages, **kw)


def make_ctx(tmp_path: Path, llm: Callable[..., LLMResult], **settings: Any) -> AuctionContext:
    url = f"sqlite:///{tmp_path}/t.db"
    init_db(url)
    return AuctionContext(
        settings=Settings(
            database_url=url, pool_file=SCRIPTED_POOL, state_dir=tmp_path, **settings
        ),
        pool=load_pool(SCRIPTED_POOL),
        weights=load_weights(None),
        llm=llm,
        embed=lambda texts: [[1.0, 0.0, 0.0] for _ in texts],
    )


def run_whole_job(ctx: AuctionContext, job_id: str = "job-1") -> TaskSpec:
    """Every kind of call a job makes: bids, jury (with a strict retry), refine, execution."""
    spec = TaskSpec(kind="coding", prompt=PROMPT, tests=TESTS, entry_point="add")
    jobs.create_job(ctx, spec, job_id)
    for agent in ctx.pool.names:
        bidding.run_bid(ctx, job_id, agent, "first", None)
    for juror in ctx.pool.names:
        judging.run_jury(ctx, job_id, juror, "first", "all")
    bidding.run_bid(ctx, job_id, "small", "refined", None)
    awarding.decide_award(ctx, job_id)
    attempts.run_execution(ctx, job_id)
    return spec


# --- task first ---------------------------------------------------------------------------


def test_every_job_template_opens_with_the_task_block() -> None:
    task = task_block("coding", "Do X.")
    assert task == "TASK (coding):\nDo X."
    common = dict(kind="coding", prompt="Do X.", bids="PLAN A:\np", example="{}")
    rendered = [
        render("bid", kind="coding", prompt="Do X.", max_words=10, tools="t"),
        render("refine", kind="coding", prompt="Do X.", own_plan="o", pairs="", max_words=10),
        render("jury", **common),
        render("jury_strict", labels="A", reason="r", **common),
        render("agent_task_coding", prompt="Do X."),
    ]
    for text in rendered:
        assert text.startswith(task + "\n\n"), text[:40]
    assert render("agent_task_search", prompt="Q?").startswith(task_block("search", "Q?"))


def test_task_first_moves_the_block_to_the_head_of_the_system_message() -> None:
    task = task_block("coding", "Do X.")
    system, user = prompts.task_first("SYS", render("agent_task_coding", prompt="Do X."), task)
    assert system == "TASK (coding):\nDo X.\n\nSYS"
    assert user.startswith("Write the complete Python solution")  # the task is sent once
    # A user message that does not open with the block is left whole.
    assert prompts.task_first("SYS", "other", task) == ("TASK (coding):\nDo X.\n\nSYS", "other")


def test_task_first_every_call_of_a_job_starts_with_the_same_task_block(
    tmp_path: Path,
) -> None:
    llm = RecordingLLM()
    ctx = make_ctx(tmp_path, llm, task_first_prompts=True)
    spec = run_whole_job(ctx)
    task = task_block("coding", spec.prompt)
    stages = {stage for _a, stage, _m in llm.calls}
    assert stages == {"bid", "jury", "refine", "execute"}
    assert sum(1 for a, st, _m in llm.calls if (a, st) == ("small", "jury")) == 2  # strict retry
    for agent, stage, messages in llm.calls:
        first = messages[0]
        assert first["role"] == "system", (agent, stage)
        assert first["content"].startswith(task + "\n\n"), (agent, stage)
        assert "Write add(a, b)" not in messages[1]["content"], (agent, stage)  # sent once
    # The role's own instructions come after the block, in the user message.
    opening = {"bid": "You are bidding", "refine": "You bid on this task", "jury": "Agents "}
    opening["execute"] = "Write the complete Python solution"
    for agent, stage, messages in llm.calls:
        assert messages[1]["content"].startswith(opening[stage]), (agent, stage)


def test_default_layout_is_the_system_prompt_then_the_task(tmp_path: Path) -> None:
    llm = RecordingLLM()
    ctx = make_ctx(tmp_path, llm)
    spec = run_whole_job(ctx)
    task = task_block("coding", spec.prompt)
    for agent, stage, messages in llm.calls:
        assert not messages[0]["content"].startswith("TASK"), (agent, stage)
        assert messages[1]["content"].startswith(task), (agent, stage)
        if stage != "execute":
            assert messages[0]["content"] == render("system")
    assert render("system") == (
        "You are a careful assistant that plans, reviews and solves programming and research tasks."
    )


# --- plan mode ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["coding", "search"])
def test_follow_mode_renders_the_execution_system_prompt_as_before(kind: str) -> None:
    section = prompts.plan_section(kind, PLAN, DEFAULT_STYLE)
    system = render(f"agent_system_{kind}", tools="<tools>", plan_section=section)
    assert system.endswith("\n\nYOUR PLAN (follow it):\n" + PLAN)
    assert hashlib.sha256(system.encode()).hexdigest() == BEFORE[kind]


@pytest.mark.parametrize(
    ("kind", "check"), [("coding", "run_tests fails"), ("search", "a search finds nothing")]
)
def test_guidance_mode_presents_the_plan_as_advice(kind: str, check: str) -> None:
    section = prompts.plan_section(kind, PLAN, PromptStyle(plan_mode="guidance"))
    system = render(f"agent_system_{kind}", tools="<tools>", plan_section=section)
    assert "follow it" not in system
    assert "A PLAN FOR THIS TASK (guidance, not orders):\n" + PLAN in system
    assert check in system and "revise the plan or set it aside" in system


def test_plan_mode_reaches_the_executing_agent(tmp_path: Path) -> None:
    spec = TaskSpec(kind="coding", prompt=PROMPT, tests=TESTS, entry_point="add")
    agent = load_pool(SCRIPTED_POOL).get("small")
    systems = {}
    for mode in ("follow", "guidance"):
        llm = RecordingLLM()
        run_agent(spec, PLAN, agent, llm, 256, style=PromptStyle(plan_mode=mode))
        systems[mode] = llm.calls[0][2][0]["content"]
    assert systems["follow"].endswith("YOUR PLAN (follow it):\n" + PLAN)
    assert "(guidance, not orders)" in systems["guidance"]
    assert systems["follow"].split("TOOLS")[0] == systems["guidance"].split("TOOLS")[0]
    # And through the service, from the settings.
    llm = RecordingLLM()
    ctx = make_ctx(tmp_path, llm, plan_mode="guidance")
    jobs.create_job(ctx, spec, "job-g")
    awarding.assign_direct(ctx, "job-g", "small")
    attempts.run_execution(ctx, "job-g")
    assert "(guidance, not orders)" in llm.calls[0][2][0]["content"]


def test_generic_plan_mode_executes_a_direct_jobs_plan_instead_of_the_bid(tmp_path: Path) -> None:
    llm = RecordingLLM()
    ctx = make_ctx(tmp_path, llm, plan_mode="generic")
    run_whole_job(ctx)
    executed = [messages for _agent, stage, messages in llm.calls if stage == "execute"]
    system = executed[0][0]["content"]
    assert system.endswith("YOUR PLAN (follow it):\n" + awarding.DIRECT_PLAN)
    # The auction still ran on the bids' plans; only the execution left them out.
    with session_scope(ctx.db_url) as s:
        award = s.exec(select(Award).where(Award.job_id == "job-1")).one()
        bid = s.get(Bid, award.bid_id)
        assert bid is not None and bid.plan and bid.plan not in system
    # follow (the paper's) executes the bid's own plan
    llm = RecordingLLM()
    run_whole_job(make_ctx(tmp_path / "f", llm, plan_mode="follow"))
    system = next(m for _a, stage, m in llm.calls if stage == "execute")[0]["content"]
    assert awarding.DIRECT_PLAN not in system


def test_coding_plan_mode_overrides_plan_mode_for_coding_jobs_only(tmp_path: Path) -> None:
    coding = TaskSpec(kind="coding", prompt=PROMPT, tests=TESTS, entry_point="add")
    search = TaskSpec(kind="search", prompt="Who wrote X?\n[[scripted small.answer=Y]]", answer="Y")
    llm = RecordingLLM()
    ctx = make_ctx(tmp_path, llm, coding_plan_mode="generic", plan_mode="guidance")
    for job_id, spec in (("job-c", coding), ("job-s", search)):
        jobs.create_job(ctx, spec, job_id)
        bidding.run_bid(ctx, job_id, "small", "first", None)
        awarding.decide_award(ctx, job_id)
        attempts.run_execution(ctx, job_id)
    executed = [m[0]["content"] for _a, stage, m in llm.calls if stage == "execute"]
    coding_system = next(s for s in executed if "run_tests" in s)
    search_system = next(s for s in executed if "run_tests" not in s)
    assert coding_system.endswith("YOUR PLAN (follow it):\n" + awarding.DIRECT_PLAN)
    assert "(guidance, not orders)" in search_system and awarding.DIRECT_PLAN not in search_system
