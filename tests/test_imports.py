"""Every engine module imports, and engine's imports form no cycle.

The graph is read with `ast`: an edge A -> B for each `import B` / `from B import ...` that
A runs when it is imported (module level, class bodies, if/try blocks; not inside functions,
nor under `if TYPE_CHECKING:`), plus A -> each package above B that is not above A (importing
`engine.diffusion.x` from `engine.cards` runs `engine/diffusion/__init__.py` first).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def engine_modules() -> dict[str, Path]:
    """{dotted name: file} for every module and package of engine/."""
    modules = {}
    for path in sorted((ROOT / "engine").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = engine_modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, functions: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module: run at import time, or (`functions`) anywhere."""
    found, todo = [], list(ast.iter_child_nodes(tree))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)) and not functions:
            continue
        elif isinstance(node, ast.If) and _is_type_checking(node):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return found


def _targets(name: str, node: ast.Import | ast.ImportFrom) -> set[str]:
    """The engine modules an import statement in module `name` loads."""
    if isinstance(node, ast.Import):
        named = {alias.name for alias in node.names}
    else:
        package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
        base = node.module or ""
        if node.level:
            package = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            base = f"{package}.{base}" if base else package
        named = {base} | {f"{base}.{alias.name}" for alias in node.names}
    targets = set()
    for target in named:
        parts = target.split(".")
        for i in range(1, len(parts) + 1):  # the module and every package above it
            prefix = ".".join(parts[:i])
            if prefix in MODULES and not (name == prefix or name.startswith(prefix + ".")):
                targets.add(prefix)
    return targets


def import_graph(functions: bool = False) -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = set().union(*(_targets(name, node) for node in _imports(tree, functions)))
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle [a, b, ..., a] of the graph, or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_engine_module_imports(name):
    importlib.import_module(name)


def test_engine_imports_form_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_diffusion_package_needs_no_function_level_import_to_break_a_cycle():
    """Counting the imports inside functions too, engine.diffusion and the dataset code it uses
    sit in no cycle: none of its function-level imports is there to break one."""
    mine = {n for n in MODULES if n.startswith(("engine.diffusion", "engine.data"))}
    graph = {n: targets & mine for n, targets in import_graph(functions=True).items() if n in mine}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle through function-level imports: " + " -> ".join(cycle)


def test_the_graph_sees_a_cycle_and_a_package_import():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    graph = import_graph()
    assert "engine.diffusion.pipeline" in graph["engine.diffusion"]  # the package re-exports it
    assert "engine.diffusion" not in graph["engine.diffusion.pipeline"]  # its own package: no edge


def test_no_engine_module_imports_streamlit():
    """The engine runs from a notebook or the CLI: importing all of it loads no streamlit."""
    names = sorted(MODULES)
    code = f"import importlib, sys; [importlib.import_module(m) for m in {names!r}]; print('streamlit' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_engine_imports_form_no_cycle_counting_imports_inside_functions():
    """A function-level import that breaks a cycle hides it: none is allowed anywhere in engine/."""
    cycle = find_cycle(import_graph(functions=True))
    assert cycle is None, "import cycle through function-level imports: " + " -> ".join(cycle)


def test_no_engine_module_imports_another_modules_private_name():
    """`from engine.x import _name` reaches into x's insides: a rule two modules need is public in its home."""
    reaches = []
    for name, path in MODULES.items():
        for node in _imports(ast.parse(path.read_text(), str(path)), functions=True):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine"):
                reaches += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not reaches, reaches
