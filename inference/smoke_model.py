"""Write a random-weight GLM-4V checkpoint that loads through `from_pretrained`.

    python -m inference.smoke_model DIR            # tiny: loads in seconds on a CPU
    python -m inference.smoke_model DIR --full     # real GLM-4.6V-Flash shape (~10.3B params)

No model hub is involved: the tokenizer is trained here on a small built-in
text, and the processor config mirrors the real one, so the server reads this
directory exactly as it reads real weights.
"""

import argparse
import json
from pathlib import Path

SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
    "<think>",
    "</think>",
    "<|pad|>",
]

# Jinja chat template in the shape of GLM-4.1V/4.6V's: text and image parts in user turns.
CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{%- for msg in messages %}"
    "{%- if msg.role == 'system' %}<|system|>\n{% elif msg.role == 'user' %}<|user|>\n"
    "{% elif msg.role == 'assistant' %}<|assistant|>\n{% endif %}"
    "{%- if msg.content is string %}{{ msg.content }}"
    "{%- else %}{%- for part in msg.content %}"
    "{%- if part.type == 'image' or 'image' in part or 'image_url' in part %}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{%- elif part.type == 'text' %}{{ part.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

CORPUS = """The quick brown fox jumps over the lazy dog. A vision language model reads images and text.
GPU memory fragmentation slows long running inference servers; a restart restores them.
Describe the picture. What is in this image? The image shows a cat sitting on a red chair.
视觉语言模型可以理解图像和文本。显存碎片化会导致服务变慢,重启服务可以恢复。请描述这张图片。
Numbers 0 1 2 3 4 5 6 7 8 9 10 100 1000. Punctuation: , . ; : ! ? ( ) [ ] { } " ' - _ / \\ @ # $ % ^ & * + = < > |
"""

# Heads of 64 (hidden 256 over 4 heads): vLLM's CPU attention takes head sizes 32 to 512 only, and
# one smoke checkpoint serves both engines. mrope_section sums to half the rotary dimension.
SMOKE_TEXT = {
    "hidden_size": 256,
    "intermediate_size": 512,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [8, 4, 4],
        "partial_rotary_factor": 0.5,
    },
}
SMOKE_VISION = {
    "depth": 2,
    "hidden_size": 32,
    "num_heads": 2,
    "intermediate_size": 64,
    "out_hidden_size": 256,
    "image_size": 336,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}
FULL_TEXT = {
    "hidden_size": 4096,
    "intermediate_size": 13696,
    "num_hidden_layers": 40,
    "num_attention_heads": 32,
    "num_key_value_heads": 2,
    "vocab_size": 151552,
    "max_position_embeddings": 65536,
    "rope_parameters": {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "mrope_section": [8, 12, 12],
        "partial_rotary_factor": 0.5,
    },
}
FULL_VISION = {
    "depth": 24,
    "hidden_size": 1536,
    "num_heads": 12,
    "intermediate_size": 13696,
    "out_hidden_size": 4096,
    "image_size": 336,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
}


def build_tokenizer(vocab_size: int, cover: int = 0):
    """A byte-level BPE tokenizer trained on CORPUS; with `cover`, padded with word tokens up to that
    many ids, so that every id a model of that vocabulary can sample decodes to text (a random
    full-size model samples from all 151,552; without them a streamed answer carried nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([CORPUS] * 4, trainer=trainer)
    if cover > tok.get_vocab_size():
        tok = _covering(tok, cover)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _covering(trained, size: int):
    """The trained tokenizer with ids up to `size`: the added ones are words (" w1234") no merge
    produces, so encoding is unchanged and each decodes to itself."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    state = json.loads(trained.to_str())
    vocab = dict(state["model"]["vocab"])
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
    for added in state["added_tokens"]:
        vocab[added["content"]] = added["id"]
    next_id = max(vocab.values()) + 1
    number = 0
    while next_id < size:
        word = f"\u0120w{number}"  # "Ġ": the byte-level form of a leading space
        number += 1
        if word not in vocab:
            vocab[word] = next_id
            next_id += 1
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def image_processor():
    """GLM-4V's image processor: its default (torchvision) form where torchvision is installed, else
    its PIL form, which transformers would fall back to anyway, with a warning at every start."""
    from transformers.utils import is_torchvision_available

    if is_torchvision_available():
        from transformers import Glm4vImageProcessor

        return Glm4vImageProcessor()
    from transformers import Glm4vImageProcessorPil  # naming the default form is what warns

    return Glm4vImageProcessorPil()


def write_checkpoint(path: Path, full: bool = False, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Write config, random weights (safetensors), tokenizer and processor config to `path`."""
    import torch
    from transformers import GenerationConfig, Glm4vConfig, Glm4vForConditionalGeneration

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    text = dict(FULL_TEXT if full else SMOKE_TEXT)
    tokenizer = build_tokenizer(600, cover=text["vocab_size"] if full else 0)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    if not full:
        text["vocab_size"] = len(tokenizer)
    config = Glm4vConfig(
        text_config=text,
        vision_config=dict(FULL_VISION if full else SMOKE_VISION),
        image_token_id=ids["<|image|>"],
        video_token_id=ids["<|video|>"],
        image_start_token_id=ids["<|begin_of_image|>"],
        image_end_token_id=ids["<|end_of_image|>"],
        video_start_token_id=ids["<|begin_of_video|>"],
        video_end_token_id=ids["<|end_of_video|>"],
    )
    config.text_config.eos_token_id = [ids["<|endoftext|>"], ids["<|user|>"], ids["<|observation|>"]]
    torch_dtype = getattr(torch, dtype)
    device = "cuda" if full and torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = Glm4vForConditionalGeneration(config).to(torch_dtype)
    model.generation_config = GenerationConfig(
        eos_token_id=config.text_config.eos_token_id, pad_token_id=ids["<|endoftext|>"], do_sample=False
    )
    model.save_pretrained(path, safe_serialization=True, max_shard_size="5GB")
    # Tokenizer and image processor are saved on their own: the server reads
    # them the same way from real checkpoints, without the video processor
    # (which would need torchvision).
    tokenizer.save_pretrained(path)
    image_processor().save_pretrained(path)
    (path / "smoke_model.json").write_text(json.dumps({"full": full, "seed": seed, "random_weights": True}))
    # Readable by the unprivileged user of the server image, as mounted weights are.
    path.chmod(0o755)
    for item in path.iterdir():
        item.chmod(0o644)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path)
    parser.add_argument("--full", action="store_true", help="real GLM-4.6V-Flash shape (about 19 GiB in bf16)")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    write_checkpoint(args.path, full=args.full, dtype=args.dtype)
    print(f"wrote {'full-size' if args.full else 'smoke'} GLM-4V checkpoint to {args.path}")


if __name__ == "__main__":
    main()
