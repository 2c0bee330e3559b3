"""Verification-aware awards (``self_check_fallback``): the executing agent's code is run on
the prompt's own docstring examples, and a failed self-check hands the job to the next-best bid.

Task bodies (the stage modules) called directly, in pipeline order, on a temporary SQLite memory
with the scripted pool (as in test_service.py). Scripted qualities small 1 < medium 2 < large 3:
large wins the auction, medium is the next-best bid, small the last.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from sale.broker.pool import load_pool
from sale.broker.settings import PAPER_MECHANISM, Settings
from sale.models.db import init_db, session_scope
from sale.models.schemas import TaskSpec
from sale.models.tables import Bid, Execution, ExecutionStep, Job, MemoryRecord
from sale.workers import jobs
from sale.workers.agent.selfcheck import (
    answer_type_problem,
    echoes_question,
    has_visible_checks,
    self_check,
)
from sale.workers.auction.weights import load_weights
from sale.workers.context import AuctionContext
from sale.workers.sandbox.runner import SandboxResult
from sale.workers.stages import awarding, bidding, judging
from sale.workers.stages import executing as attempts
from sale.workers.stages import updating as memory_update
from sale.workers.views import job_view
from sqlmodel import col, select

from tests.conftest import SCRIPTED_POOL
from tests.workers.stages.test_service import AGENTS, CountingLLM, FakeEmbed

ADD = "def add(a, b):\n    return a + b\n"
HIDDEN_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
WITH_EXAMPLES = 'def add(a, b):\n    """Add two numbers.\n    >>> add(2, 3)\n    5\n    """\n'
WITHOUT_EXAMPLES = "Write add(a, b) returning the sum of two numbers.\n"


@pytest.fixture
def llm() -> CountingLLM:
    return CountingLLM()


@pytest.fixture
def ctx(tmp_path: Path, llm: CountingLLM) -> AuctionContext:
    url = f"sqlite:///{tmp_path}/t.db"
    init_db(url)
    settings = Settings(
        database_url=url,
        pool_file=SCRIPTED_POOL,
        state_dir=tmp_path,
        self_check_fallback=1,
        self_check_escalation="ranking",  # most tests walk the ranking; 'up' has its own
    )
    return AuctionContext(
        settings=settings,
        pool=load_pool(SCRIPTED_POOL),
        weights=load_weights(None),
        llm=llm,
        embed=FakeEmbed(),
    )


def spec(directives: str, prompt: str = WITH_EXAMPLES) -> TaskSpec:
    return TaskSpec(
        kind="coding",
        prompt=f"{prompt}[[scripted {directives}]]\n[[solution]]\n{ADD}[[/solution]]\n",
        tests=HIDDEN_TESTS,
        entry_point="add",
    )


def run_job(ctx: AuctionContext, task: TaskSpec, job_id: str = "job-1") -> int:
    """Every stage, as the Celery tasks chain them: execute attempt 0, then each fallback the
    service plans, then the memory update; returns the memory record id."""
    jobs.create_job(ctx, task, job_id)
    for agent in AGENTS:
        bidding.run_bid(ctx, job_id, agent, "first", None)
    for juror in AGENTS:
        judging.run_jury(ctx, job_id, juror, "first", "all")
    awarding.score_first_round(ctx, job_id)
    awarding.decide_award(ctx, job_id)
    attempt = 0
    attempts.run_execution(ctx, job_id, attempt=attempt)
    while attempts.plan_fallback(ctx, job_id, attempt) is not None:
        attempt += 1
        attempts.run_execution(ctx, job_id, attempt=attempt)
    return memory_update.update_memory(ctx, job_id)


def executions(ctx: AuctionContext, job_id: str = "job-1") -> list[Execution]:
    with session_scope(ctx.db_url) as s:
        return list(
            s.exec(
                select(Execution).where(Execution.job_id == job_id).order_by(col(Execution.attempt))
            )
        )


def executes(llm: CountingLLM) -> Counter[str]:
    return Counter({agent: n for (agent, stage), n in llm.calls.items() if stage == "execute"})


def test_failed_self_check_hands_the_job_to_the_next_best_bid(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    record_id = run_job(ctx, spec("large.solve=fail"))
    runs = executions(ctx)
    assert [(e.attempt, e.agent, e.self_check, e.verdict) for e in runs] == [
        (0, "large", "failed", "failed"),
        (1, "medium", "passed", "passed"),
    ]
    assert runs[0].self_check_detail is not None and "examples failed" in runs[0].self_check_detail
    assert executes(llm) == Counter({"large": 1, "medium": 1})
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "job-1")
        record = s.get(MemoryRecord, record_id)
        bids = {b.id: b for b in s.exec(select(Bid))}
    assert job is not None and record is not None
    assert (job.status, job.verdict) == ("done", "passed")
    assert "self-check of large failed (attempt 0): fallback 1 to medium (first bid)" in job.notes
    # The auction's award stays large; the answer and verdict are the fallback's.
    assert (record.award_agent, record.verdict) == ("large", "passed")
    assert record.attempts == [
        {
            "attempt": 0,
            "bid_id": runs[0].bid_id,
            "agent": "large",
            "round": "first",
            "status": runs[0].status,
            "self_check": "failed",
            "verdict": "failed",
            "tokens": runs[0].tokens_in + runs[0].tokens_out,
            "cost_usd": runs[0].cost_usd,
        },
        {
            "attempt": 1,
            "bid_id": runs[1].bid_id,
            "agent": "medium",
            "round": "first",
            "status": "done",
            "self_check": "passed",
            "verdict": "passed",
            "tokens": runs[1].tokens_in + runs[1].tokens_out,
            "cost_usd": runs[1].cost_usd,
        },
    ]
    assert all(a["tokens"] > 0 and a["cost_usd"] > 0 for a in record.attempts)
    assert bids[runs[1].bid_id].agent == "medium"
    labels = {b["agent"]: (b["auction_label"], b["verified_label"]) for b in record.bids}
    # Verified labels: the awarded plan failed (loser), the fallback passed (winner), the plan
    # never executed lost to it. Auction labels stay the paper's.
    assert labels == {
        "large": ("win", "lose"),
        "medium": ("lose", "win"),
        "small": ("lose", "lose"),
    }
    # Totals count both attempts.
    view = job_view(ctx, "job-1")
    both = sum(e.tokens_in + e.tokens_out for e in runs)
    assert runs[0].tokens_out > 0 and runs[1].tokens_out > 0
    assert view["usage"]["execute"]["tokens"] == view["execution_tokens"] == both
    assert view["execution_cost_usd"] == pytest.approx(sum(e.cost_usd for e in runs))
    assert record.total_tokens == view["tokens"] and record.total_tokens > both
    # The view lists every attempt; `execution` is the final one.
    assert [(e["attempt"], e["agent"], e["self_check"]) for e in view["executions"]] == [
        (0, "large", "failed"),
        (1, "medium", "passed"),
    ]
    assert view["execution"] == view["executions"][-1]
    assert view["execution"]["answer"] == runs[1].answer and view["verdict"] == "passed"
    assert view["execution"]["steps"], "each attempt keeps its trace"


def test_lever_off_executes_once_and_runs_no_self_check(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"self_check_fallback": 0})
    run_job(ctx, spec("large.solve=fail"))
    runs = executions(ctx)
    assert [(e.attempt, e.agent, e.self_check, e.verdict) for e in runs] == [
        (0, "large", None, "failed")
    ]
    assert executes(llm) == Counter({"large": 1})
    view = job_view(ctx, "job-1")
    assert view["verdict"] == "failed" and len(view["executions"]) == 1


def test_job_without_visible_examples_gets_no_self_check_and_no_fallback(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"self_check_fallback": 3})
    task = spec("large.solve=fail", prompt=WITHOUT_EXAMPLES)
    assert not has_visible_checks(task) and task.tests is not None  # hidden tests only
    run_job(ctx, task)
    assert [(e.agent, e.self_check, e.verdict) for e in executions(ctx)] == [
        ("large", None, "failed")
    ]
    assert executes(llm) == Counter({"large": 1})


def test_fallback_count_is_limited(ctx: AuctionContext, llm: CountingLLM) -> None:
    # One fallback allowed: medium fails too, small (the last bid) never executes.
    record_id = run_job(ctx, spec("large.solve=fail medium.solve=fail"))
    assert [(e.agent, e.self_check) for e in executions(ctx)] == [
        ("large", "failed"),
        ("medium", "failed"),
    ]
    assert executes(llm) == Counter({"large": 1, "medium": 1})
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "job-1")
        record = s.get(MemoryRecord, record_id)
    assert job is not None and record is not None
    assert job.verdict == record.verdict == "failed"
    assert any("no fallback left (SALE_SELF_CHECK_FALLBACK=1)" in n for n in job.notes)
    labels = {b["agent"]: b["verified_label"] for b in record.bids}
    assert labels == {"large": "lose", "medium": "lose", "small": None}


def test_fallbacks_stop_when_every_agent_has_executed(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    ctx.settings = ctx.settings.model_copy(update={"self_check_fallback": 3})
    run_job(ctx, spec("large.solve=fail medium.solve=fail small.solve=fail"))
    assert [e.agent for e in executions(ctx)] == ["large", "medium", "small"]
    assert executes(llm) == Counter({"large": 1, "medium": 1, "small": 1})
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "job-1")
    assert job is not None
    assert any("no bid of another agent left" in n for n in job.notes)


def test_redelivered_executions_leave_one_row_per_attempt(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    run_job(ctx, spec("large.solve=fail"))
    first = executions(ctx)
    with session_scope(ctx.db_url) as s:
        steps = len(s.exec(select(ExecutionStep)).all())
    calls = Counter(llm.calls)
    for e in first:
        assert attempts.run_execution(ctx, "job-1", attempt=e.attempt) == e.id
    assert attempts.plan_fallback(ctx, "job-1", 0) == "medium"  # the same hand-over again
    assert attempts.plan_fallback(ctx, "job-1", 1) is None
    again = executions(ctx)
    assert [(e.id, e.attempt) for e in again] == [(e.id, e.attempt) for e in first]
    with session_scope(ctx.db_url) as s:
        assert len(s.exec(select(ExecutionStep)).all()) == steps
    assert llm.calls == calls  # no model was called again


def test_paper_mechanism_forces_the_lever_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SALE_SELF_CHECK_FALLBACK", "2")
    assert Settings(_env_file=None).self_check_fallback == 2
    monkeypatch.setenv("SALE_MECHANISM", "paper")
    assert Settings(_env_file=None).self_check_fallback == 0
    assert PAPER_MECHANISM["self_check_fallback"] == 0


def test_self_check_runs_only_the_visible_examples() -> None:
    task = spec("")
    seen: list[str] = []

    def runner(code: str, **_kw: object) -> SandboxResult:
        seen.append(code)
        return SandboxResult(
            exit_code=0,
            stdout="1 of 1 examples passed\n",
            stderr="",
            stopped=None,
            duration_s=0.0,
            network_isolation="netns",
            process_isolation="pid_namespace",
        )

    result = self_check(task, ADD, runner=runner)
    assert (result.value, result.detail) == ("passed", "1 of 1 examples passed")
    assert seen[0].startswith(ADD) and "add(2, 3)" in seen[0]
    assert "check(" not in seen[0]  # the hidden tests never run in a self-check
    assert self_check(task, None, runner=runner).value == "failed"
    assert len(seen) == 1
    wrong = self_check(task, "def add(a, b):\n    return a - b\n")  # the real sandbox
    assert wrong.value == "failed" and "got -1" in wrong.detail


def test_escalation_up_never_falls_back_to_a_cheaper_agent(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    # medium's plan wins; small's is next in the ranking, large's last.
    directives = "medium.bid=5 small.bid=4 large.bid=0 medium.solve=fail small.solve=fail"
    ctx.settings = ctx.settings.model_copy(update={"self_check_fallback": 2})
    run_job(ctx, spec(directives), "by-ranking")
    assert [e.agent for e in executions(ctx, "by-ranking")] == ["medium", "small", "large"]

    ctx.settings = ctx.settings.model_copy(update={"self_check_escalation": "up"})
    run_job(ctx, spec(directives), "upwards")
    runs = executions(ctx, "upwards")
    assert [(e.agent, e.self_check) for e in runs] == [("medium", "failed"), ("large", "passed")]
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "upwards")
    assert job is not None and job.verdict == "passed"
    assert "self-check of medium failed (attempt 0): fallback 1 to large (first bid)" in job.notes


def test_escalation_up_stops_when_no_costlier_agent_is_left(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    ctx.settings = ctx.settings.model_copy(
        update={"self_check_fallback": 2, "self_check_escalation": "up"}
    )
    run_job(ctx, spec("large.solve=fail"))  # large wins and fails: nothing costlier to try
    assert [e.agent for e in executions(ctx)] == ["large"]
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "job-1")
    assert job is not None
    assert any("no bid of another costlier agent left" in n for n in job.notes)


# --- search jobs: the answer must be grounded in what the agent read ------------------------


def test_search_self_check_is_grounding_in_the_agents_observations() -> None:
    question = TaskSpec(kind="search", prompt="When did the Eiffel Tower open?", answer="1889")
    assert has_visible_checks(question)
    read = ["1. Eiffel Tower: the tower opened on 31 March 1889 for the World's Fair."]
    assert self_check(question, "1889", observations=read).value == "passed"
    assert self_check(question, "The 1889.", observations=read).value == "passed"  # normalised
    missed = self_check(question, "1887", observations=read)
    assert (missed.value, missed.detail) == (
        "failed",
        "the answer occurs in none of the 1 observations",
    )
    assert self_check(question, "1889", observations=[]).value == "failed"  # read nothing
    assert self_check(question, "  ", observations=read).detail == "no answer was given"


def test_a_search_answer_that_only_repeats_the_question_fails() -> None:
    # Seen live: the 0.5B answered "Othello" and "Eugene Onegin", words its pages contained.
    asked = "What is the nationality of the person who wrote Othello?"
    question = TaskSpec(kind="search", prompt=asked, answer="English")
    read = ["1. Othello: a tragedy by William Shakespeare, the English playwright."]
    echo = self_check(question, "Othello.", observations=read)
    assert (echo.value, echo.detail) == ("failed", "the answer only repeats words of the question")
    assert self_check(question, "English", observations=read).value == "passed"
    assert echoes_question("the person who wrote", asked)  # any run of the question's words
    assert not echoes_question("Othel", asked)  # whole words only
    # A question that offers a choice may rightly be answered with one of its words.
    which = "Which opened first, the Eiffel Tower or the Statue of Liberty?"
    assert not echoes_question("Statue of Liberty", which)


def test_an_ungrounded_search_answer_falls_back_to_the_next_best_bid(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    # No tool calls (the scripted agents answer at once), so nothing the agents say is grounded:
    # large's "I do not know" fails, the job goes to medium, whose answer fails too; one
    # fallback is allowed, so small never executes.
    question = TaskSpec(
        kind="search",
        prompt="Capital of France?\n[[scripted large.solve=fail]]\n"
        "[[solution]]\nParis\n[[/solution]]\n",
        answer="Paris",
    )
    run_job(ctx, question)
    runs = executions(ctx)
    assert [(e.agent, e.self_check) for e in runs] == [("large", "failed"), ("medium", "failed")]
    assert runs[0].self_check_detail == "the answer occurs in none of the 0 observations"
    assert [e.verdict for e in runs] == ["failed", "passed"]  # the verdict is not the check
    assert executes(llm) == Counter({"large": 1, "medium": 1})


# Wrong answers the 0.5B gave in the search benchmark's single-agent runs, each grounded in a page
# it read (so the grounding check passed them), with the kind of answer its question asked for.
TYPE_WRONG = [
    ("In which year was the painting Las Meninas painted?", "Diego Velázquez", "a year"),
    ("In which year was the novel Frankenstein published?", "The Modern Prometheus", "a year"),
    ("What is the nationality of the person who wrote To the Lighthouse?", "Virginia Woolf", ""),
    (
        "What is the nationality of Johann Sebastian Bach?",
        "Stephen Edwin King is an American author.",
        "",
    ),
    ("What is the nationality of Abu Bakr al-Razi?", "Muslim", "a nationality"),
    ("What is the nationality of Johnny Weissmuller?", "answer", "placeholder"),
    ("What is the capital of Jordan?", "Dead Sea Scrolls", "a capital"),
    ("Who wrote Eugene Onegin?", "the poem was written in 1833 by a famous poet", "who"),
]
RIGHT = [
    ("In which year was the novel Frankenstein published?", "1818"),
    ("What is the nationality of Johann Sebastian Bach?", "German"),
    ("What is the nationality of the person who wrote Der Process?", "Czech"),
    ("What is the nationality of Hokusai?", "Japanese"),
    ("What is the nationality of Sergei Eisenstein?", "Soviet"),
    ("What is the capital of Jordan?", "Amman"),
    (
        "Which city is the capital of the country where Princeton University is located?",
        "Washington, D.C.",
    ),
    ("Who wrote Eugene Onegin?", "Alexander Pushkin"),
    ("Who established Baháʼí Faith?", "Baháʼu'lláh"),
]
PAGES = [
    "Jordan: a country in Western Asia; its capital and largest city is Amman.",
    "Dead Sea Scrolls: ancient Jewish manuscripts found in the Qumran caves in the 1940s and "
    "1950s, near the northern shore of the Dead Sea.",
    "United States: a country of 50 states ... Its capital is Washington, D.C., and its most "
    "populous city is New York City.",
]


@pytest.mark.parametrize(("question", "answer", "kind"), TYPE_WRONG)
def test_answer_type_check_fails_answers_of_the_wrong_kind(
    question: str, answer: str, kind: str
) -> None:
    problem = answer_type_problem(question, answer, PAGES)
    assert problem is not None and answer.rstrip(".") in problem
    assert kind in problem


@pytest.mark.parametrize(("question", "answer"), RIGHT)
def test_answer_type_check_passes_answers_of_the_kind_asked(question: str, answer: str) -> None:
    assert answer_type_problem(question, answer, PAGES) is None


def test_a_capital_must_be_called_one_near_the_answer() -> None:
    question = "What is the capital of Jordan?"
    far = ["Amman is a city. " + "x " * 200 + "The capital of Peru is Lima."]
    assert answer_type_problem(question, "Lima", ["Lima", "the capital of Peru"]) is not None
    assert answer_type_problem(question, "Amman", far) is not None
    assert answer_type_problem(question, "Lima", far) is None


def test_answer_types_is_a_lever_of_the_search_self_check(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    # large answers "I do not know": off, it fails only as ungrounded; on, as holding no year.
    question = TaskSpec(
        kind="search",
        prompt="In which year was Frankenstein published?\n[[scripted large.solve=fail]]\n"
        "[[solution]]\n1818\n[[/solution]]\n",
        answer="1818",
    )
    assert not Settings(_env_file=None).search_answer_types
    assert PAPER_MECHANISM["search_answer_types"] is False
    ctx.settings = ctx.settings.model_copy(update={"search_answer_types": True})
    run_job(ctx, question)
    runs = executions(ctx)
    assert [(e.agent, e.self_check) for e in runs] == [("large", "failed"), ("medium", "failed")]
    assert "asks for a year" in (runs[0].self_check_detail or "")
    # medium's answer holds the year, so its check fails for another reason
    assert "year" not in (runs[1].self_check_detail or "")


# --- smoke checks: a coding job without examples, run as written ----------------------------


def test_smoke_check_runs_the_answer_as_written_and_needs_the_entry_point() -> None:
    task = spec("", prompt=WITHOUT_EXAMPLES)
    assert not has_visible_checks(task) and has_visible_checks(task, smoke=True)
    with pytest.raises(ValueError, match="no examples"):
        self_check(task, ADD)
    ran = self_check(task, ADD + "print(add(1, 2))\n", smoke=True)  # the real sandbox
    assert (ran.value, ran.detail) == ("passed", "no examples to check; the code runs as written")
    crash = self_check(task, ADD + "print(add([1].__len(), 2))\n", smoke=True)
    assert crash.value == "failed" and "AttributeError" in crash.detail
    other = self_check(task, "def plus(a, b):\n    return a + b\n", smoke=True)
    assert other.value == "failed" and "defines no add()" in other.detail
    assert self_check(task, None, smoke=True).detail == "no code was produced"


def test_smoke_check_hands_a_crashing_answer_to_the_next_bid(
    ctx: AuctionContext, llm: CountingLLM
) -> None:
    task = spec("large.solve=fail", prompt=WITHOUT_EXAMPLES)
    ctx.settings = ctx.settings.model_copy(update={"self_check_smoke": True})
    run_job(ctx, task)
    runs = executions(ctx)
    assert [(e.agent, e.self_check, e.verdict) for e in runs] == [
        ("large", "failed", "failed"),
        ("medium", "passed", "passed"),
    ]
    assert (runs[0].self_check_detail or "").startswith("no examples; the code fails as written")
    assert PAPER_MECHANISM["self_check_smoke"] is False


def test_sale_eval_adopts_no_done_job_that_ran_without_a_model(ctx: AuctionContext) -> None:
    # A job that finished after a model server died (its calls' retries spent) is done in the
    # database, but a rerun of `sale eval` must run it again rather than adopt it.
    from sale.scripts.evals.runner import LiveRunner

    from sale.errors import RETRIES_SPENT

    task = spec("").model_copy(update={"name": "HumanEval/0"})
    run_job(ctx, task)
    with session_scope(ctx.db_url) as s:
        job = s.get(Job, "job-1")
        assert job is not None
        job.status = "done"
        s.add(job)
    runner = LiveRunner(ctx.settings, ctx.pool, ctx.settings.state_dir)
    assert runner.finished_job(ctx, "HumanEval/0", None) == "job-1"
    with session_scope(ctx.db_url) as s:
        bid = s.exec(select(Bid).where(Bid.job_id == "job-1", Bid.agent == "large")).one()
        bid.status, bid.error = "failed", RETRIES_SPENT + "connection refused"
        s.add(bid)
    assert runner.finished_job(ctx, "HumanEval/0", None) is None
