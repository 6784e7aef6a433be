"""The random checkpoint's tokenizer: every id the model can sample decodes to text."""

from inference.smoke_model import CORPUS, SPECIAL_TOKENS, build_tokenizer


def test_a_covering_tokenizer_decodes_every_id_and_encodes_as_the_trained_one():
    trained = build_tokenizer(600)
    covering = build_tokenizer(600, cover=5000)
    assert len(trained) < 1000 and len(covering) == 5000
    for token_id in (len(trained), 2500, 4999):
        assert covering.decode([token_id]).strip(), token_id  # a word, not nothing
    assert covering(CORPUS)["input_ids"] == trained(CORPUS)["input_ids"]
    for special in SPECIAL_TOKENS:
        assert covering.convert_tokens_to_ids(special) == trained.convert_tokens_to_ids(special)
    assert covering.decode(covering("a restart restores them")["input_ids"]) == "a restart restores them"
