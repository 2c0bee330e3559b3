"""The tools of the agent scaffold, shared by every agent of the pool: coding and search.

A coding job gets ``run_python`` (the program runs in the sandbox; the observation is its exit
status, stdout and stderr, truncated) and ``run_tests``, which checks a candidate against the
job's VISIBLE checks only: the examples its prompt shows (:mod:`sale.workers.agent.examples`:
doctest
blocks and inline ``f(x) ==> y`` lines), turned into comparisons. The hidden ``spec.tests``
never reach the agent; they decide the verdict afterwards. A search job gets ``search`` (the
top hits, title and snippet) and ``open`` (a page, truncated) on a pluggable backend, by default
the cached BM25 index of the wiki corpus, built once per process. Every tool takes one string
and returns one string; a failing tool returns its error as the observation and never raises.
Agents using native function calling are offered the same tools as OpenAI function schemas
(:func:`tool_schemas`), each with its one string argument.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sale.models.schemas import TaskSpec
from sale.workers.agent.examples import docstring_examples, examples_program
from sale.workers.agent.outcome import extract_code
from sale.workers.sandbox.runner import SandboxLimits, SandboxResult, run_python
from sale.workers.search.index import (
    DEFAULT_BACKEND,
    SearchBackend,
    SearchHit,
    make_backend,
    normalize_answer,
)

log = logging.getLogger(__name__)

OUTPUT_CHARS = 1500  # per stream in a run_python observation
OPEN_CHARS = 1500
SEARCH_K = 5
TOOL_LIMITS = SandboxLimits(wall_seconds=10.0, cpu_seconds=10, output_bytes=8000)
CODE_TOOLS = frozenset({"run_python", "run_tests"})

PythonRunner = Callable[..., SandboxResult]


@dataclass(frozen=True)
class Tool:
    """One tool: a name, its single string argument and what it does."""

    name: str
    argument: str  # "code", "query" or "title"
    description: str
    run: Callable[[str], str]

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI ``tools=[...]`` entry for native function calling."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": {
                    "type": "object",
                    "properties": {self.argument: {"type": "string"}},
                    "required": [self.argument],
                },
            },
        }


@dataclass(frozen=True)
class Toolbox:
    """The tools of one job kind."""

    kind: str
    tools: dict[str, Tool]
    #: Checks a final answer against the checks the agent may see (a coding job's examples):
    #: ``(passed, report)``; None when the job shows none.
    check: Callable[[str], tuple[bool, str]] | None = None

    def describe(self) -> str:
        """One line per tool, for the system prompt."""
        return "\n".join(f"- {t.name}: {t.description}" for t in self.tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        """The OpenAI ``tools=[...]`` list of these tools, for native function calling."""
        return [t.openai_schema() for t in self.tools.values()]

    def call(self, name: str, argument: str) -> str:
        """Run tool ``name``; whatever goes wrong comes back as the observation."""
        tool = self.tools.get(name)
        if tool is None:
            return f"Error: there is no tool {name!r}; the tools are {', '.join(self.tools)}."
        if not argument.strip():
            return f"Error: {name} needs its {tool.argument}; nothing was given."
        try:
            return tool.run(argument)
        except Exception as exc:  # boundary: a tool failure is an observation for the model
            log.warning("tool %s failed: %s: %s", name, type(exc).__name__, exc)
            return f"Error: {name} failed: {type(exc).__name__}: {exc}"


def _clip(text: str, limit: int, *, tail: bool = False) -> str:
    if len(text) <= limit:
        return text
    cut = len(text) - limit
    if tail:
        return f"[... {cut} characters cut ...]\n" + text[-limit:]
    return text[:limit] + f"\n[... {cut} characters cut ...]"


def format_run(result: SandboxResult) -> str:
    """A sandbox result as an observation: status, stdout (head), stderr (tail)."""
    status = f"exit code {result.exit_code}" if result.exit_code is not None else "killed"
    parts = [status + (f"; stopped: {result.stopped}" if result.stopped else "")]
    stdout, stderr = result.stdout.rstrip("\n"), result.stderr.rstrip("\n")
    parts.append("stdout:\n" + (_clip(stdout, OUTPUT_CHARS) if stdout else "(empty)"))
    if stderr:
        parts.append("stderr:\n" + _clip(stderr, OUTPUT_CHARS, tail=True))
    return "\n".join(parts)


# --- the toolboxes --------------------------------------------------------------------------


class CodingTools:
    """``run_python`` and ``run_tests`` for one coding job; ``runner`` is injectable."""

    def __init__(
        self,
        spec: TaskSpec,
        *,
        runner: PythonRunner = run_python,
        limits: SandboxLimits = TOOL_LIMITS,
    ) -> None:
        self.spec = spec
        self.runner = runner
        self.limits = limits
        self.examples = docstring_examples(spec.prompt, spec.entry_point)

    def run_python(self, code: str) -> str:
        """Run ``code`` in the sandbox as the agent wrote it."""
        return format_run(self.runner(code, limits=self.limits))

    def check(self, code: str) -> tuple[bool, str]:
        """``code`` (completed from the prompt as the verdict would) run on the examples:
        whether all passed, and what the run showed."""
        program = extract_code(code, self.spec) + "\n\n" + examples_program(self.examples)
        result = self.runner(program, limits=self.limits)
        if result.ok:
            return True, result.stdout.strip() or "all examples passed"
        return False, format_run(result)

    def run_tests(self, code: str) -> str:
        """Check ``code`` on the examples (the ``run_tests`` tool)."""
        if not self.examples:
            return (
                "The task shows no examples to check against. Use run_python with your own "
                "assert statements instead."
            )
        passed, report = self.check(code)
        return f"{report}. Reply with Final Answer to submit this code." if passed else report

    def toolbox(self) -> Toolbox:
        """The coding toolbox."""
        return Toolbox(
            "coding",
            {
                "run_python": Tool(
                    "run_python",
                    "code",
                    "run a Python program in a sandbox (no network, 10 s) and see its exit "
                    "code, stdout and stderr. Print what you want to see.",
                    self.run_python,
                ),
                "run_tests": Tool(
                    "run_tests",
                    "code",
                    "check your complete function against the examples shown in the task "
                    "and see which pass.",
                    self.run_tests,
                ),
            },
            check=self.check if self.examples else None,
        )


@functools.cache
def default_search_backend() -> SearchBackend:
    """The default search backend of this process, built (or loaded from cache) once."""
    from sale.broker.settings import get_settings

    return make_backend(DEFAULT_BACKEND, get_settings().state_dir / "search-index")


class SearchTools:
    """``search`` and ``open`` on ``backend`` (default: the cached wiki BM25 index)."""

    def __init__(
        self,
        backend: SearchBackend | None = None,
        *,
        k: int = SEARCH_K,
        open_chars: int = OPEN_CHARS,
    ) -> None:
        self._backend = backend
        self.k = k
        self.open_chars = open_chars
        self._seen: dict[str, str] = {}  # normalised title of a hit -> its doc id

    @property
    def backend(self) -> SearchBackend:
        """The backend, created on first use so that building a toolbox is cheap."""
        if self._backend is None:
            self._backend = default_search_backend()
        return self._backend

    def search(self, query: str) -> str:
        """The top hits for ``query``: title and snippet."""
        hits = self.backend.search(query.strip(), self.k)
        if not hits:
            return f"No results for {query.strip()!r}. Try other words."
        for hit in hits:
            self._seen.setdefault(normalize_answer(hit.title), hit.doc_id)
        return "\n".join(_format_hit(n, h) for n, h in enumerate(hits, 1))

    def open(self, title: str) -> str:
        """The page called ``title`` (a title from the search results), truncated."""
        name = title.strip().strip("\"'`").strip()
        # A title seen in the results matches loosely: case, punctuation, "The ..." ignored.
        candidates = [name, self._seen.get(normalize_answer(name), "")]
        for doc_id in filter(None, dict.fromkeys(candidates)):
            doc = self.backend.open(doc_id)
            if doc is not None:
                return f"{doc.title}\n{_clip(doc.text, self.open_chars)}"
        for hit in self.backend.search(name, 1):
            if hit.title.lower() == name.lower():
                doc = self.backend.open(hit.doc_id)
                if doc is not None:
                    return f"{doc.title}\n{_clip(doc.text, self.open_chars)}"
        return f"No page titled {name!r}. Open a title exactly as the search results show it."

    def toolbox(self) -> Toolbox:
        """The search toolbox."""
        return Toolbox(
            "search",
            {
                "search": Tool(
                    "search",
                    "query",
                    f"search the encyclopedia; shows the top {self.k} pages (title and "
                    "best-matching sentence).",
                    self.search,
                ),
                "open": Tool(
                    "open",
                    "title",
                    f"read a page by its exact title (first {self.open_chars} characters).",
                    self.open,
                ),
            },
        )


def _format_hit(number: int, hit: SearchHit) -> str:
    return f"{number}. {hit.title}: {hit.snippet}"


def make_toolbox(
    spec: TaskSpec,
    *,
    search_backend: SearchBackend | None = None,
    runner: PythonRunner = run_python,
) -> Toolbox:
    """The toolbox of ``spec``'s kind."""
    if spec.kind == "coding":
        return CodingTools(spec, runner=runner).toolbox()
    return SearchTools(search_backend).toolbox()


def tool_schemas(kind: str) -> list[dict[str, Any]]:
    """The OpenAI function schemas of the tools a job of ``kind`` (coding or search) gets."""
    return make_toolbox(
        TaskSpec.model_validate({"kind": kind, "prompt": f"a {kind} job"})
    ).schemas()
