"""The run directory's protocol has one source: file names come from engine.run_files, requests go through
engine.control, exit codes are engine.exit_codes.ExitCode, and each event has one typed writer (run_finished
is written in one place). Checked statically over every module of engine/ and tui/."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from engine import control, run_files
from engine.events import EventWriter, read_events, validate_event
from engine.exit_codes import ExitCode
from engine.run_files import RunDir

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(p for top in ("engine", "tui") for p in (ROOT / top).rglob("*.py"))
# Names only run_files may spell out; directory names too generic to look for anywhere ("merged" is also a field
# of run_finished) are looked for where a path is built from them (`run_dir / "merged"`).
FILE_NAMES = {run_files.CONFIG_FILE, run_files.PARAMS_FILE, run_files.EVENTS_FILE, run_files.LOG_FILE,
              run_files.PID_FILE, run_files.MANIFEST_FILE, run_files.RESERVE_FILE, run_files.MODEL_CARD,
              run_files.CHECKPOINT_MARKER, run_files.TRAINING_ARGS, run_files.CHECKPOINT_GLOB}
DIR_NAMES = {run_files.CONTROL_DIR, run_files.MERGED_DIR, run_files.TENSORBOARD_DIR, *run_files.REQUESTS}


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _docstrings(tree: ast.Module) -> set[int]:
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}


def _functions(tree: ast.Module) -> dict[int, str]:
    """Each node's innermost enclosing function name."""
    owner: dict[int, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            owner[id(child)] = inner
            visit(child, inner)

    visit(tree, "<module>")
    return owner


def test_run_directory_names_are_spelled_only_in_run_files() -> None:
    found = []
    for path in SOURCES:
        if _rel(path) == "engine/run_files.py":
            continue
        tree = _tree(path)
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                if node.value in FILE_NAMES or node.value.startswith(run_files.CHECKPOINT_PREFIX):
                    found.append(f"{_rel(path)}:{node.lineno}: {node.value!r}")
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant)
                    and node.right.value in DIR_NAMES | FILE_NAMES):
                found.append(f"{_rel(path)}:{node.lineno}: / {node.right.value!r}")
    assert not found, "use engine.run_files (RunDir or its names):\n" + "\n".join(found)


def test_run_finished_is_written_in_one_place() -> None:
    """EventWriter.run_finished builds it; the training process ends through Run.finish, a process killed by
    SIGTERM through engine.run's handler, and a hung run of several processes through the watchdog's failure
    (which then kills them). Nothing in engine/ or tui/ writes an event by its type name."""
    callers, raw = set(), []
    for path in SOURCES:
        tree = _tree(path)
        owner = _functions(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr == "run_finished":
                callers.add((_rel(path), owner[id(node)]))
            if node.func.attr == "emit" and _rel(path) != "engine/events.py":
                raw.append(f"{_rel(path)}:{node.lineno}")
    assert callers == {("engine/train.py", "finish"), ("engine/run.py", "killed"),
                       ("engine/trainers/progress.py", "fail")}
    assert not raw, f"write events with EventWriter's typed helpers: {raw}"


def test_exit_codes_have_one_definition() -> None:
    found = []
    for path in SOURCES:
        if _rel(path) == "engine/exit_codes.py":
            continue
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.Constant) and type(node.value) is int and node.value == ExitCode.STOPPED:
                found.append(f"{_rel(path)}:{node.lineno}: 130")
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id.startswith("EXIT_"):
                found.append(f"{_rel(path)}:{node.lineno}: {node.id}")
    assert not found, "use engine.exit_codes.ExitCode:\n" + "\n".join(found)


def _imports(path: Path) -> set[str]:
    """Every engine module a module imports, at module level or inside functions."""
    out = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return {name for name in out if name.split(".")[0] == "engine"}


def test_the_training_process_never_imports_the_launcher() -> None:
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
               for p in SOURCES if p.parts[len(ROOT.parts)] == "engine"}
    seen, todo = set(), ["engine.run"]
    while todo:
        name = todo.pop()
        if name in seen or name not in modules:
            continue
        seen.add(name)
        todo += sorted(_imports(modules[name]))
    assert "engine.train" in seen and "engine.trainers.progress" in seen and "engine.control" in seen
    assert "engine.launch" not in seen


def test_run_dir_paths(tmp_path: Path) -> None:
    files = RunDir(tmp_path)
    assert files == RunDir(str(tmp_path)) and files.path == tmp_path
    assert (files.config, files.events, files.log, files.pid) == (
        tmp_path / "config.yaml", tmp_path / "events.jsonl", tmp_path / "train.log", tmp_path / "run.pid")
    assert files.request("stop") == tmp_path / "control" / "stop"
    assert files.checkpoint(12) == tmp_path / "checkpoint-12" and run_files.checkpoint_step("checkpoint-12") == 12
    assert run_files.checkpoint_step("checkpoint-x") is None and run_files.checkpoint_step("checkpoint-12b") is None
    assert not files.holds_result()
    files.merged.mkdir()
    assert files.holds_result()


def test_requests(tmp_path: Path) -> None:
    control.request(tmp_path, "checkpoint")
    assert control.pending(tmp_path) == {"checkpoint"}
    assert not list(RunDir(tmp_path).control.glob(".*"))  # written atomically: no temporary left
    control.clear(tmp_path, "checkpoint")
    assert control.pending(tmp_path) == set()
    with pytest.raises(ValueError, match="unknown run request"):
        control.clear(tmp_path, "pause")


def test_exit_code_helpers() -> None:
    assert ExitCode.of(130) is ExitCode.STOPPED and ExitCode.of(0) is ExitCode.OK
    assert ExitCode.of(3) is None and ExitCode.of(-9) is None and ExitCode.of(None) is None
    assert ExitCode.of(True) is None
    assert [c.meaning for c in ExitCode] == ["completed", "failed", "failed on a config or data problem", "stopped"]


def test_typed_helpers_write_what_emit_wrote(tmp_path: Path) -> None:
    """Same fields in the same order as the recorded fixtures; an event that breaks the schema is refused."""
    with EventWriter(tmp_path / "typed.jsonl") as w:
        w.status(phase="training", message="go", step=0)
        w.step(step=1, total_steps=2, epoch=0.5, loss=float("nan"), lr=None, grad_norm=None, tokens=3,
               trained_tokens=2, tokens_per_s=None, trained_tokens_per_s=None, elapsed=0.1, memory={})
        w.checkpoint(step=1, path=str(tmp_path / "checkpoint-1"), kept=False)
        w.run_finished(status="killed", exit_code=ExitCode.STOPPED, step=1)
        with pytest.raises(ValueError, match="status should be one of"):
            w.run_finished(status="done", exit_code=ExitCode.OK, step=1)
    lines = (tmp_path / "typed.jsonl").read_text().splitlines()
    assert [list(json.loads(line))[3:] for line in lines] == [
        ["phase", "message", "step"],
        ["step", "total_steps", "epoch", "loss", "lr", "grad_norm", "tokens", "trained_tokens", "tokens_per_s",
         "trained_tokens_per_s", "elapsed", "memory"],
        ["step", "path", "kept"],
        ["status", "exit_code", "step", "metrics", "output", "merged"]]
    assert '"exit_code": 130, "step": 1, "metrics": {}, "output": null, "merged": null}' in lines[-1]
    assert all(validate_event(e) == [] for e in read_events(tmp_path / "typed.jsonl"))
