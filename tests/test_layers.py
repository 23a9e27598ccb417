"""The layer rule, read from the source of every module: engine/ is the library and never imports the UI (tui/)
or a UI toolkit (textual, rich), at module level or inside a function, with `import`, `from ... import` or
`importlib.import_module("...")`. The run-time checks (a fresh interpreter's sys.modules after importing a few
light modules, in test_config.py and others) cover what those modules pull in transitively."""

from __future__ import annotations

from pathlib import Path

from imports import ROOT, imports, modules

UI = ("tui", "textual", "rich")


def layer_violations(root: Path = ROOT) -> list[str]:
    found = modules("engine", root=root)
    wrong: list[str] = []
    for module, path in found.items():
        for imp in imports(module, path, set(found)):
            if imp.name.split(".")[0] in UI:
                wrong.append(f"{path.relative_to(root)}:{imp.line} imports {imp.name}")
    return wrong


def test_engine_never_imports_the_ui() -> None:
    wrong = layer_violations()
    assert not wrong, "engine/ must not import tui, textual or rich (move the code to tui/):\n" + "\n".join(wrong)


def test_every_engine_module_is_read() -> None:
    found = modules("engine")
    assert "engine" in found and any(m.count(".") >= 2 for m in found)  # subpackages too (engine.trainers.dpo)
    assert len(found) == len(list((ROOT / "engine").rglob("*.py")))


def test_every_way_of_importing_is_seen(tmp_path: Path) -> None:
    source = tmp_path / "probe.py"
    source.write_text("import os\nimport textual.app\nfrom rich import console\n"
                      "def late():\n    from tui import app\n    import importlib\n"
                      "    importlib.import_module('tui.steps')\n    __import__('rich.text')\n"
                      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tui.app import WizardApp\n")
    seen = imports("engine.probe", source)
    assert [i.name for i in seen if i.name.split(".")[0] in UI] == [
        "textual.app", "rich", "tui", "tui.steps", "rich.text", "tui.app"]
    assert [i.type_checking for i in seen if i.name == "tui.app"] == [True]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from . import a\nfrom .b import thing\n")
    (package / "a.py").write_text("from . import b\nfrom .. import tui\nfrom .b import thing\n")
    known = {"engine.sub", "engine.sub.a", "engine.sub.b"}
    assert [i.name for i in imports("engine.sub", package / "__init__.py", known)] == ["engine.sub.a", "engine.sub.b"]
    assert [i.name for i in imports("engine.sub.a", package / "a.py", known)] == [
        "engine.sub.b", "engine", "engine.sub.b"]


def test_a_violation_is_reported(tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "__init__.py").write_text("")
    (tmp_path / "engine" / "bad.py").write_text("def show():\n    from rich.console import Console\n")
    assert layer_violations(tmp_path) == ["engine/bad.py:2 imports rich.console"]
