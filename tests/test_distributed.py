"""Runs on several processes (engine.distributed): the topology chosen for a machine, the `accelerate launch`
command for every backend and for two machines, the refusals before launch, and the pieces that make the
processes one run (the rank prefix in train.log, the other ranks' failure, the watchdog). The real launches
(two CPU processes over gloo, through the CLI) are in tests/test_distributed_runs.py.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from engine.config import distributed_problems
from engine.distributed import (
    ACCELERATE_MODULE,
    launch_command,
    launch_env,
    launch_info,
    node_commands,
    refusals,
    shards_weights,
    topology,
)
from engine.events import other_rank_failed
from engine.params import Params
from engine.run import RankPrefixed
from engine.trainers.watchdog import Watchdog, hang_message, last_lines_by_rank
from support import tiny_config

RUN = Path("/runs/r")


def params(**kw: object) -> Params:
    p = Params()
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def flags(cmd: list[str]) -> dict[str, str | bool]:
    """The accelerate flags of a command: {"--num_processes": "2", "--multi_gpu": True, ...}."""
    out: dict[str, str | bool] = {}
    args = cmd[cmd.index(ACCELERATE_MODULE) + 1:cmd.index("engine.run") - 1]
    i = 0
    while i < len(args):
        if i + 1 < len(args) and not args[i + 1].startswith("--"):
            out[args[i]] = args[i + 1]
            i += 2
        else:
            out[args[i]] = True
            i += 1
    return out


# ------------------------------------------------------------------ the topology


@pytest.mark.parametrize(("gpus", "processes", "backend"), [(0, 1, None), (1, 1, None), (4, 4, "ddp")])
def test_the_default_is_every_visible_gpu_and_ddp_for_several(gpus: int, processes: int, backend: str) -> None:
    topo = topology(params(), gpus=gpus, environ={})
    assert (topo.processes, topo.backend, topo.launched) == (processes, backend, backend is not None)


def test_num_processes_without_a_gpu_is_cpu_ddp_and_one_ddp_process_is_one_process() -> None:
    topo = topology(params(num_processes=2), gpus=0, environ={})
    assert (topo.processes, topo.backend, topo.world_size) == (2, "ddp", 2)
    assert not topology(params(num_processes=1, distributed_backend="ddp"), gpus=0, environ={}).launched
    # deepspeed on one GPU (ZeRO offload) still goes through its launcher
    assert topology(params(distributed_backend="deepspeed"), gpus=1, environ={}).launched


def test_one_process_is_plain_python() -> None:
    topo = topology(params(), gpus=0, environ={})
    assert launch_command(params(), topo, RUN, python="py") == ["py", "-m", "engine.run", str(RUN)]
    assert launch_command(params(), topo, RUN, python="py", resume=True)[-1] == "--resume"


def test_ddp_command_on_one_machine_picks_a_free_port() -> None:
    p = params(num_processes=2)
    cmd = launch_command(p, topology(p, gpus=0, environ={}), RUN, python="py", resume=True)
    assert cmd[:3] == ["py", "-m", ACCELERATE_MODULE] and cmd[-4:] == ["-m", "engine.run", str(RUN), "--resume"]
    f = flags(cmd)
    assert f["--num_processes"] == "2" and f["--num_machines"] == "1" and f["--machine_rank"] == "0"
    assert f["--multi_gpu"] is True and "--cpu" not in f  # accelerate's --cpu starts one process, silently
    assert 1024 <= int(str(f["--main_process_port"])) <= 65535 and "--main_process_ip" not in f
    assert f["--mixed_precision"] == "no" and f["--dynamo_backend"] == "no"  # no "defaults used" warning


def test_fsdp_command_is_fsdp2_with_decoder_layers_and_sharded_checkpoints() -> None:
    p = params(distributed_backend="fsdp", mixed_precision="bf16")
    f = flags(launch_command(p, topology(p, gpus=8, environ={}), RUN))
    assert f["--use_fsdp"] is True and f["--fsdp_version"] == "2" and "--multi_gpu" not in f
    assert f["--fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    assert f["--fsdp_state_dict_type"] == "SHARDED_STATE_DICT" and f["--num_processes"] == "8"
    assert f["--mixed_precision"] == "bf16"


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_command_for_each_stage(stage: int) -> None:
    p = params(distributed_backend="deepspeed", deepspeed_stage=stage, gradient_accumulation=8, max_grad_norm=0.5)
    f = flags(launch_command(p, topology(p, gpus=2, environ={}), RUN))
    assert f["--use_deepspeed"] is True and f["--zero_stage"] == str(stage)
    assert f["--gradient_accumulation_steps"] == "8" and f["--gradient_clipping"] == "0.5"
    assert ("--zero3_save_16bit_model" in f) == (stage == 3)  # ZeRO-3 saves one model from_pretrained loads


def test_a_users_deepspeed_json_and_accelerate_config_are_passed_as_they_are() -> None:
    p = params(distributed_backend="deepspeed", deepspeed_config="ds.json")
    f = flags(launch_command(p, topology(p, gpus=2, environ={}), RUN))
    assert f["--deepspeed_config_file"] == "ds.json" and "--zero_stage" not in f
    p = params(accelerate_config="acc.yaml")
    cmd = launch_command(p, topology(p, gpus=2, environ={}), RUN)
    assert flags(cmd) == {"--config_file": "acc.yaml"}  # the file decides the backend and the count


def test_two_machines_each_get_their_command() -> None:
    p = params(num_processes=4, num_machines=2, main_process_ip="10.0.0.1", main_process_port=29600)
    topo = topology(p, gpus=4, environ={})
    assert topo.world_size == 8 and "on each of 2 machines (world size 8)" in topo.describe()
    commands = node_commands(p, topo, RUN)
    assert [r for r, _ in commands] == [0, 1]
    for rank, text in commands:
        f = flags(text.split())
        assert f["--num_processes"] == "8" and f["--num_machines"] == "2" and f["--machine_rank"] == str(rank)
        assert f["--main_process_ip"] == "10.0.0.1" and f["--main_process_port"] == "29600"


def test_torchrun_and_slurm_variables_are_read_and_the_config_wins() -> None:
    env = {"SLURM_NNODES": "2", "SLURM_NODEID": "1", "MASTER_ADDR": "node-a", "MASTER_PORT": "29555"}
    topo = topology(params(num_processes=8), gpus=8, environ=env)
    assert (topo.machines, topo.machine_rank, topo.main_process_ip, topo.main_process_port) == (2, 1, "node-a", 29555)
    assert set(topo.from_env) == {"SLURM_NNODES", "SLURM_NODEID", "MASTER_ADDR", "MASTER_PORT"}
    topo = topology(params(num_processes=8, machine_rank=0), gpus=8, environ=env)
    assert topo.machine_rank == 0
    with pytest.raises(ValueError, match="NODE_RANK='x' is not a whole number"):
        topology(params(), gpus=0, environ={"NODE_RANK": "x"})


def test_the_launch_travels_to_run_started_as_json() -> None:
    p = params(num_processes=2)
    topo = topology(p, gpus=0, environ={})
    info = launch_info(launch_env(topo, ["py", "-m", "x"]))
    assert info is not None and info["world_size"] == 2 and info["backend"] == "ddp" and info["command"] == "py -m x"
    assert launch_info({}) is None


# ------------------------------------------------------------------ refusals


def test_refusals_before_launch() -> None:
    def keys(p: Params, *, gpus: int = 0, on_cuda: bool = False, quantization: str | None = None,
             deepspeed: bool = True) -> list[str]:
        topo = topology(p, gpus=gpus, environ={})
        return [k for k, _, _ in refusals(p, topo, gpus=gpus, on_cuda=on_cuda, quantization=quantization,
                                          deepspeed=deepspeed)]

    assert keys(params(distributed_backend="fsdp", num_processes=2)) == ["params.distributed_backend"]
    assert keys(params(distributed_backend="deepspeed"), gpus=2, on_cuda=True, deepspeed=False) == [
        "params.distributed_backend"]
    assert keys(params(distributed_backend="fsdp"), gpus=2, on_cuda=True, quantization="int4") == [
        "params.quantization"]
    assert keys(params(distributed_backend="deepspeed", deepspeed_stage=3), gpus=2, on_cuda=True,
                quantization="int8") == ["params.quantization"]
    assert keys(params(distributed_backend="deepspeed"), gpus=2, on_cuda=True, quantization="int4") == []  # ZeRO-2
    assert keys(params(num_processes=4), gpus=2, on_cuda=True) == ["params.num_processes"]
    assert keys(params(num_processes=2, num_machines=2), gpus=2, on_cuda=True) == ["params.main_process_ip"]
    assert keys(params(num_machines=2, machine_rank=2, main_process_ip="h"), gpus=2, on_cuda=True) == [
        "params.machine_rank"]
    assert keys(params(deepspeed_config="ds.json", num_processes=2)) == ["params.deepspeed_config"]
    assert keys(params(num_processes=64)) == []  # more CPU processes than cores: slower, not wrong (the run warns)


def test_a_sharding_backend_leaves_an_unset_quantization_off() -> None:
    assert shards_weights(params(distributed_backend="fsdp")) == "fsdp"
    assert shards_weights(params(distributed_backend="deepspeed", deepspeed_stage=3)) == "deepspeed_stage 3"
    assert shards_weights(params(distributed_backend="deepspeed")) is None


def test_the_config_check_names_the_key_and_the_fix(in_tmp: Path, tiny_model: Path) -> None:
    files = {"train.jsonl": [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]}
    cfg = tiny_config(in_tmp, tiny_model, files, params={"distributed_backend": "fsdp", "num_processes": 2,
                                                         "accelerate_config": "missing.yaml"},
                      column_mapping={"text_column": "messages"})
    problems = {p.key: p for p in distributed_problems(cfg, environ={})}
    assert "needs CUDA GPUs" in problems["params.distributed_backend"].message
    assert "use distributed_backend: ddp" in problems["params.distributed_backend"].fix
    assert "not a file here" in problems["params.accelerate_config"].message
    assert distributed_problems(cfg, environ={"LOCAL_RANK": "0"}) == []  # inside the launched processes


def test_a_port_in_use_is_refused_before_launch(in_tmp: Path, tiny_model: Path) -> None:
    files = {"train.jsonl": [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}]}
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tiny_config(in_tmp, tiny_model, files, params={"num_processes": 2, "main_process_port": port},
                          column_mapping={"text_column": "messages"})
        problems = distributed_problems(cfg, environ={})
    assert [p.key for p in problems] == ["params.main_process_port"] and "in use" in problems[0].message
    cfg.params.main_process_port = None  # one machine, no port given: a free one at launch
    assert distributed_problems(cfg, environ={}) == []


# ------------------------------------------------------------------ one run of several processes


def test_other_ranks_lines_are_prefixed_in_train_log() -> None:
    out = io.StringIO()
    stream = RankPrefixed(out, 3)
    stream.write("loading\nhalf a ")
    stream.write("line\n\rbar 1\rbar 2\n")
    assert out.getvalue() == "[rank 3] loading\n[rank 3] half a line\n[rank 3] \rbar 1\rbar 2\n"


def test_an_error_of_another_rank_counts_only_since_the_last_start() -> None:
    error = {"type": "error", "kind": "internal", "message": "[rank 1] boom", "log": "x", "rank": 1}
    assert other_rank_failed([{"type": "run_started"}, error])
    assert not other_rank_failed([{"type": "run_started"}, {**error, "rank": None}])
    assert not other_rank_failed([error, {"type": "run_finished"}, {"type": "run_started"}])  # a resume


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_the_watchdog_warns_then_fails_relative_to_the_usual_step_time() -> None:
    clock = Clock()
    dog = Watchdog(now=clock, warn_factor=10, warn_min_s=5, fail_factor=50, fail_min_s=30, first_step_s=100)
    assert dog.limits() == (50, 100)  # no step timed yet: the first step may take long
    for _ in range(3):
        dog.step_begin()
        clock.t += 2.0
        dog.step_end()
    assert dog.usual_step_s() == 2.0 and dog.limits() == (20, 100)
    clock.t += 19
    assert dog.check() is None
    clock.t += 2
    assert dog.check() == ("warn", 21) and dog.check() is None  # warned once
    dog.paused = True  # a checkpoint being saved
    clock.t += 500
    assert dog.check() is None
    dog.paused = False
    assert dog.check() == ("fail", 521)
    dog.beat()
    assert dog.check() is None


def test_the_hang_message_shows_each_ranks_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    log.write_text("step 1\n[rank 1] loading\nstep 2\n[rank 1] waiting\rwaiting more\n[rank 2] x\n")
    lines = last_lines_by_rank(log, 4, n=1)
    assert lines == {0: ["step 2"], 1: ["waiting more"], 2: ["x"], 3: []}
    text = hang_message(130, 2.5, lines)
    assert "no training progress for 130 s (a step usually takes 2.5 s)" in text
    assert "rank 1 last wrote: waiting more" in text and "rank 3 last wrote: (nothing in train.log)" in text


def test_the_dry_run_prints_each_machines_command(tmp_path: Path) -> None:
    from test_train_cli import ROOT, cli

    keys = ["--set", "params.num_processes=1", "--set", "params.num_machines=2", "--set",
            "params.main_process_ip=10.0.0.1"]
    out = cli("--config", str(ROOT / "configs/sft-chat.yaml"), "--dry-run", *keys, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout.replace("\n", " ")
    assert "1 process on each of 2 machines (world size 2)" in text
    assert "machine 0: python -m accelerate.commands.launch" in text and "--machine_rank 1" in text
    assert "2 optimizer steps" not in text and "x 2 processes" in text  # the steps count both machines' batches


def test_machine_one_is_refused_with_its_command_and_a_bad_variable_with_its_name(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from test_train_cli import ROOT

    def dry_run(env: dict[str, str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "tui.cli", "--config", str(ROOT / "configs/sft-chat.yaml"),
                               "--dry-run", "--set", "params.num_machines=2", "--set", "params.main_process_ip=h"],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              env={**os.environ, "PYTHONPATH": str(ROOT), **env})

    out = dry_run({"NODE_RANK": "1"})
    assert out.returncode == 2 and "is 1 (from NODE_RANK): only machine 0 starts a run" in out.stderr
    assert "on this machine run: python -m accelerate.commands.launch" in out.stderr
    assert "--machine_rank 1" in out.stderr
    out = dry_run({"NODE_RANK": "one"})
    assert out.returncode == 2 and "params.machine_rank" in out.stderr
    assert "NODE_RANK='one' is not a whole number" in out.stderr
    assert "Traceback" not in out.stderr
