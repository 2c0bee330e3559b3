"""Offline fit of the scoring weights ``w = (w_c, w_h, w_1..w_n)`` (docs/design.md §3, "Weights").

A training auction holds bids with their features (output price π, plan tokens |s|, entropy H,
jury scores γ_j) and the index of the bid that should win. Since ``score = C − V`` is linear in
w, ``score_b = F_b · w`` with ``F_b = (π_b·|s_b|, −H_b, −γ_1b, …, −γ_nb)``. The fit is the
paper's mixed-integer program, solved by ``scipy.optimize.milp`` (HiGHS): a binary ``z_t`` per
auction says "auction t is routed to its target", and for every other bid b of t
``F_target·w ≤ F_b·w − margin + M·(1 − z_t)`` with M = 10⁴; maximise Σ z_t. Ties never count
(margin > 0). **Scale.** The argmin is unchanged when w is multiplied by λ > 0, so without a
normalisation the program is degenerate (scale w up to meet any margin; w = 0 ties every bid).
We fix the scale with ``w_h + Σ_j w_j = 1`` and ``w ≥ 0`` (the value weights lie on the simplex,
so V is a convex combination of the value features, on the jury's 0–5 scale) and bound the box
``0 ≤ w_c ≤ w_c_max`` (default 1, far above any sensible ratio for prices in $/Mt and plans of a
few hundred tokens). Every non-negative w with some value weight is a rescaling of a point of this
set; only pure cost routing (all value weights 0) is excluded, and it is approached by w_c_max.
**Unique answer (min-max).** The optimum count is rarely reached by one w, so the fit is
lexicographic, in exact stages rather than with a small objective coefficient (which the MIP gap
tolerance would swallow): (1) maximise Σ z_t; (2) keep Σ z_t at that optimum and maximise the
worst-case extra margin δ over the routed auctions; (3) polish: fix the routed set and solve the
same max-min-margin problem as an LP without big-M, so the integrality tolerance of z (M·1e-6 is
larger than the margin) cannot leak into the weights. HiGHS is deterministic, so the same data
gives the same weights; only a hit time limit can change that (reported in ``status``).
**Missing data.** A bid without entropy drops the entropy feature for its whole auction, as the
scorer does. An abstaining juror's score is the mean of the present jurors' scores for that bid,
exactly as ``sale.workers.auction.scoring.jury_value`` imputes it (a rule chosen to be linear in w,
so the
fit optimises the scorer's own rule). A bid every juror abstained on has no jury term, as in
the scorer. ``routed`` is then measured with the real scorer, not read off the MIP (``objective``).
**Labels.** Memory records know only the executed bid's outcome, so ``auctions_from_memory``
learns either the old weights' own decisions (``auction``) or only from passed executions
(``verified``); a proper training split comes from the evaluation harness's single-agent runs
(every agent executes every task), turned into targets by ``auctions_from_outcomes``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from numpy.typing import NDArray
from sale.workers.auction import scoring as auction
from sale.workers.auction.weights import parse_weights
from sale.workers.memory.retrieval import LabelMode
from scipy.optimize import Bounds, LinearConstraint, milp  # type: ignore[import-untyped]

log = logging.getLogger(__name__)

Matrix = NDArray[np.float64]

#: Bid rounds of jobs that skipped the auction (one bid, nothing to rank).
NO_AUCTION_ROUNDS = ("direct", "shortcut")

_STATUS = {0: "optimal", 1: "time_limit", 2: "infeasible", 3: "unbounded", 4: "solver_error"}


@dataclass(frozen=True)
class TrainingBid:
    """One bid's features: agent, output price ($/Mt), plan tokens, entropy, jury scores."""

    agent: str
    price: float
    tokens: int
    entropy: float | None
    jury: Mapping[str, float | None]


@dataclass(frozen=True)
class TrainingAuction:
    """One auction to learn from; ``target`` is the bid that should win (None: skipped)."""

    task_id: str
    bids: list[TrainingBid]
    target: int | None


class FittedWeights(TypedDict):
    """The fitted weights, in the weights file's terms."""

    w_c: float
    w_h: float
    jurors: dict[str, float]


@dataclass(frozen=True)
class FitResult:
    """Fitted weights and how well they route the training auctions (under the real scorer)."""

    weights: FittedWeights
    routed: int
    total: int
    accuracy: float
    status: str
    objective: float
    skipped: int = 0
    min_margin: float = 0.0


def auction_features(item: TrainingAuction, jurors: Sequence[str]) -> Matrix:
    """Rows ``(π·|s|, −H, −γ̃_1..−γ̃_n)`` per bid, so that ``score = features @ w``.

    H is 0 for every bid when any bid lacks it; γ̃ imputes an abstention with the mean of the
    present jurors' scores for that bid, and is 0 for a bid every juror abstained on.
    """
    use_entropy = all(b.entropy is not None for b in item.bids)
    rows = []
    for bid in item.bids:
        present = [float(s) for j in jurors if (s := bid.jury.get(j)) is not None]
        fill = sum(present) / len(present) if present else 0.0
        gammas = []
        for j in jurors:
            score = bid.jury.get(j)
            gammas.append(float(score) if score is not None else fill)
        entropy = bid.entropy if use_entropy and bid.entropy is not None else 0.0
        rows.append([bid.price * bid.tokens, -entropy, *(-g for g in gammas)])
    return np.asarray(rows, dtype=np.float64).reshape(len(item.bids), 2 + len(jurors))


def auction_scores(
    item: TrainingAuction, w_c: float, w_h: float, juror_weights: Mapping[str, float]
) -> list[float]:
    """Each bid's score under the real scorer (``sale.workers.auction.scoring``), for these
    weights."""
    terms = [auction.BidTerms(b.price, b.tokens, b.entropy, b.jury) for b in item.bids]
    return [s.score for s in auction.score_bids(terms, w_c, w_h, juror_weights)]


def routes_to_target(
    item: TrainingAuction, w_c: float, w_h: float, juror_weights: Mapping[str, float]
) -> bool:
    """Whether the target strictly beats every other bid (a tie is not a win)."""
    if item.target is None:
        return False
    scores = auction_scores(item, w_c, w_h, juror_weights)
    mine = scores[item.target]
    return all(mine < s for i, s in enumerate(scores) if i != item.target)


def _differences(usable: Sequence[TrainingAuction], jurors: Sequence[str]) -> list[Matrix]:
    """Per auction, ``F_target − F_b`` for every other bid b (one row each)."""
    out = []
    for item in usable:
        assert item.target is not None
        features = auction_features(item, jurors)
        others = [i for i in range(len(item.bids)) if i != item.target]
        out.append(features[item.target] - features[others])
    return out


def _solve(
    c: Matrix,
    constraints: list[LinearConstraint],
    integrality: Matrix,
    bounds: Bounds,
    limit: float,
) -> tuple[Matrix | None, str]:
    # mip_rel_gap 0: the stages are lexicographic, so each must be solved to optimality.
    # Presolve off: in scipy 1.17 HiGHS's MIP presolve prints a debug line to stdout, which a
    # library must not do; on these sizes it costs less than a factor of two in solve time.
    options = {"time_limit": max(limit, 1.0), "mip_rel_gap": 0.0, "presolve": False}
    res = milp(c, constraints=constraints, integrality=integrality, bounds=bounds, options=options)
    x = None if res.x is None else np.asarray(res.x, dtype=np.float64)
    return x, _STATUS.get(int(res.status), "solver_error")


def fit_weights(
    auctions: Sequence[TrainingAuction],
    jurors: list[str],
    *,
    margin: float = 1e-3,
    big_m: float = 1e4,
    time_limit: float = 60,
    w_c_max: float = 1.0,
) -> FitResult:
    """Fit w so the auction's argmin routes as many training auctions as possible to their target.

    Auctions without a target or with fewer than two bids are skipped (nothing to learn).
    Raises ValueError on an out-of-range target or bad parameters, RuntimeError when HiGHS
    returns no solution at all.
    """
    if margin <= 0 or big_m <= 0 or w_c_max <= 0:
        raise ValueError("margin, big_m and w_c_max must be > 0")
    for item in auctions:
        if item.target is not None and not 0 <= item.target < len(item.bids):
            raise ValueError(f"task {item.task_id}: target {item.target} is not a bid index")
    usable = [a for a in auctions if a.target is not None and len(a.bids) >= 2]
    skipped = len(auctions) - len(usable)
    n_w, n_t = 2 + len(jurors), len(usable)
    diffs = _differences(usable, jurors)
    n_rows = sum(d.shape[0] for d in diffs)
    # Variables: x = (w_c, w_h, w_1..w_n, z_1..z_T, δ).
    n_x = n_w + n_t + 1
    a = np.zeros((n_rows, n_x))
    row = 0
    spread = 0.0
    for t, d in enumerate(diffs):
        k = d.shape[0]
        a[row : row + k, :n_w] = d
        a[row : row + k, n_w + t] = big_m
        a[row : row + k, -1] = 1.0
        spread = max(spread, float(np.max(w_c_max * np.abs(d[:, 0]) + np.abs(d[:, 1:]).max(1))))
        row += k
    if 2 * spread + margin > big_m:
        log.warning("fit: score differences up to %.3g exceed big-M/2 = %.3g", spread, big_m / 2)
    normalise = np.zeros(n_x)
    normalise[1:n_w] = 1.0
    scale = LinearConstraint(normalise[None, :], 1.0, 1.0)
    lower = np.zeros(n_x)
    upper = np.concatenate([[w_c_max], np.ones(n_w - 1), np.ones(n_t), [0.0]])
    integrality = np.concatenate([np.zeros(n_w), np.ones(n_t), [0.0]])
    deadline = time.monotonic() + time_limit
    constraints = [scale]
    if n_rows:
        constraints.append(LinearConstraint(a, -np.inf, big_m - margin))

    # Stage 1: maximise the number of auctions routed to their target (δ fixed at 0).
    c1 = np.zeros(n_x)
    c1[n_w : n_w + n_t] = -1.0
    x, status = _solve(c1, constraints, integrality, Bounds(lower, upper), time_limit)
    if x is None:
        raise RuntimeError(f"weight fit: HiGHS returned no solution (status {status})")
    best = round(float(np.sum(x[n_w : n_w + n_t])))
    objective = float(best)

    # Stage 2: at that count, maximise the worst-case extra margin δ of the routed auctions.
    if best > 0:
        count = np.zeros(n_x)
        count[n_w : n_w + n_t] = 1.0
        upper2 = upper.copy()
        upper2[-1] = spread
        c2 = np.zeros(n_x)
        c2[-1] = -1.0
        left = deadline - time.monotonic()
        x2, status2 = _solve(
            c2,
            [*constraints, LinearConstraint(count[None, :], best, np.inf)],
            integrality,
            Bounds(lower, upper2),
            left,
        )
        if x2 is not None:
            x = x2
        if status2 != "optimal":
            status = status2
    routed_set = [t for t in range(n_t) if x[n_w + t] > 0.5]

    # Stage 3: the same max-min-margin problem as an LP on the routed set, without big-M.
    w = x[:n_w].copy()
    delta = float(x[-1])  # stage 2's δ, kept if the polish LP does not solve
    if routed_set:
        block = np.vstack([diffs[t] for t in routed_set])
        a3 = np.hstack([block, np.ones((block.shape[0], 1))])
        c3 = np.zeros(n_w + 1)
        c3[-1] = -1.0
        lower3 = np.concatenate([np.zeros(n_w), [-spread - margin]])
        upper3 = np.concatenate([[w_c_max], np.ones(n_w - 1), [spread]])
        x3, status3 = _solve(
            c3,
            [
                LinearConstraint(np.append(normalise[:n_w], 0.0)[None, :], 1.0, 1.0),
                LinearConstraint(a3, -np.inf, -margin),
            ],
            np.zeros(n_w + 1),
            Bounds(lower3, upper3),
            deadline - time.monotonic(),
        )
        if x3 is not None and status3 == "optimal":
            w, delta = x3[:n_w], float(x3[-1])

    clean = [0.0 if abs(v) < 1e-12 else float(v) for v in w]
    weights = FittedWeights(
        w_c=clean[0], w_h=clean[1], jurors={j: clean[2 + i] for i, j in enumerate(jurors)}
    )
    routed = sum(
        routes_to_target(u, weights["w_c"], weights["w_h"], weights["jurors"]) for u in usable
    )
    log.info(
        "fit: routed %d/%d auctions (MIP %d), skipped %d, %s", routed, n_t, best, skipped, status
    )
    return FitResult(
        weights=weights,
        routed=routed,
        total=n_t,
        accuracy=routed / n_t if n_t else 0.0,
        status=status,
        objective=objective,
        skipped=skipped,
        min_margin=margin + delta if routed_set else 0.0,
    )


def weights_document(
    result: FitResult, version: str, source_text: str, *, date: dt.date | None = None
) -> dict[str, Any]:
    """The weights file's JSON for a fit: the weights, and what they were fitted on."""
    day = (date or dt.datetime.now(dt.UTC).date()).isoformat()
    jurors = dict(result.weights["jurors"])
    default = sum(jurors.values()) / len(jurors) if jurors else 0.0
    source = (
        f"fitted by sale.workers.auction.fit (scipy.optimize.milp/HiGHS, status {result.status}) "
        f"on {source_text}: {result.total} auctions used, {result.skipped} skipped, "
        f"{result.routed}/{result.total} routed to their target "
        f"(accuracy {result.accuracy:.3f}, worst-case margin {result.min_margin:.4g}); {day}"
    )
    return {
        "version": version,
        "w_c": result.weights["w_c"],
        "w_h": result.weights["w_h"],
        "jurors": jurors,
        "default_juror_weight": default,
        "source": source,
        "fitted_on": day,
    }


def write_weights(path: Path, doc: dict[str, Any]) -> None:
    """Validate ``doc`` as a weights file and write it atomically to ``path``."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    parse_weights(text, str(path))  # never write a file the scorer would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _cheapest(bids: Sequence[TrainingBid], indices: Sequence[int]) -> int | None:
    if not indices:
        return None
    return min(indices, key=lambda i: (bids[i].price, bids[i].price * bids[i].tokens, i))


def auctions_from_memory(
    records: Sequence[Mapping[str, Any]],
    label_mode: LabelMode,
    *,
    prices: Mapping[str, float] | None = None,
) -> list[TrainingAuction]:
    """Training auctions from memory records (``{"job_id", "bids", "verdict"}`` dicts).

    Only bids with status ok are kept (first and refined rounds: the final award is the argmin
    over both). The target is the bid labelled ``win``: ``auction`` mode takes the awarded bid;
    ``verified`` mode takes a bid whose execution passed, so a failed award, or a record without
    a verdict (whose only label is the old weights' own decision), gives target None. Memory bids
    carry no price: pass the pool's output prices in ``prices`` (else a bid's ``price`` is used).
    """
    out = []
    for rec in records:
        if any(raw.get("round") in NO_AUCTION_ROUNDS for raw in rec.get("bids", [])):
            continue  # a direct or shortcut job had no auction to learn from
        verdict = str(rec.get("verdict", "unknown"))
        bids: list[TrainingBid] = []
        wins: list[int] = []
        for raw in rec.get("bids", []):
            if raw.get("status", "ok") != "ok":
                continue
            agent = str(raw["agent"])
            price = prices.get(agent) if prices is not None else None
            if price is None:
                price = raw.get("price")
            if price is None:
                raise ValueError(f"job {rec.get('job_id')}: no price for agent {agent!r}")
            entropy = raw.get("entropy")
            # "gamma": the jury's scores as the scorer used them (sale.workers.stages.jury_scores);
            # older
            # records have only the raw "jury".
            scored = raw.get("gamma", raw.get("jury", {}))
            jury = {str(j): (None if s is None else float(s)) for j, s in scored.items()}
            bids.append(
                TrainingBid(
                    agent=agent,
                    price=float(price),
                    tokens=int(raw.get("tokens", 0)),
                    entropy=None if entropy is None else float(entropy),
                    jury=jury,
                )
            )
            if label_mode == "auction":
                label = raw.get("auction_label")
            else:
                label = raw.get("verified_label") if verdict in ("passed", "failed") else None
            if label == "win":
                wins.append(len(bids) - 1)
        out.append(TrainingAuction(str(rec.get("job_id", "")), bids, _cheapest(bids, wins)))
    return out


def auctions_from_outcomes(
    features: Sequence[TrainingAuction], solved: Mapping[str, Mapping[str, bool]]
) -> list[TrainingAuction]:
    """Set each auction's target to the cheapest bid whose agent solved the task when run alone.

    ``solved[task_id][agent]`` comes from the evaluation harness's single-agent runs. "Cheapest"
    is the lowest output price, then the lowest price × plan tokens, then the first bid. No solver
    (or an unknown task) gives target None: no bid should win.
    """
    out = []
    for item in features:
        outcome = solved.get(item.task_id, {})
        winners = [i for i, b in enumerate(item.bids) if outcome.get(b.agent, False)]
        out.append(TrainingAuction(item.task_id, list(item.bids), _cheapest(item.bids, winners)))
    return out
