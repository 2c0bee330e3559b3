"""The tools of the agent scaffold, shared by every agent of the pool: coding and search.

A coding job gets ``run_python`` (the program runs in the sandbox; the observation is its exit
status, stdout and stderr, truncated) and ``run_tests``, which checks a candidate against the
job's VISIBLE checks only: the examples in the prompt's docstring (``>>> expr`` followed by the
expected output, or ``f(x) ==> y`` lines), turned into comparisons. The hidden ``spec.tests``
never reach the agent; they decide the verdict afterwards. A search job gets ``search`` (the
top hits, title and snippet) and ``open`` (a page, truncated) on a pluggable backend, by default
the cached BM25 index of the wiki corpus, built once per process. Every tool takes one string
and returns one string; a failing tool returns its error as the observation and never raises.
Agents using native function calling are offered the same tools as OpenAI function schemas
(:func:`tool_schemas`), each with its one string argument.
"""

from __future__ import annotations

import ast
import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from models.schemas import TaskSpec
from workers.execution import extract_code
from workers.sandbox import SandboxLimits, SandboxResult, run_python
from workers.search import (
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


# --- visible checks: the docstring's examples -------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One example from a prompt: code, and the output it shows (None for a statement)."""

    source: str
    expected: str | None


_PROMPT_LINE = re.compile(r"^\s*>>>\s?(.*)$")
_CONTINUATION = re.compile(r"^\s*\.\.\.\s?(.*)$")
_ARROW = re.compile(r"^\s*(?P<call>[A-Za-z_]\w*\(.*\))\s*(?:==>|=>|➞|→|==)\s*(?P<want>.+?)\s*$")


def _parses(source: str, mode: str) -> bool:
    try:
        ast.parse(source, mode=mode)
    except SyntaxError:
        return False
    return True


def docstring_examples(prompt: str, entry_point: str | None = None) -> list[Example]:
    """The examples a prompt shows: doctest-style ``>>>`` blocks, and, when ``entry_point``
    is given, lines such as ``f(1, 2) ==> 3`` (also ``=>``, ``➞``, ``==``) whose expected
    value is a Python literal. Examples whose code does not parse are dropped."""
    lines = prompt.splitlines()
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        match = _PROMPT_LINE.match(lines[i])
        if match is None:
            arrow = _ARROW.match(lines[i]) if entry_point else None
            if arrow and arrow["call"].startswith(f"{entry_point}("):
                want = arrow["want"].rstrip(".,;")
                if _parses(arrow["call"], "eval") and _parses(want, "eval"):
                    examples.append(Example(arrow["call"], want))
            i += 1
            continue
        source = [match.group(1)]
        i += 1
        while i < len(lines) and (cont := _CONTINUATION.match(lines[i])):
            source.append(cont.group(1))
            i += 1
        output: list[str] = []
        while i < len(lines):
            line = lines[i].strip()
            if not line or _PROMPT_LINE.match(lines[i]) or '"""' in line or "'''" in line:
                break
            output.append(line)
            i += 1
        code = "\n".join(source)
        if _parses(code, "exec"):
            examples.append(Example(code, "\n".join(output) if output else None))
    return examples


_CHECK_HEADER = """
import math as _math

def _same(got, want):
    if isinstance(got, float) or isinstance(want, float):
        try:
            return _math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9)
        except TypeError:
            return False
    return got == want

_failed = []
"""


def _indent(code: str) -> str:
    return "\n".join("    " + line for line in code.splitlines())


def _is_statement(example: Example) -> bool:
    return example.expected is None and not _parses(example.source, "eval")


def _record(label: str) -> str:
    return f"if not _ok:\n    _failed.append({label!r} + _why)\n"


def _check_block(number: int, example: Example) -> str:
    source, want = example.source, example.expected
    shown = source.replace("\n", " ")
    if _is_statement(example):  # e.g. an assignment the next examples use
        return (
            f"try:\n{_indent(source)}\n    _ok, _why = True, ''\nexcept Exception as _exc:\n"
            "    _ok, _why = False, 'raised ' + type(_exc).__name__ + ': ' + str(_exc)\n"
        ) + _record(f"setup {shown}: ")
    if want is not None and want.startswith("Traceback (most recent call last)"):
        error = want.splitlines()[-1].split(":", 1)[0].strip().rsplit(".", 1)[-1]
        return (
            f"try:\n{_indent(source)}\n    _ok, _why = False, 'raised nothing'\n"
            f"except Exception as _exc:\n    _ok = type(_exc).__name__ == {error!r}\n"
            "    _why = 'raised ' + type(_exc).__name__\n"
        ) + _record(f"example {number}: {shown}  expected {error}; ")
    want = "None" if want is None else want
    call = ast.parse(source, mode="eval").body
    if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "print" and call.args:
        body = f"_got = {ast.unparse(call.args[0])}"  # doctest compares the printed text
        test = f"str(_got) == {want!r}"
    elif _parses(want, "eval"):
        body, test = f"_got = ({source})", f"_same(_got, ({want}))"
    else:
        body, test = f"_got = ({source})", f"repr(_got) == {want!r}"
    return (
        f"try:\n{_indent(body)}\n    _ok = {test}\n    _why = '' if _ok else 'got ' + repr(_got)\n"
        "except Exception as _exc:\n"
        "    _ok, _why = False, 'raised ' + type(_exc).__name__ + ': ' + str(_exc)\n"
    ) + _record(f"example {number}: {shown}  expected {want}; ")


def examples_program(examples: list[Example]) -> str:
    """A program that checks every example (statements among them run as setup), prints each
    failure and a summary line, and exits with status 1 when any failed."""
    blocks = [_CHECK_HEADER]
    number = 0
    for example in examples:
        number += not _is_statement(example)
        blocks.append(_check_block(number, example))
    blocks.append(
        "for _line in _failed:\n    print(_line)\n"
        "_bad = sum(not _line.startswith('setup') for _line in _failed)\n"
        f"print(f'{{{number} - _bad}} of {number} examples passed')\n"
        "raise SystemExit(1 if _failed else 0)\n"
    )
    return "\n".join(blocks)


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

    def run_tests(self, code: str) -> str:
        """Check ``code`` (completed from the prompt as the verdict would) on the examples."""
        if not self.examples:
            return (
                "The task shows no examples to check against. Use run_python with your own "
                "assert statements instead."
            )
        program = extract_code(code, self.spec) + "\n\n" + examples_program(self.examples)
        result = self.runner(program, limits=self.limits)
        if result.ok:
            summary = result.stdout.strip() or "all examples passed"
            return f"{summary}. Reply with Final Answer to submit this code."
        return format_run(result)

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
        )


@functools.cache
def default_search_backend() -> SearchBackend:
    """The default search backend of this process, built (or loaded from cache) once."""
    from broker.settings import get_settings

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
