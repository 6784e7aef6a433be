"""The model around a state dict whose tensors are already its weights, without from_pretrained.

A model process gets its weights as a state dict already on the device: mapped from the weight holder
or read ahead (weights.py). from_pretrained then builds the model on the meta device and passes every
tensor through its general machinery (renaming patterns, conversions, dtype and device placement):
0.45-0.6 s of Python in a handover's new process on an H200 host, a third of its time to serving
(bench/new_process_profile.py, docs/BENCHMARKS.md). Where the state is exactly what the model holds,
names, shapes and dtype (a checkpoint in this transformers' own layout, as the server's checkpoints and
GLM-4.6V-Flash's are), nothing needs renaming or converting: the model is built with empty parameters
and takes the state's tensors as its own (cast where stored in another dtype, as from_pretrained
casts). Anything else (other names or shapes, tied embeddings, modules kept in float32) is left to
from_pretrained, and the log says why.

The skeleton itself (the modules with empty parameters, 0.3 s of Python in that process, a third of it
compiling regular expressions) depends on the config alone: the supervisor builds it once after its
imports (`build_ahead`, no CUDA involved) and every model process it forks takes its own copy with the
fork, unless config.json changed since.
"""

from collections.abc import Callable

from inference import holder

_ahead: dict[tuple, tuple[list, object]] = {}  # (model class, path) -> (config.json's stamp, skeleton)


def _config_stamp(model_path: str) -> list:
    return holder.stamp(model_path, lambda path: path.name == "config.json")


def build_ahead(model_class, model_path: str) -> bool:
    """Build the model's skeleton here for the processes forked from now on (again once config.json
    changed); whether one was built. The supervisor's, after its imports: on the meta device."""
    key = (model_class, model_path)
    before = _config_stamp(model_path)
    if key in _ahead and _ahead[key][0] == before:
        return False
    _ahead.pop(key, None)
    model, _ = _skeleton(model_class, model_path)
    if model is not None and _config_stamp(model_path) == before:  # not changed while being read
        _ahead[key] = (before, model)
    return True


def _take_ahead(model_class, model_path: str):
    """The skeleton built ahead for this checkpoint's config as it is now, or None; taken, so that a
    second model in the same process is built anew rather than filling one already filled."""
    held = _ahead.pop((model_class, model_path), None)
    return held[1] if held is not None and held[0] == _config_stamp(model_path) else None


def assemble(model_class, model_path: str, state: dict | Callable[[], dict], dtype, device: str):
    """(model, "", whether its skeleton was built ahead) with the state's tensors as its parameters, on
    `device`, in eval mode; or (None, why not, False). `state` may be a function that waits for it:
    called once the model's skeleton is at hand, so a model process builds it while its weights are
    still being mapped or read."""
    model = _take_ahead(model_class, model_path)
    inherited = model is not None
    if model is None:
        model, why = _skeleton(model_class, model_path)
        if model is None:
            return None, why, False
    model, why = _fill(model, state() if callable(state) else state, dtype, device)
    return model, why, inherited and model is not None


def _skeleton(model_class, model_path: str):
    """(the model of the checkpoint's config with empty parameters, "") or (None, why it cannot be
    assembled)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, initialization

    config = AutoConfig.from_pretrained(model_path)

    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if getattr(config, "tie_word_embeddings", False) or getattr(text, "tie_word_embeddings", False):
        return None, "the checkpoint ties its input and output embeddings"
    if getattr(model_class, "_keep_in_fp32_modules", None) or getattr(
        model_class, "_keep_in_fp32_modules_strict", None
    ):
        return None, "the model keeps some modules in float32"
    # Parameters on the meta device and never initialised (the state replaces them); buffers (rotary
    # frequencies) computed by the modules' own constructors, as from_pretrained's are.
    with init_empty_weights(include_buffers=False), initialization.no_init_weights():
        model = model_class(config)
    return model, ""


def _fill(model, state: dict, dtype, device: str):
    """(the `_skeleton` with the state's tensors as its parameters, on `device`, in eval mode, "") or
    (None, why not)."""
    import torch

    expected = model.state_dict()
    if set(expected) != set(state):
        missing, unexpected = len(set(expected) - set(state)), len(set(state) - set(expected))
        return None, f"the state's names are not the model's ({missing} missing, {unexpected} unexpected)"
    for name, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            return None, f"{name} is {tuple(tensor.shape)}, the model's {tuple(expected[name].shape)}"
        if tensor.device.type != torch.device(device).type:
            return None, f"{name} is on {tensor.device}, not on {device}"
        if not tensor.is_floating_point() and tensor.dtype != expected[name].dtype:
            return None, f"{name} is {tensor.dtype}, the model's {expected[name].dtype}"
    # Stored in another dtype than the server's (a bfloat16 checkpoint on a CPU): cast, a copy, as
    # from_pretrained casts; in the server's dtype (a GPU's weights), the state's own tensors.
    model.load_state_dict(
        {name: t.to(dtype) if t.is_floating_point() else t for name, t in state.items()}, strict=True, assign=True
    )
    target = torch.device(device)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.device != target:
                module._buffers[name] = buffer.to(target)
    for part in (model.config, *(getattr(model.config, key) for key in getattr(model.config, "sub_configs", {}))):
        part.dtype = dtype  # as from_pretrained records it, in the text and vision configs too
    if device != "cpu":
        model.hf_device_map = {"": device}  # as from_pretrained's device_map leaves it
    model.eval()
    return model, ""
