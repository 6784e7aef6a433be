"""Request validation: every bad input becomes an ApiError with a clear message."""

import base64
import binascii
import io
import threading
import time
from collections import OrderedDict

from inference.settings import Settings


class ApiError(Exception):
    """An OpenAI-style error answer."""

    def __init__(self, status: int, message: str, code: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "code": self.code}}


def check_number(body: dict, name: str, default, low, high, kind=float):
    value = body.get(name, default)
    if value is None:
        return default
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (kind is int and not float(value).is_integer())
    ):
        raise ApiError(400, f"'{name}' must be a number", "invalid_parameter")
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}; got {value}", "invalid_parameter")
    return kind(value)


def parse_messages(body: dict, settings: Settings) -> tuple[list[dict], list]:
    """Messages for the chat template, and the decoded images in order."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", "invalid_messages")
    parsed, images = [], []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
            raise ApiError(400, f"messages[{index}] needs a role of system, user or assistant", "invalid_messages")
        content = message.get("content")
        if isinstance(content, str):
            parsed.append({"role": message["role"], "content": content})
            continue
        if not isinstance(content, list):
            raise ApiError(400, f"messages[{index}].content must be a string or a list of parts", "invalid_messages")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ApiError(400, "image_url parts need image_url.url", "invalid_image")
                if len(images) >= settings.max_images:
                    raise ApiError(400, f"at most {settings.max_images} images per request", "too_many_images")
                images.append(load_image(url, settings))
                parts.append({"type": "image"})
            else:
                raise ApiError(
                    400, f"unsupported content part type {kind!r}; use 'text' or 'image_url'", "unsupported_content"
                )
        parsed.append({"role": message["role"], "content": parts})
    return parsed, images


def load_image(url: str, settings: Settings):
    from PIL import Image

    if url.startswith("data:"):
        header, _, payload = url.partition(",")
        if ";base64" not in header or not header[5:].startswith("image/"):
            raise ApiError(400, "image data URLs must look like data:image/<type>;base64,...", "invalid_image")
        if len(payload) > settings.max_image_bytes * 4 // 3 + 4:
            raise ApiError(413, f"image larger than {settings.max_image_bytes} bytes", "image_too_large")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, "image data is not valid base64", "invalid_image") from None
    elif url.startswith(("http://", "https://")):
        if not settings.allow_remote_images:
            raise ApiError(
                400, "remote image URLs are disabled on this server; send a base64 data: URL", "remote_images_disabled"
            )
        data = fetch_image(url, settings)
    else:
        raise ApiError(400, "image_url must be a data: URL", "invalid_image")
    if len(data) > settings.max_image_bytes:
        raise ApiError(413, f"image larger than {settings.max_image_bytes} bytes", "image_too_large")
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # read from the header, before any pixel is decoded
        if width * height > settings.max_image_pixels:
            raise ApiError(
                413, f"image is {width}x{height}; at most {settings.max_image_pixels} pixels", "image_too_large"
            )
        image.load()
        return image.convert("RGB")
    except ApiError:
        raise
    except Exception:  # PIL raises many kinds for corrupt data
        raise ApiError(400, "the image could not be decoded", "invalid_image") from None


def fetch_image(url: str, settings: Settings) -> bytes:
    import httpx

    try:
        with httpx.stream("GET", url, timeout=10, follow_redirects=False) as response:
            response.raise_for_status()
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > settings.max_image_bytes:
                    raise ApiError(413, f"image larger than {settings.max_image_bytes} bytes", "image_too_large")
            return bytes(data)
    except httpx.HTTPError as exc:
        raise ApiError(400, f"could not fetch the image: {exc}", "invalid_image") from None


class RateLimiter:
    """Per-client token bucket; the client table is bounded (least recently seen dropped)."""

    def __init__(self, per_minute: int, max_clients: int = 10_000):
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.max_clients = max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.lock = threading.Lock()

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self.lock:
            tokens, last = self.buckets.pop(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.rate)
            allowed = tokens >= 1
            self.buckets[client] = (tokens - 1 if allowed else tokens, now)
            while len(self.buckets) > self.max_clients:
                self.buckets.popitem(last=False)
            return allowed
