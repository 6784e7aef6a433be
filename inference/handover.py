"""A handover's record and its memory check: what the supervisor writes, what /health reports.

The supervisor (inference.supervisor) is the only writer of the record, a small JSON file whose path
its children find in INFERENCE_SUPERVISOR_STATE; every model process reads it for /health, so the
answer is the same whichever process a client reaches during a handover.
"""

import json
import os
import time
from pathlib import Path

STATE_ENV = "INFERENCE_SUPERVISOR_STATE"
HANDOVER_FD_ENV = "INFERENCE_HANDOVER_FD"  # set in a handover's new process: where it says "serving"
NO_ROOM_EXIT = 76  # a handover's new process found no room for a second model beside the first
KEEP_HANDOVERS = 5


class Record:
    """The supervisor's side: its children's pids and the last handovers with their phases."""

    def __init__(self, path: str):
        self.path = path
        self.data = {"pid": os.getpid(), "serving_pid": None, "holder": None, "handovers": []}

    def save(self) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f)
        os.replace(tmp, self.path)  # a reader sees the old record or the new one, never half

    def serving(self, pid: int) -> None:
        self.data["serving_pid"] = pid
        self.save()

    def holder(self, **fields) -> None:
        """The weight holder (inference/holder.py): its pid, state ("loading", "holding", "not held",
        "ended"), what it holds and how long it took to read."""
        self.data["holder"] = fields
        self.save()

    @property
    def current(self) -> dict | None:
        handovers = self.data["handovers"]
        return handovers[-1] if handovers and handovers[-1]["state"] == "running" else None

    def begin(self, old_pid: int) -> dict:
        handovers = self.data["handovers"]
        handover = {
            "id": (handovers[-1]["id"] + 1) if handovers else 1,
            "state": "running",
            "old_pid": old_pid,
            "new_pid": None,
            "began": time.time(),
            "phases": [],
            "why": "",
        }
        handovers.append(handover)
        del handovers[:-KEEP_HANDOVERS]
        return handover

    def phase(self, handover: dict, name: str, **fields) -> None:
        handover["phases"].append({"name": name, "seconds": round(time.time() - handover["began"], 3), **fields})
        self.save()

    def end(self, handover: dict, state: str, why: str = "") -> None:
        handover["state"] = state
        handover["why"] = why
        self.save()

    def remove(self) -> None:
        for path in (self.path, f"{self.path}.tmp"):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def read() -> dict | None:
    """The record, for a model process's /health; None when not under a supervisor."""
    path = os.environ.get(STATE_ENV)
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def weights_bytes(model_path: str) -> int:
    """What the checkpoint's weights take once loaded (their files' size, as stored)."""
    root = Path(model_path)
    for pattern in ("*.safetensors", "*.bin"):
        size = sum(p.stat().st_size for p in root.glob(pattern))
        if size:
            return size
    return 0


def no_room(model_path: str, device: str, reserve_bytes: int, weights_held: bool = False) -> str:
    """Why a second model cannot load beside the serving one ("" if it can): the weights once more
    (unless a holder keeps them for both) plus reserve_bytes (KV cache, activations, CUDA context)
    must fit in the device's free memory."""
    need = (0 if weights_held else weights_bytes(model_path)) + reserve_bytes
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        where = "GPU"
    else:
        free = _host_available()
        where = "host"
    if free >= need:
        return ""
    return f"a second model needs {need / 2**30:.1f} GiB and the {where} has {free / 2**30:.1f} GiB free"


def _host_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
