"""The jury levers as task bodies (no Celery): rotation, standardisation, constant
score vectors, the weight-based jury subset; each off by default. Scripted pool, temporary SQLite.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from sale.broker.pool import Agent
from sale.models.db import session_scope
from sale.models.tables import Job, JuryCall, JuryScore, MemoryRecord
from sale.workers.auction import fit
from sale.workers.context import AuctionContext
from sale.workers.llm.types import LLMResult
from sale.workers.stages import awarding, bidding, judging
from sale.workers.stages import executing as attempts
from sale.workers.stages import updating as memory_update
from sale.workers.views import job_view
from sqlmodel import select

from tests.workers.stages import test_service
from tests.workers.stages.test_service import (
    AGENTS,
    PRICES,
    CountingLLM,
    add_bid,
    add_scores,
    bids_of,
    collect_bids,
    new_job,
)

_LABEL = re.compile(r"PLAN ([A-Z]+):")


@dataclasses.dataclass
class FlatJuror(CountingLLM):
    """The counting scripted call site, except that ``flat`` scores every plan 4 (constant)."""

    flat: str = "medium"

    def __call__(self, agent: Agent, messages: list[dict[str, str]], **kw: Any) -> LLMResult:
        result = super().__call__(agent, messages, **kw)
        if agent.name != self.flat or kw["stage"] != "jury":
            return result
        labels = _LABEL.findall(messages[-1]["content"])
        text = "{" + ", ".join(f'"{lab}": 4' for lab in labels) + "}"
        return dataclasses.replace(result, text=text)


@pytest.fixture
def llm() -> FlatJuror:
    return FlatJuror()


# The task-body fixtures of test_service, resolved against this module's ``llm``.
ctx = test_service.ctx
embed = test_service.embed


def configure(ctx: AuctionContext, **settings: object) -> AuctionContext:
    ctx.settings = ctx.settings.model_copy(update=settings)
    return ctx


def judge(ctx: AuctionContext, job: str) -> None:
    for juror, target in judging.jury_targets(ctx, job, "first"):
        judging.run_jury(ctx, job, juror, "first", target)


def calls(ctx: AuctionContext, job: str) -> dict[str, JuryCall]:
    with session_scope(ctx.db_url) as s:
        return {c.juror: c for c in s.exec(select(JuryCall).where(JuryCall.job_id == job))}


def notes(ctx: AuctionContext, job: str) -> list[str]:
    with session_scope(ctx.db_url) as s:
        stored = s.get(Job, job)
        assert stored is not None
        return list(stored.notes)


# --- rotation ------------------------------------------------------------------------------


@pytest.mark.parametrize("job", ["job-1", "job-2", "job-3"])
def test_rotate_puts_every_bid_at_every_position_across_the_jury(
    ctx: AuctionContext, job: str
) -> None:
    configure(ctx, jury_debias="rotate")
    new_job(ctx, job)
    collect_bids(ctx, job)
    judge(ctx, job)
    orders = [[o["agent"] for o in c.order] for c in calls(ctx, job).values()]
    assert len(orders) == 3
    for position in range(3):
        assert sorted(order[position] for order in orders) == sorted(AGENTS), position
    # The recorded labels still map to the right bids: scripted jurors score each plan's quality.
    with session_scope(ctx.db_url) as s:
        scores = s.exec(select(JuryScore).where(JuryScore.juror == "small")).all()
    by_agent = {b.id: a for a, b in bids_of(ctx, job).items()}
    assert {by_agent[sc.bid_id]: sc.score for sc in scores} == {"small": 1, "medium": 2, "large": 3}


def test_without_rotation_some_job_repeats_a_position(ctx: AuctionContext) -> None:
    # The default per-juror shuffle gives no such guarantee: the lever is what makes it hold.
    repeated = 0
    for i in range(2):
        job = new_job(ctx, f"job-{i}")
        collect_bids(ctx, job)
        judge(ctx, job)
        orders = [[o["agent"] for o in c.order] for c in calls(ctx, job).values()]
        repeated += any(len({o[p] for o in orders}) < 3 for p in range(3))
    assert repeated > 0


# --- standardisation -----------------------------------------------------------------------


def biased_auction(ctx: AuctionContext, job: str) -> dict[str, int]:
    """Two fair jurors mildly prefer medium; "large" uses the whole scale for its own bid."""
    new_job(ctx, job)
    ids = {a: add_bid(ctx, job, a, 100, 0.5) for a in AGENTS}
    fair = {ids["small"]: 2, ids["medium"]: 3, ids["large"]: 2}
    loud = {ids["small"]: 0, ids["medium"]: 1, ids["large"]: 5}
    add_scores(ctx, job, {"small": fair, "medium": fair, "large": loud})
    return ids


@pytest.mark.parametrize(("debias", "winner"), [("none", "large"), ("standardize", "medium")])
def test_standardize_changes_the_winner_and_keeps_the_raw_scores(
    ctx: AuctionContext, debias: str, winner: str
) -> None:
    # Raw jury means: small 4/3, medium 7/3, large 3; C = 0.03, 0.12, 0.36; H = 0.5 each.
    # none: large −3.14 beats medium −2.71. standardize: medium's mean γ 3.04, large's 2.21:
    # medium −3.42 beats large −2.35 (hand-computed in test_auction).
    configure(ctx, jury_debias=debias)
    ids = biased_auction(ctx, "job-1")
    assert awarding.score_first_round(ctx, "job-1").provisional_agent == winner
    with session_scope(ctx.db_url) as s:
        raw = {(r.juror, r.bid_id): r.score for r in s.exec(select(JuryScore))}
    assert raw[("large", ids["large"])] == 5 and raw[("small", ids["medium"])] == 3
    assert all(isinstance(v, int) for v in raw.values())


def test_memory_stores_the_scorer_gammas_and_the_fit_reproduces_its_scores(
    ctx: AuctionContext,
) -> None:
    configure(ctx, jury_debias="standardize")
    biased_auction(ctx, "job-1")
    awarding.score_first_round(ctx, "job-1")
    awarding.decide_award(ctx, "job-1")
    attempts.record_failed_execution(ctx, "job-1", "not executed in this test")
    record_id = memory_update.update_memory(ctx, "job-1")
    with session_scope(ctx.db_url) as s:
        record = s.get(MemoryRecord, record_id)
        assert record is not None
        items = list(record.bids)
    by_agent = {b["agent"]: b for b in items}
    assert by_agent["large"]["jury"] == {"small": 2, "medium": 2, "large": 5}  # raw kept
    assert by_agent["large"]["gamma"]["large"] != pytest.approx(5.0)  # standardised
    shown = {b["agent"]: b for b in job_view(ctx, "job-1")["bids"]}
    assert shown["large"]["gamma"] == by_agent["large"]["gamma"]  # what `sale eval` correlates
    assert shown["large"]["jury"] == by_agent["large"]["jury"]
    [training] = fit.auctions_from_memory(
        [{"job_id": "job-1", "bids": items, "verdict": "failed"}], "auction", prices=PRICES
    )
    w = ctx.weights
    scores = fit.auction_scores(training, w.w_c, w.w_h, w.juror_weights(list(AGENTS)))
    assert scores == pytest.approx([b["score"] for b in items])


# --- constant score vectors ----------------------------------------------------------------


@pytest.mark.parametrize("lever", ["keep", "abstain"])
def test_a_constant_juror_abstains_only_when_the_lever_is_on(
    ctx: AuctionContext, lever: str
) -> None:
    configure(ctx, jury_degenerate=lever)
    job = new_job(ctx)
    collect_bids(ctx, job)
    judge(ctx, job)
    awarding.score_first_round(ctx, job)
    medium = calls(ctx, job)["medium"]
    view = {c["juror"]: c for c in job_view(ctx, job, steps=False)["jury_calls"]}
    bids = bids_of(ctx, job)
    for i, agent in enumerate(AGENTS):
        # small and large score the scripted quality i + 1; medium says 4 for everything.
        entropy = bids[agent].entropy
        assert entropy is not None
        jury = (i + 1) if lever == "abstain" else (2 * (i + 1) + 4) / 3
        assert bids[agent].value == pytest.approx(entropy + jury), agent
    if lever == "abstain":
        assert medium.status == "abstained"
        assert medium.error == "degenerate: constant scores (all 4 over 3 bids)"
        assert view["medium"]["status"] == "abstained"
        assert view["medium"]["error"].startswith("degenerate: constant scores")
    else:
        assert (medium.status, medium.error) == ("ok", None)
        assert view["medium"]["status"] == "ok"
    assert {view["small"]["status"], view["large"]["status"]} == {"ok"}


def test_constant_check_spans_the_calls_of_a_per_bid_jury(ctx: AuctionContext) -> None:
    configure(ctx, jury_degenerate="abstain", jury_mode="per_bid")
    job = new_job(ctx)
    collect_bids(ctx, job)
    judge(ctx, job)
    awarding.score_first_round(ctx, job)
    with session_scope(ctx.db_url) as s:
        rows = s.exec(select(JuryCall).where(JuryCall.juror == "medium")).all()
    assert len(rows) == 3
    assert {(c.status, (c.error or "")[:11]) for c in rows} == {("abstained", "degenerate:")}


# --- the weight-based jury subset ----------------------------------------------------------


def weigh(ctx: AuctionContext, **jurors: float) -> None:
    ctx.weights = dataclasses.replace(ctx.weights, jurors=dict(jurors))


@pytest.mark.parametrize(("min_weight", "small_calls"), [(0.0, 1), (0.1, 0)])
def test_a_zero_weight_juror_is_called_only_without_a_minimum(
    ctx: AuctionContext, llm: FlatJuror, min_weight: float, small_calls: int
) -> None:
    configure(ctx, jury_min_weight=min_weight)
    weigh(ctx, small=0.0)
    job = new_job(ctx)
    collect_bids(ctx, job)
    judge(ctx, job)
    awarding.score_first_round(ctx, job)
    assert llm.calls[("small", "jury")] == small_calls
    assert llm.calls[("medium", "jury")] == llm.calls[("large", "jury")] == 1
    assert set(calls(ctx, job)) == ({"small"} if small_calls else set()) | {"medium", "large"}
    subset = [n for n in notes(ctx, job) if n.startswith("jury subset")]
    assert subset == (
        [] if small_calls else ["jury subset: small not called (weight < SALE_JURY_MIN_WEIGHT=0.1)"]
    )


def test_a_kinds_weights_decide_its_jury_and_scores(ctx: AuctionContext, llm: FlatJuror) -> None:
    """A coding job is scored with the coding section of the weights file (here: no jury, a
    larger cost weight); a search job would keep the top-level weights."""
    configure(ctx, jury_min_weight=0.05)
    coding = dataclasses.replace(
        ctx.weights, w_c=0.02, jurors=dict.fromkeys(AGENTS, 0.0), default_juror_weight=0.0
    )
    ctx.weights = dataclasses.replace(ctx.weights, kinds={"coding": coding})
    # A section fitted on another pool (it does not name every agent) does not apply.
    other = dataclasses.replace(coding, jurors={"qwen2.5-coder-0.5b": 0.1})
    assert (
        dataclasses.replace(ctx.weights, kinds={"coding": other}).for_kind("coding", list(AGENTS))
        is not other
    )
    assert judging.jury_panel(ctx, "search") == list(AGENTS)
    assert judging.jury_panel(ctx, "coding") == []
    job = new_job(ctx)
    collect_bids(ctx, job)
    assert judging.jury_targets(ctx, job, "first") == []
    awarding.score_first_round(ctx, job)
    assert sum(n for (_, stage), n in llm.calls.items() if stage == "jury") == 0
    for agent, bid in bids_of(ctx, job).items():
        assert bid.value == pytest.approx(coding.w_h * bid.entropy), agent
        assert bid.cost_term == pytest.approx(0.02 * PRICES[agent] * bid.tokens_out), agent


def test_no_juror_left_drops_the_jury_term_with_a_note(ctx: AuctionContext, llm: FlatJuror) -> None:
    configure(ctx, jury_min_weight=0.5)  # every juror weighs 1/3 by default
    job = new_job(ctx)
    collect_bids(ctx, job)
    assert judging.jury_targets(ctx, job, "first") == []
    assert bidding.has_bids(ctx, job, "first")  # so the judge task scores instead of failing
    awarding.score_first_round(ctx, job)
    assert sum(n for (_, stage), n in llm.calls.items() if stage == "jury") == 0
    for agent, bid in bids_of(ctx, job).items():
        assert bid.value == pytest.approx(bid.entropy), agent  # V = w_h · H alone
    assert "jury term dropped: no juror's weight reaches SALE_JURY_MIN_WEIGHT=0.5" in notes(
        ctx, job
    )
