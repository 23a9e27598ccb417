"""What each module of engine/ and tui/ imports, read from its source (ast): the static checks of the layer rule
(test_layers.py) and of import cycles (test_import_cycles.py) both use it, so neither depends on what happens
to get imported when the tests run. Imports inside functions count the same as module-level ones."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "tui")


@dataclass(frozen=True)
class Import:
    name: str  # dotted, absolute: "engine.data", "textual.app"
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`: never run, so it cannot close a cycle


def modules(*packages: str, root: Path = ROOT) -> dict[str, Path]:
    """Every module below the given top-level packages, by dotted name (a package is its __init__)."""
    found: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _literal_import(node: ast.Call) -> str | None:
    """`importlib.import_module("x")`, `import_module("x")` or `__import__("x")` with a literal name."""
    func = node.func
    named = (isinstance(func, ast.Attribute) and func.attr == "import_module") or (
        isinstance(func, ast.Name) and func.id in ("import_module", "__import__"))
    if named and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        name = node.args[0].value
        return None if name.startswith(".") else name  # relative to a `package=` argument: not resolved
    return None


def imports(module: str, path: Path, known: frozenset[str] | set[str] = frozenset()) -> list[Import]:
    """What `module` (at `path`) imports. `from pkg import name` reads as the submodule pkg.name when that is one
    of `known`, otherwise as pkg itself (a name defined in its __init__)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for stmt in node.body:
                visit(stmt, True)
            for stmt in node.orelse:
                visit(stmt, type_checking)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, type_checking) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                parts = package.split(".")
                source = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                found.append(Import(sub if sub in known else source, node.lineno, type_checking))
        elif isinstance(node, ast.Call) and (name := _literal_import(node)):
            found.append(Import(name, node.lineno, type_checking))
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(ast.parse(path.read_text(), filename=str(path)), False)
    return found
