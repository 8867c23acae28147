"""Measure the house: modules, internal imports (inside functions counted), import cycles, big files.

    .venv/bin/python tools/house.py

grimp (import-linter's graph) reads every import statement of every module, top level or inside a
function. A cycle is a group of modules that reach each other (a strongly connected component).
Upward imports are what `lint-imports` reports against pyproject.toml's layers.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def cycles(modules: list[str], edges: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    adjacent = {m: sorted(b for a, b in edges if a == m) for m in modules}
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in adjacent[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for m in modules:
        if m not in index:
            visit(m)
    return [g for g in groups if len(g) > 1]


def main() -> None:
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("weitiao", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    edges = {(a, b) for a in modules for b in graph.find_modules_directly_imported_by(a) if b.startswith("weitiao") and b != a}
    groups = cycles(modules, edges)
    sizes = sorted(((len(p.read_text(encoding="utf-8").splitlines()), str(p.relative_to(ROOT))) for p in (ROOT / "weitiao").rglob("*.py")), reverse=True)
    print(f"modules: {len(modules)}; internal imports: {len(edges)}")
    print(f"import cycles: {len(groups)} ({sum(map(len, groups))} modules in them)")
    for g in groups:
        print(f"  {len(g)}: {', '.join(g)}")
    print(f"files over 300 lines: {sum(1 for n, _ in sizes if n > 300)}; largest: {sizes[0][1]} ({sizes[0][0]} lines)")


if __name__ == "__main__":
    main()
