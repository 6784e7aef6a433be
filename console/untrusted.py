"""JSON from those the console does not trust: model servers' answers, their log lines.

Python's parser raises RecursionError, not ValueError, for a document nested more deeply than its
recursion limit (about a thousand `[`): from a server or a log, that is one more way of not being
JSON, and a caller that catches ValueError must not be ended by it. What is read from such a
document is read in the shape its reader expects: number, pid, text.
"""

import json


def loads(data: str | bytes):
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply to read") from None


def json_of(response):
    """An httpx response's body as JSON (ValueError when it is not, however deep)."""
    return loads(response.content)


def number(value) -> int | float | None:
    """A finite int or float (not a bool) of at most 2**63, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if abs(value) <= 2**63 else None  # False for NaN and the infinities too


def pid(value) -> int | None:
    """A process id (a positive int a kernel could give), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**31 else None


def text(value, most: int) -> str | None:
    """A string cut to `most` characters, else None."""
    return value[:most] if isinstance(value, str) else None
