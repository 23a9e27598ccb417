"""A sample part as the model sees it: trained text green and bold, masked text grey, cut text struck out in red.

The colours are the dry run's (tui.dry_run.STYLES), so the wizard and `--dry-run` read the same way.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from engine.preview import Part, Segment
from tui.dry_run import MAX_PART_CHARS, STYLES, shorten


def legend() -> Text:
    """One line naming the three styles."""
    return Text.assemble("legend: ", ("trained", STYLES["trained"]), "  ", ("masked", STYLES["masked"]), "  ",
                         ("cut (beyond a length limit)", STYLES["cut"]))


def part_heading(part: Part) -> Text:
    counts = f"{part.tokens} tokens, {part.trained} trained" + (f", {part.cut} cut" if part.cut else "")
    return Text.assemble((part.title, "bold"), (f"  {counts}", "cyan"))


def render_segments(segments: list[Segment], budget: int = MAX_PART_CHARS) -> Text:
    text = Text()
    for piece, kind in shorten(segments, budget):
        text.append(piece, style=STYLES[kind] if kind else "italic")
    return text


class MaskedText(Static):
    """One Part of a preview Sample: a heading with its token counts, an optional legend, and the text."""

    DEFAULT_CSS = """
    MaskedText { height: auto; margin-bottom: 1; }
    """

    def __init__(self, part: Part | None = None, *, show_legend: bool = False, max_chars: int = MAX_PART_CHARS,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, markup=False)
        self.show_legend = show_legend
        self.max_chars = max_chars
        self.part: Part | None = None
        self.body = Text()  # the styled text of the part alone (tests read its spans)
        self.show(part)

    def show(self, part: Part | None) -> None:
        """Display `part`; None hides the widget."""
        self.part = part
        self.display = part is not None
        if part is None:
            self.body = Text()
            self.update("")
            return
        self.body = render_segments(part.segments, self.max_chars)
        lines = [part_heading(part)] + ([legend()] if self.show_legend else []) + [self.body]
        self.update(Text("\n").join(lines))
