"""The CLI's display of long data preparation (tui.progress_bar): bars on a terminal, a few plain lines in a log."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from engine.work_progress import progress_line
from tui import progress_bar
from tui.progress_bar import PrepProgress, clock_text, plain_text, words_text


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(progress_bar, "clock", fake)
    return fake


def piped() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=False), out


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100), out


def screen(output: str) -> list[str]:
    """What a terminal shows after `output`: enough of one for rich's live display (carriage return, line
    feed, erase line, cursor up); colours and other controls are dropped."""
    rows, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            rows += [""] * (row + 1 - len(rows))
        elif token == "\x1b[2K":
            rows[row] = ""
        elif m := re.fullmatch(r"\x1b\[(\d*)A", token):
            row = max(0, row - int(m.group(1) or 1))
        elif not token.startswith("\x1b"):
            rows[row] = rows[row][:col].ljust(col) + token + rows[row][col + len(token):]
            col += len(token)
    while rows and not rows[-1].strip():
        rows.pop()
    return [r.rstrip() for r in rows]


# ---- piped: plain lines ----

def test_piped_lines_are_the_progress_lines_with_their_eta(clock: Clock) -> None:
    console, out = piped()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 0, 100_000, 0.5))
        clock.now = 20
        report(progress_line("formatting train", 42_000, 100_000, 20.0))
        clock.now = 48
        report(progress_line("formatting train", 100_000, 100_000, 48.0))
    assert out.getvalue().splitlines() == [
        "formatting train: 0% (0/100,000 rows)",  # no rate yet: no ETA
        "formatting train: 42% (42,000/100,000 rows, 2,100 rows/s), eta 28 s",
        "formatting train: 100% (100,000/100,000 rows, 2,083 rows/s)"]  # done: no ETA


def test_piped_lines_come_at_most_every_plain_every_s_per_piece_and_the_last_always(clock: Clock) -> None:
    console, out = piped()
    with PrepProgress(console) as report:
        for second in range(1, 26):  # the pipeline reports once a second
            clock.now = second
            report(progress_line("formatting train", second * 1000, 25_000, float(second)))
            if second <= 12:
                report(progress_line("formatting valid", second * 100, 1_200, float(second)))
    counts = [re.search(r"\(([\d,]+)/", line).group(1) for line in out.getvalue().splitlines()]  # type: ignore[union-attr]
    assert counts == ["1,000", "100", "11,000", "1,100", "1,200", "21,000", "25,000"]
    # train at 1, 11, 21 s and its end at 25 s; valid at 1 and 11 s and its end at 12 s, though just after one


def test_piped_throttle_follows_plain_every_s(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_bar, "PLAIN_EVERY_S", 2.0)
    console, out = piped()
    with PrepProgress(console) as report:
        for second in range(6):
            clock.now = second
            report(progress_line("tokenizing train", second, 5, second + 1.0, "texts"))
    assert [line.split(" (")[1].split("/")[0] for line in out.getvalue().splitlines()] == ["0", "2", "4", "5"]


def test_the_same_work_again_starts_afresh(clock: Clock) -> None:
    console, out = piped()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 10, 10, 1.0))
        report(progress_line("formatting train", 1, 10, 1.0))  # a second preparation: its first line shows
    assert len(out.getvalue().splitlines()) == 2


def test_plain_str_lines_pass_through_as_text(clock: Clock) -> None:
    console, out = piped()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 1, 10, 1.0))
        report("reading the cached dataset [bold]data/[x][/]")
        report("reading the cached dataset [bold]data/[x][/]")  # never throttled, markup not read
    assert out.getvalue().splitlines()[1:] == ["reading the cached dataset [bold]data/[x][/]"] * 2


def test_work_left_unfinished_shows_how_far_it_got(clock: Clock) -> None:
    console, out = piped()
    with pytest.raises(KeyboardInterrupt), PrepProgress(console) as report:
        report(progress_line("formatting train", 1_000, 100_000, 1.0))
        clock.now = 3
        report(progress_line("formatting train", 3_000, 100_000, 3.0))  # throttled
        raise KeyboardInterrupt
    assert out.getvalue().splitlines() == [
        "formatting train: 1% (1,000/100,000 rows, 1,000 rows/s), eta 1 min 39 s",
        "formatting train: 3% (3,000/100,000 rows, 1,000 rows/s), eta 1 min 37 s"]


def test_nothing_shown_means_nothing_printed() -> None:
    for make in (piped, terminal):
        console, out = make()
        with PrepProgress(console):
            pass
        assert out.getvalue() == ""


# ---- terminal: bars ----

def test_a_terminal_gets_a_bar_with_counts_rate_and_eta() -> None:
    console, out = terminal()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 42_000, 100_000, 20.0))
    text = out.getvalue()
    assert "formatting train" in text and "42,000/100,000 rows" in text and "2,100 rows/s" in text
    assert "eta 0:28" in text
    assert "━" in text  # the bar
    assert "formatting train: 42%" not in text  # not the plain line


def test_finished_bars_stay_on_screen_in_order_with_the_text_lines_between() -> None:
    console, out = terminal()
    with PrepProgress(console) as report:
        report("reading the dataset")
        report(progress_line("formatting train", 0, 100_000, 0.5))
        report(progress_line("formatting train", 50_000, 100_000, 25.0))
        report(progress_line("formatting train", 100_000, 100_000, 50.0))
        report("cached the formatted rows")
        report(progress_line("tokenizing train", 0, 0, 0.0, "texts"))  # empty work: a full bar, no error
        report(progress_line("tokenizing valid", 200, 1_000, 1.0, "texts"))  # left unfinished
    shown = screen(out.getvalue())
    assert [row.split("  ")[0].split(" ━")[0] for row in shown] == [
        "reading the dataset", "formatting train", "cached the formatted rows", "tokenizing train",
        "tokenizing valid"]
    assert "100,000/100,000 rows" in shown[1] and "2,000 rows/s" in shown[1] and "took 0:50" in shown[1]
    assert "0/0 texts" in shown[3]
    assert "200/1,000 texts" in shown[4] and "200 texts/s" in shown[4] and "eta 0:04" in shown[4]


def test_the_eta_is_a_dash_until_there_is_a_rate() -> None:
    console, out = terminal()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 0, 100_000, 0.0))
    assert screen(out.getvalue())[0].endswith("eta -")


def test_a_call_after_exit_prints_the_line() -> None:
    console, out = terminal()
    report = PrepProgress(console)
    with report:
        report(progress_line("formatting train", 1_000, 100_000, 1.0))
    report(progress_line("formatting train", 2_000, 100_000, 2.0))
    report("done")
    assert screen(out.getvalue())[1:] == [
        "formatting train: 2% (2,000/100,000 rows, 1,000 rows/s), eta 1 min 38 s", "done"]


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    console, out = terminal()
    with PrepProgress(console) as report:
        report(progress_line("formatting train", 42_000, 100_000, 20.0))
    assert out.getvalue() == "formatting train: 42% (42,000/100,000 rows, 2,100 rows/s), eta 28 s\n"


# ---- the times ----

def test_times_read_as_a_clock_or_in_words() -> None:
    assert [clock_text(s) for s in (0, 27.4, 250, 3723)] == ["0:00", "0:27", "4:10", "1:02:03"]
    assert [words_text(s) for s in (0, 27.4, 250, 3723)] == ["0 s", "27 s", "4 min 10 s", "1 h 02 min"]
    assert plain_text("plain") == "plain"
