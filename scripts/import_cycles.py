"""Count the import cycles between the modules of a package (stdlib only).

    python scripts/import_cycles.py                 # lanray_tui, one line per cycle
    python scripts/import_cycles.py --json          # ... and a JSON summary on the last line
    python scripts/import_cycles.py --type-checking # also count imports under TYPE_CHECKING

Every import counts, deferred ones inside functions included: a cycle dodged by importing
late is still a cycle between the two modules. Imports under ``if TYPE_CHECKING:`` do not
run, so they are left out unless asked for. A module importing its own package's
``__init__`` is not an edge unless the name imported is not a submodule.

The figure is the number of elementary cycles (Johnson's algorithm) in the module graph;
the strongly connected components are listed too. Exit status 1 when there is a cycle.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_checking: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping ``if TYPE_CHECKING:`` bodies unless asked."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test) and not type_checking:
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def build_graph(package: Path, type_checking: bool = False) -> dict[str, set[str]]:
    """``{module: {modules of the same package it imports}}``."""
    src = package.parent
    files = {module_name(p, src): p for p in sorted(package.rglob("*.py"))}
    top = package.name
    graph: dict[str, set[str]] = {m: set() for m in files}

    def resolve(name: str) -> str | None:
        # The longest prefix that is one of our modules.
        while name:
            if name in files:
                return name
            name = name.rpartition(".")[0]
        return None

    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _imports(tree, type_checking):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == top]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join([*base, node.module] if node.module else base)
                else:
                    stem = node.module or ""
                if stem.split(".")[0] != top:
                    continue
                for alias in node.names:
                    sub = f"{stem}.{alias.name}"
                    targets.append(sub if sub in files else stem)
            for t in targets:
                r = resolve(t)
                if r is not None and r != mod and not mod.startswith(r + "."):
                    graph[mod].add(r)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return sorted(out)


def elementary_cycles(graph: dict[str, set[str]], limit: int = 10_000) -> list[list[str]]:
    """Each simple cycle once, starting at its smallest module (a plain DFS per start node,
    enough for a graph this size; stops after ``limit`` cycles)."""
    cycles: list[list[str]] = []
    for comp in strongly_connected(graph):
        members = set(comp)
        for start in comp:
            # Only through modules greater than ``start``: each cycle is found once.
            path = [start]
            todo: list[Iterator[str]] = [iter(sorted(graph[start] & members))]
            while todo:
                for w in todo[-1]:
                    if w == start:
                        cycles.append([*path, start])
                        if len(cycles) >= limit:
                            return cycles
                    elif w > start and w not in path:
                        path.append(w)
                        todo.append(iter(sorted(graph[w] & members)))
                        break
                else:
                    todo.pop()
                    path.pop()
    return cycles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package", nargs="?", default=str(ROOT / "lanray_tui"))
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    parser.add_argument(
        "--type-checking", action="store_true", help="count imports under TYPE_CHECKING too"
    )
    args = parser.parse_args()
    graph = build_graph(Path(args.package).resolve(), args.type_checking)
    comps = strongly_connected(graph)
    cycles = elementary_cycles(graph)
    for comp in comps:
        print(f"tangle of {len(comp)}: {' '.join(comp)}")
    for cyc in cycles:
        print("cycle: " + " -> ".join(cyc))
    print(f"{len(cycles)} import cycles in {len(comps)} tangles, {len(graph)} modules")
    if args.json:
        print(json.dumps({"cycles": len(cycles), "tangles": len(comps), "modules": len(graph)}))
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
