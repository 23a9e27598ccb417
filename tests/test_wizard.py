"""The wizard as a whole: start-up without the ML stack, the CLI's way in, and walks through every step."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "accelerate")


def test_building_the_app_imports_no_ml_stack() -> None:
    code = ("import sys\nfrom tui.app import WizardApp\nWizardApp()\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_without_a_terminal_the_cli_says_what_to_run_instead() -> None:
    out = subprocess.run([sys.executable, "-m", "tui.cli"], capture_output=True, text=True, cwd=ROOT,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "the wizard needs a terminal" in out.stderr and "--yes" in out.stderr
