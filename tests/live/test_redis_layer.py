"""The Redis channel layer as the console configures it, against the real Redis of make test."""

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from django.utils.module_loading import import_string

from console.live.events import instance_group
from console.settings import CHANNEL_LAYER_BACKEND, channel_layer_hosts
from tests.conftest import ROOT, redis_database


def test_a_socket_with_nothing_to_receive_waits_past_redis_read_timeout():
    layer = import_string(CHANNEL_LAYER_BACKEND)(hosts=channel_layer_hosts(redis_database(5)))

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


def test_a_process_that_publishes_and_exits_delivers_every_event_in_order(tmp_path):
    """Events leave through one publisher thread without the caller waiting: a command that
    publishes and exits at once still delivers them all, in the order it sent them."""
    redis_url = redis_database(6)
    layer = import_string(CHANNEL_LAYER_BACKEND)(hosts=channel_layer_hosts(redis_url))
    publish = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'console.settings'; django.setup()\n"
        "from console.live import events\n"
        "for n in range(200): events.publish('ordered', events.SAMPLE, {'n': n})\n"
    )
    env = {**os.environ, "REDIS_URL": redis_url, "CONSOLE_VAR_DIR": str(tmp_path)}
    env.pop("DATABASE_URL", None)

    async def main():
        channel = await layer.new_channel()
        await layer.group_add(instance_group("ordered"), channel)
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", publish], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        received = []
        while len(received) < 200:
            message = await asyncio.wait_for(layer.receive(channel), 10)
            received.append(json.loads(message["text"])["data"]["n"])
        await layer.flush()
        return received

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, main()).result() == list(range(200))
