"""The package's import structure, read from the source (AST of every module, function-level imports included):
no cycle between modules or between packages, and the layers of ``shared/ARCHITECTURE.md`` section 3."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "optimum_npu"
#: Packages of the layers table, and what each may import inside optimum_npu (module-level or in a function).
LAYERS = {
    "schema": {"schema_checks", "schema_ops", "untrusted"}, "schema_checks": {"schema_ops"}, "schema_ops": set(),
    "untrusted": set(), "version": set(), "lazy": set(),
    "device": {"schema", "schema_ops", "untrusted"},
    "compile": {"schema", "schema_ops", "untrusted", "device", "version"},
    "runtime": {"schema", "schema_ops", "untrusted", "device", "compile", "version"},
    "hub": {"schema", "schema_ops", "untrusted", "device", "compile", "version"},
    "models": {"schema", "schema_ops", "untrusted", "device", "compile", "runtime", "hub", "version", "lazy"},
    "planner": {"schema", "schema_ops", "untrusted", "device", "compile", "runtime", "models", "version", "lazy"},
    "serving": {"schema", "schema_ops", "untrusted", "device", "compile", "runtime", "models", "version", "lazy"},
}
KNOWN_VIOLATIONS: set[str] = set()
KNOWN_CYCLE_EDGES: set[str] = set()
FORBIDDEN_THIRD_PARTY = {"device": {"transformers", "diffusers"}, "runtime": {"transformers", "diffusers"},
                         "schema": None, "schema_checks": None}  # None: only torch and stdlib


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Every module the file imports, at any depth of the AST (a function-level import counts); only
    ``if TYPE_CHECKING:`` blocks, which never run, are left out."""
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: imports_of(path, set(files)) for name, path in files.items()}


def layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``edges`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def internal(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {i for i in imports if i in graph and i != m} for m, imports in graph.items()}


def without_known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    known = KNOWN_VIOLATIONS | KNOWN_CYCLE_EDGES
    return {m: {d for d in deps if f"{m} imports {d}" not in known} for m, deps in graph.items()}


def test_known_exceptions_still_exist(graph):
    """An exception that was fixed must leave the lists, so that it cannot come back unnoticed."""
    present = {f"{m} imports {d}" for m, deps in graph.items() for d in deps}
    assert KNOWN_VIOLATIONS | KNOWN_CYCLE_EDGES <= present


def test_no_cycle_between_modules(graph):
    # a package's __init__ re-exports its modules; edges into an __init__ from its own members would be the
    # parent-package import Python does anyway, so they are the members' edges, not the package's
    edges = {m: {i for i in deps if not m.startswith(i + ".")} for m, deps in internal(without_known(graph)).items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_no_cycle_between_packages(graph):
    edges: dict[str, set[str]] = {}
    for module, deps in internal(without_known(graph)).items():
        if module == "optimum_npu" or layer(module) == "cli":
            continue  # the top-level re-exports and the command line import everything, nothing imports them
        edges.setdefault(layer(module), set()).update(layer(d) for d in deps if d != "optimum_npu" and
                                                      layer(d) != layer(module))
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_layers_import_only_what_the_table_allows(graph):
    wrong = []
    for module, deps in sorted(graph.items()):
        allowed = LAYERS.get(layer(module))
        if allowed is None:
            continue
        for dep in sorted(deps):
            if dep.startswith("optimum_npu.") and layer(dep) not in allowed | {layer(module)}:
                wrong.append(f"{module} imports {dep}")
            top = dep.split(".")[0]
            banned = FORBIDDEN_THIRD_PARTY.get(layer(module), set())
            if banned is None and top not in {"torch", "optimum_npu", "__future__"} | set(sys.stdlib_module_names):
                wrong.append(f"{module} imports {dep} (the schema may import torch and the standard library only)")
            elif banned and top in banned:
                wrong.append(f"{module} imports {dep}")
    assert set(wrong) == KNOWN_VIOLATIONS and len(wrong) == len(KNOWN_VIOLATIONS)


def test_the_walker_sees_function_level_imports():
    source = ROOT / "device" / "sizing.py"
    assert "optimum_npu.device.executor" in imports_of(source, {"optimum_npu.device.executor"})
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
