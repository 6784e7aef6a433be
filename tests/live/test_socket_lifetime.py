"""A live socket lives only as long as what opened it: logout, deactivation, a lost role and an
expired session close it; an account without a role cannot open one."""

import asyncio

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client

from console.asgi import application
from tests.factories import user

HEADERS = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]


def signed_in(account) -> Client:
    client = Client()
    client.force_login(account)
    return client


def open_socket(client: Client) -> WebsocketCommunicator:
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    return WebsocketCommunicator(application, "/ws/dashboard/", headers=[*HEADERS, (b"cookie", cookie)])


def closed_with(client: Client, change) -> int | None:
    """Open a socket as the client's user, make the change, return the code the socket was closed with."""

    async def scenario():
        communicator = open_socket(client)
        connected, _ = await communicator.connect()
        assert connected
        await sync_to_async(change)()
        try:
            message = await asyncio.wait_for(communicator.receive_output(), 5)
        finally:
            await communicator.disconnect()
        return message.get("code") if message["type"] == "websocket.close" else message

    return async_to_sync(scenario)()


@pytest.mark.django_db(transaction=True)
def test_logging_out_closes_the_user_s_sockets():
    client = signed_in(user("leaver", "viewer"))
    assert closed_with(client, lambda: client.post("/accounts/logout/")) == 4401


@pytest.mark.django_db(transaction=True)
def test_losing_the_role_closes_the_sockets():
    account = user("demoted", "viewer")
    client = signed_in(account)
    assert closed_with(client, lambda: account.groups.remove(Group.objects.get(name="viewer"))) == 4403


@pytest.mark.django_db(transaction=True)
def test_deactivation_closes_the_sockets():
    account = user("suspended", "viewer")
    client = signed_in(account)

    def deactivate():
        account.is_active = False
        account.save()

    assert closed_with(client, deactivate) == 4403


@pytest.mark.django_db(transaction=True)
def test_a_session_that_ends_without_a_signal_is_caught_by_the_periodic_check(settings):
    settings.CONSOLE_WS_RECHECK_SECONDS = 0.2
    client = signed_in(user("expiring", "viewer"))
    assert closed_with(client, lambda: Session.objects.all().delete()) == 4401


@pytest.mark.django_db(transaction=True)
def test_an_account_without_a_role_cannot_open_a_socket():
    client = signed_in(user("nobody"))

    async def scenario():
        communicator = open_socket(client)
        connected, code = await communicator.connect()
        await communicator.disconnect()
        return connected, code

    assert async_to_sync(scenario)() == (False, 4403)
