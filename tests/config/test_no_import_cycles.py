"""Issue #13: the project's modules import each other without a loop (lazy imports inside
functions included): services, tasks, pacs and DICOM export, services and selectors,
compliance and the apps below it. A loop means a layer points both ways."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APPS = ("audit", "compliance", "config", "imaging", "live", "trials", "web")


def _modules() -> dict[str, Path]:
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")) if (ROOT / app).is_dir() else []:
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _loops(graph: dict[str, set[str]], nodes) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return loops


def test_the_scan_sees_the_modules_and_finds_a_loop_when_there_is_one():
    modules = _modules()
    assert {"imaging.tasks", "imaging.pacs", "imaging.services.scan_steps", "compliance.tasks"} <= set(modules)
    graph = _graph(modules)
    assert "imaging.services.scan_steps" in graph["imaging.tasks"]
    graph["imaging.services.scan_steps"].add("imaging.tasks")  # the loop issue #13 found
    assert ["imaging.services.scan_steps", "imaging.tasks"] in _loops(graph, modules)


def test_no_modules_import_each_other_in_a_loop():
    modules = _modules()
    assert _loops(_graph(modules), modules) == []
