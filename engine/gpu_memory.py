"""GPU memory as the driver sees it, from NVML (the `nvidia-ml-py` package, imported as `pynvml`).

torch's allocator counters miss the CUDA context, other libraries' allocations and other processes; NVML's
`used` is what `nvidia-smi` shows, and what runs out. Standard library and pynvml only (no torch): the
training loop calls this about once a second, and tests import it on machines without CUDA.

NVML numbers devices its own way and ignores CUDA_VISIBLE_DEVICES, so the caller passes the UUIDs of the
devices it uses (torch's order) and gets one reading per UUID, in that order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any, TypedDict


class GpuReading(TypedDict):
    """One device; a value the device does not support (some MIG and vGPU setups) is None."""

    index: int            # position in the `uuids` passed, else NVML's index
    name: str | None
    used: int | None      # bytes, as nvidia-smi shows: every process and the driver's reservations
    total: int | None     # bytes


_lock = threading.Lock()
_nvml: Any = None                  # the pynvml module once nvmlInit succeeded
_failed = False                    # init failed once (no package, library or driver): never retried
_handles: dict[str, Any] = {}      # UUID as given -> device handle, or None when NVML knows no such device
_all: list[Any] | None = None      # every device's handle in NVML order (uuids=None)
_names: dict[int, str | None] = {}  # id(handle) -> name; a name never changes


def _init() -> Any:
    """The initialised pynvml module, or None. Tried once per process."""
    global _nvml, _failed
    if _nvml is not None or _failed:
        return _nvml
    with _lock:
        if _nvml is None and not _failed:
            try:
                import pynvml

                pynvml.nvmlInit()  # NVMLError_LibraryNotFound / _DriverNotLoaded on machines without a driver
                _nvml = pynvml
            except Exception:  # ImportError, NVMLError, OSError: no NVML here, say nothing
                _failed = True
    return _nvml


def _reset() -> None:
    """Forget the init outcome and cached handles (tests). Does not call nvmlShutdown: others may share it."""
    global _nvml, _failed, _all
    with _lock:
        _nvml, _failed, _all = None, False, None
        _handles.clear()
        _names.clear()


def _candidates(uuid: str) -> list[str]:
    """NVML's spellings of a UUID. torch prints the bare 8-4-4-4-12 hex; NVML prefixes it with "GPU-", or
    "MIG-" for a MIG instance (drivers >= R470; CUDA then reports the instance's UUID)."""
    uuid = uuid.strip()
    if uuid[:4].upper() in ("GPU-", "MIG-"):
        return [uuid]
    return [f"GPU-{uuid}", f"MIG-{uuid}"]


def _handle(nvml: Any, uuid: str) -> Any:
    if uuid not in _handles:
        found = None
        for candidate in _candidates(uuid):
            try:
                found = nvml.nvmlDeviceGetHandleByUUID(candidate)
                break
            except nvml.NVMLError:  # NotFound / InvalidArgument: try the other prefix
                continue
        _handles[uuid] = found
    return _handles[uuid]


def _all_handles(nvml: Any) -> list[Any] | None:
    global _all
    if _all is None:
        try:
            _all = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        except nvml.NVMLError:
            return None
    return _all


def _name(nvml: Any, handle: Any) -> str | None:
    key = id(handle)  # handles are cached, so an id stays the same device
    if key not in _names:
        try:
            name = nvml.nvmlDeviceGetName(handle)
            _names[key] = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
        except nvml.NVMLError:
            _names[key] = None
    return _names[key]


def _reading(nvml: Any, index: int, handle: Any) -> GpuReading:
    reading: GpuReading = {"index": index, "name": None, "used": None, "total": None}
    if handle is None:
        return reading
    reading["name"] = _name(nvml, handle)
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle)  # v1 struct: total, free, used (bytes)
        reading["used"], reading["total"] = int(info.used), int(info.total)
    except nvml.NVMLError:  # NotSupported on some MIG / vGPU setups, GpuIsLost, ...
        pass
    return reading


def nvml_readings(uuids: Sequence[str] | None = None) -> list[GpuReading] | None:
    """Memory of the devices with these UUIDs (torch's order), else of every NVML device; None when NVML is
    unavailable. Never raises an NVMLError: a value a device cannot report is None, the others are read.

    A UUID may be bare (str(torch.cuda.get_device_properties(i).uuid)) or NVML-style ("GPU-..."/"MIG-...").
    A UUID NVML does not know gives a reading with every value None.
    """
    nvml = _init()
    if nvml is None:
        return None
    if uuids is None:
        handles = _all_handles(nvml)
        if handles is None:
            return None
    else:
        handles = [_handle(nvml, str(uuid)) for uuid in uuids]
    return [_reading(nvml, i, handle) for i, handle in enumerate(handles)]
