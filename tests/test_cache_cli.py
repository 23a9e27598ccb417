"""`llmtune-tui cache` / `cache list` / `cache clear [KEY...] [--older-than DAYS]` through the real CLI (typer's
CliRunner on tui.cli.app), over entries written by hand with engine.data_cache in a per-test LLMTUNE_HOME."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import data_cache
from tui.cli import app

ROOT = Path(__file__).resolve().parents[1]
KEY_A = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
KEY_B = "a1b2ffffffffffffffffffffffffffff"  # shares "a1b2" with KEY_A
KEY_C = "c0ffee00c0ffee00c0ffee00c0ffee00"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLMTUNE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")  # one line per row, whatever the terminal running the tests
    return tmp_path


def cache(*args: str):
    return CliRunner().invoke(app, ["cache", *args])


def make_entry(key: str, *, size: int = 3 * 2**20, trainer: str = "sft", data: str = "data/chat.jsonl",
               rows: dict | None = None, days_ago: float = 0.0, **made_from) -> Path:
    with data_cache.writing(key) as d:
        (d / "train.arrow").write_bytes(b"\0" * size)
        info = {"data": data, "base_model": "Qwen/Qwen2.5-0.5B", "trainer": trainer,
                "rows": {"train": 1200, "valid": 300} if rows is None else rows, "config": None, **made_from}
        data_cache.write_entry_file(d, {"key": key, "created": time.time(), "made_from": info})
    path = data_cache.entry_dir(key)
    if days_ago:
        when = time.time() - days_ago * 86400
        os.utime(path, (when, when))
    return path


def make_partial(name: str = "xyz", size: int = 2**20) -> Path:
    path = data_cache.cache_root() / f"{data_cache.PARTIAL_PREFIX}{name}"
    path.mkdir(parents=True)
    (path / "train.arrow").write_bytes(b"\0" * size)
    return path


def keys_left() -> list[str]:
    return sorted(e.key for e in data_cache.entries())


def test_an_empty_cache_is_one_line_naming_the_directory() -> None:
    for args in ((), ("list",)):
        out = cache(*args)
        assert out.exit_code == 0, out.output
        assert out.output.strip().splitlines() == [
            f"the cache of prepared datasets is empty ({data_cache.cache_root()})"]


def test_the_listing_shows_each_entry_and_the_total() -> None:
    make_entry(KEY_A, trainer="dpo", data="prefs/train.jsonl", days_ago=3)
    make_entry(KEY_C, size=2**10, rows={"train": 40}, base_model=None)
    out = cache()
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == f"cache: {data_cache.cache_root()} (2 entries, 3 MiB)"
    assert lines[1].split() == ["key", "size", "last", "used", "trainer", "examples", "base", "model", "data"]
    newest, older = lines[2].split(), lines[3].split()  # the most recently used first
    assert newest == [KEY_C[:12], "1K", "just", "now", "sft", "40/-", "-", "data/chat.jsonl"]  # no base model
    assert older[:7] == [KEY_A[:12], "3M", "3", "days", "ago", "dpo", "1,200/300"]
    assert older[-2:] == ["Qwen/Qwen2.5-0.5B", "prefs/train.jsonl"]
    assert KEY_A[:13] not in out.output  # the key is cut to 12 characters
    assert "partial" not in out.output
    assert cache("list").output == out.output


def test_an_entry_without_made_from_shows_dashes() -> None:
    with data_cache.writing(KEY_A) as d:
        data_cache.write_entry_file(d, {"key": KEY_A})
    out = cache()
    assert out.exit_code == 0, out.output
    row = out.output.splitlines()[2].split()
    assert row[0] == KEY_A[:12] and row[-4:] == ["-", "-", "-", "-"]  # trainer, examples, base model, data


def test_partial_directories_are_counted_and_said_to_be_cleared() -> None:
    make_entry(KEY_A)
    make_partial("one")
    make_partial("two")
    out = cache()
    assert out.exit_code == 0, out.output
    assert ("2 partial directories (2 MiB) left by preparations that did not finish: never read; "
            "`llmtune-tui cache clear` removes them") in out.output
    assert ".partial-" not in out.output.splitlines()[2]  # never listed as an entry


def test_only_partials_still_lists_them() -> None:
    make_partial()
    out = cache()
    assert out.exit_code == 0
    assert "(0 entries, 0 MiB)" in out.output and "1 partial directory (1 MiB)" in out.output


def test_clear_removes_everything_and_says_what_it_freed() -> None:
    make_entry(KEY_A)
    make_entry(KEY_C)
    partial = make_partial()
    out = cache("clear")
    assert out.exit_code == 0, out.output
    assert out.output.strip() == "removed 2 entries (6 MiB) and 1 partial directory (1 MiB), freed 7 MiB"
    assert keys_left() == [] and not partial.exists()
    assert cache().output.startswith("the cache of prepared datasets is empty")
    out = cache("clear")
    assert out.exit_code == 0 and out.output.startswith("nothing to remove: the cache of prepared datasets is empty")


def test_clear_never_removes_a_partial_a_live_process_is_writing() -> None:
    make_entry(KEY_A)
    live = make_partial(f"{KEY_C}-{os.getpid()}-123")  # the name data_cache.writing gives it: KEY-PID-NS
    out = cache()
    assert f"being written now by process {os.getpid()}" in out.output and "left by preparations" not in out.output
    out = cache("clear")
    assert out.exit_code == 0, out.output
    assert "removed 1 entry (3 MiB), freed 3 MiB" in out.output
    assert f"kept {live.name}: process {os.getpid()} is writing it" in out.output
    assert live.exists() and keys_left() == []


def test_clear_by_prefix_removes_just_that_entry() -> None:
    make_entry(KEY_A)
    make_entry(KEY_B)
    make_entry(KEY_C)
    partial = make_partial()
    out = cache("clear", "c0ff", KEY_B[:12])
    assert out.exit_code == 0, out.output
    assert "removed 2 entries (6 MiB), freed 6 MiB" in out.output and "1 entry kept" in out.output
    assert keys_left() == [KEY_A] and partial.exists()  # partials go with a plain `clear` only


def test_the_same_entry_named_twice_is_removed_once() -> None:
    make_entry(KEY_C)
    out = cache("clear", "c0", KEY_C)
    assert out.exit_code == 0 and "removed 1 entry (3 MiB)" in out.output


def test_an_unknown_prefix_exits_2_and_removes_nothing() -> None:
    make_entry(KEY_A)
    make_entry(KEY_C)
    out = cache("clear", "c0ff", "dead")  # one good prefix does not go ahead without the other
    assert out.exit_code == 2
    assert "cannot clear the cache: nothing was removed" in out.output
    assert "dead: no entry's key starts with it" in out.output and "`llmtune-tui cache` lists the keys" in out.output
    assert "Traceback" not in out.output
    assert keys_left() == [KEY_A, KEY_C]


def test_an_unknown_prefix_in_an_empty_cache_says_it_is_empty() -> None:
    out = cache("clear", "dead")
    assert out.exit_code == 2 and "the cache is empty" in out.output


def test_an_ambiguous_prefix_exits_2_listing_the_matching_keys() -> None:
    make_entry(KEY_A)
    make_entry(KEY_B)
    make_entry(KEY_C)
    out = cache("clear", "a1b2")
    assert out.exit_code == 2
    assert "a1b2: 2 entries' keys start with it" in out.output
    assert KEY_A in out.output and KEY_B in out.output and KEY_C not in out.output
    assert "give more characters of the key" in out.output
    assert keys_left() == [KEY_A, KEY_B, KEY_C]


def test_older_than_removes_only_the_entries_not_used_for_that_long() -> None:
    old = make_entry(KEY_A, days_ago=10)
    make_entry(KEY_B, days_ago=3)
    make_entry(KEY_C)
    stale = make_partial("stale")
    when = time.time() - 20 * 86400
    os.utime(stale, (when, when))
    fresh = make_partial("fresh")
    out = cache("clear", "--older-than", "7")
    assert out.exit_code == 0, out.output
    assert ("removed 1 entry (3 MiB) and 1 partial directory (1 MiB), freed 4 MiB: last used more than 7 days ago"
            in out.output)
    assert "2 entries kept" in out.output
    assert not old.exists() and keys_left() == [KEY_B, KEY_C]
    assert not stale.exists() and fresh.exists()
    out = cache("clear", "--older-than", "2.5")
    assert out.exit_code == 0 and keys_left() == [KEY_C]
    out = cache("clear", "--older-than", "1")
    assert out.exit_code == 0
    assert out.output.strip().startswith("nothing to remove: no entry was last used more than 1 day ago (1 entry kept)")


def test_keys_and_older_than_exclude_each_other() -> None:
    make_entry(KEY_A, days_ago=10)
    out = cache("clear", "a1", "--older-than", "7")
    assert out.exit_code == 2 and "exclude each other" in out.output and keys_left() == [KEY_A]
    out = cache("clear", "--older-than", "-1")
    assert out.exit_code == 2 and keys_left() == [KEY_A]


def test_a_child_process_lists_and_clears(home: Path) -> None:
    """As a user runs it: `python -m tui.cli cache`, plain output, exit codes."""
    make_entry(KEY_A)
    env = {**os.environ, "LLMTUNE_HOME": str(home)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tui.cli", "cache", *args], capture_output=True, text=True,
                              cwd=ROOT, env=env, timeout=120)

    out = run()
    assert out.returncode == 0, out.stderr
    assert KEY_A[:12] in out.stdout and "\x1b[" not in out.stdout
    out = run("clear", "zz")
    assert out.returncode == 2 and "zz: no entry's key starts with it" in out.stderr and out.stdout == ""
    assert "Traceback" not in out.stderr
    out = run("clear")
    assert out.returncode == 0 and "removed 1 entry" in out.stdout and keys_left() == []
