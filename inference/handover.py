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
READY_FD_ENV = "INFERENCE_READY_FD"  # set in a started process: where it says "ready" once it serves
# Set in a standby (HANDOVER_STANDBY): the pipe on which it waits, loaded, for its turn to serve.
STANDBY_FD_ENV = "INFERENCE_STANDBY_FD"
# Beside the record: the decoding kernels a model process under this supervisor checked against the
# eager step (model_runner.py), so that later ones on the same device and shapes skip the check.
KERNELS_CHECKED_SUFFIX = ".kernels-checked"
VISION_CHECKED_SUFFIX = ".vision-checked"  # the same for the vision encoder's kernels
# Beside the record: a handover asked to read the weights again (POST /admin/handover?reload_weights=true),
# written by the model process that was asked, taken by the supervisor as it begins the handover.
RELOAD_SUFFIX = ".reload-weights"
NO_ROOM_EXIT = 76  # a handover's new process found no room for a second model beside the first
KEEP_HANDOVERS = 5
GROW_MARGIN_BYTES = 256 * 2**20  # left free when a smaller KV cache grows back (the step's own work)


class Record:
    """The supervisor's side: its children's pids and the last handovers with their phases."""

    def __init__(self, path: str):
        self.path = path
        self.data = {"pid": os.getpid(), "serving_pid": None, "holder": None, "standby": None, "handovers": []}

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

    def standby(self, **fields) -> None:
        """The standby model process (HANDOVER_STANDBY): its pid and state ("loading", "ready",
        "failed", "discarded"), with why where it failed or was discarded."""
        self.data["standby"] = fields or None
        self.save()

    @property
    def current(self) -> dict | None:
        handovers = self.data["handovers"]
        return handovers[-1] if handovers and handovers[-1]["state"] == "running" else None

    def take_reload(self) -> bool:
        """Whether the handover asked for reads the weights again (and forget the ask)."""
        try:
            os.unlink(self.path + RELOAD_SUFFIX)
        except FileNotFoundError:
            return False
        return True

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
        notes = (KERNELS_CHECKED_SUFFIX, VISION_CHECKED_SUFFIX, RELOAD_SUFFIX)
        for path in (self.path, f"{self.path}.tmp", *(self.path + suffix for suffix in notes)):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def beside_record(suffix: str) -> Path | None:
    """A model process's path to a file the supervisor keeps beside its record; None when not under one."""
    path = os.environ.get(STATE_ENV)
    return Path(path + suffix) if path else None


class CheckNote:
    """A check a model process makes once (Triton kernels against the forms they replace), noted beside
    the supervisor's record so that the processes forked after it skip it; the note says what the check
    covered (torch, device, dtype, shapes, what ran). Not under a supervisor every process checks."""

    def __init__(self, suffix: str, covers: str):
        self.path = beside_record(suffix)
        self.covers = covers

    def says(self, what: str = "") -> bool:
        """Whether an earlier process checked what this one would, running `what`."""
        try:
            return self.path is not None and self.path.read_text() == self._text(what)
        except OSError:
            return False

    def note(self, what: str = "") -> None:
        if self.path is not None:
            try:
                self.path.write_text(self._text(what))
            except OSError:
                pass  # the next process checks again

    def _text(self, what: str) -> str:
        return f"{self.covers}, {what}" if what else self.covers


def ask_reload() -> None:
    """From a model process: the next handover reads the weights again (Record.take_reload)."""
    path = beside_record(RELOAD_SUFFIX)
    if path is not None:
        path.touch()


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


def kv_slot_bytes(model_path: str, context: int, dtype_bytes: int) -> int:
    """What one slot of the batched decoder's KV cache takes (model_runner.py: keys and values of
    every text layer over `context` positions), from the checkpoint's config; 0 if it cannot say."""
    try:
        config = json.loads((Path(model_path) / "config.json").read_text())
        text = config.get("text_config") or config
        heads = int(text["num_attention_heads"])
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
        kv_heads = int(text.get("num_key_value_heads") or heads)
        layers = int(text["num_hidden_layers"])
        context = min(context, int(text.get("max_position_embeddings") or context))
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        return 0
    return layers * 2 * kv_heads * context * head_dim * dtype_bytes


def free_bytes(device: str, at_most: int = 0) -> tuple[int, str]:
    """Free memory where a model process would allocate (no more than `at_most` where set: the
    HANDOVER_MAX_BYTES of a device shared with other work), and what that is ("GPU" or "host")."""
    if device.startswith("cuda"):
        import torch

        free, where = torch.cuda.mem_get_info(torch.device(device))[0], "GPU"
    else:
        free, where = _host_available(), "host"
    return (min(free, at_most) if at_most else free), where


def fit_slots(free: int, where: str, weights: int, reserve: int, slot_bytes: int, slots: int) -> tuple[int, str]:
    """How many KV cache slots a second model process can have beside the serving one: `slots` when the
    weights (0 when a holder keeps them for both), the whole cache and `reserve` (activations, CUDA
    context) fit in `free`; fewer when only a smaller cache fits (it grows back once the old process is
    gone: scheduler.py); 0 with why when not even one slot does."""
    room = free - weights - reserve
    if room >= slot_bytes * slots:
        return slots, ""
    if slot_bytes > 0 and room >= slot_bytes:
        fit = int(min(slots - 1, room // slot_bytes))
        return fit, f"the {where} has room for {fit} of {slots} KV cache slots beside the serving process"
    need = weights + reserve + max(slot_bytes, 0)
    return 0, f"a second model needs {need / 2**30:.1f} GiB and the {where} has {free / 2**30:.1f} GiB free"


def room_for_weights(model_path: str, device: str, max_bytes: int = 0) -> str:
    """Why the checkpoint's weights do not fit beside those already held ("" when they do): a second
    weight holder reading a changed checkpoint needs room for both copies for a moment."""
    free, where = free_bytes(device, max_bytes)
    need = weights_bytes(model_path)
    if need <= free:
        return ""
    return f"the new weights need {need / 2**30:.1f} GiB beside the old and the {where} has {free / 2**30:.1f} GiB free"


def _host_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
