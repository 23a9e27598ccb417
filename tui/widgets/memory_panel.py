"""Memory as the training process last reported it: per GPU, used and total from NVML with the peak seen;
the process's RAM always (on a machine with no GPU it is the memory that matters). A reading a GPU does not
support arrives as null and is shown as "-", never as an error.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.run_state import GpuMemory, RunState

GiB = 2**30


def size(nbytes: int | None) -> str:
    """Compact: 18.6G, 640M, 12K, 310B; "-" when the reading is missing."""
    if nbytes is None:
        return "-"
    if nbytes >= GiB:
        value = nbytes / GiB
        return f"{value:.1f}G" if value < 100 else f"{value:.0f}G"
    if nbytes >= 2**20:
        return f"{nbytes / 2**20:.0f}M"
    return f"{nbytes / 1024:.0f}K" if nbytes >= 1024 else f"{nbytes}B"


def _used_style(gpu: GpuMemory) -> str:
    if gpu.used is None or not gpu.total:
        return ""
    share = gpu.used / gpu.total
    return "bold red" if share > 0.95 else "yellow" if share > 0.85 else "green"


def gpu_lines(gpu: GpuMemory, *, compact: bool) -> list[Text]:
    used = Text(size(gpu.used), style=_used_style(gpu) if gpu.used is not None else "dim")
    if compact:  # many GPUs: one line each
        return [Text.assemble((f"GPU{gpu.index} ", "bold"), used, f"/{size(gpu.total)}",
                              (" pk ", "dim"), size(gpu.peak))]
    lines = [Text.assemble((f"GPU{gpu.index} ", "bold"), (gpu.name or "", "dim")),
             Text.assemble("  ", used, f" / {size(gpu.total)}", ("  peak ", "dim"), size(gpu.peak))]
    if gpu.used is None and gpu.reserved is not None:  # NVML has no reading: torch's own view is the next best
        lines.append(Text.assemble(("  torch reserved ", "dim"), size(gpu.reserved)))
    return lines


def memory_lines(state: RunState, height: int) -> list[Text]:
    lines = [Text("Memory", style="bold")]
    gpus = [state.gpus[i] for i in sorted(state.gpus)]
    full = [line for gpu in gpus for line in gpu_lines(gpu, compact=False)]
    compact = len(full) + 2 > height
    lines += [line for gpu in gpus for line in gpu_lines(gpu, compact=True)] if compact else full
    if not gpus:
        lines[0].append(" (training process)", style="dim")
    if state.rss is None and state.rss_peak is None:
        lines.append(Text("RAM -" if state.last_step else "waiting for the first step…", style="dim"))
    else:
        lines.append(Text.assemble(("RAM ", "bold"), size(state.rss), ("  peak ", "dim"), size(state.rss_peak)))
    return lines


class MemoryPanel(Static):
    DEFAULT_CSS = "MemoryPanel { height: auto; }"

    def show(self, state: RunState, height: int) -> None:
        text = Text("\n").join(memory_lines(state, height))
        text.no_wrap, text.overflow = True, "ellipsis"  # a long GPU name is cut, never wrapped
        self.update(text)
