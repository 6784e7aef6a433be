"""The Redis channel layer as the console configures it, against the real Redis of make test."""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.utils.module_loading import import_string

from console.settings import CHANNEL_LAYER_BACKEND, channel_layer_hosts


def test_a_socket_with_nothing_to_receive_waits_past_redis_read_timeout():
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.fail("TEST_REDIS_URL is not set: run through make test, which starts Redis")
    layer = import_string(CHANNEL_LAYER_BACKEND)(hosts=channel_layer_hosts(url.rsplit("/", 1)[0] + "/5"))

    async def main():
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(7)  # longer than redis-py's default 5 s read timeout and the layer's 5 s pop
        assert not waiting.done(), waiting.exception()  # still waiting: no "Timeout reading from" Redis
        await layer.send(channel, {"type": "console.event", "n": 1})
        assert (await asyncio.wait_for(waiting, 5))["n"] == 1
        await layer.flush()

    # On a thread of its own: the browser tests' Playwright keeps an event loop running on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, main()).result()
