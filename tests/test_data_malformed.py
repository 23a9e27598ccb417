"""engine.data on malformed input that used to be read wrong or crash: a CSV quote left open (rows swallowed
without a word), JSON nested thousands deep, a FIFO or a device as data.path, and JSON errors at the end of
a line (reported as "column 1"). Each must be a DataError naming the file and the line, or read correctly."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.data import DataSource, check_split, load_split, read_table, resolve_split
from engine.errors import DataError
from support import write

pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)


def error_of(name: str, split: str = "train", **kwargs: Any) -> str:
    with pytest.raises(DataError) as excinfo:
        load_split(name, split, **kwargs)
    return str(excinfo.value)


def csv_rows(edits: dict[int, str], n: int = 100) -> str:
    """A two-column CSV of n rows, `row i,i` on line i + 2, with some lines (by index, header = 0) replaced."""
    lines = ["text,label"] + [f"row {i},{i}" for i in range(n)]
    for index, line in edits.items():
        lines[index] = line
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- CSV quotes


def test_csv_quote_never_closed_names_the_line_it_opened_on(tmp_path: Path) -> None:
    # Line 5 opens a quote in the last column: the csv module reads the other 96 rows into that one cell.
    write(tmp_path / "train.csv", csv_rows({4: 'row 3,"3'}))
    text = error_of("train.csv")
    assert "train.csv:5:" in text
    assert "line 5 (column 7)" in text and "never closed" in text
    assert "lines 5-101" in text
    assert 'double a quote that is part of the text ("")' in text


def test_csv_quote_never_closed_in_the_first_column(tmp_path: Path) -> None:
    # Here the swallowed record has too few fields: the ragged-row message must still say why.
    write(tmp_path / "train.csv", csv_rows({4: '"row 3,3'}))
    text = error_of("train.csv")
    assert "train.csv:5:" in text
    assert "line 5 (column 1)" in text and "never closed" in text


def test_csv_quote_never_closed_on_the_last_line(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", 'text,label\nfine,1\nnot "fine",2\nlast,"3')  # no newline at the end
    text = error_of("train.csv")
    assert "train.csv:4:" in text and "line 4 (column 6)" in text and "never closed" in text


def test_csv_quote_never_closed_in_the_header(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", '"text,label\na,1\nb,2\n')
    text = error_of("train.csv")
    assert "train.csv:1:" in text and "never closed" in text


def test_csv_stray_quote_closing_far_later_is_refused(tmp_path: Path) -> None:
    # A quote opened on line 5 and closed by a stray quote on line 81: one "row" of 77 lines, 24 rows read.
    write(tmp_path / "train.csv", csv_rows({4: 'row 3,"3', 80: 'row 79,3"'}))
    text = error_of("train.csv")
    assert "train.csv:5:" in text
    assert "row 4 runs from line 5 to line 81 (77 lines; no other row has more than 1)" in text
    assert "closes only on line 81" in text
    assert "save the data as JSONL" in text


def test_csv_stray_quote_making_a_ragged_row_says_where_the_quote_opened(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", csv_rows({4: 'row 3,"3', 80: 'row 79",3'}))
    text = error_of("train.csv")
    assert "train.csv:row 4 (line 5): line 5 has 3 fields, more than the 2 columns" in text
    assert "runs from line 5 to line 81" in text and "line 5 (column 7)" in text


def test_tsv_quote_never_closed(tmp_path: Path) -> None:
    write(tmp_path / "train.tsv", "text\tlabel\na\t1\nb\t\"2\nc\t3\n")
    text = error_of("train.tsv")
    assert "train.tsv:3:" in text and "never closed" in text


def test_csv_legit_multiline_cells_still_read(tmp_path: Path) -> None:
    # Multi-line cells of every length, one of them far longer than the rest (a document, not rows), quoted
    # quotes, and a multi-line last cell that ends the file without a newline.
    rows = [(f"para {i}\n" * (i % 7 + 1)).rstrip("\n") for i in range(30)]
    rows[12] = "\n".join(f"line {j} of a long document" + ", and more" * (j % 3) for j in range(300))
    rows[20] = 'she said "hi"\nand left'
    body = "".join('"{}",{}\n'.format(r.replace('"', '""'), i) for i, r in enumerate(rows))
    write(tmp_path / "train.csv", "text,label\n" + body + '"last\ncell",30')
    table = load_split("train.csv", "train")
    assert [r["text"] for r in table.rows] == rows + ["last\ncell"]
    assert table.rows[-1]["label"] == "30"


def test_csv_long_cell_of_csv_text_is_kept_when_other_rows_are_as_long(tmp_path: Path) -> None:
    # Cells that really hold CSV snippets (e.g. code data): long, row-like, but no longer than the others.
    snippet = "\n".join(f"name{j},{j}" for j in range(20))
    body = "".join(f'"{snippet}",{i}\n' for i in range(5))
    write(tmp_path / "train.csv", "text,label\n" + body)
    assert [r["text"] for r in load_split("train.csv", "train").rows] == [snippet] * 5


# ---------------------------------------------------------------- JSON nested thousands deep


DEEP = "[" * 100_000 + "]" * 100_000


def test_jsonl_row_nested_too_deep(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a"}\n{"text": ' + DEEP + "}\n")
    text = error_of("train.jsonl")
    assert "train.jsonl:2:" in text and "nested" in text and "deep" in text


def test_json_list_row_nested_too_deep(tmp_path: Path) -> None:
    write(tmp_path / "train.json", '[{"text": "a"},\n {"text": "b"},\n {"text": ' + DEEP + "}]\n")
    text = error_of("train.json")
    assert "train.json:3:" in text and "row 3" in text and "nested" in text


@pytest.mark.parametrize("name", ["lines.json", "one.jsonl"])
def test_json_lines_nested_too_deep_in_other_shapes(tmp_path: Path, name: str) -> None:
    # JSONL in a .json file, and a .jsonl whose only line fails (the JSON-document fallback reads it too).
    content = ('{"text": "a"}\n{"text": ' + DEEP + "}\n") if name == "lines.json" else ('{"text": ' + DEEP + "}")
    write(tmp_path / name, content)
    text = error_of(name)
    assert f"{name}:{2 if name == 'lines.json' else 1}:" in text and "nested" in text


# ---------------------------------------------------------------- FIFOs and devices


def test_fifo_as_data_path_is_refused_when_resolving(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "train.jsonl")
    with pytest.raises(DataError) as excinfo:
        resolve_split("train.jsonl", "train")
    text = str(excinfo.value)
    assert "data.path = 'train.jsonl'" in text and "named pipe (FIFO)" in text and "regular file" in text
    [problem] = check_split("train.jsonl", "train")
    assert "named pipe" in problem.message


def test_fifo_for_a_split_in_a_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    os.mkfifo(tmp_path / "data" / "train.jsonl")
    [problem] = check_split("data", "train")
    assert "data/train.jsonl" in problem.message and "named pipe (FIFO)" in problem.message


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_as_data_path_is_refused(tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").symlink_to("/dev/zero")
    for path in ("/dev/zero", "train.jsonl"):
        [problem] = check_split(path, "train")
        assert "character device" in problem.message and "regular file" in problem.message


def test_reading_a_fifo_source_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "train.jsonl")
    source = DataSource("file", tmp_path / "train.jsonl", "jsonl", None, None, "train")
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_table(source)
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            outcome.append(e)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    thread.join(timeout=10)
    if thread.is_alive():  # unblock the reader so the test process can end
        with open(tmp_path / "train.jsonl", "w"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], DataError) and "named pipe" in str(outcome[0])


# ---------------------------------------------------------------- JSON errors at the end of a line


def test_jsonl_line_ending_inside_an_object_gives_its_real_column(tmp_path: Path) -> None:
    # `{"text": "b",` then the rest on the next line: the error is at the end of line 2, not at "column 1".
    write(tmp_path / "train.jsonl", '{"text": "a"}\n{"text": "b", "x": \n')
    text = error_of("train.jsonl")
    assert "train.jsonl:2:" in text
    assert "column 1)" not in text
    assert "line 2 ends before its JSON object is complete (column 20, the end of the line" in text


def test_truncated_last_jsonl_line(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a"}\n{"text": "b", "x": 1')
    text = error_of("train.jsonl")
    assert "train.jsonl:2:" in text and "ends before its JSON object is complete (column 21, the end" in text


def test_pretty_printed_objects_in_jsonl_report_the_real_error(tmp_path: Path) -> None:
    content = '{\n  "text": "a"\n}\n{\n  "text": "b",\n  "x": \n}\n'
    write(tmp_path / "train.jsonl", content)
    text = error_of("train.jsonl")
    assert "train.jsonl:7:" in text and "line 7, column 1" in text  # `"x": ` is followed by `}` on line 7


def test_pretty_printed_objects_are_read(tmp_path: Path) -> None:
    rows = [{"text": "a", "n": [1, 2]}, {"text": "b"}]
    write(tmp_path / "train.jsonl", "".join(json.dumps(r, indent=2) + "\n" for r in rows))
    write(tmp_path / "train.json", "".join(json.dumps(r, indent=2) + "\n" for r in rows))
    for name in ("train.jsonl", "train.json"):
        table = load_split(name, "train")
        assert table.rows == rows, name
        assert table.locations == [f"{name}:1", f"{name}:8"], name


def test_json_list_in_jsonl_broken_on_line_2(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '[{"text": "a"},\n{"text": "b", "x": }]\n')
    text = error_of("train.jsonl")
    assert "train.jsonl:2:" in text and "line 2, column 20" in text


@pytest.mark.parametrize("name, content, where", [
    ("crlf.jsonl", b'{"text": "a"}\r\n{"text": "b", "x": }\r\n',
     "crlf.jsonl:2: not valid JSON (Expecting value at column 20)"),
    ("bom.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "b", "x": }\n',
     "bom.jsonl:2: not valid JSON (Expecting value at column 20)"),
    ("utf8.jsonl", '{"text": "a"}\n{"text": "éé", "x": }\n'.encode(),
     "utf8.jsonl:2: not valid JSON (Expecting value at column 21)"),
    ("lines.json", b'{"text": "a"}\n{"text": "b", "x": }\n',
     "lines.json:2: not valid JSON (Expecting value at column 20)"),
    ("crlf.json", b'{"text": "a"}\r\n{"text": "b", "x": }\r\n',
     "crlf.json:2: not valid JSON (Expecting value at column 20)"),
    ("split.json", b'{"text": "a"}\n{"text": "b",\n "x": }\n', "split.json:2: not valid JSON: line 2 ends before"),
    ("string.jsonl", b'{"text": "a"}\n{"text": "b\n', "string.jsonl:2: not valid JSON: line 2 ends before"),
])
def test_json_error_columns(tmp_path: Path, name: str, content: bytes, where: str) -> None:
    write(tmp_path / name, content)
    text = error_of(name)
    assert where in text
    assert "column 1)" not in text and " at at " not in text


@pytest.mark.parametrize("path", ["a/" * 3000, "~" + "c" * 300], ids=["too-long", "unknown-user-home"])
def test_a_path_the_file_system_refuses_is_a_problem_not_a_crash(in_tmp: Path, path: str) -> None:
    [problem] = check_split(path, "train")
    assert problem.key == "data.path" and "cannot be used as a path" in problem.message
    assert len(problem.render()) < 400  # the path is shown cut short
