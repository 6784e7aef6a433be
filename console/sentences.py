"""Sentences for the operator that stay translatable once stored.

A step's detail or an operation's error is written by a worker, in no one's language, and read
later by operators in theirs. A Sentence is the English text (a str: it joins, compares and prints
as before) that also remembers its message id and parameters; what is stored is both, and a page
renders the message in its reader's language (`render`). Message ids are marked with gettext_noop
so that makemessages finds them.
"""

from django.utils.translation import (
    gettext,
    gettext_noop,  # noqa: F401  (re-exported: makemessages knows the name)
)


class Sentence(str):
    def __new__(cls, msgid: str, **params):
        text = super().__new__(
            cls, msgid % {k: str(v) if isinstance(v, Sentence) else v for k, v in params.items()} if params else msgid
        )
        text.msgid, text.params = msgid, params
        return text

    def said(self) -> dict:
        return {
            "id": self.msgid,
            "params": {k: said(v) if isinstance(v, str) else v for k, v in self.params.items()},
        }


class Sentences(str):
    """Sentences joined with "; " (one step that did several things)."""

    def __new__(cls, parts: list):
        text = super().__new__(cls, "; ".join(parts))
        text.parts = list(parts)
        return text

    def said(self) -> list:
        return [said(part) for part in self.parts]


def said(text: str) -> dict | list | str:
    """What to store beside the English text: the message ids and parameters, or the text itself."""
    return text.said() if isinstance(text, Sentence | Sentences) else str(text)


def render(stored) -> str:
    """A stored sentence in the active language (English for what was stored as plain text)."""
    if isinstance(stored, list):
        return "; ".join(render(part) for part in stored)
    if isinstance(stored, dict) and isinstance(stored.get("id"), str):
        params = {k: render(v) if isinstance(v, dict | list) else v for k, v in (stored.get("params") or {}).items()}
        for message in (gettext(stored["id"]), stored["id"]):
            try:
                return message % params if params else message
            except (KeyError, TypeError, ValueError):  # parameters that do not fit: try English, then the id
                continue
        return stored["id"]
    return str(stored) if stored is not None else ""
