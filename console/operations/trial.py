"""An operator tries an instance: one chat request sent by the instance's host worker (which can
reach it, where the console's web process may not), streamed back to that operator's page only,
with its time to first token, tokens per second and request id (to find its lines in the log)."""

import secrets
import time

from console.host.engines import server_for
from console.host.server import ServerError
from console.instances.models import Instance
from console.live.events import TRIAL, publish_to_user

MAX_PROMPT_CHARS = 4000
MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_TOKENS = 512
FLUSH_SECONDS = 0.1  # pieces of text are sent to the page at most this often


def new_trial_id() -> str:
    return "try-" + secrets.token_hex(6)


def messages(prompt: str, image_url: str | None) -> list[dict]:
    if not image_url:
        return [{"role": "user", "content": prompt}]
    return [
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": image_url}}, {"type": "text", "text": prompt}],
        }
    ]


def run(instance: Instance, user_id: int, trial_id: str, chat: list[dict], max_tokens: int) -> dict:
    """Send the request and stream its answer to the user's pages; returns the last event's data."""

    def tell(**data) -> dict:
        data = {"trial": trial_id, **data}
        publish_to_user(user_id, instance.name, TRIAL, data)
        return data

    request_id = trial_id
    with server_for(instance) as server:
        readiness = server.readiness()
        if not readiness.ready:
            return tell(
                state="failed", error=f"{instance.name} is not ready ({readiness.answer}); try again once it is"
            )
        tell(state="running", request_id=request_id)
        began = time.monotonic()
        first = None
        pieces, pending, flushed = 0, "", began
        try:
            for text in server.chat_stream(chat, max_tokens, request_id):
                now = time.monotonic()
                first = first if first is not None else now
                pieces += 1
                pending += text
                if now - flushed >= FLUSH_SECONDS:
                    tell(state="running", text=pending)
                    pending, flushed = "", now
        except ServerError as exc:
            return tell(state="failed", text=pending, error=str(exc), request_id=request_id)
        ended = time.monotonic()
        decode = ended - first if first is not None else 0.0
        return tell(
            state="done",
            text=pending,
            request_id=request_id,
            ttft_ms=round((first - began) * 1000, 1) if first is not None else None,
            seconds=round(ended - began, 2),
            pieces=pieces,
            per_second=round((pieces - 1) / decode, 1) if pieces > 1 and decode > 0 else None,
        )
