"""The wizard's Model and Data steps (and the path picker), driven through the real app at 80x24, and
engine.model_info on its own. Every wait is on a condition (a bounded poll), never a fixed sleep."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, OptionList, Select, Static

from engine import model_info as mi
from engine.config import RunConfig
from engine.tinymodel import TINY_MODEL_ID
from engine.units import human_count
from tui.app import WizardApp, new_config
from tui.steps.data import DataRequest, DataStep, cell_text, count_label, read_preview
from tui.steps.model import ModelStep
from tui.widgets.path_picker import PathPicker

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)


@pytest.fixture(autouse=True)
def empty_hf_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty model cache, whatever this machine holds, so the cache list is the same everywhere."""
    cache = tmp_path_factory.mktemp("hf-cache")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def workdir(in_tmp: Path, tiny_model: Path) -> Path:
    """A current directory holding the tiny model as ./tiny and an AutoTrain-style data/ directory."""
    (in_tmp / "tiny").symlink_to(tiny_model, target_is_directory=True)
    write_jsonl(in_tmp / "data" / "train.jsonl", [{"text": f"row {i} [INST] hi", "label": i} for i in range(3)])
    write_jsonl(in_tmp / "data" / "valid.jsonl", [{"text": "held out", "label": 9}] * 2)
    return in_tmp


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def config(model: str = "", data: str = "data") -> RunConfig:
    cfg = new_config()
    cfg.base_model, cfg.data.path = model, data
    return cfg


async def until(pilot: Pilot, condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll `condition` between message-queue drains; fail after `timeout` seconds, saying what was awaited."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)


def picker_open(app: WizardApp) -> bool:
    return isinstance(app.screen, PathPicker) and bool(app.screen.query("#picker-tree"))


def model_step(app: WizardApp) -> ModelStep:
    return app.query_one("#step-0", ModelStep)


def data_step(app: WizardApp) -> DataStep:
    return app.query_one("#step-2", DataStep)


def text_of(app: WizardApp, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


async def model_read(pilot: Pilot, name: str, timeout: float = 30.0) -> mi.ModelInfo:
    step = model_step(pilot.app)  # type: ignore[arg-type]
    await until(pilot, lambda: step.info is not None and step.info.name == name and step.reading is None,
                f"the model info of {name}", timeout)
    assert step.info is not None
    return step.info


async def to_data_step(pilot: Pilot) -> DataStep:
    """From step 0 with a usable model to step 2 (Task keeps its SFT default), and the data read."""
    app: WizardApp = pilot.app  # type: ignore[assignment]
    await model_read(pilot, app.cfg.base_model)
    await pilot.press("ctrl+n")
    await until(pilot, lambda: app.index == 1, "the Task step")
    await pilot.press("ctrl+n")
    await until(pilot, lambda: app.index == 2, "the Data step")
    step = data_step(app)
    await until(pilot, lambda: step.preview is not None and step.preview.request == step.request
                and set(step.counts) == set(step.preview.tables), "the data and its row counts")
    return step


# ---------------------------------------------------------------- the Model step


async def test_typing_a_local_model_path_shows_what_it_is(workdir: Path) -> None:
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"tiny")
        info = await model_read(pilot, "tiny")
        panel = text_of(app, "#model-info")
        assert "LlamaForCausalLM" in panel and "330K" in panel and "2,048 tokens" in panel
        assert "Chat template yes" in " ".join(panel.split())
        assert info.available and info.parameters == 330_048 and app.model_info is info
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == 1, "the Task step")
        assert app.cfg.base_model == "tiny"


async def test_erasing_the_model_forgets_what_was_read(workdir: Path) -> None:
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"tiny")
        await model_read(pilot, "tiny")
        await pilot.press("ctrl+u")  # delete to the start of the input
        await until(pilot, lambda: app.model_info is None, "the model info to be dropped")
        assert "LlamaForCausalLM" not in text_of(app, "#model-info")
        assert "Pick a model from the list" in text_of(app, "#model-info")


async def test_an_unknown_hub_id_offline_says_it_is_not_cached(workdir: Path) -> None:
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        app.query_one("#model-input", Input).value = "someorg/not-here"
        await pilot.press("enter")
        info = await model_read(pilot, "someorg/not-here")
        assert not info.available
        panel = " ".join(text_of(app, "#model-info").split())
        assert "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in panel
        assert "huggingface-cli download someorg/not-here" in panel
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == 0
        assert "not in the local Hugging Face cache" in text_of(app, "#step-0 .problems")


@pytest.mark.parametrize("name, message", [
    ("./nope", "no such directory"),
    ("notamodel", "the directory has no config.json, so it is not a model"),
])
async def test_an_invalid_model_blocks_next_with_the_engines_message(workdir: Path, name: str, message: str) -> None:
    (workdir / "notamodel").mkdir()
    (workdir / "notamodel" / "weights.bin").write_bytes(b"x")
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*name)
        await pilot.press("ctrl+n")  # at once: the engine's path check needs no model info
        await pilot.pause()
        assert app.index == 0
        assert message in " ".join(text_of(app, "#step-0 .problems").split())
        info = await model_read(pilot, name)
        assert not info.available  # and the panel says so too


async def test_picking_tiny_random_from_the_list(workdir: Path) -> None:
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        options = app.query_one("#model-cache", OptionList)
        await until(pilot, lambda: options.option_count >= 1, "the model list")
        options.focus()
        await pilot.press("home", "enter")
        assert app.query_one("#model-input", Input).value == TINY_MODEL_ID
        info = await model_read(pilot, TINY_MODEL_ID, timeout=60)  # built on first use
        assert info.available and info.source == "built-in" and info.has_chat_template
        await pilot.press("ctrl+n")
        await until(pilot, lambda: app.index == 1, "the Task step")
        assert app.cfg.base_model == TINY_MODEL_ID


async def test_models_in_the_cache_are_listed_and_read_from_it(workdir: Path, empty_hf_cache: Path) -> None:
    snapshot = fake_cached_model(empty_hf_cache, "acme/small-chat", {"architectures": ["Qwen2ForCausalLM"],
                                                                      "model_type": "qwen2", **QWEN_05B})
    (snapshot / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        options = app.query_one("#model-cache", OptionList)
        await until(pilot, lambda: options.option_count == 2, "the cached model in the list")
        assert options.get_option_at_index(1).id == "acme/small-chat"
        options.focus()
        await pilot.press("end", "enter")
        info = await model_read(pilot, "acme/small-chat")
        assert info.source == "cache" and info.architecture == "Qwen2ForCausalLM" and info.has_chat_template
        assert "~494M" in text_of(app, "#model-info")  # no weights cached: estimated from the config


async def test_browsing_to_a_model_directory(workdir: Path) -> None:
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#model-browse")
        await until(pilot, lambda: picker_open(app), "the path picker")
        picker_input = app.screen.query_one("#picker-path", Input)
        picker_input.value = "data/train.jsonl"
        picker_input.focus()
        await pilot.press("enter")  # a file, where a directory is needed: said, not chosen
        assert isinstance(app.screen, PathPicker)
        assert "is a file; pick a directory" in str(app.screen.query_one("#picker-error", Static).render())
        await pilot.press("escape")  # cancels
        await until(pilot, lambda: not isinstance(app.screen, PathPicker), "the picker to close")
        assert app.query_one("#model-input", Input).value == ""
        await pilot.click("#model-browse")
        await until(pilot, lambda: picker_open(app), "the path picker")
        picker_input = app.screen.query_one("#picker-path", Input)
        picker_input.value = "tiny"
        picker_input.focus()
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, PathPicker), "the picker to close")
        assert app.query_one("#model-input", Input).value == "tiny"
        assert (await model_read(pilot, "tiny")).available


async def test_the_picker_tree_hides_other_files_and_enter_chooses(workdir: Path) -> None:
    (workdir / ".hidden").mkdir()
    (workdir / "notes.txt").write_text("not data")
    (workdir / "rows.csv").write_text("text\nhello\n")
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        picked: list[Path | None] = []
        app.push_screen(PathPicker(workdir, dirs_only=False, suffixes=(".csv", ".jsonl")), picked.append)
        await until(pilot, lambda: picker_open(app), "the path picker")
        tree = app.screen.query_one("#picker-tree")
        await until(pilot, lambda: len(tree.root.children) >= 3, "the tree to list the directory")
        names = [str(child.label) for child in tree.root.children]
        assert names == ["data", "tiny", "rows.csv"]
        await pilot.press("down", "down", "down", "enter")  # root, data, tiny, rows.csv
        await until(pilot, lambda: bool(picked), "a choice")
        assert picked == [workdir / "rows.csv"]


async def test_a_model_that_fails_to_read_says_so_in_the_panel(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(name: str, base_dir: Path | None = None) -> mi.ModelInfo:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("tui.steps.model.read_model_info", broken)
    app = WizardApp(config())
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*"tiny", "enter")
        info = await model_read(pilot, "tiny")
        assert not info.available and "disk on fire" in text_of(app, "#model-info")
        assert app.is_running


# ---------------------------------------------------------------- the Data step


async def test_a_data_directory_shows_rows_counts_and_both_splits(workdir: Path) -> None:
    app = WizardApp(config("tiny"))
    async with app.run_test(size=SIZE) as pilot:
        step = await to_data_step(pilot)
        table = app.query_one("#data-table", DataTable)
        assert table.row_count == 3 and [str(c.label) for c in table.columns.values()] == ["text", "label"]
        assert "[INST]" in str(table.get_cell_at((0, 0)))  # shown as written, not read as markup
        assert "splits train, valid" in text_of(app, "#data-found")
        assert "train: 3 rows" in text_of(app, "#data-counts")
        assert app.table is step.preview.table and app.splits == ["train", "valid"]
        valid = app.query_one("#valid-split", Select)
        assert [v for _, v in valid._options] == ["", "train", "valid"]
        valid.focus()
        await pilot.press("enter", "end", "enter")  # open the list, the last choice, pick it
        await until(pilot, lambda: "valid: 2 rows" in text_of(app, "#data-counts"), "the valid split counted")
        step.store(app.cfg)
        assert (app.cfg.data.path, app.cfg.data.train_split, app.cfg.data.valid_split) == ("data", "train", "valid")
        assert step.problems(app.cfg) == []


async def test_back_and_next_keep_what_was_entered(workdir: Path) -> None:
    app = WizardApp(config("tiny"))
    async with app.run_test(size=SIZE) as pilot:
        await to_data_step(pilot)
        app.query_one("#valid-split", Select).value = "valid"
        await pilot.press("escape")  # Back: stores
        await until(pilot, lambda: app.index == 1, "the Task step")
        assert app.cfg.data.valid_split == "valid"
        await pilot.press("escape")
        await until(pilot, lambda: app.index == 0, "the Model step")
        assert app.query_one("#model-input", Input).value == "tiny"
        await pilot.press("ctrl+n", "ctrl+n")
        await until(pilot, lambda: app.index == 2, "the Data step again")
        assert app.query_one("#data-path", Input).value == "data"
        assert app.query_one("#valid-split", Select).value == "valid"
        assert app.query_one("#data-table", DataTable).row_count == 3


async def test_a_bad_jsonl_line_shows_the_engines_error_in_the_step(workdir: Path) -> None:
    (workdir / "data" / "train.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    app = WizardApp(config("tiny"))
    async with app.run_test(size=SIZE) as pilot:
        step = await to_data_step(pilot)
        problems = " ".join(text_of(app, "#step-2 .problems").split())
        assert "data/train.jsonl:2: not valid JSON" in problems
        assert step.preview is not None and step.preview.table is None and app.table is None
        await pilot.press("ctrl+n")
        await pilot.pause()
        assert app.index == 2 and "not valid JSON" in text_of(app, "#step-2 .problems")
        (workdir / "data" / "train.jsonl").write_text('{"text": "fixed"}\n')
        await pilot.press("enter")  # in the path input: read again
        await until(pilot, lambda: step.preview is not None and step.preview.table is not None, "the fixed data")
        assert not app.query_one("#step-2 .problems", Static).display


async def test_typing_a_file_path_reads_that_file(workdir: Path) -> None:
    extra = [f"c{n}" for n in range(3, 11)]
    (workdir / "rows.csv").write_text(",".join(["prompt", "completion", *extra]) + "\n" + "".join(
        ",".join([f"q{i}", "a" * 60, *extra]) + "\n" for i in range(250)))
    app = WizardApp(config("tiny"))
    async with app.run_test(size=SIZE) as pilot:
        step = await to_data_step(pilot)
        field = app.query_one("#data-path", Input)
        field.focus()
        field.value = ""
        await pilot.press(*"rows.csv")  # read a moment after typing stops
        await until(pilot, lambda: step.preview is not None and step.preview.request.path == "rows.csv"
                    and "train" in step.counts, "the csv file")
        assert "one csv file" in text_of(app, "#data-found")
        counts = text_of(app, "#data-counts")
        assert "train: 250 rows" in counts  # counted past the 200 rows read
        assert "10 columns, 2 more not shown" in counts
        table = app.query_one("#data-table", DataTable)
        assert table.row_count == 200 and len(table.columns) == 8
        assert str(table.get_cell_at((0, 1))) == "a" * 39 + "…"
        assert [label for label, _ in app.query_one("#train-split", Select)._options] == ["rows.csv (this file)"]


async def test_a_datasets_id_is_read_on_enter_only_and_offline_says_so(workdir: Path) -> None:
    app = WizardApp(config("tiny"))
    async with app.run_test(size=SIZE) as pilot:
        step = await to_data_step(pilot)
        field = app.query_one("#data-path", Input)
        field.value = "someorg/somedata"  # typing stops: not read, it could start a download
        await until(pilot, lambda: "Enter reads it" in text_of(app, "#data-found"), "the datasets-id hint")
        assert step.request is None and app.query_one("#data-table", DataTable).row_count == 0
        field.focus()
        await pilot.press("enter")
        await until(pilot, lambda: step.preview is not None and step.preview.request == step.request,
                    "the hub dataset read")
        problems = " ".join(text_of(app, "#step-2 .problems").split())
        assert "hub dataset 'someorg/somedata' could not be found locally and offline mode is on" in problems


# ---------------------------------------------------------------- reading and counting (no UI)


def test_row_counts_are_exact_when_cheap_and_200_plus_otherwise(in_tmp: Path) -> None:
    write_jsonl(in_tmp / "d" / "train.jsonl", [{"text": str(i)} for i in range(230)])
    (in_tmp / "d" / "valid.json").write_text(json.dumps([{"text": str(i)} for i in range(230)]))
    preview = read_preview(DataRequest("d", "train", "valid"), None)
    assert preview.problems == [] and preview.splits == ["train", "valid"]
    assert count_label(preview.tables["train"]) == "230"
    assert count_label(preview.tables["valid"]) == "200+"  # a JSON document: counting means parsing it all


def test_cells_are_one_short_line() -> None:
    assert str(cell_text([{"role": "user", "content": "hi\nthere"}], width=60)) == \
        '[{"role": "user", "content": "hi\\nthere"}]'  # JSON, as in the file
    assert str(cell_text("x" * 50)) == "x" * 39 + "…"
    assert str(cell_text("a\n  b")) == "a b"


def test_a_file_offers_itself_and_its_neighbours_as_splits(in_tmp: Path) -> None:
    write_jsonl(in_tmp / "d" / "mine.jsonl", [{"text": "x"}])
    write_jsonl(in_tmp / "d" / "held.jsonl", [{"text": "y"}])
    preview = read_preview(DataRequest("d/mine.jsonl", "train", "held"), None)
    assert preview.train_choices == [("mine.jsonl (this file)", "train"), ("held", "held")]
    assert preview.valid_choices == [("(none)", ""), ("held", "held")]
    assert preview.problems == [] and set(preview.tables) == {"train", "held"}


def test_missing_splits_are_offered_and_marked(in_tmp: Path) -> None:
    write_jsonl(in_tmp / "d" / "mine.jsonl", [{"text": "x"}])
    preview = read_preview(DataRequest("d", "train", None), None)
    assert preview.train_choices == [("mine", "mine"), ("train (not found)", "train")]
    assert "no data file for split 'train'" in preview.problems[0].message


# ---------------------------------------------------------------- engine.model_info

QWEN_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "intermediate_size": 4864, "vocab_size": 151936, "max_position_embeddings": 32768,
            "tie_word_embeddings": True, "torch_dtype": "bfloat16"}


def fake_cached_model(cache: Path, name: str, config: dict | None) -> Path:
    repo = cache / ("models--" + name.replace("/", "--"))
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    if config is not None:
        (snapshot / "config.json").write_text(json.dumps(config))
    return snapshot


def test_the_safetensors_header_count_equals_the_models_real_count(tiny_model: Path) -> None:
    from transformers import AutoModelForCausalLM

    real = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model).parameters())
    info = mi.read_model_info(str(tiny_model))
    assert info.parameters == real and info.parameters_exact
    assert mi.estimate_parameters(json.loads((tiny_model / "config.json").read_text())) == real
    assert (info.architecture, info.model_type, info.context_length, info.dtype) == (
        "LlamaForCausalLM", "llama", 2048, "float32")
    assert (info.num_layers, info.hidden_size, info.num_heads, info.num_kv_heads) == (2, 64, 4, 2)
    assert info.has_chat_template is True and info.source == "local"


def test_sharded_weights_are_counted_from_every_shards_header(tmp_path: Path) -> None:
    def shard(name: str, shapes: dict[str, list[int]]) -> None:
        header = json.dumps({"__metadata__": {"format": "pt"}, **{k: {"dtype": "F32", "shape": s,
                             "data_offsets": [0, 0]} for k, s in shapes.items()}}).encode()
        (tmp_path / name).write_bytes(struct.pack("<Q", len(header)) + header)  # no weights: never read

    shard("model-00001-of-00002.safetensors", {"a": [10, 20], "b": [5]})
    shard("model-00002-of-00002.safetensors", {"c": [3, 3, 3]})
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                  "c": "model-00002-of-00002.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert mi.count_safetensors_parameters(tmp_path) == 200 + 5 + 27


def test_the_estimate_is_close_for_a_real_architecture() -> None:
    estimate = mi.estimate_parameters({"model_type": "qwen2", **QWEN_05B})
    assert estimate is not None and abs(estimate - 494_032_768) / 494_032_768 < 0.001  # Qwen2.5-0.5B
    assert human_count(494_032_768) == "494M" and human_count(1_543_714_304) == "1.5B"


def test_the_cache_scan_lists_models_with_a_config(empty_hf_cache: Path) -> None:
    fake_cached_model(empty_hf_cache, "org/b-model", {"architectures": ["GPT2LMHeadModel"], "n_positions": 1024})
    fake_cached_model(empty_hf_cache, "Org/A-model", {"model_type": "llama"})
    fake_cached_model(empty_hf_cache, "org/incomplete", None)
    (empty_hf_cache / "datasets--org--data" / "snapshots" / "x").mkdir(parents=True)
    assert mi.cached_models() == ["Org/A-model", "org/b-model"]
    info = mi.read_model_info("org/b-model")
    assert info.available and info.source == "cache" and info.context_length == 1024
    assert info.path == str(empty_hf_cache / "models--org--b-model" / "snapshots" / "abc123")
    assert info.has_chat_template is None  # no tokenizer files cached: unknown, not "no"


def test_the_cache_dir_follows_huggingface_hubs_rules(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert mi.hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert mi.hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert mi.hub_cache_dir() == tmp_path / "cache"


def test_models_that_cannot_be_used_say_why(in_tmp: Path) -> None:
    offline = mi.read_model_info("someorg/missing")
    assert not offline.available and "HF_HUB_OFFLINE=1" in (offline.reason or "")
    assert "huggingface-cli download someorg/missing" in (offline.fix or "")
    (in_tmp / "adapter").mkdir()
    (in_tmp / "adapter" / "adapter_config.json").write_text("{}")
    assert "LoRA adapter" in (mi.read_model_info("adapter").reason or "")
    assert mi.read_model_info("./gone").reason == "no such directory"
    assert not mi.read_model_info("").available


def test_online_a_missing_config_is_fetched_and_hub_errors_are_explained(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    monkeypatch.setattr(mi, "_hub_parameter_count", lambda name: None)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2", **QWEN_05B}))
    monkeypatch.setattr(mi, "fetch_config", lambda name: tmp_path)
    info = mi.read_model_info("Qwen/Qwen2.5-0.5B")
    assert info.available and info.source == "hub" and not info.parameters_exact

    class RepositoryNotFoundError(Exception):
        pass

    def missing(name: str) -> Path:
        raise RepositoryNotFoundError("404")

    monkeypatch.setattr(mi, "fetch_config", missing)
    assert "no model 'org/typo' on the Hugging Face Hub" in (mi.read_model_info("org/typo").reason or "")


def test_importing_model_info_is_light() -> None:
    code = ("import sys, engine.model_info\n"
            "print(sorted(m for m in ('torch', 'transformers', 'huggingface_hub', 'textual') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- snapshots (plain functions: see STACK-NOTES)


def _no_blink(pilot: Pilot) -> None:
    for field in pilot.app.query(Input):
        field.cursor_blink = False


def test_snapshot_model_step(workdir: Path, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        _no_blink(pilot)
        await model_read(pilot, "tiny")
        await pilot.pause()

    assert snap_compare(WizardApp(config("tiny")), terminal_size=SIZE, run_before=run_before)


def test_snapshot_data_step(workdir: Path, snap_compare) -> None:
    async def run_before(pilot: Pilot) -> None:
        _no_blink(pilot)
        await to_data_step(pilot)
        await pilot.pause()

    assert snap_compare(WizardApp(config("tiny")), terminal_size=SIZE, run_before=run_before)


def test_cells_nested_too_deep_or_holding_a_surrogate_still_show() -> None:
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    assert str(cell_text(deep)).startswith("[[[")
    assert "\ud800" not in str(cell_text("bad \ud800 char"))
