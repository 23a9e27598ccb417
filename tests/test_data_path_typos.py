"""A mistyped local data.path (`dolly.cvs`, `./chatdri`, `dat/train`) is said not to exist, with the names that are
there and the closest one suggested, instead of being taken for a hub dataset id; real hub ids stay hub ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.config import validate
from engine.data import check_split, is_hub_id, load_split, resolve_split
from engine.errors import ConfigError, DataError
from support import tiny_config, write

pytestmark = pytest.mark.usefixtures("in_tmp")

ROWS = "".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(3))


def only_problem(path: str, split: str = "train") -> str:
    problems = check_split(path, split)
    assert len(problems) == 1, problems
    assert problems[0].key == "data.path"
    return problems[0].render()


def test_a_near_miss_of_a_data_extension_is_a_missing_file_with_the_right_name_suggested() -> None:
    write(Path("dolly.csv"), "text\nhello\n")
    text = only_problem("dolly.cvs")
    assert "no such file or directory" in text and "hub" not in text
    assert "the current directory holds: dolly.csv" in text
    assert ".cvs is no data file extension" in text
    assert "fix: did you mean dolly.csv?" in text


@pytest.mark.parametrize("typed", ["dolly.jsonn", "dolly.parquett", "dolly.jsnl"])
def test_other_extension_near_misses_are_local(typed: str) -> None:
    write(Path("dolly.jsonl"), ROWS)
    text = only_problem(typed)
    assert "no such file or directory" in text and "did you mean dolly." in text
    with pytest.raises(DataError):
        resolve_split(typed, "train")  # never a hub id, so never a download


def test_an_extension_near_miss_with_nothing_close_suggests_the_extension() -> None:
    text = only_problem("nothing.cvs")
    assert ".cvs is no data file extension" in text and "did you mean nothing.csv?" in text


def test_a_mistyped_directory_lists_directories_and_suggests_the_closest() -> None:
    write(Path("chatdir") / "train.jsonl", ROWS)
    write(Path("notes") / "train.jsonl", ROWS)
    text = only_problem("./chatdri")
    assert "no such file or directory" in text
    assert "the current directory holds: chatdir/" in text and "notes/" in text  # folders are listed too
    assert "fix: did you mean ./chatdir?" in text
    assert "did you mean chatdir/?" in only_problem("chatdri/")


def test_a_typo_in_a_folder_of_an_org_name_style_path_is_local_when_that_folder_nearly_exists() -> None:
    write(Path("data") / "train.jsonl", ROWS)
    text = only_problem("dat/train")  # one slash, valid as a hub id: but data/ is right here
    assert "no such file or directory" in text and "did you mean data/train?" in text
    assert not is_hub_id("dat/train")


def test_a_typo_inside_an_existing_folder_suggests_the_file() -> None:
    write(Path("data") / "train.jsonl", ROWS)
    write(Path("data") / "valid.jsonl", ROWS)
    text = only_problem("data/trian.jsonl")
    assert "data/ holds: train.jsonl, valid.jsonl" in text  # the closest first
    assert "did you mean data/train.jsonl?" in text


@pytest.mark.parametrize("name", ["org/name", "tatsu-lab/alpaca", "imdb", "org/name:config"])
def test_hub_ids_stay_hub_ids_when_nothing_local_is_close(name: str) -> None:
    write(Path("data") / "train.jsonl", ROWS)
    write(Path("chatdir") / "train.jsonl", ROWS)
    assert resolve_split(name, "train").kind == "hub"
    assert is_hub_id(name)


def test_a_bare_name_read_from_the_hub_offline_suggests_the_local_folder_it_is_close_to() -> None:
    write(Path("chatdir") / "train.jsonl", ROWS)
    with pytest.raises(DataError) as excinfo:
        load_split("chatdri", "train")  # a valid hub id: tried (offline in tests), then the typo is named
    assert "no local file or directory named 'chatdri' either (did you mean chatdir?)" in str(excinfo.value)


def test_the_config_check_reports_the_suggestion_on_data_path(in_tmp: Path, tiny_model: Path) -> None:
    cfg = tiny_config(in_tmp, tiny_model, {"dolly.csv": "text\nhello\n"})
    cfg.data.path = "dolly.cvs"
    with pytest.raises(ConfigError) as excinfo:
        validate(cfg)
    (problem,) = [p for p in excinfo.value.problems if p.key == "data.path"]
    assert problem.fix is not None and problem.fix.startswith("did you mean dolly.csv?")
