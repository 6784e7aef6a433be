"""The weight holder: one long-lived process keeps the model's weights; model processes map them.

A model process is replaceable, its weights need not be. Under inference.supervisor (HOLD_WEIGHTS),
the supervisor forks this process first: it reads the checkpoint onto the device once, in one
allocation (a mapping process opens one handle, not one per tensor), and hands the tensors to every
model process that asks, over a Unix socket, as torch's inter-process handles (CUDA IPC on a GPU;
shared memory files on a CPU). A model process maps them in a fraction of a second and they add
nothing to its own memory, so a handover's new process skips the weights and two model processes
side by side need the weights only once.

Protocol: a model process connects and sends `weights\\n`; the holder answers, once its weights are
read, with an 8-byte little-endian length and a pickle (torch's ForkingPickler) of
`{"state": {name: tensor}, "pid", "bytes", "seconds"}`, or of `{"error": why}`. Only processes of
the same user reach the socket (its directory is 0700).

The holder must outlive every process that maps its weights (on a GPU, its exit frees the memory
they read): it ignores SIGINT and SIGTERM, and the supervisor ends it after the last model process.
It ends by itself when the supervisor is gone.
"""

import logging
import os
import pickle
import signal
import socket
import struct
import threading
import time

from inference import handover, logs

log = logging.getLogger("inference.holder")

SOCKET_ENV = "INFERENCE_WEIGHTS_SOCKET"  # set in model processes when a holder keeps the weights
HOLD_MODES = ("auto", "on", "off")  # auto: hold on a GPU; on: on any device (a CPU needs /dev/shm room)
ASK = b"weights\n"
WAIT_SECONDS = 900  # for the holder's first read of the weights (a large checkpoint, a cold disk)
PARENT_POLL_SECONDS = 1.0


class Unavailable(Exception):
    """The holder could not give the weights; the model process reads them itself."""


def not_here(mode: str, device: str) -> str:
    """Why no holder is started (""): asked for none, or `auto` on a machine without an NVIDIA
    driver, told without importing torch (seconds of CPU a CPU machine would spend for nothing)."""
    if mode == "off":
        return "HOLD_WEIGHTS=off: each model process reads the weights itself"
    if mode == "auto" and not device.startswith("cuda"):
        if device or not os.path.exists("/proc/driver/nvidia/version"):
            return f"HOLD_WEIGHTS=auto holds weights on a GPU; this server runs on {device or 'cpu'} (no NVIDIA driver)"
    return ""


def wanted(mode: str, device: str) -> bool:
    """Whether weights on `device` are held, for HOLD_WEIGHTS = mode."""
    return mode == "on" or (mode == "auto" and device.startswith("cuda"))


def stamp(model_path: str, chosen=lambda path: path.suffix in (".safetensors", ".bin", ".json")) -> list:
    """What the checkpoint's files (those `chosen`: by default what the weights are read from) are
    now (name, size, modification time, inode, change time): a holder's weights are stale once this
    differs from what it was when they were read. The change time is the kernel's (no tool sets it):
    files copied over the old ones with their sizes and modification times kept (`cp -p`, `rsync -a`
    of a fine-tune of the same shape) count as new."""
    from pathlib import Path

    files = []
    for path in sorted(Path(model_path).glob("*")):
        if chosen(path):
            try:
                info = path.stat()
            except OSError:
                continue
            files.append([path.name, info.st_size, info.st_mtime_ns, info.st_ino, info.st_ctime_ns])
    return files


def share(state: dict, device: str) -> dict:
    """The tensors made shareable: on a CPU moved into shared memory files; on a GPU as they are."""
    import torch.multiprocessing

    if not device.startswith("cuda"):
        torch.multiprocessing.set_sharing_strategy("file_system")  # names, not descriptors: a plain socket carries them
        for tensor in state.values():
            tensor.share_memory_()
    return state


def _send(conn: socket.socket, message: dict) -> None:
    from multiprocessing.reduction import ForkingPickler

    import torch.multiprocessing  # noqa: F401  (registers the reductions of tensors)

    data = ForkingPickler.dumps(message)
    conn.sendall(struct.pack("<Q", len(data)) + data)


def _receive(conn: socket.socket) -> dict:
    import torch.multiprocessing

    torch.multiprocessing.set_sharing_strategy("file_system")
    head = _read(conn, 8)
    (length,) = struct.unpack("<Q", head)
    return pickle.loads(_read(conn, length))


def _read(conn: socket.socket, size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        chunk = conn.recv(min(size - got, 1 << 20))
        if not chunk:
            raise Unavailable("the weight holder closed the connection (it ended?)")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def listen(path: str) -> socket.socket:
    """The holder's socket, bound and listening: a model process that asks before the weights are read
    waits in its backlog."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(path)
        listener.listen(16)
    except OSError:
        listener.close()
        raise
    return listener


def serve(
    model_path: str,
    device: str,
    mode: str,
    path: str | socket.socket,
    says: int | None = None,
    beside: int | None = None,
) -> int:
    """The holder's life: bind (`path`, unless given its socket bound), read the weights, then hand
    them to whoever asks; its exit code.
    `says` is a pipe to the supervisor: "holding <bytes> <seconds>" once the weights are read, or
    "none <why>" where HOLD_WEIGHTS (mode) keeps no weights on this device (then it exits, 0).

    `beside` (a byte limit, 0 for none) makes it a second holder, reading a changed checkpoint while
    the first still holds the old weights: it first checks that the new files look whole (else it
    fails, 1: the old weights go on) and that they fit beside the old ones; where they do not it says
    "no-room <why>" and exits NO_ROOM_EXIT (the supervisor then restarts the drained way)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # model processes may still map the weights: the supervisor ends it
    parent = os.getppid()
    listener = path if isinstance(path, socket.socket) else listen(path)  # before anything slow
    began = time.monotonic()
    try:
        import torch

        from inference import weights

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if not wanted(mode, device):
            why = f"HOLD_WEIGHTS={mode}: each model process reads the weights on {device}"
            if says is not None:
                os.write(says, f"none {why}\n".encode())
            return 0
        if beside is not None:
            weights.check(model_path)
            why = handover.room_for_weights(model_path, device, beside)
            if why:
                logs.event(log, "no room for the new weights beside the old", logging.WARNING, why=why)
                if says is not None:
                    os.write(says, f"no-room {why}\n".encode())
                return handover.NO_ROOM_EXIT
        state = share(weights.read_state_dict(model_path, device, one_allocation=True), device)
    except Exception as exc:
        log.exception("the weight holder could not read the weights")
        _refuse_all(listener, f"the weight holder could not read the weights: {exc}")
        return 1
    held = sum(storage.nbytes() for storage in _storages(state))
    seconds = round(time.monotonic() - began, 3)
    logs.event(log, "holding the weights", device=device, bytes=held, tensors=len(state), seconds=seconds)
    if says is not None:
        os.write(says, f"holding {held} {seconds}\n".encode())
    message = {"state": state, "pid": os.getpid(), "bytes": held, "seconds": seconds}
    listener.settimeout(PARENT_POLL_SECONDS)
    while os.getppid() == parent:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_answer, args=(conn, message), name="holder-answer", daemon=True).start()
    logs.event(log, "the supervisor is gone; the weight holder ends", logging.WARNING)
    return 0


def _storages(state: dict) -> list:
    seen = {}
    for tensor in state.values():
        storage = tensor.untyped_storage()
        seen.setdefault(storage.data_ptr(), storage)
    return list(seen.values())


def _answer(conn: socket.socket, message: dict) -> None:
    with conn:
        try:
            conn.settimeout(30)
            if _read(conn, len(ASK)) != ASK:
                return
            _send(conn, message)
            conn.recv(1)  # the model process has rebuilt its tensors once it closes its end
        except (OSError, Unavailable) as exc:
            logs.event(log, "a model process left before it had the weights", logging.WARNING, why=str(exc))


def _refuse_all(listener: socket.socket, why: str) -> None:
    """Tell whoever is waiting (and asks in the next moments) why, so they read the weights themselves."""
    listener.settimeout(2)
    while True:
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            return
        with conn:
            try:
                _send(conn, {"error": why})
            except OSError:
                pass


class Mapped:
    """A model process's side, shaped like weights.Prefetch: the holder's tensors fetched on a thread
    while the process imports; `result()` gives the state dict or raises Unavailable."""

    def __init__(self, path: str, timeout: float = WAIT_SECONDS, device: str = "cpu"):
        self.device = device
        self.seconds = 0.0
        self.holder_pid = 0
        self.held_bytes = 0
        self._done = threading.Event()
        self._state: dict | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(path, timeout), name="weights-holder", daemon=True).start()

    def _run(self, path: str, timeout: float) -> None:
        began = time.monotonic()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(path)
                conn.sendall(ASK)
                if self.device.startswith("cuda"):
                    import torch

                    torch.cuda.init()  # while the holder makes its handles, not at the first one mapped
                message = _receive(conn)
            if "error" in message:
                raise Unavailable(message["error"])
            self._state = message["state"]
            self.holder_pid, self.held_bytes = message["pid"], message["bytes"]
        except (OSError, ValueError, pickle.UnpicklingError, Unavailable, RuntimeError) as exc:
            self._error = (
                exc if isinstance(exc, Unavailable) else Unavailable(f"the weight holder did not answer: {exc}")
            )
        finally:
            self.seconds = time.monotonic() - began
            self._done.set()

    def result(self) -> dict:
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._state
