"""Server settings, all from the environment (documented in inference/README.md)."""

import os
from dataclasses import dataclass, field


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


def _bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    return default if not value else value.strip().lower() in ("1", "true", "yes", "on")


@dataclass
class Settings:
    model_path: str = field(default_factory=lambda: os.environ.get("MODEL_PATH", ""))
    model_name: str = field(default_factory=lambda: os.environ.get("MODEL_NAME", ""))
    host: str = field(default_factory=lambda: os.environ.get("HOST", "127.0.0.1"))
    port: int = field(default_factory=lambda: _int("PORT", 8080))
    device: str = field(default_factory=lambda: os.environ.get("DEVICE", ""))  # "" = cuda if present
    dtype: str = field(default_factory=lambda: os.environ.get("DTYPE", ""))  # "" = bf16 on GPU, fp32 on CPU
    admin_token: str = field(default_factory=lambda: os.environ.get("ADMIN_TOKEN", ""))
    # A handover loads a second model beside the serving one: it needs the weights once more (unless a
    # holder keeps them), its KV cache and this (activations, CUDA context) free on the device. With
    # room for a smaller cache only it starts with fewer slots and grows back once the old one is gone;
    # with room for none the restart is done the drained way.
    handover_reserve_bytes: int = field(default_factory=lambda: _int("HANDOVER_RESERVE_BYTES", 2 * 2**30))
    # The most of the free memory a handover's second process may count on (0: all of it): on a device
    # shared with other work, what it must leave them.
    handover_max_bytes: int = field(default_factory=lambda: _int("HANDOVER_MAX_BYTES", 0))
    # Under inference.supervisor: a standby model process, loaded and warmed up beside the serving one,
    # takes the next handover at once (serving in a fraction of a second instead of its load's
    # seconds). It holds its own KV cache, CUDA context and graphs all the time (unless a holder keeps
    # them, the weights too): the memory a handover needs for seconds, kept. It counts
    # HANDOVER_RESERVE_BYTES twice: its own, and the serving process's, left free for its peaks.
    handover_standby: bool = field(default_factory=lambda: _bool("HANDOVER_STANDBY"))
    drain_timeout: float = field(default_factory=lambda: _float("DRAIN_TIMEOUT", 30.0))
    request_timeout: float = field(default_factory=lambda: _float("REQUEST_TIMEOUT", 120.0))
    max_concurrency: int = field(default_factory=lambda: _int("MAX_CONCURRENCY", 4))
    max_queue: int = field(default_factory=lambda: _int("MAX_QUEUE", 16))
    # Threads that parse bodies, decode images and tokenise, apart from the pool /health uses.
    preprocess_workers: int = field(default_factory=lambda: _int("PREPROCESS_WORKERS", 2))
    max_body_bytes: int = field(default_factory=lambda: _int("MAX_BODY_BYTES", 20 * 1024 * 1024))
    max_image_bytes: int = field(default_factory=lambda: _int("MAX_IMAGE_BYTES", 10 * 1024 * 1024))
    max_image_pixels: int = field(default_factory=lambda: _int("MAX_IMAGE_PIXELS", 4096 * 4096))
    max_images: int = field(default_factory=lambda: _int("MAX_IMAGES", 4))
    max_prompt_tokens: int = field(default_factory=lambda: _int("MAX_PROMPT_TOKENS", 8192))
    max_new_tokens: int = field(default_factory=lambda: _int("MAX_NEW_TOKENS", 2048))
    rate_limit_per_minute: int = field(default_factory=lambda: _int("RATE_LIMIT_PER_MINUTE", 0))  # 0 = off
    allow_remote_images: bool = field(default_factory=lambda: _bool("ALLOW_REMOTE_IMAGES"))
    log_file: str = field(default_factory=lambda: os.environ.get("LOG_FILE", ""))
    log_max_bytes: int = field(default_factory=lambda: _int("LOG_MAX_BYTES", 50 * 1024 * 1024))
    log_backups: int = field(default_factory=lambda: _int("LOG_BACKUPS", 5))
    log_rotate_when: str = field(default_factory=lambda: os.environ.get("LOG_ROTATE_WHEN", ""))  # e.g. "midnight"
    log_compress: bool = field(default_factory=lambda: _bool("LOG_COMPRESS", True))  # the rotated files gzipped
    stats_window_seconds: float = field(default_factory=lambda: _float("STATS_WINDOW_SECONDS", 300.0))
    # Test-only fault injection (POST /debug/faults); never on unless set.
    debug_faults: bool = field(default_factory=lambda: _bool("DEBUG_FAULTS"))
    warmup: bool = field(default_factory=lambda: _bool("WARMUP", True))
    # "batched" (default): all requests decode together over a slot KV cache (MAX_CONCURRENCY slots of
    # MAX_CONTEXT tokens), CUDA-graphed on a GPU. "generate": transformers' generate per request.
    decoder: str = field(default_factory=lambda: os.environ.get("DECODER", "batched"))
    max_context: int = field(default_factory=lambda: _int("MAX_CONTEXT", 0))  # 0 = prompt + new token limits
    cuda_graphs: bool = field(default_factory=lambda: _bool("CUDA_GRAPHS", True))
    # The decoding step's non-matrix work: "auto" (Triton kernels on a GPU, inference/ops/kernels.py;
    # PyTorch operations on a CPU), "triton", "eager", or "compile" (torch.compile: seconds more at
    # every start, docs/BENCHMARKS.md).
    step_kernels: str = field(default_factory=lambda: os.environ.get("STEP_KERNELS", "auto"))
    # "prefetch" (default): safetensors shards are read onto the device while the server imports
    # transformers (inference/weights.py). "transformers": from_pretrained reads them, after the import.
    weight_loader: str = field(default_factory=lambda: os.environ.get("WEIGHT_LOADER", "prefetch"))
    # Under inference.supervisor: "auto" (default) keeps the weights in one holder process on a GPU,
    # mapped by every model process (inference/holder.py); "on" on any device (a CPU holds them in
    # /dev/shm, which must have room); "off": each model process reads them itself.
    hold_weights: str = field(default_factory=lambda: os.environ.get("HOLD_WEIGHTS", "auto"))
    # For DECODER=generate: "dynamic" (default) or "static" (compiled decoding, one generation at a time).
    kv_cache: str = field(default_factory=lambda: os.environ.get("KV_CACHE", "dynamic"))

    @property
    def context(self) -> int:
        return self.max_context or self.max_prompt_tokens + self.max_new_tokens
