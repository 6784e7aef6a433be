"""A streamed answer's chunks join to exactly the whole answer's text, whatever the token boundaries."""

import random

import pytest
from transformers import AutoTokenizer

from inference.detokenize import TextStream


@pytest.fixture(scope="module")
def tokenizer(smoke_model):
    return AutoTokenizer.from_pretrained(smoke_model)


def _stream(tokenizer, ids: list[int], step: int = 1) -> list[str]:
    text = TextStream(lambda part: tokenizer.decode(part, skip_special_tokens=True))
    return [text.add(ids[i : i + step]) for i in range(0, len(ids), step)]


@pytest.mark.parametrize(
    "sample", ["The quick brown fox, twice:  the quick brown fox.", "图像里有一只狗 and a cat 🐱!"]
)
def test_chunks_join_to_the_whole_text(tokenizer, sample):
    ids = tokenizer.encode(sample, add_special_tokens=False)
    chunks = _stream(tokenizer, ids)
    assert "".join(chunks) == tokenizer.decode(ids, skip_special_tokens=True)
    assert all("\ufffd" not in chunk for chunk in chunks)  # never half a character
    assert sum(1 for chunk in chunks if chunk) > 3  # streamed as it comes, not at the end


def test_random_ids_join_to_the_whole_text(tokenizer):
    generator = random.Random(7)
    for _ in range(20):
        ids = [generator.randrange(len(tokenizer)) for _ in range(generator.randrange(1, 80))]
        for step in (1, 3):
            whole = tokenizer.decode(ids, skip_special_tokens=True)
            joined = "".join(_stream(tokenizer, ids, step))
            # An answer that ends inside a character keeps that character back, as the stream did.
            assert joined == whole or (whole.endswith("\ufffd") and whole.startswith(joined)), (ids, step)


def test_each_token_decodes_a_window_not_the_whole_answer():
    seen = []

    def decode(part):
        seen.append(len(part))
        return "x" * len(part)

    text = TextStream(decode)
    for token in range(500):
        text.add([token])
    assert max(seen) <= 2  # the window: the last token sent and the new one
