"""A run on several processes: which backend, how many processes on how many machines, and the `accelerate
launch` command that starts them (llmtune has no launcher of its own).

`topology()` decides from the config, the environment (torchrun's and SLURM's variables) and the GPUs this
machine shows; `launch_command()` turns that into the command each machine runs. One process (the common
case) is plain `python -m engine.run RUN_DIR`. Standard library only: the config check and the dry run ask it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BACKENDS = ("ddp", "fsdp", "deepspeed")
DEEPSPEED_STAGES = (2, 3)
DEFAULT_PORT = 29500  # torchrun's and accelerate's
LAUNCH_ENV = "LLMTUNE_LAUNCH"  # the launch as JSON, for the run_started event (set by the process that launched)
RUN_MODULE = "engine.run"
ACCELERATE_MODULE = "accelerate.commands.launch"
# torchrun's and SLURM's names for what params.num_machines / machine_rank / main_process_ip / _port say
ENV_NAMES = {
    "num_machines": ("NNODES", "SLURM_NNODES"),
    "machine_rank": ("NODE_RANK", "MACHINE_RANK", "SLURM_NODEID"),
    "main_process_ip": ("MASTER_ADDR",),
    "main_process_port": ("MASTER_PORT",),
}


class BadVariable(ValueError):
    """A torchrun / SLURM variable that is not a number; `key` is the params key it stands for."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Topology:
    backend: str | None  # None: one process, no launcher
    processes: int  # on this machine
    machines: int
    machine_rank: int
    main_process_ip: str | None
    main_process_port: int | None  # None: a free port, picked when launching (one machine)
    why: str  # how the process count was chosen, for the dry run and run_started
    from_env: tuple[str, ...] = ()  # the environment variables that set any of it

    @property
    def world_size(self) -> int:
        return self.processes * self.machines

    @property
    def launched(self) -> bool:
        """Through `accelerate launch`: several processes, or a backend that wants its launcher even on one."""
        return self.backend is not None

    def describe(self) -> str:
        if not self.launched:
            return f"1 process ({self.why})"
        nodes = f" on each of {self.machines} machines (world size {self.world_size})" if self.machines > 1 else ""
        return f"{self.processes} process{'es' if self.processes > 1 else ''}{nodes}, {self.backend} ({self.why})"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "world_size": self.world_size}


def _from_env(name: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    for var in ENV_NAMES[name]:
        value = environ.get(var, "").strip()
        if value:
            return var, value
    return None


def topology(params: Any, *, gpus: int, environ: Mapping[str, str] | None = None) -> Topology:
    """The processes this run starts. `gpus`: CUDA devices visible here (torch's count, which honours
    CUDA_VISIBLE_DEVICES; 0 on a CPU machine). A value the config sets wins over the environment. Raises
    ValueError for an environment variable that is not a number (the config's own values are checked)."""
    environ = os.environ if environ is None else environ
    used: list[str] = []

    def value(name: str, default: Any, kind: type) -> Any:
        own = getattr(params, name)
        if own is not None:
            return own
        found = _from_env(name, environ)
        if found is None:
            return default
        var, text = found
        try:
            parsed = kind(text)
        except ValueError:
            raise BadVariable(f"params.{name}", f"the environment variable {var}={text!r} is not a whole "
                              "number") from None
        used.append(var)
        return parsed

    machines = value("num_machines", 1, int)
    machine_rank = value("machine_rank", 0, int)
    ip = value("main_process_ip", None, str)
    port = value("main_process_port", DEFAULT_PORT if machines > 1 else None, int)
    backend = params.distributed_backend
    if params.num_processes is not None:
        processes, why = params.num_processes, f"params.num_processes: {params.num_processes}"
    elif params.accelerate_config:
        processes, why = max(gpus, 1), "params.accelerate_config decides"
    elif gpus > 1:
        processes, why = gpus, f"every visible GPU ({gpus}); params.num_processes sets another count"
    else:
        processes = 1
        why = "one GPU" if gpus == 1 else "no GPU; params.num_processes: 2 would run two CPU processes"
    if backend is None and (processes > 1 or machines > 1 or params.accelerate_config):
        backend = "ddp"
        why += "; ddp, the default for several processes"
    elif backend == "ddp" and processes == 1 and machines == 1 and not params.accelerate_config:
        backend = None  # data parallel over one process is one process
    return Topology(backend, processes, machines, machine_rank, ip, port, why, tuple(used))


def _engine(run_dir: Path, resume: bool) -> list[str]:
    return ["-m", RUN_MODULE, str(run_dir), *(["--resume"] if resume else [])]


def launch_command(params: Any, topo: Topology, run_dir: Path, *, resume: bool = False,
                   python: str | None = None, machine_rank: int | None = None) -> list[str]:
    """The command that starts this machine's processes (`machine_rank` another machine's)."""
    python = python or sys.executable
    if not topo.launched:
        return [python, *_engine(run_dir, resume)]
    rank = topo.machine_rank if machine_rank is None else machine_rank
    cmd = [python, "-m", ACCELERATE_MODULE]
    if params.accelerate_config:  # the user's file says it all; a machine rank from here still counts
        cmd += ["--config_file", str(params.accelerate_config)]
        if topo.machines > 1 or rank:
            cmd += ["--machine_rank", str(rank)]
        return cmd + _engine(run_dir, resume)
    cmd += ["--num_processes", str(topo.world_size), "--num_machines", str(topo.machines),
            "--machine_rank", str(rank), "--main_process_port", str(topo.main_process_port or free_port())]
    if topo.machines > 1:
        cmd += ["--main_process_ip", str(topo.main_process_ip)]
    cmd += ["--mixed_precision", params.mixed_precision or "no", "--dynamo_backend", "no"]
    cmd += _backend_flags(params, topo.backend)
    return cmd + _engine(run_dir, resume)


def _backend_flags(params: Any, backend: str | None) -> list[str]:
    if backend == "fsdp":
        # FSDP2, each decoder layer its own shard unit (the model's _no_split_modules), sharded checkpoints
        # (fast to save); the result is gathered into a normal model at the end (engine.train).
        return ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                "--fsdp_state_dict_type", "SHARDED_STATE_DICT", "--fsdp_reshard_after_forward", "true",
                "--fsdp_cpu_ram_efficient_loading", "true"]
    if backend == "deepspeed":
        flags = ["--use_deepspeed"]
        if params.deepspeed_config:
            return flags + ["--deepspeed_config_file", str(params.deepspeed_config)]
        stage = params.deepspeed_stage
        flags += ["--zero_stage", str(stage), "--gradient_accumulation_steps", str(params.gradient_accumulation),
                  "--gradient_clipping", f"{params.max_grad_norm:g}"]
        if stage == 3:  # save gathers the shards into one 16-bit model a plain from_pretrained loads
            flags += ["--zero3_init_flag", "true", "--zero3_save_16bit_model", "true"]
        return flags
    return ["--multi_gpu"]  # ddp; on a machine without a GPU torch's gloo backend (accelerate's --cpu starts one)


def node_commands(params: Any, topo: Topology, run_dir: Path, *, resume: bool = False) -> list[tuple[int, str]]:
    """(machine rank, shell command) for every machine, for the dry run and the README's recipe."""
    return [(r, shlex.join(launch_command(params, topo, run_dir, resume=resume, python="python", machine_rank=r)))
            for r in range(topo.machines)]


def launch_env(topo: Topology, command: list[str]) -> dict[str, str]:
    """What the launched processes get to report the launch in run_started."""
    return {LAUNCH_ENV: json.dumps({**topo.as_dict(), "command": shlex.join(command)})}


def launch_info(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    environ = os.environ if environ is None else environ
    try:
        return json.loads(environ[LAUNCH_ENV])
    except (KeyError, ValueError):
        return None


def deepspeed_installed() -> bool:
    return importlib.util.find_spec("deepspeed") is not None


def port_in_use(port: int, host: str = "") -> bool:
    """Whether another program listens on `port` here (what torchrun's rendezvous would fail on, late)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def shards_weights(params: Any) -> str | None:
    """The backend setting that shards the weights themselves (not only gradients and optimizer states)."""
    if params.distributed_backend == "fsdp":
        return "fsdp"
    if params.distributed_backend == "deepspeed" and params.deepspeed_stage == 3 and not params.deepspeed_config:
        return "deepspeed_stage 3"
    return None


def refusals(params: Any, topo: Topology, *, gpus: int, on_cuda: bool, quantization: str | None,
             deepspeed: bool | None = None) -> list[tuple[str, str, str]]:
    """(key, what is wrong, how to fix it) for a launch this machine cannot make; [] when it can."""
    out = []
    backend = topo.backend
    deepspeed = deepspeed_installed() if deepspeed is None else deepspeed
    if backend in ("fsdp", "deepspeed") and not on_cuda:
        out.append(("params.distributed_backend", f"{backend} needs CUDA GPUs, and this machine has none",
                    "use distributed_backend: ddp (CPU processes over gloo), or run on a GPU machine"))
    if backend == "deepspeed" and not deepspeed:
        out.append(("params.distributed_backend", "deepspeed is not installed", "pip install deepspeed, or use "
                    "distributed_backend: ddp or fsdp"))
    what = shards_weights(params)
    if quantization and what:
        out.append(("params.quantization", f"{quantization} cannot be sharded by {what}: the shards need the "
                    "weights in a float type (llmtune does not set bitsandbytes' quant_storage for FSDP-QLoRA)",
                    "use quantization: null (sharding already divides the memory by the GPU count), or "
                    "distributed_backend: ddp / deepspeed_stage: 2, which keep a whole quantized copy per GPU"))
    if params.deepspeed_config and backend != "deepspeed":
        out.append(("params.deepspeed_config", "is given, but the backend is not deepspeed",
                    "set distributed_backend: deepspeed, or remove deepspeed_config"))
    if on_cuda and topo.processes > gpus and not params.accelerate_config:
        out.append(("params.num_processes", f"asks for {topo.processes} processes, and this machine shows "
                    f"{gpus} GPU{'s' if gpus != 1 else ''} (CUDA_VISIBLE_DEVICES counts)",
                    f"use num_processes: {gpus} or fewer (one process per GPU)"))
    if topo.machines > 1 and not topo.main_process_ip and not params.accelerate_config:
        out.append(("params.main_process_ip", f"is needed for {topo.machines} machines: the address of machine 0",
                    "set params.main_process_ip (or MASTER_ADDR) to an address every machine can reach"))
    if topo.machine_rank >= topo.machines:
        out.append(("params.machine_rank", f"is {topo.machine_rank}, and there are {topo.machines} machine(s)",
                    f"use 0 .. {topo.machines - 1}, one per machine"))
    return out


def cuda_gpus(caps: Any) -> int:
    """The CUDA GPUs a run may use, from engine.capabilities' answer (an Apple GPU or a CPU: 0)."""
    return caps.gpu_count if caps.device == "cuda" else 0


def machine_topology(params: Any, environ: Mapping[str, str] | None = None) -> Topology:
    """`topology()` with the GPUs this machine shows (engine.capabilities: imports torch)."""
    from engine.capabilities import probe

    return topology(params, gpus=cuda_gpus(probe()), environ=environ)


def known_topology(params: Any) -> Topology | None:
    """`machine_topology()`, or None where a torchrun / SLURM variable is not a number (the config check says
    so): for what only shows or estimates the launch."""
    try:
        return machine_topology(params)
    except ValueError:
        return None


def run_params(cfg: Any) -> Any:
    """The params as the run will have them on this machine (the precision chosen: the command passes it)."""
    import copy

    from engine.precision import resolve_precision

    run = copy.deepcopy(cfg)
    resolve_precision(run)
    return run.params


def resolve_distributed(cfg: Any) -> None:
    """Write the process count and backend chosen for this machine into `cfg` (the run directory's copy), so the
    training process and `resume` launch the same; a one-process run is left as it is."""
    topo = machine_topology(cfg.params)
    if topo.launched and not cfg.params.accelerate_config:
        cfg.params.num_processes = topo.processes
        cfg.params.distributed_backend = topo.backend
        cfg.defaulted.discard("params.num_processes")


def start_command(params: Any, run_dir: Path, *, resume: bool = False) -> tuple[list[str], dict[str, str]]:
    """The command that starts a run on this machine, and what its processes need in their environment."""
    topo = machine_topology(params)
    command = launch_command(params, topo, Path(run_dir).resolve(), resume=resume)
    return command, launch_env(topo, command)
