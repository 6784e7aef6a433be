"""Reading a safetensors checkpoint straight onto the device, while the rest of the server starts.

`from_pretrained` reads shards through memory maps: every page faults in on first touch and every
tensor goes to the GPU from pageable memory, one copy at a time per loader thread. Here each shard is
read with large sequential reads into pinned buffers and copied to the device asynchronously, by
several threads at once; the reads and copies release the GIL, so this runs beside the import of
transformers (seconds of pure Python) instead of after it. The result is the checkpoint's own state
dict: the model's parameters as they are where it is the model's own (assembly.py), else given to
`from_pretrained(state_dict=...)`, which applies the model's key mapping and conversions exactly as
it does for files.
"""

import contextlib
import json
import math
import os
import struct
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

CHUNK_BYTES = 64 << 20  # one read and one copy; large enough for full-speed transfers
WORKERS = 4  # like transformers' loader: more threads than this contend for the page cache

# safetensors dtype names -> torch dtype attribute names
DTYPES = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "I16": "int16",
    "I32": "int32",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


class Unsupported(Exception):
    """The checkpoint is not one this reader handles; `from_pretrained` reads it instead."""


def shard_files(model_dir: str | os.PathLike) -> list[Path]:
    """The checkpoint's safetensors files, as its index names them (or the single file)."""
    root = Path(model_dir)
    index = root / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [root / name for name in names]
    single = root / "model.safetensors"
    if single.exists():
        return [single]
    raise Unsupported(f"no safetensors checkpoint in {root}")


def read_header(path: Path) -> tuple[int, dict]:
    """(offset of the data, {name: entry}) of one safetensors file."""
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        size = os.fstat(file.fileno()).st_size
        if length > size - 8:  # not a safetensors file (or cut short): never read that much
            raise Unsupported(f"{path.name}: its header claims {length} bytes, the file has {size}")
        header = json.loads(file.read(length))
    header.pop("__metadata__", None)
    return 8 + length, header


def check(model_dir: str | os.PathLike) -> None:
    """Whether the checkpoint's files look whole without reading their tensors: each shard's header
    parses, names dtypes this reader knows, and its tensors end where the file does. Raises
    Unsupported (or OSError, ValueError) with why; a truncated or overwritten file fails here."""
    for path in shard_files(model_dir):
        base, header = read_header(path)
        end = base
        for name, entry in header.items():
            if entry.get("dtype") not in DTYPES:
                raise Unsupported(f"{path.name}: tensor {name} has dtype {entry.get('dtype')}")
            end = max(end, base + int(entry["data_offsets"][1]))
        size = path.stat().st_size
        if end != size:
            raise Unsupported(f"{path.name}: its tensors end at byte {end}, the file at {size}")


def _plan(files: list[Path]) -> tuple[list[tuple], list[tuple]]:
    """Tensors to allocate (name, dtype, shape) and reads of at most CHUNK_BYTES: (file, offset, size,
    [(name, byte offset in the tensor, byte offset in the read, bytes)])."""
    import torch

    tensors, reads = [], []
    for path in files:
        base, header = read_header(path)
        pending, start, end = [], None, None
        for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            if entry["dtype"] not in DTYPES:
                raise Unsupported(f"{path.name}: tensor {name} has dtype {entry['dtype']}")
            tensors.append((name, getattr(torch, DTYPES[entry["dtype"]]), entry["shape"]))
            first, last = entry["data_offsets"]
            if start is not None and base + first != end:  # a gap: the read so far ends here
                reads.append((path, start, end - start, pending))
                pending, start, end = [], None, None
            done = 0
            while done < last - first:
                if start is None:
                    start = end = base + first + done
                take = min(last - first - done, CHUNK_BYTES - (end - start))
                pending.append((name, done, end - start, take))
                end += take
                done += take
                if end - start >= CHUNK_BYTES:
                    reads.append((path, start, end - start, pending))
                    pending, start, end = [], None, None
        if pending:
            reads.append((path, start, end - start, pending))
    return tensors, reads


def read_state_dict(model_dir: str | os.PathLike, device: str, one_allocation: bool = False) -> dict:
    """Every tensor of the checkpoint, on `device`, in its stored dtype (`one_allocation`: _allocate)."""
    return read_files(shard_files(model_dir), device, one_allocation)


ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj")
ALIGN_BYTES = 256  # where each tensor of one allocation starts: any dtype's view, and kernels' aligned loads


def _allocate(tensors: list[tuple], device, one_allocation: bool = False) -> dict:
    """Empty tensors for the checkpoint; each attention layer's q, k and v projections (weights and
    biases) side by side in one allocation, so the decoding step's fused projection is a view of
    them rather than a copy (inference.model_runner.fuse_layer): no 1.6 GiB of copies for
    GLM-4.6V-Flash at load, and no blocks of the originals left in the allocator's cache (the weight
    holder on an H200: 20,326 MiB instead of 21,708).

    `one_allocation` (the weight holder's): every tensor a view of one buffer, so that a process
    mapping them opens one inter-process handle instead of one per allocation (CUDA IPC), or one
    shared memory file instead of one per tensor (CPU)."""
    import torch

    specs = {name: (dtype, shape) for name, dtype, shape in tensors}
    units = []  # (names, dtype, shape of them together, rows of each)
    grouped = set()
    for name in specs:
        if not name.endswith(("self_attn.q_proj.weight", "self_attn.q_proj.bias")):
            continue
        names = [name.replace("q_proj", p) for p in ATTENTION_PROJECTIONS]
        parts = [specs.get(n) for n in names]
        if None in parts or len({(dtype, tuple(shape[1:])) for dtype, shape in parts}) != 1:
            continue
        dtype, shape = parts[0]
        rows = [s[0] for _, s in parts]
        units.append((names, dtype, (sum(rows), *shape[1:]), rows))
        grouped.update(names)
    units += [([name], dtype, tuple(shape), None) for name, (dtype, shape) in specs.items() if name not in grouped]

    if one_allocation:
        spans, end = [], 0  # each unit's bytes in the buffer
        for _, dtype, shape, _ in units:
            begin = -(-end // ALIGN_BYTES) * ALIGN_BYTES
            end = begin + math.prod(shape) * dtype.itemsize
            spans.append((begin, end))
        buffer = torch.empty(end, dtype=torch.uint8, device=device)

    state = {}
    for number, (names, dtype, shape, rows) in enumerate(units):
        if one_allocation:
            begin, end = spans[number]
            whole = buffer[begin:end].view(dtype).view(shape)
        else:
            whole = torch.empty(shape, dtype=dtype, device=device)
        if rows is None:
            state[names[0]] = whole
            continue
        start = 0
        for part_name, part_rows in zip(names, rows, strict=True):
            state[part_name] = whole[start : start + part_rows]
            start += part_rows
    return {name: state[name] for name in specs}  # the checkpoint's order


def read_files(files: list[Path], device: str, one_allocation: bool = False) -> dict:
    """Every tensor of these safetensors files, on `device`, in its stored dtype."""
    import torch

    tensors, reads = _plan(files)
    target = torch.device(device)
    state = _allocate(tensors, target, one_allocation)
    flat = {name: tensor.view(-1).view(torch.uint8) if tensor.numel() else None for name, tensor in state.items()}
    handles = {path: os.open(path, os.O_RDONLY) for path in files}
    cuda = target.type == "cuda"
    local = threading.local()

    def buffer():
        # One pinned staging buffer and one copy stream per thread; a buffer is reused only once the
        # copy out of it has finished.
        if not hasattr(local, "buffer"):
            local.buffer = torch.empty(CHUNK_BYTES, dtype=torch.uint8, pin_memory=cuda)
            local.view = memoryview(local.buffer.numpy())
            local.stream = torch.cuda.Stream(target) if cuda else None
        return local

    def read(job) -> None:
        path, offset, size, pieces = job
        staging = buffer()
        got = 0
        while got < size:
            count = os.preadv(handles[path], [staging.view[got:size]], offset + got)
            if count == 0:
                raise Unsupported(f"{path.name} ends before its header says it should")
            got += count
        with torch.cuda.stream(staging.stream) if cuda else contextlib.nullcontext():
            for name, at, within, count in pieces:
                flat[name][at : at + count].copy_(staging.buffer[within : within + count], non_blocking=cuda)
        if cuda:
            staging.stream.synchronize()

    try:
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="weights") as pool:
            list(pool.map(read, reads))
    finally:
        for handle in handles.values():
            os.close(handle)
    return state


class Prefetch:
    """read_state_dict on a thread of its own; `result()` waits for it (and raises what it raised).
    A directory without a safetensors checkpoint raises Unsupported at once."""

    def __init__(self, model_dir: str | os.PathLike, device: str):
        files = shard_files(model_dir)
        self.seconds = 0.0
        self._future: Future = Future()
        threading.Thread(target=self._run, args=(files, device), name="weights-prefetch", daemon=True).start()

    def _run(self, files, device) -> None:
        began = time.monotonic()
        try:
            state = read_files(files, device)
        except BaseException as exc:
            self._future.set_exception(exc)
            return
        self.seconds = time.monotonic() - began
        self._future.set_result(state)

    def result(self) -> dict:
        return self._future.result()
