"""Time from a fresh interpreter to the wizard's first screen (the app mounted at 80x24), the median of 5.

Run: .venv/bin/python benchmarks/wizard_startup.py   (target: well under 1 s on a 2-core machine)
"""

from __future__ import annotations

import statistics
import subprocess
import sys

PROBE = """
import time
t0 = time.perf_counter()
import asyncio
from tui.app import WizardApp

async def main():
    app = WizardApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        print(time.perf_counter() - t0)

asyncio.run(main())
"""


def main() -> None:
    times = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    print(f"wizard first screen: median {statistics.median(times):.2f} s (runs: "
          + ", ".join(f"{t:.2f}" for t in times) + ")")


if __name__ == "__main__":
    main()
