"""WebSockets: only logged-in users connect; operation events reach the instance's watchers."""

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator

from console.asgi import application
from console.instances.roles import VIEWER
from console.operations.request import request_operation
from tests.factories import process_instance, user


async def _connect(path: str, cookie: str | None):
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect()
    return communicator, connected, code


def _session_cookie(account) -> str:
    from django.test import Client

    client = Client()
    client.force_login(account)
    return f"sessionid={client.cookies['sessionid'].value}"


@pytest.mark.django_db(transaction=True)
def test_anonymous_websocket_is_refused():
    async def scenario():
        communicator, connected, code = await _connect("/ws/dashboard/", None)
        await communicator.disconnect()
        return connected, code

    connected, code = async_to_sync(scenario)()
    assert not connected and code == 4401


@pytest.mark.django_db(transaction=True)
def test_forged_origin_is_refused():
    async def scenario():
        communicator = WebsocketCommunicator(
            application, "/ws/dashboard/", headers=[(b"origin", b"http://evil.example"), (b"host", b"127.0.0.1")]
        )
        connected, _ = await communicator.connect()
        await communicator.disconnect()
        return connected

    assert async_to_sync(scenario)() is False


@pytest.mark.django_db(transaction=True)
def test_watcher_receives_the_operation_as_it_is_requested():
    instance = process_instance("live-a", command=["true"])
    cookie = _session_cookie(user("watcher", VIEWER))

    async def scenario():
        communicator, connected, _ = await _connect("/ws/instances/live-a/", cookie)
        assert connected
        operation, _ = await sync_to_async(request_operation)(instance, "restart", reason="live")
        event = await asyncio.wait_for(communicator.receive_json_from(), 5)
        await communicator.disconnect()
        return operation, event

    operation, event = async_to_sync(scenario)()
    assert event["type"] == "operation.updated"
    assert event["instance"] == "live-a"
    assert event["data"]["id"] == operation.pk and event["data"]["state"] == "queued"


@pytest.mark.django_db(transaction=True)
def test_what_a_client_sends_is_ignored_and_the_socket_keeps_delivering():
    """Before, the socket decoded every frame as JSON: a '{' or a binary frame raised in the consumer
    (a traceback in the log for each, the socket closed with a server error)."""
    instance = process_instance("live-b", command=["true"])
    cookie = _session_cookie(user("sender", VIEWER))

    async def scenario():
        communicator, connected, _ = await _connect("/ws/instances/live-b/", cookie)
        assert connected
        for frame in ({"text_data": "{"}, {"bytes_data": b"\x00\xff"}, {"text_data": "[" * 100_000}):
            await communicator.send_to(**frame)
        assert await communicator.receive_nothing(0.5)
        await sync_to_async(request_operation)(instance, "restart", reason="still live")
        event = await asyncio.wait_for(communicator.receive_json_from(), 5)
        await communicator.disconnect()
        return event

    assert async_to_sync(scenario)()["data"]["reason"] == "still live"
