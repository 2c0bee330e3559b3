"""Tests for sale.workers.agent.tools: docstring-example extraction on HumanEval-like prompts, the
visible
checks run in the real sandbox (never the hidden tests), run_python's observation, and the
search tools on a small in-memory BM25 index."""

from __future__ import annotations

from typing import Any

import pytest
from sale.models.schemas import TaskSpec
from sale.workers.agent import tools
from sale.workers.agent.examples import Example, docstring_examples
from sale.workers.agent.tools import (
    CodingTools,
    SearchTools,
    Tool,
    Toolbox,
    format_run,
    make_toolbox,
    tool_schemas,
)
from sale.workers.sandbox.runner import SandboxResult
from sale.workers.search.index import BM25Index, Document, SearchHit

pytestmark = pytest.mark.timeout(120)

# HumanEval/0, verbatim.
HUMANEVAL_0 = '''from typing import List


def has_close_elements(numbers: List[float], threshold: float) -> bool:
    """ Check if in given list of numbers, are any two numbers closer to each other than
    given threshold.
    >>> has_close_elements([1.0, 2.0, 3.0], 0.5)
    False
    >>> has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)
    True
    """
'''
CORRECT_0 = (
    "def has_close_elements(numbers, threshold):\n"
    "    return any(abs(a - b) < threshold\n"
    "               for i, a in enumerate(numbers) for j, b in enumerate(numbers) if i != j)\n"
)
# Hidden tests that would fail any candidate: run_tests must never run them.
HIDDEN = "def check(candidate):\n    assert False, 'hidden test ran'\n"


def coding_spec(prompt: str = HUMANEVAL_0, entry: str = "has_close_elements") -> TaskSpec:
    return TaskSpec(kind="coding", prompt=prompt, tests=HIDDEN, entry_point=entry)


def result(
    stdout: str = "", stderr: str = "", code: int | None = 0, stopped: str | None = None
) -> SandboxResult:
    return SandboxResult(code, stdout, stderr, stopped, 0.01, "netns", "pid_namespace")


# --- docstring examples ---------------------------------------------------------------------


def test_examples_of_humaneval_0() -> None:
    assert docstring_examples(HUMANEVAL_0) == [
        Example("has_close_elements([1.0, 2.0, 3.0], 0.5)", "False"),
        Example("has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3)", "True"),
    ]


def test_examples_with_continuations_statements_none_results_and_arrows() -> None:
    prompt = '''def longest(strings):
    """ Return the longest string; None for an empty list.
    >>> longest([])

    >>> longest(['a', 'bb',
    ...          'c'])
    'bb'
    >>> xs = ['x']
    >>> print(longest(xs))
    x

    Examples:
    longest(['ab', 'c']) ==> 'ab'
    longest(['q']) ➞ "q".
    other(['q']) ==> 'q'
    longest(['a']) ==> the first one
    >>> longest(
    """
'''
    assert docstring_examples(prompt, "longest") == [
        Example("longest([])", None),  # no output shown: doctest expects None
        Example("longest(['a', 'bb',\n         'c'])", "'bb'"),
        Example("xs = ['x']", None),
        Example("print(longest(xs))", "x"),
        Example("longest(['ab', 'c'])", "'ab'"),
        Example("longest(['q'])", "'q'"),  # the literal, normalised
        # other(...) is not the entry point; "the first one" is no literal; `longest(` does
        # not parse: all three are dropped.
    ]
    # Without an entry point only the doctest examples count.
    assert len(docstring_examples(prompt)) == 4


def test_no_examples_means_no_checks() -> None:
    spec = coding_spec('def f(x):\n    """Return x."""\n', "f")
    assert docstring_examples(spec.prompt, "f") == []
    observed = CodingTools(spec, runner=lambda *a, **k: pytest.fail("must not run")).run_tests(
        "def f(x): return x"
    )
    assert "no examples" in observed


# --- run_tests in the real sandbox ----------------------------------------------------------


def test_run_tests_passes_a_correct_candidate_and_never_runs_the_hidden_tests() -> None:
    programs: list[str] = []

    def spy(program: str, **kwargs: Any) -> SandboxResult:
        programs.append(program)
        from sale.workers.sandbox.runner import run_python

        return run_python(program, **kwargs)

    observed = CodingTools(coding_spec(), runner=spy).run_tests(CORRECT_0)
    assert observed == "2 of 2 examples passed. Reply with Final Answer to submit this code."
    assert "hidden test ran" not in programs[0] and "check(" not in programs[0]
    assert programs[0].startswith("from typing import List\n")  # the prompt's imports added


def test_run_tests_names_each_failing_example() -> None:
    observed = CodingTools(coding_spec()).run_tests(
        "def has_close_elements(numbers, threshold):\n    return True\n"
    )
    assert "exit code 1" in observed
    assert (
        "example 1: has_close_elements([1.0, 2.0, 3.0], 0.5)  expected False; got True" in observed
    )
    assert "1 of 2 examples passed" in observed
    assert "example 2" not in observed


def test_run_tests_completes_a_bare_body_like_the_verdict() -> None:
    body = (
        "    return any(abs(a - b) < threshold for a in numbers for b in numbers if a is not b)\n"
    )
    assert CodingTools(coding_spec()).run_tests(body).startswith("2 of 2 examples passed.")


def test_run_tests_floats_prints_statements_and_expected_exceptions() -> None:
    prompt = '''def half(x):
    """
    >>> half(1.0)
    0.5
    >>> y = half(0.3)
    >>> print(round(y, 2))
    0.15
    >>> half('a')
    Traceback (most recent call last):
      ...
    TypeError: unsupported operand
    >>> half(0.7)
    0.35
    """
'''
    checks = CodingTools(coding_spec(prompt, "half"))
    # 0.7 / 2 is 0.35 only up to rounding: the comparison tolerates that.
    assert checks.run_tests("def half(x):\n    return x / 2\n").startswith(
        "4 of 4 examples passed."
    )
    observed = checks.run_tests("def half(x):\n    return float(x) / 2 if x != 'a' else 0\n")
    assert "example 3: half('a')  expected TypeError; raised nothing" in observed
    assert "3 of 4 examples passed" in observed


def test_run_tests_reports_a_candidate_that_does_not_compile() -> None:
    observed = CodingTools(coding_spec()).run_tests("def has_close_elements(:\n")
    assert "exit code 1" in observed and "SyntaxError" in observed


# --- run_python -----------------------------------------------------------------------------


def test_run_python_shows_status_stdout_and_stderr() -> None:
    observed = CodingTools(coding_spec()).run_python(
        "import sys\nprint('out')\nprint('err', file=sys.stderr)\nsys.exit(3)"
    )
    assert observed == "exit code 3\nstdout:\nout\nstderr:\nerr"


def test_run_python_truncates_and_says_why_it_stopped() -> None:
    long = "x" * 5000
    observed = format_run(
        result(stdout=long, stderr="A" * 3000 + "END", code=None, stopped="timeout")
    )
    assert observed.startswith("killed; stopped: timeout\nstdout:\n" + "x" * tools.OUTPUT_CHARS)
    assert "[... 3500 characters cut ...]" in observed
    assert observed.endswith("END")  # the tail of stderr (the traceback's end) is kept
    assert "(empty)" in format_run(result())


# --- search tools ---------------------------------------------------------------------------

DOCS = [
    Document("Paris", "Paris", "Paris is the capital of France. It lies on the Seine. " * 60),
    Document("Seine", "Seine", "The Seine is a river in France that flows through Paris."),
    Document("Lyon", "Lyon", "Lyon is a city in France on the Rhône."),
    Document("pele-id", "Pelé", "Pelé was a Brazilian footballer."),
    *[Document(f"f{i}", f"France {i}", f"France fact {i}.") for i in range(6)],
]


@pytest.fixture(scope="module")
def index() -> BM25Index:
    return BM25Index.build(DOCS)


def test_search_shows_the_top_five_titles_with_snippets(index: BM25Index) -> None:
    observed = SearchTools(index).search(" capital of France ")
    lines = observed.splitlines()
    assert len(lines) == 5
    assert lines[0] == "1. Paris: Paris is the capital of France."
    assert all(line.startswith(f"{n}. ") for n, line in enumerate(lines, 1))
    assert SearchTools(index).search("zzzz") == "No results for 'zzzz'. Try other words."


def test_open_by_title_by_a_seen_title_and_truncated(index: BM25Index) -> None:
    search = SearchTools(index, open_chars=100)
    page = search.open('"Paris"')
    assert page.startswith("Paris\nParis is the capital of France.")
    assert "characters cut" in page and len(page) < 200
    # Pelé's doc id differs from its title: the title (any case) still opens it.
    assert search.open("pelé") == "Pelé\nPelé was a Brazilian footballer."
    # A title seen in the results opens however loosely it is written.
    assert search.search("river France").startswith("1. Seine")
    assert search.open("The seine.") == search.open("Seine")
    assert SearchTools(index).open("Seine").startswith("Seine\nThe Seine is a river")
    assert "No page titled 'Atlantis'" in search.open("Atlantis")


def test_search_backend_is_built_lazily(monkeypatch: pytest.MonkeyPatch, index: BM25Index) -> None:
    built: list[int] = []

    def fake_default() -> BM25Index:
        built.append(1)
        return index

    monkeypatch.setattr(tools, "default_search_backend", fake_default)
    box = make_toolbox(TaskSpec(kind="search", prompt="Where is Lyon?"))
    assert list(box.tools) == ["search", "open"] and built == []
    assert "Lyon" in box.call("search", "Lyon")
    box.call("search", "Paris")
    assert built == [1]


# --- toolbox --------------------------------------------------------------------------------


class BrokenBackend:
    def search(self, query: str, k: int) -> list[SearchHit]:
        raise OSError("index file vanished")

    def open(self, doc_id: str) -> Document | None:
        raise OSError("index file vanished")


def test_tool_errors_become_observations() -> None:
    box = SearchTools(BrokenBackend()).toolbox()
    assert box.call("search", "x") == "Error: search failed: OSError: index file vanished"
    assert box.call("fly", "x") == "Error: there is no tool 'fly'; the tools are search, open."
    assert box.call("open", "  ") == "Error: open needs its title; nothing was given."


def test_toolbox_describes_its_tools_and_their_openai_schemas() -> None:
    box = make_toolbox(coding_spec())
    assert box.kind == "coding" and list(box.tools) == ["run_python", "run_tests"]
    assert box.describe().splitlines()[0].startswith("- run_python: run a Python program")
    schema = box.tools["run_tests"].openai_schema()
    assert schema["function"]["name"] == "run_tests"
    assert schema["function"]["parameters"]["required"] == ["code"]
    custom = Toolbox("x", {"echo": Tool("echo", "text", "echo it", lambda s: s)})
    assert custom.call("echo", "hi") == "hi"


@pytest.mark.parametrize(
    ("kind", "arguments"),
    [
        ("coding", {"run_python": "code", "run_tests": "code"}),
        ("search", {"search": "query", "open": "title"}),
    ],
)
def test_tool_schemas_match_the_text_format_tools(kind: str, arguments: dict[str, str]) -> None:
    schemas = tool_schemas(kind)
    assert [s["type"] for s in schemas] == ["function"] * 2
    functions = [s["function"] for s in schemas]
    assert {f["name"]: f["parameters"]["required"][0] for f in functions} == arguments
    for function in functions:
        argument = arguments[function["name"]]
        assert function["parameters"] == {
            "type": "object",
            "properties": {argument: {"type": "string"}},
            "required": [argument],
        }
        assert function["description"]
    spec = coding_spec() if kind == "coding" else TaskSpec(kind="search", prompt="Who?")
    assert schemas == make_toolbox(spec).schemas()
