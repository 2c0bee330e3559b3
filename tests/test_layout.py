"""The package's layout rules, checked on the source: one namespace, the dependency direction,
no import cycles, one module that imports litellm, and imports without side effects."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

#: Repository folder -> the subpackage of ``sale`` it installs as.
FOLDERS = {"sale": "sale", "broker": "sale.broker", "models": "sale.models",
           "workers": "sale.workers", "scripts": "sale.scripts"}  # fmt: skip
GENERIC = {"broker", "models", "workers", "scripts"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _imports(path: Path, module: str, *, lazy: bool) -> set[str]:
    """Modules imported by ``path``: top-level statements, plus those inside functions when
    ``lazy``; ``if TYPE_CHECKING:`` blocks never count."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(nodes: list[ast.stmt], top: bool) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                    base = f"{base}.{node.module}" if node.module else base
                names.add(base)
                names.update(f"{base}.{a.name}" for a in node.names)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if lazy:
                    visit(node.body, False)
            elif isinstance(node, ast.If | ast.Try | ast.With | ast.For | ast.While):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child], top)

    visit(tree.body, True)
    return names


def _ours(names: set[str]) -> set[str]:
    return {n for n in names if n in MODULES}


def test_every_import_is_absolute_under_the_sale_namespace() -> None:
    bare = {
        f"{mod}: {name}"
        for mod, path in MODULES.items()
        for name in _imports(path, mod, lazy=True)
        if name.split(".")[0] in GENERIC
    }
    assert not bare, sorted(bare)


def test_dependency_direction() -> None:
    allowed = {
        "sale.models": ("sale.models", "sale.broker.settings", "sale.errors", "sale.inputs"),
        "sale.broker": ("sale.broker", "sale.models", "sale.errors", "sale.inputs"),
        "sale.workers": (
            "sale.workers",
            "sale.models",
            "sale.broker",
            "sale.errors",
            "sale.inputs",
        ),
        "sale.errors": (),
        "sale.inputs": ("sale.errors",),
    }
    wrong = []
    for mod, path in MODULES.items():
        layer = next((k for k in allowed if mod == k or mod.startswith(k + ".")), None)
        if layer is None:
            continue
        for name in _ours(_imports(path, mod, lazy=True)):
            if not any(name == a or name.startswith(a + ".") for a in allowed[layer]):
                wrong.append(f"{mod} imports {name}")
    assert not wrong, wrong


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := dfs(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := dfs(node)):
            return found
    return None


def _graph(lazy: bool) -> dict[str, set[str]]:
    graph = {}
    for mod, path in MODULES.items():
        deps = _ours(_imports(path, mod, lazy=lazy)) - {mod}
        # importing a package's submodule runs the package's __init__ too, but a package
        # importing its own submodules is not a cycle with them
        graph[mod] = {d for d in deps if not mod.startswith(d + ".")}
    return graph


def test_no_import_cycles_even_through_imports_inside_functions() -> None:
    assert _cycle(_graph(lazy=True)) is None


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_litellm_is_imported_by_the_provider_module_only() -> None:
    importers = {
        mod
        for mod, path in MODULES.items()
        if any(n.split(".")[0] == "litellm" for n in _imports(path, mod, lazy=True))
    }
    assert importers == {"sale.workers.llm.provider"}


def test_importing_every_module_writes_no_environment_and_configures_no_provider() -> None:
    names = [m for m in MODULES if not m.endswith("__main__") and ".migrations" not in m]
    probe = (
        "import importlib, json, os, sys\n"
        "before = dict(os.environ)\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "changed = sorted(k for k in set(before) | set(os.environ) "
        "if before.get(k) != os.environ.get(k))\n"
        "print(json.dumps({'changed': changed, 'litellm': 'litellm' in sys.modules}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd="/", check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"changed": [], "litellm": False}
