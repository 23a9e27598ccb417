"""No import cycle in engine/ or tui/, at module level or inside functions: the graph is read from the source
(tests/imports.py), so an import a function makes late to dodge a cycle at start-up still counts. Imports under
`if TYPE_CHECKING:` never run and do not count."""

from __future__ import annotations

from pathlib import Path

from imports import PACKAGES, ROOT, imports, modules


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """module -> the modules of ours it imports (`import a.b.c` and `from a.b import c` read as the deepest
    module of ours that they name)."""
    found = modules(*PACKAGES, root=root)
    graph: dict[str, set[str]] = {module: set() for module in found}
    for module, path in found.items():
        for imp in imports(module, path, set(found)):
            if imp.type_checking:
                continue
            name = imp.name
            while name and name not in found:
                name = name.rpartition(".")[0]
            if name and name != module:
                graph[module].add(name)
    return graph


def knots(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per knot, as a path that starts and ends at the same module."""
    return [shortest_cycle(graph, knot) for knot in knots(graph)]


def shortest_cycle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """The shortest cycle through the component's first module (breadth-first, inside the component)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for nxt in sorted(graph[node] & component):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component of more than one module always has one


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = []
    for knot in knots(graph):
        cycle = shortest_cycle(graph, knot)
        more = f" (and more through {', '.join(sorted(knot))})" if len(knot) >= len(cycle) else ""
        found.append(" -> ".join(cycle) + more)
    assert not found, "import cycles (break each by moving the shared code down, or by posting a message):\n" + \
        "\n".join(found)


def test_a_cycle_inside_a_function_is_found(tmp_path: Path) -> None:
    (tmp_path / "tui" / "steps").mkdir(parents=True)
    (tmp_path / "engine").mkdir()
    for name, text in {"engine/__init__.py": "", "tui/__init__.py": "", "tui/steps/__init__.py": "",
                       "tui/app.py": "from tui import commands\n",
                       "tui/commands.py": "from tui.steps import review\n",
                       "tui/steps/review.py": "def done():\n    from tui.app import WizardApp\n",
                       "tui/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import tui.app\n",
                       "engine/a.py": "import engine.b\n", "engine/b.py": "import engine\n"}.items():
        (tmp_path / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["tui.typed"] == set()  # TYPE_CHECKING only
    assert graph["engine.b"] == {"engine"}  # a package's __init__ is a module like any other
    assert cycles(graph) == [["tui.app", "tui.commands", "tui.steps.review", "tui.app"]]
