"""A checkpoint's tokenizer and image processor, loaded once by the supervisor and inherited by every
model process it forks.

Each model process loaded both for itself: 0.32-0.35 s of a handover's new process on an H200
(docs/BENCHMARKS.md), before it could serve. The supervisor loads them after its imports (no CUDA
involved), and again before it forks a process if the files changed since; a forked process takes
its parent's if the checkpoint's files other than the weights are as they were then (holder.stamp:
names, sizes, times, inodes), else loads them itself.
"""

from inference import holder

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")

_loaded: dict[str, tuple[list, object, object]] = {}  # model path -> (stamp, tokenizer, image processor)


def stamp(model_path: str) -> list:
    """The files the tokenizer and processor may read, all but the weights, as holder.stamp sees them."""
    return holder.stamp(model_path, lambda path: path.is_file() and not path.name.endswith(WEIGHT_SUFFIXES))


def preload(model_path: str) -> None:
    """Load them here, for the processes forked from now on."""
    before = stamp(model_path)
    tokenizer, image_processor = _read(model_path)
    try:  # the chat template compiled here (transformers keeps it by its text), not in every process's first request
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    except Exception:  # no template, or one that wants other messages: each process finds out for itself
        pass
    if stamp(model_path) == before:  # not changed while being read
        _loaded[model_path] = (before, tokenizer, image_processor)


def refresh(model_path: str) -> bool:
    """preload unless what is loaded came from the files as they are; whether it loaded."""
    if _current(model_path):
        return False
    preload(model_path)
    return True


def load(model_path: str) -> tuple[object, object, bool]:
    """(tokenizer, image processor, whether inherited): the preloaded ones if the files are still
    those they were read from."""
    held = _current(model_path)
    if held:
        return held[1], held[2], True
    return *_read(model_path), False


def _current(model_path: str) -> tuple | None:
    """What was loaded from the files as they are now, if anything."""
    held = _loaded.get(model_path)
    return held if held is not None and held[0] == stamp(model_path) else None


def _read(model_path: str) -> tuple[object, object]:
    from transformers import AutoImageProcessor, AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path), AutoImageProcessor.from_pretrained(model_path)
