"""engine.data: resolving data.path + split, and reading every format with clear errors. No network."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import engine.data
from engine.data import (
    DataSource,
    check_split,
    find_splits,
    list_data_files,
    load_split,
    read_table,
    resolve_split,
)
from engine.errors import DataError
from support import write

ROOT = Path(__file__).resolve().parents[1]
MESSAGES = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


pytestmark = pytest.mark.usefixtures("in_tmp")  # each test in its own directory (conftest)


def jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def error_text(excinfo: pytest.ExceptionInfo[DataError]) -> str:
    return str(excinfo.value)


# --- directory + split, one per format


@pytest.mark.parametrize(
    "name, content",
    [
        ("train.csv", "text,label\nhello,1\nworld,0\n"),
        ("train.jsonl", '{"text": "hello", "label": "1"}\n{"text": "world", "label": "0"}\n'),
        ("train.json", '[{"text": "hello", "label": "1"}, {"text": "world", "label": "0"}]'),
    ],
)
def test_dir_and_split_text_formats(tmp_path: Path, name: str, content: str) -> None:
    write(tmp_path / "data" / name, content)
    table = load_split("data", "train")
    assert table.source.path == tmp_path / "data" / name
    assert table.source.format == name.split(".")[1]
    assert table.columns == ["text", "label"]
    assert table.rows == [{"text": "hello", "label": "1"}, {"text": "world", "label": "0"}]


def test_dir_and_split_parquet_keeps_nested_lists(tmp_path: Path) -> None:
    parquet(tmp_path / "data" / "train.parquet", [{"messages": MESSAGES, "n": 1}, {"messages": MESSAGES[:1], "n": 2}])
    table = load_split("data", "train")
    assert table.source.format == "parquet"
    assert table.columns == ["messages", "n"]
    assert table.rows[0]["messages"] == MESSAGES
    assert isinstance(table.rows[1]["messages"], list)
    assert table.locations == ["data/train.parquet:row 1", "data/train.parquet:row 2"]


def test_relative_path_falls_back_to_base_dir(tmp_path: Path) -> None:
    jsonl(tmp_path / "project" / "data" / "train.jsonl", [{"text": "a"}])
    source = resolve_split("data", "train", base_dir=tmp_path / "project")
    assert source.path == tmp_path / "project" / "data" / "train.jsonl"
    assert source.describe() == "project/data/train.jsonl"


def test_find_splits_and_list_data_files(tmp_path: Path) -> None:
    jsonl(tmp_path / "data" / "train.jsonl", [{"text": "a"}])
    write(tmp_path / "data" / "test.csv", "text\nb\n")
    write(tmp_path / "data" / "notes.txt", "not data")
    assert list_data_files(tmp_path / "data") == ["test.csv", "train.jsonl"]
    assert find_splits("data") == ["test", "train"]
    assert find_splits("data/train.jsonl") == []
    assert find_splits("org/name") == []


# --- single files and splits next to them


def test_single_file_path(tmp_path: Path) -> None:
    jsonl(tmp_path / "my.jsonl", [{"text": "a"}])
    source = resolve_split("my.jsonl", "train")
    assert (source.kind, source.path, source.format, source.split) == ("file", tmp_path / "my.jsonl", "jsonl", "train")
    assert source.describe() == "my.jsonl"
    assert load_split("my.jsonl", "train").rows == [{"text": "a"}]


def test_valid_split_as_file_next_to_data_file(tmp_path: Path) -> None:
    jsonl(tmp_path / "data" / "mine.jsonl", [{"text": "train"}])
    write(tmp_path / "data" / "valid.csv", "text\nvalid\n")
    assert resolve_split("data/mine.jsonl", "valid").path == tmp_path / "data" / "valid.csv"
    assert resolve_split("data/mine.jsonl", "data/valid.csv").path == tmp_path / "data" / "valid.csv"
    # a split that names no file: the data file itself
    assert resolve_split("data/mine.jsonl", "test").path == tmp_path / "data" / "mine.jsonl"
    # "train" is the file itself, even with a train.* next to it
    jsonl(tmp_path / "data" / "train.jsonl", [{"text": "other"}])
    assert resolve_split("data/mine.jsonl", "train").path == tmp_path / "data" / "mine.jsonl"
    # a bare split name is not looked up in the current directory
    write(tmp_path / "other.csv", "text\nx\n")
    assert resolve_split("data/mine.jsonl", "other").path == tmp_path / "data" / "mine.jsonl"


def test_tsv_is_read_with_tabs(tmp_path: Path) -> None:
    write(tmp_path / "d.tsv", "text\tlabel\na, b\t1\n")
    assert load_split("d.tsv", "train").rows == [{"text": "a, b", "label": "1"}]


# --- resolution errors


def test_missing_split_lists_the_files_there(tmp_path: Path) -> None:
    jsonl(tmp_path / "data" / "train.jsonl", [{"text": "a"}])
    jsonl(tmp_path / "data" / "test.jsonl", [{"text": "b"}])
    with pytest.raises(DataError) as excinfo:
        resolve_split("data", "validation", split_key="data.valid_split")
    text = error_text(excinfo)
    assert "data.valid_split = 'validation'" in text
    assert "no data file for split 'validation' in data/" in text
    assert "test.jsonl, train.jsonl" in text
    assert "set data.valid_split to one of: test, train" in text
    problems = check_split("data", "validation", split_key="data.valid_split")
    assert len(problems) == 1 and problems[0].key == "data.valid_split"
    assert check_split("data", "train") == []


def test_missing_split_in_dir_without_data_files(tmp_path: Path) -> None:
    write(tmp_path / "data" / "readme.md", "hi")
    with pytest.raises(DataError) as excinfo:
        resolve_split("data", "train")
    assert "the directory has no data files" in error_text(excinfo)
    assert "put train.jsonl" in error_text(excinfo)


def test_missing_file_lists_files_in_parent(tmp_path: Path) -> None:
    jsonl(tmp_path / "data" / "train.jsonl", [{"text": "a"}])
    with pytest.raises(DataError) as excinfo:
        resolve_split("data/trian.jsonl", "train")
    text = error_text(excinfo)
    assert "data.path = 'data/trian.jsonl'" in text
    assert "no such file or directory" in text
    assert "data/ holds: train.jsonl" in text
    assert "fix:" in text


def test_missing_local_directory(tmp_path: Path) -> None:
    jsonl(tmp_path / "train.jsonl", [{"text": "a"}])
    with pytest.raises(DataError) as excinfo:
        resolve_split("./dataset", "train")
    assert "no such file or directory" in error_text(excinfo)
    assert "the current directory holds: train.jsonl" in error_text(excinfo)


def test_unknown_extension(tmp_path: Path) -> None:
    write(tmp_path / "data.txt", "hello")
    with pytest.raises(DataError) as excinfo:
        resolve_split("data.txt", "train")
    text = error_text(excinfo)
    assert "unsupported file type '.txt'" in text
    assert ".csv, .tsv, .jsonl, .json or .parquet" in text


def test_duplicate_split_files(tmp_path: Path) -> None:
    jsonl(tmp_path / "data" / "train.jsonl", [{"text": "a"}])
    write(tmp_path / "data" / "train.csv", "text\na\n")
    with pytest.raises(DataError) as excinfo:
        resolve_split("data", "train")
    text = error_text(excinfo)
    assert "data/train.csv and data/train.jsonl" in text
    assert "remove or rename" in text


def test_hub_id_resolves_without_reading() -> None:
    source = resolve_split("org/name:cfg", "train")
    assert (source.kind, source.dataset_id, source.config_name, source.format) == ("hub", "org/name", "cfg", "hub")
    assert source.describe() == "hub dataset org/name (config cfg), split train"
    assert resolve_split("imdb", "test").describe() == "hub dataset imdb, split test"


@pytest.mark.parametrize("bad", ["org/name:bad config", "-org/name", "org/na me"])
def test_invalid_hub_id(bad: str) -> None:
    with pytest.raises(DataError) as excinfo:
        resolve_split(bad, "train")
    text = error_text(excinfo)
    assert f"data.path = {bad!r}" in text
    assert "neither an existing local file or directory nor a valid datasets id" in text


def test_unknown_hub_dataset_offline_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        load_split("llmtune-test/no-such-dataset-7f3a9c", "train")
    assert time.monotonic() - started < 30
    text = error_text(excinfo)
    assert "'llmtune-test/no-such-dataset-7f3a9c' could not be found locally" in text
    assert "offline" in text
    assert "download it on a machine with internet" in text
    assert "point data.path at local files" in text


def test_unreachable_hub_fails_fast_and_restores_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """No offline flag, but no route to the hub: the same quick answer, without a minute of retries."""
    import datasets.config

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(engine.data, "_hub_reachable", lambda: False)
    before = datasets.config.HF_HUB_OFFLINE
    started = time.monotonic()
    with pytest.raises(DataError) as excinfo:
        load_split("llmtune-test/no-such-dataset-7f3a9c", "train")
    assert time.monotonic() - started < 30
    assert "could not be found locally and the hub cannot be reached" in error_text(excinfo)
    assert datasets.config.HF_HUB_OFFLINE == before


def test_hub_rows_and_split_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub path with `datasets.load_dataset` replaced: rows come back as dicts, a wrong split lists the others."""
    import datasets

    monkeypatch.setattr(engine.data, "_hub_reachable", lambda: True)  # never touch the network in tests

    calls: list[dict[str, Any]] = []

    def fake_load_dataset(path: str, **kwargs: Any) -> datasets.Dataset:
        calls.append({"path": path, **kwargs})
        if kwargs["split"] != "train":
            raise ValueError(f'Unknown split "{kwargs["split"]}". Should be one of [\'train\', \'test\'].')
        return datasets.Dataset.from_list([{"messages": MESSAGES}, {"messages": MESSAGES}, {"messages": []}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    table = load_split("org/chat:default", "train", token="tok", limit=2)
    assert calls[0] == {"path": "org/chat", "name": "default", "split": "train", "token": "tok"}
    assert table.rows == [{"messages": MESSAGES}, {"messages": MESSAGES}]
    assert table.columns == ["messages"]
    assert table.locations == ["org/chat[train]:row 1", "org/chat[train]:row 2"]
    with pytest.raises(DataError) as excinfo:
        load_split("org/chat", "validation")
    assert "no split 'validation'; its splits are: train, test" in error_text(excinfo)


# --- reading errors


def test_malformed_jsonl_line(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a"}\n\n{"text": "b"}\n{"text": oops}\n')
    with pytest.raises(DataError) as excinfo:
        load_split("train.jsonl", "train")
    text = error_text(excinfo)
    assert "train.jsonl:4: not valid JSON (Expecting value at column 10)" in text
    assert "one complete JSON object" in text


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", '{"text": "a"}\n"just a string"\n')
    with pytest.raises(DataError) as excinfo:
        load_split("train.jsonl", "train")
    assert "train.jsonl:2: line holds a JSON string, not an object" in error_text(excinfo)


def test_non_utf8_names_byte_offset(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError) as excinfo:
        load_split("train.csv", "train")
    text = error_text(excinfo)
    assert "train.csv:2" in text
    assert "byte 0xe9 at byte offset 8 (line 2)" in text
    assert "iconv -f latin1 -t utf-8" in text


def test_non_utf8_in_json(tmp_path: Path) -> None:
    write(tmp_path / "train.json", b'[{"text": "ok"},\n {"text": "caf\xe9"}]')
    with pytest.raises(DataError) as excinfo:
        load_split("train.json", "train")
    assert "byte offset 31 (line 2)" in error_text(excinfo)


def test_bom_is_stripped(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", b"\xef\xbb\xbftext,label\nhi,1\n")
    write(tmp_path / "other.jsonl", b'\xef\xbb\xbf{"text": "hi"}\n')
    assert load_split("train.csv", "train").columns == ["text", "label"]
    assert load_split("other.jsonl", "train").columns == ["text"]


@pytest.mark.parametrize(
    "name, content",
    [(n, c) for n in ("train.jsonl", "train.csv", "train.json") for c in ("", "  \n\n")] + [("train.parquet", "")],
)
def test_empty_file(tmp_path: Path, name: str, content: str) -> None:
    write(tmp_path / name, content)
    with pytest.raises(DataError) as excinfo:
        load_split(name, "train")
    assert f"{name}: file is empty" in error_text(excinfo)


def test_unreadable_parquet(tmp_path: Path) -> None:
    write(tmp_path / "train.parquet", b"this is not parquet")
    with pytest.raises(DataError) as excinfo:
        load_split("train.parquet", "train")
    assert "train.parquet: not a readable Parquet file" in error_text(excinfo)


def test_parquet_named_jsonl(tmp_path: Path) -> None:
    parquet(tmp_path / "train.jsonl", [{"text": "a"}])
    with pytest.raises(DataError) as excinfo:
        load_split("train.jsonl", "train")
    assert "this is a Parquet file" in error_text(excinfo)


def test_csv_with_only_header(tmp_path: Path) -> None:
    write(tmp_path / "train.csv", "text,label\n")
    with pytest.raises(DataError) as excinfo:
        load_split("train.csv", "train")
    assert "train.csv: has a header but no rows" in error_text(excinfo)


@pytest.mark.parametrize("row, word", [("a,1,extra", "more"), ("a", "fewer")])
def test_csv_ragged_row(tmp_path: Path, row: str, word: str) -> None:
    write(tmp_path / "train.csv", f'text,label\n"two\nlines",0\n{row}\n')
    with pytest.raises(DataError) as excinfo:
        load_split("train.csv", "train")
    text = error_text(excinfo)
    assert f"train.csv:row 2 (line 4): line 4 has {3 if word == 'more' else 1} fields, {word} than" in text
    assert "quote cells" in text


def test_csv_duplicate_and_unnamed_columns(tmp_path: Path) -> None:
    write(tmp_path / "dup.csv", "text,text\na,b\n")
    write(tmp_path / "index.csv", ",text\n0,a\n")
    with pytest.raises(DataError) as excinfo:
        load_split("dup.csv", "train")
    assert "dup.csv:1: the header names column 'text' twice" in error_text(excinfo)
    with pytest.raises(DataError) as excinfo:
        load_split("index.csv", "train")
    assert "column 1 of the header has no name" in error_text(excinfo)
    assert "to_csv(index=False)" in error_text(excinfo)


def test_csv_cells_stay_strings(tmp_path: Path) -> None:
    cell = json.dumps(MESSAGES).replace('"', '""')
    write(tmp_path / "train.csv", f'messages,n,empty\n"{cell}",3,\n')
    table = load_split("train.csv", "train")
    assert table.rows == [{"messages": json.dumps(MESSAGES), "n": "3", "empty": ""}]


def test_json_shapes(tmp_path: Path) -> None:
    write(tmp_path / "list.json", json.dumps([{"a": 1}, {"a": 2, "b": 3}]))
    write(tmp_path / "cols.json", json.dumps({"a": [1, 2], "b": ["x", "y"]}))
    write(tmp_path / "data.json", json.dumps({"data": [{"a": 1}, {"a": 2}]}))
    write(tmp_path / "lines.json", '{"a": 1}\n{"a": 2}\n')
    listed = load_split("list.json", "train")
    assert (listed.rows, listed.columns) == ([{"a": 1}, {"a": 2, "b": 3}], ["a", "b"])
    assert listed.locations == ["list.json:row 1", "list.json:row 2"]
    assert load_split("cols.json", "train").rows == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert load_split("data.json", "train").rows == [{"a": 1}, {"a": 2}]
    lines = load_split("lines.json", "train")
    assert lines.rows == [{"a": 1}, {"a": 2}]
    assert lines.locations == ["lines.json:1", "lines.json:2"]


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"a": 1, "b": 2}', "'a' is not a list, so it is not a table"),
        ('{"a": [1, 2], "b": [1]}', "different lengths (a has 2, b has 1)"),
        ("[1, 2]", "train.json:row 1: item 1 of the list is a JSON number, not an object"),
        ('"text"', "holds a JSON string; expected a list of objects"),
        ("[]", "has no rows"),
        ('[{"a": 1},\n {"a": }]', "train.json:2: not valid JSON (Expecting value at line 2, column 8)"),
    ],
)
def test_json_errors(tmp_path: Path, content: str, expected: str) -> None:
    write(tmp_path / "train.json", content)
    with pytest.raises(DataError) as excinfo:
        load_split("train.json", "train")
    assert expected in error_text(excinfo)


def test_json_array_saved_as_jsonl_is_read(tmp_path: Path) -> None:
    write(tmp_path / "train.jsonl", json.dumps([{"text": "a"}, {"text": "b"}], indent=2))
    assert load_split("train.jsonl", "train").rows == [{"text": "a"}, {"text": "b"}]


def test_message_lists_stay_lists_in_jsonl(tmp_path: Path) -> None:
    jsonl(tmp_path / "chat.jsonl", [{"messages": MESSAGES}, {"messages": MESSAGES, "extra": 1}])
    table = load_split("chat.jsonl", "train")
    assert table.rows[0]["messages"] == MESSAGES
    assert table.columns == ["messages", "extra"]


# --- limit and locations


def test_limit(tmp_path: Path) -> None:
    rows = [{"text": str(i)} for i in range(50)]
    jsonl(tmp_path / "a.jsonl", rows)
    write(tmp_path / "a.csv", "text\n" + "".join(f"{i}\n" for i in range(50)))
    write(tmp_path / "a.json", json.dumps(rows))
    parquet(tmp_path / "a.parquet", rows)
    for name in ("a.jsonl", "a.csv", "a.json", "a.parquet"):
        table = load_split(name, "train", limit=3)
        assert table.rows == rows[:3], name
        assert len(table.locations) == 3
    # a bad line after the limit is never read
    write(tmp_path / "b.jsonl", '{"text": "a"}\nnot json\n')
    assert len(load_split("b.jsonl", "train", limit=1).rows) == 1


def test_locations(tmp_path: Path) -> None:
    write(tmp_path / "data" / "train.jsonl", '\n{"text": "a"}\n\n{"text": "b"}\n')
    write(tmp_path / "data" / "test.csv", 'text,label\n"multi\nline",1\n\nsecond,2\n')
    assert load_split("data", "train").locations == ["data/train.jsonl:2", "data/train.jsonl:4"]
    table = load_split("data", "test")
    assert table.rows == [{"text": "multi\nline", "label": "1"}, {"text": "second", "label": "2"}]
    assert table.locations == ["data/test.csv:row 1 (line 2)", "data/test.csv:row 2 (line 5)"]


def test_read_table_on_a_source(tmp_path: Path) -> None:
    jsonl(tmp_path / "x.jsonl", [{"text": "a"}])
    source = DataSource("file", tmp_path / "x.jsonl", "jsonl", None, None, "train")
    assert read_table(source).source is source
    (tmp_path / "x.jsonl").unlink()
    with pytest.raises(DataError) as excinfo:
        read_table(source)
    assert "x.jsonl: no such file" in error_text(excinfo)


# --- what the wizard shows: formats, split names, cheap row counts


def test_formats_split_names_and_the_file_itself(tmp_path: Path) -> None:
    assert [engine.data.data_format(Path(n)) for n in ("a.TSV", "b.ndjson", "c.json", "d.txt")] == [
        "csv", "jsonl", "json", None]
    assert engine.data.split_names(["valid.csv", "train.jsonl", "train.csv"]) == ["train", "valid"]
    mine = tmp_path / "mine.jsonl"
    assert [engine.data.is_the_file(mine, s) for s in ("train", "mine", "mine.jsonl", "valid")] == [
        True, True, True, False]


def test_rows_are_counted_without_parsing(tmp_path: Path) -> None:
    jsonl(tmp_path / "train.jsonl", [{"text": str(i)} for i in range(5)])
    write(tmp_path / "valid.tsv", "text\tlabel\na\t1\n\t\nb\t2\n")  # a blank record is no row
    write(tmp_path / "doc.json", json.dumps([{"text": "a"}, {"text": "b"}]))
    counts = {name: engine.data.count_rows(load_split(str(tmp_path / name), "train", limit=1))
              for name in ("train.jsonl", "valid.tsv", "doc.json")}
    assert counts == {"train.jsonl": 5, "valid.tsv": 2, "doc.json": None}  # a JSON document: not cheap
    assert engine.data.count_rows(load_split(str(tmp_path / "train.jsonl"), "train"), limit_bytes=10) is None


# --- import weight


def test_import_is_light() -> None:
    code = (
        "import sys, engine.data\n"
        "heavy = [m for m in ('datasets', 'pyarrow', 'pandas', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_a_hub_error_naming_the_splits_or_configs_says_which_to_pick() -> None:
    from engine.data import DataSource, _hub_error

    source = DataSource("hub", None, None, "org/ds", None, "trian")
    split = _hub_error(source, ValueError("Unknown split \"trian\". Should be one of ['train', 'test']"), offline=None)
    [p] = split.problems
    assert p.message == "the dataset has no split 'trian'; its splits are: train, test"
    assert p.fix == "set data.train_split (or data.valid_split) to one of: train, test"
    config = _hub_error(source, ValueError("Please pick one among the available configs: ['a', 'b']"), offline=None)
    [p] = config.problems
    assert p.message == "pick a config of 'org/ds': a, b"
    assert p.fix == "set data.path to org/ds:CONFIG, CONFIG one of: a, b"
