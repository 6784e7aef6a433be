"""JSON from those the console does not trust: model servers' answers, their log lines.

Python's parser raises RecursionError, not ValueError, for a document nested more deeply than its
recursion limit (about a thousand `[`): from a server or a log, that is one more way of not being
JSON, and a caller that catches ValueError must not be ended by it.
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
