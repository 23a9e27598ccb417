"""The wheel holds the whole program: every package under engine/ and tui/ and the stylesheet. An editable
install hides what a wheel leaves out (tui.steps and tui.widgets once were), so the wheel is also installed
into a fresh environment outside the checkout and started from there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel .` builds, from a copy of the source."""
    pytest.importorskip("setuptools")
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "src"  # a copy: a build/ left in the checkout would hide what the config leaves out
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("engine", "tui"):
        shutil.copytree(ROOT / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(source)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    [built] = tmp_path.glob("llmtune-*.whl")
    return built


def test_the_wheel_holds_every_package_and_the_stylesheet(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {p.relative_to(ROOT).as_posix() for top in ("engine", "tui") for p in (ROOT / top).rglob("*")
              if p.suffix in (".py", ".tcss") and "__pycache__" not in p.parts}
    assert wanted and wanted <= names, sorted(wanted - names)
    assert not any(n.startswith("tests/") for n in names)


# Started from the installed copy: every tui module imports, and the wizard comes up (its stylesheet found).
WIZARD = textwrap.dedent("""
    import asyncio, importlib, pkgutil, sys
    import engine, tui
    from pathlib import Path
    for module in pkgutil.walk_packages(tui.__path__, "tui."):
        importlib.import_module(module.name)
    from tui.app import WizardApp

    async def main() -> None:
        app = WizardApp()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            print("title:", app.query_one("#step-title").render())
            print("css:", *app.css_path)
            app.exit()

    asyncio.run(main())
    print("engine:", engine.__file__)
    print("tui:", tui.__file__)
""")


def test_the_installed_wheel_runs_outside_the_checkout(wheel: Path, tmp_path: Path) -> None:
    """pip install of the wheel alone (--no-deps) into a new venv; the dependencies are this environment's,
    seen through a .pth file that names its site-packages as a plain path: plain paths are not scanned for
    .pth files, so llmtune's editable install there (a .pth hook) stays off and only the wheel's copy counts."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    out = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
                          "--disable-pip-version-check", str(wheel)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    (Path(site) / "llmtune-test-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    cwd = tmp_path / "elsewhere"  # not the checkout: `python -c` puts the current directory first on sys.path
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PYTHONNOUSERSITE="1", TERM="xterm-256color")

    help_ = subprocess.run([venv / "bin" / "llmtune-tui", "--help"], capture_output=True, text=True, cwd=cwd,
                           env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert help_.returncode == 0 and "--config" in help_.stdout, help_.stdout + help_.stderr

    run = subprocess.run([python, "-c", WIZARD], capture_output=True, text=True, cwd=cwd, env=env, timeout=90,
                         stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = dict(line.split(": ", 1) for line in run.stdout.splitlines() if ": " in line)
    assert lines.get("title"), run.stdout
    for name in ("engine", "tui", "css"):  # the wheel's copy, not the checkout's
        assert Path(lines[name]).is_relative_to(venv), f"{name} from {lines[name]}, not from {venv}"
