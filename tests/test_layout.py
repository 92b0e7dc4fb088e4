"""The layout's rules that a reader would otherwise have to trust: one home for the scoring defaults, pages
that stay thin, and a layered engine (each package imports only those below it)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from test_imports import MODULES, import_graph

ROOT = Path(__file__).resolve().parents[1]
# the scoring and rules settings whose defaults live in engine/options.py (`SCORE`, `RULES`)
SETTINGS = {"n_boot", "k_values", "n_per_value", "n_generated", "n_subjects", "n_rules", "folds"}
FLAG_DEFAULT = re.compile(
    r"add_argument\(\s*\"--(n-boot|k-values|n-per-value|n-subjects|n-rules|folds)\"[^)]*default=\d"
)
# the engine's packages from the bottom up: a package imports only those before it (and the root contracts)
LAYERS = ["data", "models", "diffusion", "scores", "pixelmaps", "explanations", "reports", "compute", "cli"]
ROOTS = {
    "engine",
    "engine.errors",
    "engine.cards",
    "engine.devices",
    "engine.options",
    "engine.paths",
    "engine.progress",
}


def _layer(name: str) -> int | None:
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _literal_defaults(path: Path) -> list[str]:
    """Function parameters among SETTINGS whose default is a number written in place, and CLI flags alike."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.posonlyargs + node.args.args
            pairs = list(zip(args[len(args) - len(node.args.defaults) :], node.args.defaults, strict=True))
            pairs += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults, strict=True) if d]
            found += [
                f"{path.relative_to(ROOT)}:{d.lineno}: {node.name}({a.arg}={d.value})"
                for a, d in pairs
                if a.arg in SETTINGS and isinstance(d, ast.Constant) and isinstance(d.value, int)
            ]
    found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in FLAG_DEFAULT.finditer(path.read_text())]
    return found


@pytest.mark.parametrize("folder", ["engine", "components", "app_pages"])
def test_no_scoring_default_is_written_outside_its_dataclass(folder):
    found = [
        hit
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path.name != "options.py"
        for hit in _literal_defaults(path)
    ]
    assert not found, "write these as engine.options.SCORE / RULES fields:\n" + "\n".join(found)


def test_no_page_is_over_150_lines():
    long = {p.name: n for p in (ROOT / "app_pages").glob("*.py") if (n := len(p.read_text().splitlines())) > 150}
    assert not long, long


def test_the_engine_is_layered_every_import_points_down():
    """Counting imports inside functions too: a package imports the root contracts and packages below it."""
    upward = []
    for name, targets in import_graph(functions=True).items():
        mine = _layer(name)
        for target in targets:
            theirs = _layer(target)
            if target in ROOTS or theirs is None or mine is None:
                if mine is None and theirs is not None and name not in ROOTS - {"engine"}:
                    continue
                if name in ROOTS and theirs:  # the root contracts build on the data layer's contract (SliceSpec) only
                    upward.append(f"{name} -> {target}")
                continue
            if theirs > mine:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports that point up the layers " + " > ".join(LAYERS) + ":\n" + "\n".join(sorted(upward))


def test_every_engine_module_sits_in_a_layer_or_the_root_contracts():
    loose = [n for n in MODULES if _layer(n) is None and n not in ROOTS and n != "engine.__main__"]
    assert not loose, loose
