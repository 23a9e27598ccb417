"""engine.data.read_chunks: the rows of read_table, a bounded number at a time. For every format the chunks put
together are read_table's rows, locations and columns; every malformed file fails with read_table's DataError;
and reading a big JSONL file holds about one chunk, not the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import engine.data
from engine.data import DataSource, Table, read_chunks, read_table
from engine.errors import DataError
from support import write

ROOT = Path(__file__).resolve().parents[1]
CHUNK_SIZES = (1, 2, 7, 1000)
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]

pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest): short locations

# 23 rows whose columns grow as they come ("label" from row 2, "extra" from row 12), so chunks of 1, 2 and 7
# rows see the columns appear in different chunks, and no chunk size divides the count.
ROWS: list[dict[str, Any]] = [
    {"text": f"row {i}", **({"label": i} if i >= 1 else {}), **({"extra": [i, "x"]} if i >= 11 else {})}
    for i in range(23)
]
FLAT = [{"text": f"row {i}", "label": str(i)} for i in range(23)]  # CSV cells are strings


def source_of(path: Path) -> DataSource:
    fmt = engine.data.data_format(path)
    assert fmt is not None
    return DataSource("file", path.absolute(), fmt, None, None, "train")


def jsonl_text(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def write_parquet(path: Path, rows: list[dict[str, Any]], row_group_size: int = 5) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)
    return path


def files(tmp: Path) -> dict[str, Path]:
    """One file per way a format can be written; all hold rows read_table accepts."""
    csv_body = "".join(f"{r['text']},{r['label']}\n" + ("\n" if i % 5 == 0 else "") for i, r in enumerate(FLAT))
    made = {
        # blank lines (also at the start and the end), CRLF endings, a BOM
        "blank.jsonl": write(tmp / "blank.jsonl", "\n" + jsonl_text(ROWS[:9]) + "\n  \n" + jsonl_text(ROWS[9:]) + "\n"),
        "crlf.jsonl": write(tmp / "crlf.jsonl", jsonl_text(ROWS).replace("\n", "\r\n")),
        "bom.jsonl": write(tmp / "bom.jsonl", b"\xef\xbb\xbf" + jsonl_text(ROWS).encode()),
        "rows.ndjson": write(tmp / "rows.ndjson", jsonl_text(ROWS)),
        # JSON documents saved as .jsonl: a list, {"data": [...]}, pretty-printed objects one after another
        "list.jsonl": write(tmp / "list.jsonl", json.dumps(ROWS, indent=2)),
        "data.jsonl": write(tmp / "data.jsonl", json.dumps({"data": ROWS}, indent=1)),  # on one line: one row
        "pretty.jsonl": write(tmp / "pretty.jsonl", "".join(json.dumps(r, indent=2) + "\n" for r in ROWS)),
        # .json: a list (with a BOM), columns of equal length, JSONL and pretty-printed objects in a .json file
        "list.json": write(tmp / "list.json", b"\xef\xbb\xbf" + json.dumps(ROWS).encode()),
        "columns.json": write(tmp / "columns.json", json.dumps({"text": [r["text"] for r in FLAT],
                                                                "label": [r["label"] for r in FLAT]})),
        "lines.json": write(tmp / "lines.json", jsonl_text(ROWS)),
        "pretty.json": write(tmp / "pretty.json", "".join(json.dumps(r, indent=2) + "\n" for r in ROWS)),
        # CSV with a BOM, blank lines and a multi-line quoted cell; TSV
        "rows.csv": write(tmp / "rows.csv", "\ufefftext,label\n" + '"multi\nline ""cell""",x\n' + csv_body),
        "rows.tsv": write(tmp / "rows.tsv", "text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in FLAT)),
        # Parquet in row groups of 5, with nested lists; and with a pandas index column, which is no data column
        "rows.parquet": write_parquet(tmp / "rows.parquet",
                                      [{"messages": MESSAGES[: i % 2 + 1], "n": i} for i in range(23)]),
    }
    import pyarrow as pa
    import pyarrow.parquet as pq

    indexed = pa.Table.from_pylist([{"text": r["text"], "__index_level_0__": i} for i, r in enumerate(FLAT)])
    pq.write_table(indexed, tmp / "index.parquet", row_group_size=4)
    made["index.parquet"] = tmp / "index.parquet"
    return made


def chunks_of(source: DataSource, **kwargs: Any) -> list[Table]:
    return list(read_chunks(source, **kwargs))


def assert_same_as_read_table(source: DataSource, chunk_rows: int, limit: int | None = None) -> list[Table]:
    table = read_table(source, limit=limit)
    chunks = chunks_of(source, limit=limit, chunk_rows=chunk_rows)
    label = f"{source.location()} chunk_rows={chunk_rows} limit={limit}"
    assert [row for c in chunks for row in c.rows] == table.rows, label
    assert [loc for c in chunks for loc in c.locations] == table.locations, label
    assert all(c.source is source for c in chunks), label
    # at most chunk_rows rows each, all full but the last
    assert [len(c.rows) for c in chunks[:-1]] == [chunk_rows] * (len(chunks) - 1), label
    assert 1 <= len(chunks[-1].rows) <= chunk_rows, label
    assert all(len(c.rows) == len(c.locations) for c in chunks), label
    # columns: those seen so far, in read_table's order; the last chunk's are read_table's
    assert chunks[-1].columns == table.columns, label
    seen: dict[str, None] = {}
    for chunk in chunks:
        for row in chunk.rows:
            seen.update(dict.fromkeys(row))
        if source.format in ("json", "jsonl"):
            assert chunk.columns == list(seen), label
        else:  # a header or a schema: every chunk has all the columns
            assert chunk.columns == table.columns, label
    return chunks


# ---------------------------------------------------------------- the same rows as read_table


@pytest.mark.parametrize("chunk_rows", CHUNK_SIZES)
def test_chunks_put_together_are_read_table(tmp_path: Path, chunk_rows: int) -> None:
    for path in files(tmp_path).values():
        chunks = assert_same_as_read_table(source_of(path), chunk_rows)
        assert len(chunks) == -(-sum(len(c.rows) for c in chunks) // chunk_rows)


def test_the_files_hold_what_they_should(tmp_path: Path) -> None:
    """The cases above really are the shapes they are named for (not, say, all read the same way)."""
    made = files(tmp_path)
    tables = {name: read_table(source_of(path)) for name, path in made.items()}
    for name in ("blank.jsonl", "crlf.jsonl", "bom.jsonl", "rows.ndjson", "list.jsonl", "data.jsonl", "pretty.jsonl",
                 "list.json", "lines.json", "pretty.json"):
        assert tables[name].rows == ROWS, name
        assert tables[name].columns == ["text", "label", "extra"], name
    assert tables["blank.jsonl"].locations[:2] == ["blank.jsonl:2", "blank.jsonl:3"]
    assert tables["list.jsonl"].locations[0] == "list.jsonl:row 1"  # read as a JSON document
    assert tables["pretty.jsonl"].locations[:2] == ["pretty.jsonl:1", "pretty.jsonl:4"]
    assert tables["rows.csv"].rows[0] == {"text": 'multi\nline "cell"', "label": "x"}
    assert tables["rows.csv"].locations[:2] == ["rows.csv:row 1 (line 2)", "rows.csv:row 2 (line 4)"]
    assert tables["rows.tsv"].rows == FLAT
    assert tables["index.parquet"].columns == ["text"]
    assert tables["rows.parquet"].rows[1]["messages"] == MESSAGES


@pytest.mark.parametrize("limit", [1, 2, 5, 7, 22, 23, 100])
def test_limit(tmp_path: Path, limit: int) -> None:
    for path in files(tmp_path).values():
        for chunk_rows in CHUNK_SIZES:
            chunks = assert_same_as_read_table(source_of(path), chunk_rows, limit)
            assert sum(len(c.rows) for c in chunks) == min(limit, 24 if path.name == "rows.csv" else 23)


def test_no_line_after_the_limit_is_read(tmp_path: Path) -> None:
    source = source_of(write(tmp_path / "b.jsonl", '{"text": "a"}\n{"text": "b"}\nnot json\n'))
    for chunk_rows in CHUNK_SIZES:
        assert [len(c.rows) for c in read_chunks(source, limit=2, chunk_rows=chunk_rows)] == (
            [1, 1] if chunk_rows == 1 else [2])


def test_bad_arguments_fail_at_once(tmp_path: Path) -> None:
    source = source_of(tmp_path / "missing.jsonl")
    for kwargs in ({"chunk_rows": 0}, {"limit": 0}):
        with pytest.raises(ValueError):
            read_chunks(source, **kwargs)
    with pytest.raises(ValueError, match="not a readable file source"):
        read_chunks(DataSource("file", None, "jsonl", None, None, "train"))


# ---------------------------------------------------------------- hub datasets


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """datasets.load_dataset replaced (no network): split "train" has 23 rows; returns the sizes to_list saw."""
    import datasets

    monkeypatch.setattr(engine.data, "_hub_reachable", lambda: True)
    rows = [{"messages": MESSAGES[: i % 2 + 1], "n": i} for i in range(23)]

    def fake_load_dataset(path: str, **kwargs: Any) -> datasets.Dataset:
        if kwargs["split"] == "empty":
            return datasets.Dataset.from_list(rows).select([])
        if kwargs["split"] != "train":
            raise ValueError(f'Unknown split "{kwargs["split"]}". Should be one of [\'train\', \'empty\'].')
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    sizes: list[int] = []
    to_list = datasets.Dataset.to_list

    def counted(self: datasets.Dataset) -> list:
        sizes.append(len(self))
        return to_list(self)

    monkeypatch.setattr(datasets.Dataset, "to_list", counted)
    return sizes


@pytest.mark.parametrize("limit", [None, 1, 7, 23, 50])
def test_hub_chunks_are_read_table_and_never_the_whole_split(fake_hub: list[int], limit: int | None) -> None:
    source = DataSource("hub", None, "hub", "org/chat", None, "train")
    for chunk_rows in CHUNK_SIZES:
        fake_hub.clear()
        chunks = assert_same_as_read_table(source, chunk_rows, limit)
        assert chunks[0].locations[0] == "org/chat[train]:row 1"
        read_by_table = fake_hub.pop(0)  # read_table's one to_list, of everything it returns
        assert read_by_table == min(23, limit or 23)
        assert fake_hub == [len(c.rows) for c in chunks]  # one slice of at most chunk_rows per chunk


@pytest.mark.parametrize("split", ["empty", "validation"])
def test_hub_errors_are_read_tables(fake_hub: list[int], split: str) -> None:
    source = DataSource("hub", None, "hub", "org/chat", None, split)
    assert_same_error(source)


# ---------------------------------------------------------------- malformed files: read_table's errors


def csv_rows(edits: dict[int, str], n: int = 100) -> str:
    """As in test_data_malformed: `row i,i` on line i + 2, some lines (by index, header = 0) replaced."""
    lines = ["text,label"] + [f"row {i},{i}" for i in range(n)]
    for index, line in edits.items():
        lines[index] = line
    return "\n".join(lines) + "\n"


DEEP = "[" * 100_000 + "]" * 100_000

MALFORMED: list[tuple[str, str | bytes]] = [
    # CSV: quotes never closed, a stray quote closing far later, ragged rows, headers
    ("open-quote.csv", csv_rows({4: 'row 3,"3'})),
    ("open-quote-first.csv", csv_rows({4: '"row 3,3'})),
    ("open-quote-last.csv", 'text,label\nfine,1\nnot "fine",2\nlast,"3'),
    ("open-quote-header.csv", '"text,label\na,1\nb,2\n'),
    ("stray-quote.csv", csv_rows({4: 'row 3,"3', 80: 'row 79,3"'})),
    ("stray-ragged.csv", csv_rows({4: 'row 3,"3', 80: 'row 79",3'})),
    ("open-quote.tsv", "text\tlabel\na\t1\nb\t\"2\nc\t3\n"),
    ("ragged.csv", 'text,label\n"two\nlines",0\na,1,extra\n'),
    ("header-only.csv", "text,label\n"),
    ("dup.csv", "text,text\na,b\n"),
    ("latin1.csv", "text\ncafé\n".encode("latin-1")),
    # JSONL: bad lines, at the first line and later, and the JSON-document fallback failing
    ("bad-line.jsonl", '{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n'),
    ("string-line.jsonl", '{"text": "a"}\n"just a string"\n'),
    ("array-first.jsonl", '[1, 2]\n{"text": "a"}\n'),
    ("deep.jsonl", '{"text": "a"}\n{"text": ' + DEEP + "}\n"),
    ("deep-only.jsonl", '{"text": ' + DEEP + "}"),
    ("ends-early.jsonl", '{"text": "a"}\n{"text": "b", "x": \n'),
    ("truncated.jsonl", '{"text": "a"}\n{"text": "b", "x": 1'),
    ("pretty-broken.jsonl", '{\n  "text": "a"\n}\n{\n  "text": "b",\n  "x": \n}\n'),
    ("list-broken.jsonl", '[{"text": "a"},\n{"text": "b", "x": }]\n'),
    ("crlf.jsonl", b'{"text": "a"}\r\n{"text": "b", "x": }\r\n'),
    ("bom.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "b", "x": }\n'),
    ("string.jsonl", b'{"text": "a"}\n{"text": "b\n'),
    ("latin1.jsonl", b'{"text": "a"}\n{"text": "b"}\n{"text": "caf\xe9"}\n'),
    ("latin1-first.jsonl", b'{"text": "caf\xe9"}\n'),
    ("scalar-doc.jsonl", '"just a string"'),
    # JSON documents
    ("not-a-list.json", '{"a": 1, "b": 2}'),
    ("lengths.json", '{"a": [1, 2], "b": [1]}'),
    ("numbers.json", "[1, 2]"),
    ("empty-list.json", "[]"),
    ("broken.json", '[{"a": 1},\n {"a": }]'),
    ("deep.json", '[{"text": "a"},\n {"text": "b"},\n {"text": ' + DEEP + "}]\n"),
    ("split.json", b'{"text": "a"}\n{"text": "b",\n "x": }\n'),
    ("latin1.json", b'[{"text": "ok"},\n {"text": "caf\xe9"}]'),
    # Found before any row: empty, blank, UTF-16, NUL bytes, Parquet under another name, unreadable Parquet
    *[(name, content) for name in ("empty.jsonl", "empty.csv", "empty.json") for content in ("", "  \n\n")],
    ("empty.parquet", ""),
    ("utf16.jsonl", '{"text": "a"}\n'.encode("utf-16")),
    ("nul.csv", b"text\na\x00b\n"),
    ("garbage.parquet", b"this is not parquet"),
]


def assert_same_error(source: DataSource, chunk_sizes: tuple[int, ...] = CHUNK_SIZES) -> str:
    with pytest.raises(DataError) as expected:
        read_table(source)
    for chunk_rows in chunk_sizes:
        with pytest.raises(DataError) as got:
            chunks_of(source, chunk_rows=chunk_rows)
        assert str(got.value) == str(expected.value), chunk_rows
        assert got.value.problems == expected.value.problems, chunk_rows
    return str(expected.value)


@pytest.mark.parametrize("name, content", MALFORMED, ids=[f"{n}-{i}" for i, (n, _) in enumerate(MALFORMED)])
def test_malformed_files_fail_as_in_read_table(tmp_path: Path, name: str, content: str | bytes) -> None:
    assert_same_error(source_of(write(tmp_path / name, content)), (1, 1000) if "deep" in name else CHUNK_SIZES)


def test_parquet_named_jsonl_fails_as_in_read_table(tmp_path: Path) -> None:
    write_parquet(tmp_path / "train.jsonl", [{"text": "a"}])
    assert "this is a Parquet file" in assert_same_error(source_of(tmp_path / "train.jsonl"))


def test_parquet_with_no_rows(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": pa.array([], pa.string())}), tmp_path / "none.parquet")
    assert "none.parquet: has no rows" in assert_same_error(source_of(tmp_path / "none.parquet"))


def test_an_error_at_row_k_comes_after_the_chunks_before_it(tmp_path: Path) -> None:
    source = source_of(write(tmp_path / "train.jsonl", jsonl_text(ROWS[:5]) + "{oops}\n" + jsonl_text(ROWS[5:])))
    chunks = read_chunks(source, chunk_rows=2)
    assert [c.rows for c in (next(chunks), next(chunks))] == [ROWS[:2], ROWS[2:4]]
    with pytest.raises(DataError) as excinfo:
        next(chunks)  # row 5 is read, then line 6 fails
    assert "train.jsonl:6: not valid JSON" in str(excinfo.value)


@pytest.mark.parametrize("case", ["missing", "empty", "utf16", "fifo"])
def test_errors_before_any_row_come_before_the_first_chunk(tmp_path: Path, case: str) -> None:
    path = tmp_path / "train.jsonl"
    if case == "empty":
        write(path, "")
    elif case == "utf16":
        write(path, '{"text": "a"}\n'.encode("utf-16"))
    elif case == "fifo":
        os.mkfifo(path)  # reading it would block: it must be refused without opening it
    source = source_of(path)
    chunks = read_chunks(source)  # nothing is read yet, so nothing fails yet
    with pytest.raises(DataError) as excinfo:
        next(chunks)
    expected = {"missing": "train.jsonl: no such file", "empty": "train.jsonl: file is empty",
                "utf16": "UTF-16 encoded", "fifo": "named pipe (FIFO)"}[case]
    assert expected in str(excinfo.value)
    if case != "fifo":
        assert_same_error(source)


def test_a_file_removed_after_the_check_fails_as_in_read_table(tmp_path: Path) -> None:
    source = source_of(write(tmp_path / "x.jsonl", jsonl_text(ROWS)))
    (tmp_path / "x.jsonl").unlink()
    assert "x.jsonl: no such file (it was there when the config was checked)" in assert_same_error(source)


# ---------------------------------------------------------------- bounded memory


PEAK_SCRIPT = """
import json, resource, sys
from pathlib import Path
from engine.data import DataSource, read_chunks
path, n = Path(sys.argv[1]), int(sys.argv[2])
with path.open("w") as f:  # ~300 bytes a row, written a row at a time
    for i in range(n):
        f.write(json.dumps({"text": f"row {i} " + "lorem ipsum " * 22, "label": i % 7, "tags": ["a", "b"]}) + "\\n")
rows = columns = 0
for chunk in read_chunks(DataSource("file", path, "jsonl", None, None, "train"), chunk_rows=1000):
    rows += len(chunk.rows)
    columns = len(chunk.columns)
print(rows, columns, path.stat().st_size, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_reading_a_big_jsonl_file_holds_about_one_chunk(tmp_path: Path) -> None:
    def start(n: int) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-c", PEAK_SCRIPT, str(tmp_path / f"{n}.jsonl"), str(n)], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    small, big = start(10_000), start(200_000)
    results = []
    for process in (small, big):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results.append([int(x) for x in out.split()])
    (small_rows, _, _, small_peak), (big_rows, columns, size, big_peak) = results
    assert (small_rows, big_rows, columns) == (10_000, 200_000, 3)
    assert size > 55_000_000  # read whole, its rows would take hundreds of MB
    growth_mb = (big_peak - small_peak) / 1024  # ru_maxrss is in KiB on Linux
    assert growth_mb < 60, f"peak RSS grew by {growth_mb:.0f} MB from 10k to 200k rows"
