"""A sentence written by a worker in English is read later in the reader's language."""

import json

from django.utils import translation

from console.sentences import Sentence, Sentences, gettext_noop, render, said


def test_a_sentence_is_its_english_text_and_renders_in_the_readers_language():
    sentence = Sentence(gettext_noop("drained: no request in flight after %(seconds).1f s"), seconds=2.25)
    assert sentence == "drained: no request in flight after 2.2 s"
    stored = json.loads(json.dumps(said(sentence)))  # what a JSON field keeps
    with translation.override("zh-hans"):
        assert render(stored) == "已排空：2.2 秒后没有处理中的请求"
    with translation.override("en"):
        assert render(stored) == "drained: no request in flight after 2.2 s"


def test_joined_and_nested_sentences_render_part_by_part():
    inner = Sentence(gettext_noop("not running; nothing to drain"))
    joined = Sentences([inner, Sentence(gettext_noop("server %(refused)s; stopping without drain"), refused=inner)])
    assert joined == "not running; nothing to drain; server not running; nothing to drain; stopping without drain"
    with translation.override("zh-hans"):
        assert render(said(joined)) == "未运行；无需排空; 服务器未运行；无需排空；不排空直接停止"


def test_stored_plain_text_and_broken_records_render_without_raising():
    assert render("an old plain detail") == "an old plain detail"
    assert render(None) == ""
    # parameters that fit neither the translation nor the English: the message id itself
    broken = {"id": "drained: no request in flight after %(seconds).1f s", "params": {"seconds": "soon"}}
    with translation.override("zh-hans"):
        assert render(broken) == broken["id"]
    with translation.override("en"):  # a page rendered earlier in this thread may have left another active
        assert render({"id": "server %(refused)s; stopping without drain", "params": {}}) == (
            "server %(refused)s; stopping without drain"
        )
