"""The model engine: loads GLM-4V weights with `from_pretrained` and generates text.

torch and transformers are imported when the model loads, not at import
time, so the HTTP server binds and answers /health/live within a second.
"""

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference import assembly, bytecode, processors
from inference.decoders import BatchedDecoder, Decoder, GenerateDecoder, TokenSink
from inference.model_runner import STEP_KERNELS, step_pdl

log = logging.getLogger("inference.engine")


class PromptTooLong(Exception):
    pass


class ImageRefused(Exception):
    """An image the model's processor will not take (its sides' ratio over 200, say): the client's."""


@dataclass
class Prepared:
    inputs: dict
    prompt_tokens: int


class _WarmupSink(TokenSink):
    def __init__(self):
        self.finished = threading.Event()

    def tokens(self, ids: list[int]) -> None:
        pass

    def done(self, error: BaseException | None) -> None:
        self.finished.set()


KV_CACHES = ("dynamic", "static")
DECODERS = ("batched", "generate")
WEIGHT_LOADERS = ("prefetch", "transformers")


def model_class():
    """The model every model process builds (and whose skeleton the supervisor builds ahead)."""
    from transformers import Glm4vForConditionalGeneration

    return Glm4vForConditionalGeneration


def _start_cuda_libraries(device: str) -> None:
    """Touch what the first generation would otherwise initialise: context, cuBLAS, attention; and
    what Triton's first kernels look up (ops.prepare_triton: done already in a process the supervisor
    forked after its imports). Not cuDNN: with the Triton kernels the vision encoder runs no
    convolution (vision.py), so a handover's new process never starts it; the model's own encoder
    (the first process's check, or no Triton) starts it at the warm-up's image."""
    import torch

    from inference.ops import prepare_triton

    x = torch.ones((64, 64), device=device, dtype=torch.bfloat16)
    (x @ x).sum()
    q = torch.ones((1, 2, 4, 64), device=device, dtype=torch.bfloat16)
    torch.nn.functional.scaled_dot_product_attention(q, q, q).sum().item()
    prepare_triton()


def _outside_allocator(reserved: int) -> dict:
    """This process's GPU memory as the driver counts it (what nvidia-smi shows) and the part outside
    the caching allocator: CUDA context, library workspaces, graphs (about 0.8 GiB on an H200).
    Weights mapped from the holder are the holder's, not counted here. {} without NVML."""
    try:
        import pynvml

        pynvml.nvmlInit()
        pid, used = os.getpid(), 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if process.pid == pid and isinstance(process.usedGpuMemory, int):
                    used += process.usedGpuMemory
    except Exception:  # no NVML library or no permission: the allocator's figures only
        return {}
    return {"process_gpu_bytes": used, "outside_allocator_bytes": max(0, used - reserved)}


def dtype_for(device: str, requested: str = "") -> str:
    """The weights' dtype on `device`: DTYPE where set, else bfloat16 on a GPU and float32 on a CPU."""
    return requested or ("bfloat16" if device.startswith("cuda") else "float32")


class Engine:
    def __init__(
        self,
        model_path: str,
        device: str = "",
        dtype: str = "",
        kv_cache: str = "dynamic",
        *,
        decoder: str = "batched",
        slots: int = 4,
        context: int = 4096,
        cuda_graphs: bool = True,
        step_kernels: str = "auto",
        weight_loader: str = "prefetch",
        hold_weights: str = "off",
        weights_socket: str = "",
    ):
        for setting, value, choices in (
            ("KV_CACHE", kv_cache, KV_CACHES),
            ("DECODER", decoder, DECODERS),
            ("STEP_KERNELS", step_kernels, STEP_KERNELS),
            ("WEIGHT_LOADER", weight_loader, WEIGHT_LOADERS),
        ):
            if value not in choices:
                raise ValueError(f"{setting} must be one of {', '.join(choices)}, not {value!r}")
        step_pdl()
        # "prefetch" (weights.py): the safetensors shards are read onto the device on threads of
        # their own while transformers imports, then handed to from_pretrained. "transformers":
        # from_pretrained reads the files itself, after the import.
        self.weight_loader = weight_loader
        # Under the supervisor with a weight holder (inference/holder.py): the weights are mapped from
        # it instead of read; where they came from is in /health.
        self.hold_weights, self.weights_socket = hold_weights, weights_socket
        self.weights: dict = {"source": "files"}
        self.on_mapped: Callable[[float], None] | None = None  # told the seconds the mapping took
        # Called once the model is built, before the KV cache is sized (a handover's room check).
        self.before_kv_cache: Callable[[], None] | None = None
        # decoders.py: "batched" (the default) or "generate" (transformers' own, the reference).
        self.decoder = decoder
        self.slots, self.context, self.cuda_graphs, self.step_kernels = slots, context, cuda_graphs, step_kernels
        self.decoding: Decoder | None = None
        self.model_path = model_path
        self.requested_device = device
        self.requested_dtype = dtype
        self.kv_cache = kv_cache  # for the "generate" decoder: "static" compiles its decoding step
        self.model = None
        self.tokenizer = None
        self.image_processor = None
        self.device = "cpu"
        self.dtype = ""
        self.load_seconds = 0.0
        self.load_phases: dict[str, float] = {}

    @property
    def name(self) -> str:
        return Path(self.model_path.rstrip("/")).name or "model"

    def load(self) -> None:
        began = time.monotonic()
        phases = self.load_phases = {}
        importing = "transformers" not in sys.modules  # not inherited from the supervisor: imported here

        def phase(name: str, since: float) -> float:
            now = time.monotonic()
            phases[name] = round(now - since, 3)
            return now

        import torch

        self.device = self.requested_device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype_name = dtype_for(self.device, self.requested_dtype)
        self.dtype = dtype_name
        prefetch = self._prefetch()
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a progress bar is noise in JSON logs
        mark = phase("import", began)
        if importing:
            bytecode.warn_if_uncached(log, phases["import"])
        libraries = None
        if self.device.startswith("cuda"):
            # Attention never by cuDNN's: it builds a plan for every new shape, 60-73 ms on an H200, paid by
            # the first prompt of each length and image of each size (first token 134 -> 68 ms for a prompt,
            # 205 -> 80 ms for an image prompt, docs/BENCHMARKS.md); new sizes are this server's usual
            # traffic, and a process that replaced another starts with no plan. cuDNN's was measured faster
            # only on long prompts of a length seen before (10,223 tokens: 353 against 402 ms).
            torch.backends.cuda.enable_cudnn_sdp(False)
            # cuBLAS and attention start while the tokenizer and the model are built, after the
            # import: beside it (both load shared libraries) they slowed the import down on one machine
            # (docs/BENCHMARKS.md, start-up).
            libraries = threading.Thread(target=_start_cuda_libraries, args=(self.device,), name="cuda-init")
            libraries.start()

        # Few CPU threads: on a GPU the CPU work is small tensors (preprocessing), where a thread
        # team per core costs more in wake-ups than it saves; on a CPU it leaves cores to the host:
        # half of them. The smoke model on 2 cores served 160 requests with 9.4-10.1 s of CPU on two
        # threads (their team spins between operations) and 5.6-5.8 s on one, in the same wall time
        # (bench/cpu_threads_bench.py, docs/BENCHMARKS.md).
        torch.set_num_threads(max(1, min(4, torch.get_num_threads() // 2)))
        self.tokenizer, self.image_processor, inherited = processors.load(self.model_path)
        mark = phase("tokenizer_and_processor", mark)
        if inherited:
            log.info("tokenizer and image processor inherited from the supervisor")
        if prefetch is not None:
            model = self._from_source(model_class(), prefetch, getattr(torch, dtype_name), phases)
        else:
            model = self._from_files(model_class(), getattr(torch, dtype_name))
        model.eval()
        self.model = model
        if libraries is not None:
            libraries.join()
        mark = phase("weights", mark)
        config = model.config
        self.image_token_id = config.image_token_id
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        self.merge_length = config.vision_config.spatial_merge_size**2
        eos = model.generation_config.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
        if self.before_kv_cache is not None:
            self.before_kv_cache()
        if self.decoder == "batched":
            context = self.context = min(self.context, config.text_config.max_position_embeddings)
            self.decoding = BatchedDecoder(
                model, self.eos_ids, self.slots, context, self.cuda_graphs, self.step_kernels
            )
            phase("kv_cache", mark)
        else:
            self.decoding = GenerateDecoder(model, self.tokenizer, self.device, self.eos_ids, self.kv_cache)
        log.info("decoding", extra={"fields": self.decoding.stats()})
        self.load_seconds = time.monotonic() - began
        log.info(
            "model loaded",
            extra={"fields": {"device": self.device, "dtype": self.dtype, "seconds": round(self.load_seconds, 2)}},
        )

    def _from_files(self, model_class, dtype):
        """from_pretrained reading the checkpoint's files itself."""
        self.weights["built"] = "from_pretrained"
        return model_class.from_pretrained(self.model_path, dtype=dtype, **self._placement())

    def _placement(self) -> dict:
        """from_pretrained's placement: on a GPU the weights go straight to the device."""
        return {"device_map": self.device} if self.device != "cpu" else {}

    def _from_source(self, model_class, source, dtype, phases: dict):
        """The model over the holder's mapped weights or the prefetched ones; weights read from the
        files after all when the holder cannot give them."""
        from inference import holder

        if isinstance(source, holder.Mapped):
            try:
                model = self._from_prefetched(model_class, source, dtype)
            except holder.Unavailable as exc:
                log.warning("reading the weights myself", extra={"fields": {"reason": str(exc)}})
                self.weights = {"source": "files", "holder_error": str(exc)}
                source = self._prefetch(holder=False)
                if source is None:
                    return self._from_files(model_class, dtype)
            else:
                phases["weights_mapped"] = round(source.seconds, 3)  # on its thread, from the start
                if self.on_mapped is not None:
                    self.on_mapped(source.seconds)
                self.weights.update(source="holder", holder_pid=source.holder_pid, held_bytes=source.held_bytes)
                return model
        model = self._from_prefetched(model_class, source, dtype)
        phases["weights_read"] = round(source.seconds, 3)  # on its thread, from the start
        return model

    def _prefetch(self, holder: bool = True):
        """Start mapping the weights from the holder or reading them onto the device, or None where
        from_pretrained must read them (asked for, or a checkpoint that is not plain safetensors)."""
        from inference import holder as holders

        if holder and self.weights_socket and holders.wanted(self.hold_weights, self.device):
            return holders.Mapped(self.weights_socket, device=self.device)
        if self.weight_loader != "prefetch":
            return None
        from inference import weights

        try:
            return weights.Prefetch(self.model_path, self.device)
        except (weights.Unsupported, OSError, ValueError) as exc:
            log.info("weights are read by from_pretrained", extra={"fields": {"reason": str(exc)}})
            return None

    def _from_prefetched(self, model_class, prefetch, dtype):
        """The model over the prefetched state dict, with the config and generation config from the
        checkpoint directory as usual: its tensors taken as they are where they are the model's own
        (assembly.py), else through from_pretrained (the model's own key mapping, conversions, dtype)."""
        from transformers import AutoConfig, modeling_utils

        # Its skeleton inherited from the supervisor or built while the weights are still mapped or read
        # (their thread starts CUDA meanwhile).
        model, why, inherited = assembly.assemble(model_class, self.model_path, prefetch.result, dtype, self.device)
        state = prefetch.result()
        self.weights["built"] = "assembled" if model is not None else "from_pretrained"
        if model is not None:
            self.weights["skeleton"] = "inherited" if inherited else "built"
            state.clear()
            return self._with_generation_config(model)
        log.info("the model is built by from_pretrained", extra={"fields": {"reason": why}})
        # from_pretrained first reserves the model's size on the GPU so that reading files does not
        # allocate piece by piece; here the tensors are on the GPU already, and reserving their size
        # again could run a GPU that holds the model once out of memory.
        warmup = getattr(modeling_utils, "caching_allocator_warmup", None)
        if warmup is not None:
            modeling_utils.caching_allocator_warmup = lambda *args, **kwargs: None
        try:
            config = AutoConfig.from_pretrained(self.model_path)
            model = model_class.from_pretrained(None, config=config, state_dict=state, dtype=dtype, **self._placement())
        finally:
            if warmup is not None:
                modeling_utils.caching_allocator_warmup = warmup
        state.clear()
        return self._with_generation_config(model)

    def _with_generation_config(self, model):
        from transformers import GenerationConfig

        try:
            model.generation_config = GenerationConfig.from_pretrained(self.model_path)
        except OSError:  # no generation_config.json: the model config's defaults, as from_pretrained does
            pass
        return model

    def prompt_limit(self, max_prompt_tokens: int) -> int:
        """The longest prompt a request may have."""
        return self.decoding.prompt_limit(max_prompt_tokens)

    def prepare(self, messages: list[dict], images: list, max_prompt_tokens: int) -> Prepared:
        """Chat template, image placeholders expanded to the vision patch count; tensors stay on the CPU
        (the generation thread moves them, so only that thread issues GPU work)."""
        import torch

        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        pixel_inputs = {}
        if images:
            try:
                processed = self.image_processor(images=images, return_tensors="pt")
            except ValueError as exc:  # what the processor says of the images' shapes
                raise ImageRefused(f"the model's image processor refused the image: {exc}") from None
            grids = processed["image_grid_thw"]
            pieces = text.split(self.image_token)
            if len(pieces) - 1 != len(images):
                raise ValueError("the chat template placed a different number of image tokens than images given")
            expanded = pieces[0]
            for grid, piece in zip(grids, pieces[1:], strict=False):
                expanded += self.image_token * int(grid.prod() // self.merge_length) + piece
            text = expanded
            pixel_inputs = {
                "pixel_values": processed["pixel_values"].to(dtype=self.model.dtype),
                "image_grid_thw": grids,
            }
        input_ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        prompt_tokens = int(input_ids.shape[1])
        if prompt_tokens > max_prompt_tokens:
            raise PromptTooLong(f"the prompt is {prompt_tokens} tokens; the limit is {max_prompt_tokens}")
        inputs = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "mm_token_type_ids": (input_ids == self.image_token_id).to(torch.int32),
            **pixel_inputs,
        }
        return Prepared(inputs=inputs, prompt_tokens=prompt_tokens)

    def generate(
        self,
        prepared: Prepared,
        sink: TokenSink,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        should_stop: Callable[[], bool],
    ) -> None:
        """Generate on the decoder's thread(s), feeding `sink`; `should_stop` ends it early
        (disconnect, timeout, drain)."""
        self.decoding.submit(
            prepared.inputs,
            sink,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            should_stop=should_stop,
        )

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode([i for i in ids if i not in self.eos_ids], skip_special_tokens=True)

    def warmup(self) -> None:
        """One short generation with a small image so the first real request does not pay for lazy
        initialisation (vision kernels; with generate's static cache: compiling its decoding step)."""
        began = time.monotonic()
        self.decoding.before_warmup()
        self.warmup_generation()
        self.load_phases["warmup"] = round(time.monotonic() - began, 3)
        self.load_phases.update(self.decoding.after_warmup())

    def warmup_generation(self) -> None:
        """The warm-up's short generation with a small image, waited for."""
        from PIL import Image

        image = Image.new("RGB", (112, 112), (128, 128, 128))
        content = [{"type": "image"}, {"type": "text", "text": "hi"}]
        prepared = self.prepare([{"role": "user", "content": content}], [image], 1 << 30)
        sink = _WarmupSink()
        tokens = self.decoding.warmup_tokens
        self.generate(prepared, sink, max_new_tokens=tokens, temperature=0, top_p=1, should_stop=lambda: False)
        sink.finished.wait(600)

    def close(self) -> None:
        """Stop generating before the process ends (decoders.Decoder.close)."""
        if self.decoding is not None:
            self.decoding.close()

    def decoder_stats(self) -> dict:
        """How generation runs: the decoder, and for the batched one its slots in use and its KV cache."""
        return self.decoding.stats() if self.decoding is not None else {"decoder": self.decoder}

    def allocator_stats(self) -> dict:
        import torch

        if not self.device.startswith("cuda") or not torch.cuda.is_available():
            return {"device": self.device}
        stats = torch.cuda.memory_stats()
        allocated = stats.get("allocated_bytes.all.current", 0)
        reserved = stats.get("reserved_bytes.all.current", 0)
        free, total = torch.cuda.mem_get_info()
        return {
            "device": self.device,
            "allocated_bytes": allocated,
            "reserved_bytes": reserved,
            "max_allocated_bytes": stats.get("allocated_bytes.all.peak", 0),
            "max_reserved_bytes": stats.get("reserved_bytes.all.peak", 0),
            "inactive_split_bytes": stats.get("inactive_split_bytes.all.current", 0),
            "alloc_retries": stats.get("num_alloc_retries", 0),
            "ooms": stats.get("num_ooms", 0),
            # Reserved but not allocated: cached blocks the allocator holds.
            "fragmentation": round(1 - allocated / reserved, 4) if reserved else 0.0,
            "device_free_bytes": free,
            "device_total_bytes": total,
            **_outside_allocator(reserved),
        }

    def soft_reset(self) -> dict:
        """Collect garbage and hand cached allocator blocks back to the driver."""
        import gc

        import torch

        before = self.allocator_stats()
        gc.collect()
        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.ipc_collect()
            torch.cuda.reset_peak_memory_stats()
        after = self.allocator_stats()
        return {
            "reserved_before": before.get("reserved_bytes", 0),
            "reserved_after": after.get("reserved_bytes", 0),
            "allocated_before": before.get("allocated_bytes", 0),
            "allocated_after": after.get("allocated_bytes", 0),
        }
