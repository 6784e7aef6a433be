"""Every bad input gets a clear JSON error and leaves the server as it was."""

import httpx
import pytest

from tests.inference.helpers import chat, image_url

BROKEN_PNG = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"  # header only


@pytest.mark.parametrize(
    "body, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        ({"messages": []}, 400, "invalid_messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, 400, "invalid_messages"),
        ({"messages": [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}]}, 400, "unsupported_content"),
        (chat(images=[BROKEN_PNG]), 400, "invalid_image"),
        (chat(images=["data:image/png;base64,!!!notbase64"]), 400, "invalid_image"),
        (chat(images=["data:text/plain;base64,aGVsbG8="]), 400, "invalid_image"),
        (chat(images=["http://127.0.0.1:1/cat.png"]), 400, "remote_images_disabled"),
        (chat(images=[image_url(64, 64)] * 3), 400, "too_many_images"),
        (chat(images=[image_url(1200, 1200)]), 413, "image_too_large"),
        # Decodes, but the model's processor refuses its sides' ratio (over 200): was a 500.
        (chat(images=[image_url(1, 400)]), 400, "invalid_image"),
        (chat(images=[image_url(300, 1)], stream=True), 400, "invalid_image"),
        (chat(max_tokens=0), 400, "invalid_parameter"),
        (chat(max_tokens=65), 400, "invalid_parameter"),
        (chat(max_tokens="ten"), 400, "invalid_parameter"),
        (chat(temperature=5), 400, "invalid_parameter"),
        (chat(stream="yes"), 400, "invalid_parameter"),
        (chat("word " * 2000), 400, "context_length_exceeded"),
        (b"[" * 100_000 + b"]" * 100_000, 400, "invalid_json"),  # nested too deeply for the parser
    ],
)
def test_bad_request_is_refused_with_its_reason(shared_server, body, status, code):
    kwargs = (
        {"content": body, "headers": {"content-type": "application/json"}}
        if isinstance(body, bytes)
        else {"json": body}
    )
    response = httpx.post(shared_server.url + "/v1/chat/completions", timeout=30, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    health = httpx.get(shared_server.url + "/health").json()
    assert health["in_flight"] == 0 and health["state"] == "ready"


def test_noisy_image_over_byte_limit(shared_server):
    import base64
    import os

    payload = base64.b64encode(os.urandom(300_000)).decode()
    response = httpx.post(
        shared_server.url + "/v1/chat/completions", json=chat(images=[f"data:image/png;base64,{payload}"])
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "image_too_large"


def test_oversized_body(shared_server):
    response = httpx.post(
        shared_server.url + "/v1/chat/completions",
        content=b"x" * 1_200_000,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


def test_wrong_content_type(shared_server):
    response = httpx.post(
        shared_server.url + "/v1/chat/completions", content=b"a=b", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415


def test_admin_endpoints_need_the_token(shared_server):
    assert httpx.post(shared_server.url + "/admin/drain").status_code == 401
    wrong = httpx.post(shared_server.url + "/admin/soft-reset", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert httpx.get(shared_server.url + "/health/ready").status_code == 200


@pytest.mark.parametrize("request_id", ["CUDA error: out of memory", "x" * 200, "id;rm -rf", "a b"])
def test_a_request_id_that_is_not_a_plain_token_is_refused(shared_server, request_id):
    response = httpx.post(
        shared_server.url + "/v1/chat/completions", json=chat(), headers={"X-Request-Id": request_id}, timeout=30
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request_id"
    assert request_id not in shared_server.log()


def test_a_plain_request_id_is_echoed(shared_server):
    response = httpx.post(
        shared_server.url + "/v1/chat/completions", json=chat(), headers={"X-Request-Id": "job-42.a_b:c"}, timeout=30
    )
    assert response.status_code == 200 and '"request_id": "job-42.a_b:c"' in shared_server.log()
