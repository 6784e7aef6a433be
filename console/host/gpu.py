"""GPU figures through NVML (nvidia-ml-py). A host without an NVIDIA GPU says so cleanly."""

import threading
from dataclasses import dataclass

import pynvml

from console.sentences import Sentence, gettext_noop

_init_lock = threading.Lock()
_initialised: bool | None = None
_init_error = ""


@dataclass
class GpuProcess:
    pid: int
    gpu_index: int
    used_bytes: int


@dataclass
class GpuDevice:
    index: int
    name: str
    used_bytes: int
    total_bytes: int
    utilisation: int | None
    temperature: int | None
    power_watts: float | None


def nvml_available() -> bool:
    """Initialise NVML once per process; False (with nvml_error()) where there is no NVIDIA driver."""
    global _initialised, _init_error
    with _init_lock:
        if _initialised is None:
            try:
                pynvml.nvmlInit()
                _initialised = True
            except pynvml.NVMLError as exc:
                _initialised, _init_error = False, str(exc)
        return _initialised


def nvml_error() -> str:
    return (
        Sentence(gettext_noop("no NVIDIA GPU (%(why)s)"), why=_init_error)
        if _init_error
        else Sentence(gettext_noop("no NVIDIA GPU"))
    )


def _optional(call, *args):
    try:
        return call(*args)
    except pynvml.NVMLError:
        return None


def devices() -> list[GpuDevice]:
    if not nvml_available():
        return []
    result = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        rates = _optional(pynvml.nvmlDeviceGetUtilizationRates, handle)
        power = _optional(pynvml.nvmlDeviceGetPowerUsage, handle)
        result.append(
            GpuDevice(
                index=index,
                name=pynvml.nvmlDeviceGetName(handle),
                used_bytes=memory.used,
                total_bytes=memory.total,
                utilisation=rates.gpu if rates else None,
                temperature=_optional(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
                power_watts=power / 1000 if power is not None else None,
            )
        )
    return result


def processes(indices: list[int] | None = None) -> list[GpuProcess]:
    """Compute processes holding GPU memory, on the given devices (all if None)."""
    if not nvml_available():
        return []
    found = []
    for index in range(pynvml.nvmlDeviceGetCount()):
        if indices and index not in indices:
            continue
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in _optional(pynvml.nvmlDeviceGetComputeRunningProcesses, handle) or []:
            found.append(GpuProcess(pid=proc.pid, gpu_index=index, used_bytes=proc.usedGpuMemory or 0))
    return found


def _device(d: GpuDevice) -> dict:
    return {
        "index": d.index,
        "name": d.name,
        "used": d.used_bytes,
        "total": d.total_bytes,
        "util": d.utilisation,
        "temp": d.temperature,
        "power": d.power_watts,
    }


class Snapshot:
    """NVML read once per round for all instances of the host."""

    def __init__(self):
        self.available = nvml_available()
        self.error = "" if self.available else nvml_error()
        self.devices = devices() if self.available else []
        self.processes = processes() if self.available else []

    def for_instance(self, indices: list[int], pids: list[int]) -> dict:
        devices = [d for d in self.devices if not indices or d.index in indices]
        mine = set(pids)
        procs = [p for p in self.processes if not indices or p.gpu_index in indices]
        return {
            "gpu_used": sum(p.used_bytes for p in procs if p.pid in mine) if self.available else None,
            "gpu_total": sum(d.total_bytes for d in devices) if devices else None,
            "devices": [_device(d) for d in devices],
            "processes": [
                {"pid": p.pid, "gpu": p.gpu_index, "used": p.used_bytes, "ours": p.pid in mine} for p in procs
            ],
        }

    def for_host(self, owners: dict[int, str]) -> list[dict]:
        """Every device with the processes holding its memory, each named by the instance whose
        pid it is (owners: pid -> instance name; None for a process of no instance)."""
        return [
            {
                **_device(d),
                "processes": [
                    {"pid": p.pid, "used": p.used_bytes, "instance": owners.get(p.pid)}
                    for p in self.processes
                    if p.gpu_index == d.index
                ],
            }
            for d in self.devices
        ]
