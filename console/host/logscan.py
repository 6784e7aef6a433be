"""Log lines made safe to show, and the error signatures the checklist looks for."""

import re
from collections import Counter

from console import untrusted

MAX_LINE_CHARS = 4000
# Colour and cursor escapes; other control characters are replaced below.
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

# The log-tail row of the checklist: OOM, timeouts, CUDA errors (plus tracebacks).
SIGNATURES = {
    "cuda_oom": re.compile(r"CUDA out of memory|OutOfMemoryError|CUBLAS_STATUS_ALLOC_FAILED", re.I),
    "cuda_error": re.compile(r"CUDA error|cudaError|device-side assert|NCCL error|Xid", re.I),
    "timeout": re.compile(r"\btimed out\b|\bTimeoutError\b|\bReadTimeout\b|deadline exceeded", re.I),
    "traceback": re.compile(r"Traceback \(most recent call last\)"),
}
LEVELS = ("critical", "error", "warning", "info", "debug")
_LEVEL_WORD = re.compile(r"\b(CRITICAL|FATAL|ERROR|WARNING|WARN|INFO|DEBUG)\b")


def clean(raw: bytes | str) -> str:
    """One line for display: bytes decoded with replacement, escapes stripped, length capped.

    A line the reader already cut (host.process.CutLine) says how long it was in truth."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    text = text.rstrip("\r\n")
    if "\r" in text:  # a progress bar redrawn in place: what a terminal would show last
        text = text.rsplit("\r", 1)[1]
    text = CONTROL.sub("\ufffd", ANSI.sub("", text))
    length = getattr(raw, "length", None)
    if length is not None:
        shown = text[:MAX_LINE_CHARS]
        more = length - len(shown.encode("utf-8", errors="replace"))
        return f"{shown}… [{'more than ' if not raw.complete else ''}{more:,} more bytes]"
    if len(text) > MAX_LINE_CHARS:
        text = f"{text[:MAX_LINE_CHARS]}… [{len(text) - MAX_LINE_CHARS:,} more characters]"
    return text


def level(line: str) -> str:
    """The line's level: from a JSON log's "level" field, else from a level word, else info."""
    if line.startswith("{"):
        try:
            value = untrusted.loads(line).get("level")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value.lower() in LEVELS:
            return value.lower()
    match = _LEVEL_WORD.search(line[:200])
    if match:
        word = match.group(1).lower()
        return {"fatal": "critical", "warn": "warning"}.get(word, word)
    if line.startswith("Traceback"):
        return "error"
    return "info"


STRUCTURED_KEYS = {"ts", "time", "timestamp", "level", "levelname", "logger", "name", "msg", "message", "request_id"}


def structured(line: str) -> dict | None:
    """A JSON log line as the log panel's columns: time, logger, message, request id and the other
    fields as key=value; None for a plain line."""
    entry = _structured(line)
    if entry is None:
        return None
    message = entry.get("msg", entry.get("message"))
    if message is None:
        return None
    extra = " ".join(f"{key}={value}" for key, value in entry.items() if key not in STRUCTURED_KEYS and key != "exc")
    return {
        "time": str(entry.get("ts") or entry.get("time") or entry.get("timestamp") or ""),
        "logger": str(entry.get("logger") or entry.get("name") or ""),
        "message": str(message),
        "request_id": str(entry.get("request_id") or ""),
        "extra": extra[:1000],
        "exc": str(entry.get("exc") or "")[:MAX_LINE_CHARS],
    }


def _structured(line: str) -> dict | None:
    if not line.startswith("{"):
        return None
    try:
        entry = untrusted.loads(line)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def signatures(lines: list[str]) -> Counter:
    """The checklist's signatures in the lines. A JSON line (our server's log) is read by its
    fields: only what the server itself says at warning level or above (its message, exception and
    error) and a 504 status count, so text a client sent (a prompt, a header) can never pass for a
    CUDA error. Plain lines (a traceback on stderr, another engine) are matched as they are."""
    counts: Counter = Counter()
    for line in lines:
        entry = _structured(line)
        if entry is None:
            text = line
        else:
            if entry.get("status") == 504:
                counts["timeout"] += 1
            if str(entry.get("level", "")).lower() not in ("warning", "error", "critical"):
                continue
            text = " ".join(str(entry.get(key) or "") for key in ("msg", "exc", "error"))
        for name, pattern in SIGNATURES.items():
            if pattern.search(text):
                counts[name] += 1
    return counts
