import base64
import io
import threading
import time

import httpx
from PIL import Image


def image_url(width: int = 336, height: int = 336, fmt: str = "PNG") -> str:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (180, 40, 40)).save(buf, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def chat(text: str = "hi", images: list[str] = (), **extra) -> dict:
    content = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}


def slow_down(server, delay_ms: int) -> None:
    """Every request of this server (started with DEBUG_FAULTS=1) takes delay_ms longer."""
    assert httpx.post(server.url + "/debug/faults", json={"delay_ms": delay_ms}).status_code == 200


def draining(url: str, timeout: float = 10) -> httpx.Response:
    """/health/ready once the server says it drains (it handles a signal within moments, not at once),
    or its last answer after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        ready = httpx.get(url + "/health/ready", timeout=5)
        if ready.json().get("state") == "draining" or time.monotonic() > deadline:
            return ready
        time.sleep(0.05)


def in_flight(url: str) -> int:
    return httpx.get(url + "/health", timeout=10).json()["in_flight"]


class InFlight:
    """One chat request on a thread of its own, in flight on the server (slowed down by delay_ms)
    when the constructor returns: the server counts it (a fixed wait fell short on a busy host)."""

    def __init__(self, server, delay_ms: int = 1500):
        slow_down(server, delay_ms)
        before = in_flight(server.url)
        self.response: httpx.Response | None = None
        self.thread = threading.Thread(target=self._send, args=(server.url,))
        self.thread.start()
        deadline = time.monotonic() + 30
        while in_flight(server.url) <= before and self.thread.is_alive():
            assert time.monotonic() < deadline, "the request was not taken in 30 s"
            time.sleep(0.05)

    def _send(self, url: str) -> None:
        self.response = httpx.post(url + "/v1/chat/completions", json=chat(), timeout=30)

    def result(self, timeout: float = 30) -> httpx.Response:
        self.thread.join(timeout)
        return self.response
