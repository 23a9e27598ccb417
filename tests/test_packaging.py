"""The wheel holds the whole program: every package under engine/ and tui/ and the stylesheet. An editable
install hides what a wheel leaves out (tui.steps and tui.widgets once were)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_package_and_the_stylesheet(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    source = tmp_path / "src"  # a copy: a build/ left in the checkout would hide what the config leaves out
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("engine", "tui"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [wheel] = tmp_path.glob("llmtune-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(ROOT).as_posix() for top in ("engine", "tui") for p in (ROOT / top).rglob("*")
              if p.suffix in (".py", ".tcss") and "__pycache__" not in p.parts}
    assert wanted and wanted <= names, sorted(wanted - names)
    assert not any(n.startswith("tests/") for n in names)
