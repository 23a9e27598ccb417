"""Time from a fresh interpreter to the wizard's first screen (the app mounted at 80x24), the median of 7, for:
Textual alone (an app with a header, a line and a footer: the floor), the wizard with every step composed at
start (as it was before steps were composed when first shown), and the wizard as it is. The three run in turn,
so a busy machine slows them alike: compare them with each other, not with a number from another day.

Run: .venv/bin/python benchmarks/wizard_startup.py   (target: the wizard well under 1 s on a 2-core machine)
"""

from __future__ import annotations

import statistics
import subprocess
import sys

PROBE = """
import time
t0 = time.perf_counter()
import asyncio
import sys
from textual.app import App
from textual.widgets import Footer, Header, Static

class Bare(App):
    def compose(self):
        yield Header()
        yield Static("llmtune")
        yield Footer()

def app():
    if sys.argv[1] == "textual":
        return Bare()
    from tui.app import WizardApp

    if sys.argv[1] == "all-steps":
        WizardApp.STEPS_AT_START = 99
    return WizardApp()

async def main():
    async with app().run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        print(time.perf_counter() - t0)

asyncio.run(main())
"""

KINDS = {"textual": "Textual alone", "all-steps": "wizard, every step composed at start (before)",
         "wizard": "wizard, steps composed when first shown (now)"}
RUNS = 7


def first_screen(kind: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for _ in range(RUNS):
        for kind in KINDS:
            times[kind].append(first_screen(kind))
    for kind, label in KINDS.items():
        print(f"{label:<48} median {statistics.median(times[kind]):.2f} s (runs: "
              + ", ".join(f"{t:.2f}" for t in times[kind]) + ")")


if __name__ == "__main__":
    main()
