"""inference.processors: the tokenizer and image processor a supervisor loads for its model processes."""

import os
import shutil

from inference import processors


def test_the_preloaded_ones_serve_while_the_files_they_came_from_are_unchanged(smoke_model, tmp_path, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    monkeypatch.setattr(processors, "_loaded", {})
    tokenizer, image_processor, inherited = processors.load(str(model))
    assert not inherited  # nothing preloaded: read here
    processors.preload(str(model))
    again = processors.load(str(model))
    assert again[2] and again[0] is processors._loaded[str(model)][1]
    assert again[0].encode("hello there") == tokenizer.encode("hello there")

    # New weights alone: the tokenizer is still the checkpoint's.
    weights = model / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert processors.load(str(model))[2]

    # A tokenizer file touched (a new checkpoint copied in): read again, not inherited.
    config = model / "tokenizer_config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))
    fresh = processors.load(str(model))
    assert not fresh[2] and fresh[0] is not again[0]
    # Refreshed (as the supervisor does before it forks): loaded again once, then held.
    assert processors.refresh(str(model)) and not processors.refresh(str(model))
    assert processors.load(str(model))[2]


def test_the_chat_template_is_compiled_by_the_preload(smoke_model, tmp_path, monkeypatch):
    from transformers.utils import chat_template_utils

    model = tmp_path / "model"
    shutil.copytree(smoke_model, model)
    monkeypatch.setattr(processors, "_loaded", {})
    chat_template_utils._compile_jinja_template.cache_clear()
    processors.preload(str(model))
    assert chat_template_utils._compile_jinja_template.cache_info().currsize == 1
    tokenizer = processors.load(str(model))[0]
    messages = [{"role": "user", "content": "what is in the picture?"}]
    tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    info = chat_template_utils._compile_jinja_template.cache_info()
    assert info.currsize == 1 and info.hits >= 1  # a process forked after the preload compiles nothing
