"""Memory as the training process last reported it: per GPU, used and total from NVML with the peak seen;
the process's RAM always (on a machine with no GPU it is the memory that matters). A reading a GPU does not
support arrives as null and is shown as "-", never as an error.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from tui.format import human_bytes
from tui.run_state import GpuMemory, RunState


def _used_style(gpu: GpuMemory) -> str:
    if gpu.used is None or not gpu.total:
        return ""
    share = gpu.used / gpu.total
    return "bold red" if share > 0.95 else "yellow" if share > 0.85 else "green"


def _sizes(*readings: int | None) -> list[str]:
    """Readings in the panel's narrow column: 18.6G, 640M, 12K; "-" for a missing one."""
    return [human_bytes(n, compact=True) for n in readings]


def gpu_lines(gpu: GpuMemory, *, compact: bool) -> list[Text]:
    used_text, total, peak, reserved = _sizes(gpu.used, gpu.total, gpu.peak, gpu.reserved)
    used = Text(used_text, style=_used_style(gpu) if gpu.used is not None else "dim")
    if compact:  # many GPUs: one line each
        return [Text.assemble((f"GPU{gpu.index} ", "bold"), used, f"/{total}", (" pk ", "dim"), peak)]
    lines = [Text.assemble((f"GPU{gpu.index} ", "bold"), (gpu.name or "", "dim")),
             Text.assemble("  ", used, f" / {total}", ("  peak ", "dim"), peak)]
    if gpu.used is None and gpu.reserved is not None:  # NVML has no reading: torch's own view is the next best
        lines.append(Text.assemble(("  torch reserved ", "dim"), reserved))
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
        rss, rss_peak = _sizes(state.rss, state.rss_peak)
        lines.append(Text.assemble(("RAM ", "bold"), rss, ("  peak ", "dim"), rss_peak))
    return lines


class MemoryPanel(Static):
    DEFAULT_CSS = "MemoryPanel { height: auto; }"

    def show(self, state: RunState, height: int) -> None:
        text = Text("\n").join(memory_lines(state, height))
        text.no_wrap, text.overflow = True, "ellipsis"  # a long GPU name is cut, never wrapped
        self.update(text)
