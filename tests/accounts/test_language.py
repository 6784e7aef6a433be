"""English and Simplified Chinese: by the browser, or the user's own choice on every device."""

import pytest
from django.test import Client

from console.accounts.models import Preference
from tests.factories import process_instance, user


@pytest.fixture
def viewer(db):
    process_instance("lang-a", command=["true"])
    return user("lang-viewer", role="viewer")


def login(client: Client) -> Client:
    client.login(username="lang-viewer", password="pw-for-tests-123")
    return client


def test_the_browser_language_is_used_until_the_user_chooses(viewer):
    page = login(Client(HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")).get("/").content.decode()
    assert "实例" in page and "最近操作" in page
    english = login(Client(HTTP_ACCEPT_LANGUAGE="en-US")).get("/").content.decode()
    assert "Last operation" in english


def test_a_chosen_language_follows_the_user_to_another_browser(viewer):
    first = login(Client(HTTP_ACCEPT_LANGUAGE="en-US"))
    response = first.post("/accounts/language/", {"language": "zh-hans", "next": "/instances/lang-a/"})
    assert response.status_code == 302 and response["Location"] == "/instances/lang-a/"
    assert Preference.objects.get(user=viewer).language == "zh-hans"
    other = login(Client(HTTP_ACCEPT_LANGUAGE="en-US"))  # no cookie: a different device
    page = other.get("/instances/lang-a/").content.decode()
    assert "运行检查清单" in page and "诊断" in page


def test_bad_language_and_foreign_redirects_are_refused(viewer):
    client = login(Client())
    assert client.post("/accounts/language/", {"language": "klingon"}).status_code == 400
    response = client.post("/accounts/language/", {"language": "en", "next": "https://evil.example/"})
    assert response["Location"] == "/"
