"""A streamed answer's text, token by token, at a cost that does not grow with the answer.

Decoding the whole answer again at every token (what the stream did) costs O(n) per token, O(n^2)
per answer, on the event loop's thread, where it also holds the interpreter from the decoding
thread: at 16 streams that is time between steps. Here each token decodes a short window: the
text of the ids from `prefix` on, against the text of those already sent from `prefix`; what the
window adds is new. A window ending in an incomplete character ("\\ufffd") waits for the next token,
and tokenizers that merge a token with its neighbour (a leading space) see it whole, so the chunks
join to exactly what decoding the whole answer gives.
"""

from collections.abc import Callable


class TextStream:
    def __init__(self, decode: Callable[[list[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.prefix = 0  # where the window starts
        self.read = 0  # ids up to here have been sent as text

    def add(self, ids: list[int]) -> str:
        """The text these ids add to the answer ("" while a character is incomplete)."""
        self.ids.extend(ids)
        before = self.decode(self.ids[self.prefix : self.read])
        now = self.decode(self.ids[self.prefix :])
        if len(now) <= len(before) or now.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before) :]
