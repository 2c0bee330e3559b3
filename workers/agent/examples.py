"""The visible checks of a coding job: the examples its prompt shows, and a program that checks
a candidate against them.

Both the agents' ``run_tests`` tool and the self-check of an execution use these; the hidden
``spec.tests`` never do. Two kinds of example are read. Doctest blocks (``>>> expr``, ``...``
continuations, then the expected output) are taken as doctest would. Inline examples, the
other style HumanEval's prompts use, are read only when the job names its entry point: a call
of the entry point whose arguments are all Python literals, a separator (``==>``, ``=>``,
``->``, ``➞``, ``→``, ``==``, ``=``, ``# =>``, ``returns``, ``should return``, ``should be``),
and an expected value that is a Python literal once trailing punctuation, a ``# comment`` or a
parenthesised remark is cut (``f(1) # => 'No' (why)`` expects ``'No'``). Anything less certain
(``f(n) = 1 + n / 2``, ``f(5) -> 19 - 5 - 6 = 8``) is dropped: a wrong expected value would fail
a correct answer, and a failed self-check hands the job to a costlier agent.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Example:
    """One example from a prompt: code, and the output it shows (None for a statement)."""

    source: str
    expected: str | None


_PROMPT_LINE = re.compile(r"^\s*>>>\s?(.*)$")
_CONTINUATION = re.compile(r"^\s*\.\.\.\s?(.*)$")
_SEPARATOR = re.compile(
    r"^\s*(?:#\s*)?(?:==>|=>|->|➞|→|==|=(?!=)|(?:returns?|should\s+return|should\s+be)\b)\s*",
    re.IGNORECASE,
)


def _parses(source: str, mode: str) -> bool:
    try:
        ast.parse(source, mode=mode)
    except SyntaxError:
        return False
    return True


def _expression(text: str) -> ast.expr | None:
    """``text`` parsed as one Python expression, or None."""
    try:
        return ast.parse(text, mode="eval").body
    except SyntaxError:
        return None


def _is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _literal_call(text: str, entry_point: str) -> ast.Call | None:
    """``text`` as a call of ``entry_point`` with only literal arguments, else None."""
    node = _expression(text)
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
        return None
    if node.func.id != entry_point:
        return None
    values = list(node.args) + [k.value for k in node.keywords]
    if any(isinstance(v, ast.Starred) for v in node.args) or not all(map(_is_literal, values)):
        return None
    return node


def _literal_prefix(text: str) -> str | None:
    """The expected value at the start of ``text``: all of it, or all of it before a
    ``# comment`` or a parenthesised remark, once trailing ``.,;:`` is cut, when that is a
    Python literal; else None."""
    candidates = [text]
    for mark in (" #", "#", " ("):
        if mark in text:
            candidates.append(text.split(mark, 1)[0])
    for candidate in candidates:
        want = candidate.strip().rstrip(".,;:").strip()
        node = _expression(want) if want else None
        if node is not None and _is_literal(node):
            return ast.unparse(node)  # drops a comment the literal's text may still carry
    return None


def _call_end(line: str, start: int) -> int | None:
    """The index just past the parenthesis closing the call that opens at ``line[start]``
    (brackets and string literals balanced), or None when the line ends first."""
    depth, quote, i = 0, "", start
    while i < len(line):
        ch = line[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


@dataclass(frozen=True)
class _Inline:
    """A line read as ``<call of the entry point> <separator> <rest>``."""

    call: str
    separator: str
    rest: str


def _inline_parts(line: str, entry_point: str) -> _Inline | None:
    """The first call of ``entry_point`` on ``line``, the separator after it and the rest of
    the line; None when there is no such call or no separator follows it."""
    found = re.search(rf"(?<![\w.]){re.escape(entry_point)}\s*\(", line)
    if found is None:
        return None
    end = _call_end(line, line.index("(", found.start()))
    sep = _SEPARATOR.match(line[end:]) if end is not None else None
    if end is None or sep is None:
        return None
    return _Inline(line[found.start() : end], sep.group().strip(), line[end + sep.end() :])


def _defines(parts: _Inline, entry_point: str) -> bool:
    """The line defines the function by an equation on a symbolic argument (``tri(n) = …``)."""
    return (
        parts.separator == "="
        and _expression(parts.call) is not None
        and _literal_call(parts.call, entry_point) is None
    )


def _inline_example(parts: _Inline, entry_point: str, defines: bool) -> Example | None:
    """An inline example (``f(1) ==> 2``, ``* f([]) => []``, ``for f(7) == 34``,
    ``f('a') returns 'b'``, ``f(1) should return 16.``), or None. With ``defines`` (the
    prompt defines the function by equations, ``f(n) = f(n - 1) + …``) a bare ``=`` reads as
    part of that definition, not as an example, and such lines are dropped."""
    if _literal_call(parts.call, entry_point) is None:
        return None
    if defines and parts.separator == "=":
        return None
    want = _literal_prefix(parts.rest)
    return None if want is None else Example(parts.call, want)


def docstring_examples(prompt: str, entry_point: str | None = None) -> list[Example]:
    """The examples a prompt shows: doctest-style ``>>>`` blocks, and, when ``entry_point``
    is given, inline examples such as ``f(1, 2) ==> 3`` or ``f('a') returns 'b'`` (see the
    module docstring for what is read and what is dropped). Examples whose code does not
    parse are dropped."""
    lines = prompt.splitlines()
    name = entry_point or ""  # no entry point: no inline examples
    inline = [_inline_parts(line, name) if name else None for line in lines]
    defines = any(p is not None and _defines(p, name) for p in inline)
    examples: list[Example] = []
    i = 0
    while i < len(lines):
        match = _PROMPT_LINE.match(lines[i])
        if match is None:
            parts = inline[i]
            found = _inline_example(parts, name, defines) if parts else None
            if found is not None:
                examples.append(found)
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
            shown = "\n".join(output) if output else None
            if shown is None and _is_comparison(code):
                shown = "True"  # `>>> f(x) == y` with no output shown: the prompt asserts it
            examples.append(Example(code, shown))
    return examples


def _is_comparison(code: str) -> bool:
    node = _expression(code)
    return isinstance(node, ast.Compare) and all(isinstance(op, ast.Eq) for op in node.ops)


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
    source = ast.unparse(call)  # a trailing `# comment` would swallow the closing parenthesis
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
