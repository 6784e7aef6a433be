"""Alerts reach a real webhook receiver (emails: test_email.py); failures are retried and visible."""

import time

import pytest

from console.alerts.models import AlertChannel, AlertDelivery
from console.alerts.notify import FAILED_OPERATION, WATCHDOG, attempt, notify, payload
from console.alerts.tasks import deliver_alert
from tests.conftest import WebhookReceiver, free_port
from tests.factories import process_instance


@pytest.fixture
def instance(db):
    return process_instance("alert-a", command=["true"])


def test_channels_get_the_events_they_asked_for_per_instance_or_globally(worker, webhook):
    """Through a real worker: notify() queues, the worker delivers."""
    instance = process_instance("alert-a", command=["true"])
    other = process_instance("alert-b", command=["true"])
    AlertChannel.objects.create(name="all", url=webhook.url)
    only_b = AlertChannel.objects.create(name="only-b", url=webhook.url)
    only_b.instances.add(other)
    AlertChannel.objects.create(name="no-watchdog", url=webhook.url, on_watchdog=False)
    sent = notify(WATCHDOG, instance, "alert-a: p95_limit", "p95 900 ms above 500 ms", {"p95_ms": 900})
    assert [d.channel.name for d in sent] == ["all"]
    deadline = time.monotonic() + 15
    while not webhook.received and time.monotonic() < deadline:
        time.sleep(0.1)
    assert webhook.received[0]["event"] == "watchdog" and webhook.received[0]["details"] == {"p95_ms": 900}
    assert webhook.received[0]["text"].startswith("[Instance Console] alert-a: p95_limit")
    # The worker records the delivery once the receiver has answered: a moment after it received it.
    while AlertDelivery.objects.get().state == "pending" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert AlertDelivery.objects.get().state == "sent"


def test_feishu_and_dingtalk_bodies(instance):
    for fmt, key in (("feishu", "msg_type"), ("dingtalk", "msgtype")):
        channel = AlertChannel.objects.create(name=fmt, url="http://127.0.0.1:9/x", format=fmt)
        delivery = AlertDelivery.objects.create(
            channel=channel, event="watchdog", instance_name="alert-a", title="t", text="x"
        )
        assert key in payload(delivery)


def test_what_a_model_server_wrote_never_pings_a_whole_chat(instance):
    """A failed operation's alert carries the server's log tail: a line that Slack or Feishu would read
    as a mention of everyone arrives as text."""
    tail = 'oops <!channel> <@U123> <https://evil.example|docs> & <at user_id="all">所有人</at>'
    bodies = {}
    for fmt in ("generic", "feishu"):
        channel = AlertChannel.objects.create(name=f"hostile-{fmt}", url="http://127.0.0.1:9/x", format=fmt)
        delivery = AlertDelivery.objects.create(
            channel=channel, event=FAILED_OPERATION, instance_name="alert-a", title="restart failed", text=tail
        )
        bodies[fmt] = payload(delivery)
    slack = bodies["generic"]["text"]
    assert "<" not in slack and ">" not in slack
    assert slack.endswith(
        "oops &lt;!channel&gt; &lt;@U123&gt; &lt;https://evil.example|docs&gt; &amp; "
        '&lt;at user_id="all"&gt;所有人&lt;/at&gt;'
    )
    feishu = bodies["feishu"]["content"]["text"]
    assert "<" not in feishu and '＜at user_id="all">所有人＜/at>' in feishu


def test_a_failing_receiver_is_retried_then_the_delivery_says_why(instance):
    receiver = WebhookReceiver(fail_first=2)
    try:
        channel = AlertChannel.objects.create(name="flaky", url=receiver.url)
        delivery = AlertDelivery.objects.create(
            channel=channel, event=FAILED_OPERATION, instance_name="alert-a", title="t", text="x"
        )
        assert not attempt(delivery) and delivery.last_error.startswith("HTTP 503")
        assert delivery.state == "pending" and delivery.attempts == 1
        assert not attempt(delivery)
        assert attempt(delivery) and delivery.state == "sent" and delivery.last_error == ""
        assert len(receiver.received) == 1
    finally:
        receiver.close()
    dead = AlertChannel.objects.create(name="dead", url="http://127.0.0.1:9/nothing-listens")
    lost = AlertDelivery.objects.create(
        channel=dead, event=FAILED_OPERATION, instance_name="alert-a", title="t", text="x"
    )
    for _ in range(5):
        attempt(lost)
    assert lost.state == "failed" and lost.attempts == 5 and lost.last_error


def test_the_task_retries_with_celery(instance, monkeypatch):
    channel = AlertChannel.objects.create(name="dead", url="http://127.0.0.1:9/nothing-listens")
    delivery = AlertDelivery.objects.create(
        channel=channel, event=FAILED_OPERATION, instance_name="alert-a", title="t", text="x"
    )
    from celery.exceptions import Retry

    with pytest.raises(Retry):
        deliver_alert.apply(args=[delivery.pk], throw=True)
    delivery.refresh_from_db()
    assert delivery.attempts == 1 and delivery.state == "pending"


def test_channel_validation(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="needs its URL"):
        AlertChannel(name="x", kind="webhook").full_clean()
    with pytest.raises(ValidationError, match="not an email address"):
        AlertChannel(name="y", kind="email", emails="sre@example.com, nope").full_clean()


def test_a_receiver_answering_a_byte_a_second_fails_the_attempt_within_its_timeout(instance):
    """Before, httpx's per-read timeout never came: the delivery held its worker thread for ever.
    (On this thread, which holds the test's database transaction; an alarm ends it if it hangs.)"""
    import signal
    import subprocess
    import sys

    from tests.host.conftest import PROGRAM, listening

    def hung(*_):
        raise AssertionError("the attempt had not ended after 60 s")

    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(PROGRAM), str(port), "body"])
    try:
        channel = AlertChannel.objects.create(name="slow", url=f"{listening(port)}/hook")
        delivery = AlertDelivery.objects.create(
            channel=channel, event=FAILED_OPERATION, instance_name="alert-a", title="t", text="x"
        )
        before = signal.signal(signal.SIGALRM, hung)
        signal.alarm(60)
        try:
            assert not attempt(delivery)
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, before)
        assert delivery.state == "pending" and delivery.attempts == 1
        assert delivery.last_error in ("timed out", "the whole exchange took longer than its timeout")
    finally:
        receiver.kill()
        receiver.wait()


def test_webhooks_still_go_through_the_proxy_the_environment_names(instance, monkeypatch):
    """As httpx.post() did: a site whose webhooks leave through a proxy keeps its alerts."""
    proxy = WebhookReceiver()  # records what it is sent: a proxy sees the request for the far URL
    try:
        for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url.removesuffix("/hook"))
        channel = AlertChannel.objects.create(name="far", url="http://alerts.example.invalid/hook")
        delivery = AlertDelivery.objects.create(
            channel=channel, event=FAILED_OPERATION, instance_name="alert-a", title="t", text="x"
        )
        assert attempt(delivery), delivery.last_error
        assert proxy.events() == [FAILED_OPERATION]
    finally:
        proxy.close()


def test_alerts_about_an_instance_on_hold_are_recorded_silenced_and_not_sent(
    instance, django_capture_on_commit_callbacks
):
    from console.operations.holds import place_hold

    AlertChannel.objects.create(name="hook", url="http://127.0.0.1:9/none")
    other = process_instance("alert-b", command=["true"])
    place_hold(instance, minutes=60, reason="driver upgrade")
    with django_capture_on_commit_callbacks() as queued:
        (silenced,) = notify(FAILED_OPERATION, instance, "Restart of alert-a failed", "x")
        (sent,) = notify(FAILED_OPERATION, other, "Restart of alert-b failed", "x")
    assert silenced.state == "silenced" and sent.state == "pending"
    assert silenced.last_error.startswith("not sent: on hold until ")
    assert silenced.last_error.endswith(" UTC by anonymous: driver upgrade")
    assert len(queued) == 1  # only the other instance's delivery is queued
    assert deliver_alert.apply(args=[silenced.pk]).get() is None  # a silenced delivery is never tried
    assert AlertDelivery.objects.get(pk=silenced.pk).attempts == 0
