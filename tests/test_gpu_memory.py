"""GPU memory readings: NVML absent (this machine), NVML faked from pynvml's real API and exception classes
(UUID mapping, readings a device does not support), and the `memory` field a step event carries."""

from __future__ import annotations

import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pynvml
import pytest

from engine import gpu_memory
from engine.events import EventWriter, read_events, validate_event

ROOT = Path(__file__).resolve().parents[1]

# NVML spells GPUs "GPU-<uuid>" and MIG instances "MIG-<uuid>"; torch prints the bare lowercase uuid.
A = "6f1f7d2e-0c3b-4a55-9b1e-2f6a7c8d9e01"
B = "0a9b8c7d-6e5f-4a3b-8c2d-1e0f9a8b7c62"
MIG = "d3c2b1a0-9f8e-5d7c-a6b5-c4d3e2f1a093"
GIB = 1 << 30


@pytest.fixture(autouse=True)
def _fresh_nvml_state() -> Iterator[None]:
    gpu_memory._reset()
    yield
    gpu_memory._reset()


class FakeNvml:
    """A machine with two GPUs (NVML order A, B) and a MIG instance whose memory NVML cannot report.
    Same function names, return types and exception classes as the installed pynvml."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.devices = {  # uuid -> (name, total, used); None: memory info not supported
            f"GPU-{A}": (b"NVIDIA A100-SXM4-80GB", (80 * GIB, 3 * GIB)),  # an old pynvml returning bytes
            f"GPU-{B}": ("NVIDIA H100 80GB HBM3", (80 * GIB, 5 * GIB)),
            f"MIG-{MIG}": ("NVIDIA A100-SXM4-80GB MIG 1g.10gb", None),
        }
        self.order = [f"GPU-{A}", f"GPU-{B}"]  # MIG instances are not NVML-indexed devices

    def module(self) -> types.ModuleType:
        fake = types.ModuleType("pynvml")
        for name in ("nvmlInit", "nvmlDeviceGetCount", "nvmlDeviceGetHandleByIndex", "nvmlDeviceGetHandleByUUID",
                     "nvmlDeviceGetName", "nvmlDeviceGetMemoryInfo"):
            setattr(fake, name, self._counted(name))
        fake.NVMLError = pynvml.NVMLError
        return fake

    def _counted(self, name: str):
        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return getattr(self, name)(*args)
        return call

    def nvmlInit(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.order)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimpleNamespace:
        if not 0 <= index < len(self.order):
            raise pynvml.NVMLError_InvalidArgument()
        return SimpleNamespace(uuid=self.order[index])

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> SimpleNamespace:
        if uuid not in self.devices:
            raise pynvml.NVMLError_NotFound()
        return SimpleNamespace(uuid=uuid)

    def nvmlDeviceGetName(self, handle: SimpleNamespace):
        return self.devices[handle.uuid][0]

    def nvmlDeviceGetMemoryInfo(self, handle: SimpleNamespace) -> pynvml.c_nvmlMemory_t:
        memory = self.devices[handle.uuid][1]
        if memory is None:
            raise pynvml.NVMLError_NotSupported()
        total, used = memory
        return pynvml.c_nvmlMemory_t(total=total, free=total - used, used=used)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    nvml = FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", nvml.module())
    return nvml


def test_importing_the_module_does_not_import_torch() -> None:
    code = "import sys, engine.gpu_memory; print(sorted(m for m in ('torch', 'pynvml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"  # pynvml too is imported only on the first reading


def test_without_a_driver_nothing_is_read_and_init_is_tried_once(monkeypatch: pytest.MonkeyPatch) -> None:
    tries = []
    real_init = pynvml.nvmlInit

    def counted_init() -> None:
        tries.append(1)
        real_init()  # the real call: NVMLError_LibraryNotFound where there is no libnvidia-ml

    monkeypatch.setattr(pynvml, "nvmlInit", counted_init)
    first = gpu_memory.nvml_readings()
    if first is not None:
        pytest.skip("this machine has an NVIDIA driver")
    assert gpu_memory.nvml_readings([A]) is None
    assert tries == [1]  # the failure is remembered, not retried every step


def test_without_the_package_nothing_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    assert gpu_memory.nvml_readings() is None
    assert gpu_memory.nvml_readings() is None


def test_a_real_driver_gives_memory_readings() -> None:
    readings = gpu_memory.nvml_readings()
    if readings is None:
        pytest.skip("no NVIDIA driver here")
    assert readings and all(r["total"] and r["used"] is not None for r in readings if r["total"] is not None)


def test_uuids_map_to_their_devices_in_the_order_given(fake: FakeNvml) -> None:
    # torch's order (CUDA_VISIBLE_DEVICES=1,0 say) differs from NVML's; an unknown UUID reads as nothing
    readings = gpu_memory.nvml_readings([B, f"GPU-{A}", "00000000-0000-0000-0000-000000000000"])
    assert readings == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "used": 5 * GIB, "total": 80 * GIB},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "used": 3 * GIB, "total": 80 * GIB},  # bytes decoded
        {"index": 2, "name": None, "used": None, "total": None},
    ]


def test_unsupported_readings_are_none_and_the_rest_still_read(fake: FakeNvml) -> None:
    readings = gpu_memory.nvml_readings([MIG, A])  # a bare MIG UUID, as torch prints it, finds "MIG-..."
    assert readings == [
        {"index": 0, "name": "NVIDIA A100-SXM4-80GB MIG 1g.10gb", "used": None, "total": None},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "used": 3 * GIB, "total": 80 * GIB},
    ]


def test_without_uuids_every_device_in_nvml_order(fake: FakeNvml) -> None:
    readings = gpu_memory.nvml_readings()
    assert [(r["index"], r["name"]) for r in readings] == [(0, "NVIDIA A100-SXM4-80GB"),
                                                           (1, "NVIDIA H100 80GB HBM3")]


def test_handles_and_names_are_looked_up_once(fake: FakeNvml) -> None:
    for _ in range(3):
        gpu_memory.nvml_readings([A, B])
        gpu_memory.nvml_readings()
    assert fake.calls["nvmlInit"] == 1
    assert fake.calls["nvmlDeviceGetHandleByUUID"] == 2  # both found at the first spelling, "GPU-..."
    assert fake.calls["nvmlDeviceGetCount"] == 1
    assert fake.calls["nvmlDeviceGetName"] == 4  # per cached handle: two by UUID, two by index
    assert fake.calls["nvmlDeviceGetMemoryInfo"] == 12  # memory is the one thing read every time


def _step_event(path: Path, memory: dict) -> dict:
    with EventWriter(path) as writer:
        writer.emit("step", step=1, total_steps=10, epoch=0.1, loss=2.0, lr=None, grad_norm=None, tokens=100,
                    trained_tokens=50, tokens_per_s=None, trained_tokens_per_s=None, elapsed=0.5, memory=memory)
    [event] = read_events(path)
    assert validate_event(event) == []
    return event


def test_memory_without_a_gpu_is_the_process_ram(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from engine.trainers import progress

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    memory = progress.memory()
    assert set(memory) == {"rss", "rss_peak"}
    assert all(type(v) is int and v > 0 for v in memory.values())
    assert memory["rss_peak"] >= memory["rss"] // 2  # same order of magnitude: KiB were turned into bytes
    assert _step_event(tmp_path / "events.jsonl", memory)["memory"] == memory


@pytest.fixture
def two_cuda_devices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """torch sees B then A (CUDA_VISIBLE_DEVICES=1,0), without a GPU: only what memory() asks is faked."""
    torch = pytest.importorskip("torch")
    from engine.trainers import progress

    cuda = torch.cuda
    props = [SimpleNamespace(uuid=B, total_memory=79 * GIB), SimpleNamespace(uuid=A, total_memory=78 * GIB)]
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "device_count", lambda: 2)
    monkeypatch.setattr(cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr(cuda, "memory_allocated", lambda i: (i + 1) * GIB)
    monkeypatch.setattr(cuda, "memory_reserved", lambda i: (i + 2) * GIB)
    monkeypatch.setattr(cuda, "max_memory_reserved", lambda i: (i + 3) * GIB)
    progress._torch_uuids.cache_clear()
    yield
    progress._torch_uuids.cache_clear()


def test_memory_per_gpu_combines_nvml_and_torch(two_cuda_devices: None, fake: FakeNvml, tmp_path: Path) -> None:
    from engine.trainers import progress

    memory = progress.memory()
    assert memory["gpus"] == [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "used": 5 * GIB, "total": 80 * GIB,
         "allocated": GIB, "reserved": 2 * GIB, "peak": 3 * GIB},
        {"index": 1, "name": "NVIDIA A100-SXM4-80GB", "used": 3 * GIB, "total": 80 * GIB,
         "allocated": 2 * GIB, "reserved": 3 * GIB, "peak": 4 * GIB},
    ]
    assert _step_event(tmp_path / "events.jsonl", memory)["memory"] == memory


def test_memory_per_gpu_without_nvml_keeps_torch_readings(two_cuda_devices: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.trainers import progress

    monkeypatch.setitem(sys.modules, "pynvml", None)
    gpus = progress.memory()["gpus"]
    assert [(g["name"], g["used"], g["total"], g["reserved"]) for g in gpus] == [
        (None, None, 79 * GIB, 2 * GIB), (None, None, 78 * GIB, 3 * GIB)]  # total from torch's properties
