"""The event vocabulary sent to browsers, and the one way to send it.

Every event is {"type": <one of EVENT_TYPES>, "instance": <name>, "data": {...}}
sent to the instance's group and to the dashboard group; a sample goes to its instance's group, and
to the dashboard within a batch of its host's round ("samples").
"""

import asyncio
import atexit
import concurrent.futures
import json
import logging
import os
import threading
import time
from typing import Any

from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

OPERATION_UPDATED = "operation.updated"  # data: operation summary with its steps
SAMPLE = "sample"  # data: one telemetry sample (to the instance's page)
SAMPLES = "samples"  # data: {"samples": [{"instance": name, "data": sample}, ...]} (to the dashboard)
LOG_LINES = "log.lines"  # data: {"lines": [...]}
TRIAL = "trial.update"  # data: one step of an operator's try of an instance (to that operator only)
HOLD = "instance.hold"  # data: the instance's hold (until, by, reason), or {"until": null} once it ends
EVENT_TYPES = {OPERATION_UPDATED, SAMPLE, SAMPLES, LOG_LINES, TRIAL, HOLD}

DASHBOARD_GROUP = "dashboard"

# The embedded mode's in-memory layer lives on the ASGI server's event loop;
# events from worker threads are handed to that loop rather than touching its
# queues from another thread.
_server_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def instance_group(instance_name: str) -> str:
    return f"instance.{instance_name}"


def attach_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    with _lock:
        _server_loop = loop


def publish(instance_name: str, event_type: str, data: dict[str, Any]) -> None:
    """Send one event to the browsers watching this instance. Never blocks on slow browsers."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    message = _event(event_type, instance_name, data)
    # Log lines are for the instance's page only; samples reach the dashboard in batches
    # (publish_samples); the dashboard gets the rest.
    groups = (
        (instance_group(instance_name),)
        if event_type in (LOG_LINES, SAMPLE)
        else (instance_group(instance_name), DASHBOARD_GROUP)
    )
    _send(groups, message, f"{event_type} for {instance_name}")


def publish_samples(samples: list[dict[str, Any]]) -> None:
    """Several instances' samples to the dashboard in one event: one message per open dashboard for
    a batch rather than per sample (at 100 instances and 50 dashboards, relaying one message per
    sample per dashboard was what the console spent its time on: docs/BENCHMARKS.md, scale)."""
    if samples:
        _send((DASHBOARD_GROUP,), _event(SAMPLES, "", {"samples": samples}), f"{len(samples)} samples")


def _event(event_type: str, instance_name: str, data: dict[str, Any]) -> dict:
    """The channel-layer message of an event: its JSON text for the browsers, encoded once here, not
    once per open page (at 500 instances and 50 dashboards the consumers' encoding of every batch
    was what the console spent its time on: docs/BENCHMARKS.md, scale)."""
    text = json.dumps({"type": event_type, "instance": instance_name, "data": data}, default=str)
    return {"type": "console.event", "text": text}


def user_group(user_id: int) -> str:
    return f"user.{user_id}"


def publish_to_user(user_id: int, instance_name: str, event_type: str, data: dict[str, Any]) -> None:
    """Send an event to one user's open pages only."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    message = _event(event_type, instance_name, data)
    _send((user_group(user_id),), message, f"{event_type} for user {user_id}")


def recheck_user(user_id: int) -> None:
    """Make every open socket of this user check its session and role again (logout, role change)."""
    _send((user_group(user_id),), {"type": "console.recheck"}, f"a recheck of user {user_id}")


def _send(groups, message: dict, what: str) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        if isinstance(layer, InMemoryChannelLayer):
            loop = _server_loop
            if loop is None or loop.is_closed():
                return  # no ASGI server in this process: nobody to tell
            for group in groups:
                asyncio.run_coroutine_threadsafe(layer.group_send(group, message), loop)
        else:
            _publisher().send(layer, groups, message, what)
    except Exception as exc:  # live updates are best effort; the database holds the truth
        warn_throttled(f"could not send {what}: {exc!r}")


class Publisher:
    """Sends this process's events to the Redis layer from one thread with one event loop, so one
    connection, in the order they were published; the caller does not wait.

    Each send used to bridge to async code on its own (async_to_sync): a new event loop and a new
    connection per event, 4–10 ms alone and 25–140 ms with a worker's 8 sampling threads doing it at
    once, on every sample's way to the browser (docs/BENCHMARKS.md, scale)."""

    FLUSH_SECONDS = 3  # at exit, what is still queued gets this long

    def __init__(self):
        self.pid = os.getpid()
        self.loop = asyncio.new_event_loop()
        self.pending: set = set()
        self.lock = threading.Lock()
        threading.Thread(target=self.loop.run_forever, name="live-events", daemon=True).start()
        atexit.register(self.flush)

    def send(self, layer, groups, message: dict, what: str) -> None:
        async def deliver():
            try:
                for group in groups:
                    await layer.group_send(group, message)
            except Exception as exc:
                warn_throttled(f"could not send {what}: {exc!r}")

        future = asyncio.run_coroutine_threadsafe(deliver(), self.loop)
        with self.lock:
            self.pending.add(future)
        future.add_done_callback(self._done)

    def _done(self, future) -> None:
        with self.lock:
            self.pending.discard(future)

    def flush(self, timeout: float = FLUSH_SECONDS) -> None:
        """Wait (a while) for what is queued: a command that publishes and exits still delivers."""
        with self.lock:
            pending = list(self.pending)
        if pending:
            concurrent.futures.wait(pending, timeout)


_publisher_instance: Publisher | None = None


def _publisher() -> Publisher:
    global _publisher_instance
    with _lock:
        if _publisher_instance is None or _publisher_instance.pid != os.getpid():  # none yet, or forked
            _publisher_instance = Publisher()
        return _publisher_instance


_last_warning = 0.0


def warn_throttled(message: str, every: float = 30.0) -> None:
    """One warning per interval: a broker outage must not flood the log with one line per event."""
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= every:
        _last_warning = now
        log.warning("%s (further failures are not logged for %.0f s)", message, every)
