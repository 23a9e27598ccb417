"""The data pipeline at scale (engine.dataset_prep): the cached, chunked, multi-process path gives the rows of the
direct in-memory path exactly; the cache is hit when nothing changed and missed when anything that changes the
rows did; a killed preparation leaves nothing that is read; memory does not grow with the rows."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import data_cache, work_progress
from engine.config import to_yaml
from engine.dataset_prep import prepare_dataset
from engine.errors import DataError
from engine.pipeline import prepare
from engine.trainers.rows import build_rows
from support import CHATS, PAIRS, ROOT, SETUPS, make_config

MANY_CHATS = [{"messages": [{"role": "user", "content": f"What is {a} plus {b}? " * (1 + a % 4)},
                            {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]}
              for a in range(12) for b in range(3)]
MANY_PAIRS = [{"prompt": f"What is {a} plus {b}?" + " Think." * (a % 5), "chosen": f"It is {a + b}.",
               "rejected": f"It is {a + b + 1}."} for a in range(12) for b in range(3)]
TEMPLATES = {"default": ["none"], "sft": ["chatml", "zephyr", "tokenizer"], "reward": ["tokenizer", "none"],
             "dpo": ["zephyr", "chatml"], "orpo": ["tokenizer"]}


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LLMTUNE_HOME", str(home))
    monkeypatch.chdir(tmp_path)  # data.path "." is the test's directory
    return home


def _config(directory: Path, tiny_model: Path, trainer: str, template: str, **params: object):
    files = {"default": None, "sft": {"train.jsonl": MANY_CHATS}}.get(trainer, {"train.jsonl": MANY_PAIRS})
    return make_config(directory, tiny_model, trainer, files=files, chat_template=template,
                       params={"block_size": 24, "max_prompt_length": 12, "max_completion_length": 8, **params})


def _direct_rows(cfg) -> list[list[dict]]:
    prepared = prepare(cfg)
    return [build_rows(prepared, fs) for fs in prepared.splits]


@pytest.mark.parametrize("trainer,template", [(t, c) for t, cs in TEMPLATES.items() for c in cs])
@pytest.mark.parametrize("procs", [1, 2])
def test_the_cached_rows_are_the_direct_rows(tmp_path: Path, tiny_model: Path, trainer: str, template: str,
                                             procs: int) -> None:
    """Every id, label and mask, for every trainer and template, in chunks of 5 rows over 1 or 2 processes,
    with a validation split held out of train (the hold-out is parted chunk by chunk)."""
    cfg = _config(tmp_path, tiny_model, trainer, template, valid_fraction=0.2)
    data = prepare_dataset(cfg, num_proc=procs, chunk_rows=5)
    direct = _direct_rows(cfg)
    assert [s.formatted.split for s in data.splits] == ["train", "valid"]
    for split, rows in zip(data.splits, direct):
        got = data.trainer_rows(split)
        assert len(got.rows) == len(rows.rows) > 0
        assert [got.rows[i] for i in range(len(got.rows))] == rows.rows
        assert got.stats == rows.stats
        assert split.formatted.used == split.counts.encoded
    # ... and the report the dry run prints from them is the in-memory one
    from engine.preview import _report

    prepared = prepare(cfg)
    for split, fs in zip(data.splits, prepared.splits):
        report, _ = _report(prepared, fs, 0)
        from engine.preview import report_of

        cached = report_of(cfg, split.formatted, split.counts, data.block_size)
        assert (cached.lengths, cached.trained_tokens, cached.total_tokens, cached.no_trained, cached.skipped,
                cached.notes) == (report.lengths, report.trained_tokens, report.total_tokens, report.no_trained,
                                  report.skipped, report.notes)
        assert cached.formatted.dropped == fs.dropped and cached.formatted.shape == fs.shape


def test_an_unchanged_rerun_reads_the_cache_and_a_change_misses(tmp_path: Path, tiny_model: Path) -> None:
    silent = {"messages": [{"role": "user", "content": "Hello?"}]}  # no answer to learn from: dropped
    cfg = make_config(tmp_path, tiny_model, "sft", files={"train.jsonl": CHATS + [silent]})
    first = prepare_dataset(cfg)
    assert not first.from_cache
    again = prepare_dataset(cfg)
    assert again.from_cache and again.key == first.key
    assert again.splits == first.splits  # the summary read back: rows, dropped and why, examples, counts
    assert dict(again.splits[0].formatted.dropped) == {"no assistant turn to learn from": 1}
    assert [again.dataset("train")[i] for i in range(3)] == [first.dataset("train")[i] for i in range(3)]

    def misses(change) -> None:
        changed = copy.deepcopy(cfg)  # the same files, untouched: only the change differs
        change(changed)
        result = prepare_dataset(changed)
        assert not result.from_cache and result.key != first.key

    misses(lambda c: setattr(c.params, "block_size", 32))
    misses(lambda c: setattr(c.data, "chat_template", "zephyr"))
    misses(lambda c: setattr(c.params, "train_on_all_tokens", True))
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text() + json.dumps(CHATS[0]) + "\n")  # the data file edited
    edited = prepare_dataset(cfg)
    assert not edited.from_cache and edited.splits[0].formatted.rows == len(CHATS) + 2


def test_a_different_mapping_or_tokenizer_misses(tmp_path: Path, tiny_model: Path) -> None:
    rows = [{"question": p["prompt"], "good": p["chosen"], "bad": p["rejected"], **p} for p in PAIRS]
    cfg = make_config(tmp_path, tiny_model, "dpo", files={"train.jsonl": rows})
    key = prepare_dataset(cfg).key
    other = copy.deepcopy(cfg)
    other.data.column_mapping.prompt_text_column = "question"
    assert prepare_dataset(other).key != key
    assert prepare_dataset(copy.deepcopy(cfg)).from_cache
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    tokenizer.add_tokens(["<extra>"])
    assert prepare_dataset(cfg, tokenizer=tokenizer).key != key


def test_a_bad_row_in_a_late_chunk_is_named_and_nothing_is_stored(tmp_path: Path, tiny_model: Path) -> None:
    bad = list(MANY_CHATS)
    bad[30] = {"messages": [{"role": "narrator", "content": "Once."}]}
    cfg = make_config(tmp_path, tiny_model, "sft", files={"train.jsonl": bad})
    with pytest.raises(DataError) as raised:
        prepare_dataset(cfg, chunk_rows=4, num_proc=2)
    [problem] = raised.value.problems
    assert problem.key.endswith("train.jsonl:31") and "narrator" in problem.message
    assert data_cache.entries() == [] and data_cache.partials() == []


def test_a_mapped_column_the_data_lacks_is_said_once_not_per_row(tmp_path: Path, tiny_model: Path) -> None:
    cfg = make_config(tmp_path, tiny_model, "sft", column_mapping={"text_column": "mesages"})
    with pytest.raises(DataError) as raised:
        prepare_dataset(cfg, chunk_rows=2)
    [problem] = raised.value.problems
    assert "has no column 'mesages'" in problem.message and "did you mean messages" in (problem.fix or "")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


KILLED = """
import os, signal, sys
from engine import work_progress
from engine.config import load_config
from engine.dataset_prep import prepare_dataset
work_progress.EVERY_S = 0.0
def progress(line):
    if getattr(line, "done", 0) >= 40:  # some chunks are written: die as a kill -9 would
        os.kill(os.getpid(), signal.SIGKILL)
prepare_dataset(load_config(sys.argv[1]), progress=progress, chunk_rows=10, num_proc=1)
"""


def test_a_killed_preparation_leaves_no_entry_that_is_read(tmp_path: Path, tiny_model: Path) -> None:
    rows = MANY_CHATS * 4
    cfg = make_config(tmp_path, tiny_model, "sft", files={"train.jsonl": rows})
    config = tmp_path / "run.yaml"
    config.write_text(to_yaml(cfg))
    out = subprocess.run([sys.executable, "-c", KILLED, str(config)], cwd=tmp_path, env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == -9, out.stderr[-2000:]
    assert data_cache.entries() == []
    assert len(data_cache.partials()) == 1  # the half-written rows: never read, removed by `cache clear`
    data = prepare_dataset(cfg)
    assert not data.from_cache and len(data.dataset("train")) == len(rows)
    assert [e.key for e in data_cache.entries()] == [data.key]


def test_preparing_reports_progress(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(work_progress, "EVERY_S", 0.0)
    lines: list[str] = []
    cfg = make_config(tmp_path, tiny_model, "sft", files={"train.jsonl": MANY_CHATS})
    prepare_dataset(cfg, progress=lines.append, chunk_rows=10)
    n = len(MANY_CHATS)
    assert lines[0].startswith("preparing train: 27% (10/36 rows") and lines[-1].startswith(
        f"preparing train: 100% ({n}/{n} rows")
    lines.clear()
    prepare_dataset(cfg, progress=lines.append)
    assert lines == [f"using the data prepared before: {data_cache.entry_dir(prepare_dataset(cfg).key)}"]


MEASURE = """
import json, resource, sys
from engine.config import load_config
from engine.dataset_prep import prepare_dataset
data = prepare_dataset(load_config(sys.argv[1]), num_proc=1)
assert len(data.dataset("train")) == int(sys.argv[2])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kb(directory: Path, tiny_model: Path, n: int) -> int:
    directory.mkdir()
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: " + "what is the fox doing? " * 4},
                          {"role": "assistant", "content": f"Answer {i}: " + "it jumps over the dog. " * 6}]}
            for i in range(n)]
    cfg = make_config(directory, tiny_model, "sft", files={"train.jsonl": rows}, params={"block_size": 128})
    cfg.data.path = str(directory)
    (directory / "run.yaml").write_text(to_yaml(cfg))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(directory / "run.yaml"), str(n)], cwd=directory,
                         env=_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.split()[-1])


def test_memory_does_not_grow_with_the_rows(tmp_path: Path, tiny_model: Path) -> None:
    """20x the rows, the same peak (the direct path holds every example, its ids, masks and offsets: 20k rows of
    this take about 200 MB more than 1k)."""
    small = _peak_kb(tmp_path / "small", tiny_model, 1_000)
    large = _peak_kb(tmp_path / "large", tiny_model, 20_000)
    assert large <= small * 1.15, (small, large)


def test_the_wizard_preview_of_the_first_rows_uses_the_full_entry_when_there_is_one(tmp_path: Path,
                                                                                    tiny_model: Path) -> None:
    from engine.preview import build_preview

    cfg = make_config(tmp_path, tiny_model, "sft", files={"train.jsonl": MANY_CHATS})
    assert build_preview(cfg, limit=5).splits[0].formatted.rows == 5  # no entry: the first rows, in memory
    prepare_dataset(cfg)
    assert build_preview(cfg, limit=5).splits[0].formatted.rows == len(MANY_CHATS)  # exact, from the cache


def test_every_trainer_is_compared() -> None:
    assert set(TEMPLATES) == set(SETUPS)  # every trainer is compared above


def test_the_bisected_trained_mask_is_its_definition() -> None:
    """engine.encoding.trained_mask finds the trained run by bisection; on random offsets (zero-width tokens,
    overlaps, out of order) and spans it must equal the per-token definition."""
    import random

    from engine.encoding import trained_mask

    def definition(offsets, spans):
        return [i > 0 and e > s and any(s < b and a < e for a, b in spans) for i, (s, e) in enumerate(offsets)]

    rng = random.Random(0)
    for _ in range(5000):
        pos, offsets = 0, []
        for _ in range(rng.randint(0, 30)):
            width = rng.choice([0, 1, 2, 3])
            if rng.random() < 0.1 and offsets:
                pos = max(0, pos - 1)  # overlapping the previous token
            offsets.append((pos, pos + width))
            pos += width + rng.choice([0, 0, 1])
        if rng.random() < 0.2:
            rng.shuffle(offsets)
        spans = [(a, a + rng.randint(0, 10)) for a in sorted(rng.randint(0, 60) for _ in range(rng.randint(0, 3)))]
        assert trained_mask(offsets, spans) == definition(offsets, spans), (offsets, spans)


def test_from_a_thread_the_workers_are_spawned_and_give_the_same_rows(tmp_path: Path, tiny_model: Path) -> None:
    """The wizard prepares data in a worker thread: forking there could copy a held lock, so the processes are
    spawned instead (and get the work pickled). Same rows as in memory."""
    import threading

    cfg = _config(tmp_path, tiny_model, "sft", "chatml")
    got: dict[str, object] = {}

    def work() -> None:
        try:
            got["data"] = prepare_dataset(cfg, num_proc=2, chunk_rows=10)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            got["error"] = e

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(timeout=240)
    assert "error" not in got, got.get("error")
    data = got["data"]
    [direct] = _direct_rows(cfg)
    rows = data.trainer_rows(data.splits[0]).rows
    assert [rows[i] for i in range(len(rows))] == direct.rows


@pytest.mark.parametrize("template", ["chatml", "none"])
def test_the_cached_prompts_are_the_direct_prompts(tmp_path: Path, tiny_model: Path, template: str) -> None:
    """GRPO/RLOO rows: the prompt ids and the prompt as TRL takes it (a text column of JSON), in chunks over two
    processes, with over-long prompts left out alike."""
    from support import tiny_config

    prompts = [{"prompt": "Which is right? " * (1 + i % 7)} for i in range(24)]
    cfg = tiny_config(tmp_path, tiny_model, {"train.jsonl": prompts}, task="llm-grpo", chat_template=template,
                      column_mapping={"prompt_text_column": "prompt"},
                      params={"reward_model": "unused-here", "max_prompt_length": 30, "valid_fraction": 0.2})
    data = prepare_dataset(cfg, num_proc=2, chunk_rows=5)
    for split, rows in zip(data.splits, _direct_rows(cfg)):
        got = data.trainer_rows(split)
        assert [got.rows[i] for i in range(len(got.rows))] == rows.rows and got.stats == rows.stats
        assert 0 < len(rows.rows) < split.formatted.used and got.stats.skipped > 0  # the long ones left out
    first = json.loads(data.trainer_rows(data.splits[0]).rows[0]["prompt"])
    assert isinstance(first, list) == (template != "none")
