"""The package's structure: layers that import only from below, no import cycle, no hidden imports.

The imports are read from the source (``ast``), not by importing, so the test sees every
import, including those that only run in one branch.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ntaylor_lib"
ROOT = PACKAGE.parent

#: The layers, lowest first: a module may import from its own layer and those before it.
LAYERS = ("_version", "runs", "notebooks", "taylor", "exploration", "diagnostics", "sweep", "paper", "site", "cli",
          "__main__")
#: Third-party packages that may be imported inside a function: optional, heavy, or needed only
#: by the book, so that the core imports without them.
OPTIONAL = {"scipy", "threadpoolctl", "torchvision", "yaml", "jupytext", "nbformat", "papermill", "distributed",
            "vl_convert"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(imported module, inside a function?)`` for every import of the file, relative ones resolved."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((alias.name, nested) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                # "from package import module" names a module; "from module import name" does not
                for alias in child.names:
                    candidate = f"{target}.{alias.name}"
                    out.append((candidate if _is_module(candidate) else target, nested))
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return out


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for path in sorted(PACKAGE.rglob("*.py")):
        graph[_module_name(path)]
        for target, _ in _imports(path):
            if target.startswith("ntaylor_lib.") and target != _module_name(path):
                graph[_module_name(path)].add(target)
    return graph


def _layer(module: str) -> int:
    top = module.split(".")[1]
    assert top in LAYERS, f"{module} is in no layer: add it to LAYERS"
    return LAYERS.index(top)


def test_every_module_imports_only_from_its_layer_and_below():
    wrong = []
    for module, targets in _graph().items():
        if module == "ntaylor_lib":  # the package root re-exports the public API from the layers
            continue
        for target in targets:
            if _layer(target) > _layer(module):
                wrong.append(f"{module} imports {target}")
    assert not wrong, "\n".join(sorted(wrong))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = walk(nxt, path + [nxt])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node, [node])
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_inside_functions_are_only_optional_packages():
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for target, nested in _imports(path):
            if nested and target.split(".")[0] not in OPTIONAL:
                hidden.append(f"{_module_name(path)}: {target}")
    assert not hidden, "\n".join(hidden)


def test_the_graph_sees_real_imports():
    """The walker is not vacuous: known edges of the package are found, and a planted cycle is caught."""
    graph = _graph()
    assert "ntaylor_lib.runs.training" in graph["ntaylor_lib.runs.store"]
    assert "ntaylor_lib.taylor.solver" in graph["ntaylor_lib.taylor.recorders.mse"]
    assert "ntaylor_lib.paper.tuning" in graph["ntaylor_lib.paper.experiments"]
    assert "ntaylor_lib.site.book" in graph["ntaylor_lib.cli"]
    assert _layer("ntaylor_lib.paper.claims") > _layer("ntaylor_lib.taylor.regret") > _layer("ntaylor_lib.runs.store")
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_public_api_is_small_and_importable():
    import ntaylor_lib

    assert 10 <= len(ntaylor_lib.__all__) <= 20
    for name in ntaylor_lib.__all__:
        assert getattr(ntaylor_lib, name) is not None, name


def test_no_reference_to_files_outside_the_repository_or_to_issues_and_commits():
    """Docs and code explain themselves: no brief that users lack, no issue or commit numbers.
    (Measurement logs under benchmarks/ may name the commit a number was measured at.)"""
    pattern = re.compile(r"DESIGN\.md|\bissue #?\d+|\bcommit [0-9a-f]{7,}", re.IGNORECASE)
    files = [p for p in ROOT.glob("*.md")] + [ROOT / "_config.yml", ROOT / "_toc.yml", ROOT / "pyproject.toml"]
    for folder in ("ntaylor_lib", "book", "tests", "scripts", ".ci"):
        files += [p for p in (ROOT / folder).rglob("*")
                  if p.is_file() and p.suffix in (".py", ".md", ".sh", ".yml", "")]
    files += list((ROOT / "benchmarks").glob("*.py")) + list((ROOT / "benchmarks").glob("*.sh"))
    found = []
    for path in files:
        if path == Path(__file__) or "__pycache__" in path.parts:
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
