"""Fail if any two modules of aia_ext import each other, directly or through others.

import-linter's layers contract forbids upward imports between layers; this
check also covers modules inside one layer (a sub-package's own modules),
function-level imports included.  The one edge it leaves out is binding.py's
import of the compiled aia_ext._native, which the analyser sees as an import
of the package root.
"""

from __future__ import annotations

import sys

import grimp

IGNORED = {("aia_ext._private.binding", "aia_ext")}


def main() -> int:
    # Imports under `if TYPE_CHECKING:` never run, so they cannot form a cycle.
    graph = grimp.build_graph("aia_ext", exclude_type_checking_imports=True)
    edges = {m: {t for t in graph.find_modules_directly_imported_by(m) if (m, t) not in IGNORED}
             for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for module in sorted(edges):
        if module not in index:
            visit(module)
    for cycle in cycles:
        print("import cycle:", " <-> ".join(cycle))
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(cycles)} cycles")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main())
