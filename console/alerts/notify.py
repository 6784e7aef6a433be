"""Send a notification to every channel that wants it; delivery is retried by a task."""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from console import deadlines
from console.alerts.models import AlertChannel, AlertDelivery
from console.instances.holds import active_hold

log = logging.getLogger(__name__)

FAILED_OPERATION, WATCHDOG, NEEDS_ATTENTION = "operation_failed", "watchdog", "needs_attention"
SCHEDULE_REPORT = "schedule_report"
EVENT_FLAGS = {
    FAILED_OPERATION: "on_failed_operation",
    WATCHDOG: "on_watchdog",
    NEEDS_ATTENTION: "on_needs_attention",
    SCHEDULE_REPORT: "on_schedule_report",
}
MAX_ATTEMPTS = 5


def notify(event: str, instance, title: str, text: str, details: dict | None = None, among=None) -> list[AlertDelivery]:
    """Record one delivery per interested channel and queue it (after the current transaction commits).
    While the instance is on hold, each is recorded silenced, with its hold, and not sent. Without an
    instance (a report on several: `among`), a channel limited to some instances gets it if one of them
    is among those."""
    channels = AlertChannel.objects.filter(enabled=True, **{EVENT_FLAGS[event]: True}).filter(
        Q(instances=None) | (Q(instances=instance) if instance is not None else Q(instances__in=among or []))
    )
    hold = active_hold(instance) if instance is not None else None
    deliveries = [
        AlertDelivery.objects.create(
            channel=channel,
            event=event,
            instance_name=instance.name if instance is not None else "",
            title=title[:200],
            text=text,
            details=details or {},
            state=AlertDelivery.State.SILENCED if hold else AlertDelivery.State.PENDING,
            last_error=f"not sent: {hold.said()}" if hold else "",
        )
        for channel in channels.distinct()
    ]
    for delivery in deliveries:
        if delivery.state == AlertDelivery.State.PENDING:
            transaction.on_commit(lambda pk=delivery.pk: _enqueue(pk))
    return deliveries


def _enqueue(delivery_id: int) -> None:
    from console.alerts.tasks import deliver_alert

    deliver_alert.apply_async(args=[delivery_id])


def payload(delivery: AlertDelivery) -> dict:
    """The body for the channel's format. An alert's text carries what a model server wrote (its error,
    its log's tail) and what operators typed (a hold's reason): never markup that pings a whole chat.
    Slack reads `<!channel>`, `<@U…>` and links between < and > in the generic body's text, escaped
    as Slack says (&amp; &lt; &gt;, shown as typed); Feishu reads `<at user_id="all">` in a text
    message, so its < is shown as a full-width ＜. DingTalk mentions only whom the body's `at` names."""
    message = f"[Instance Console] {delivery.title}\n{delivery.text}"
    fmt = delivery.channel.format
    if fmt == AlertChannel.Format.FEISHU:
        return {"msg_type": "text", "content": {"text": message.replace("<", "\uff1c")}}
    if fmt == AlertChannel.Format.DINGTALK:
        return {"msgtype": "text", "text": {"content": message}}
    return {
        "text": message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
        "event": delivery.event,
        "instance": delivery.instance_name,
        "title": delivery.title,
        "details": delivery.details,
        "at": delivery.created.isoformat(),
    }


def attempt(delivery: AlertDelivery) -> bool:
    """One try; records the outcome. True when delivered."""
    delivery.attempts += 1
    channel = delivery.channel
    try:
        if channel.kind == AlertChannel.Kind.WEBHOOK:
            with deadlines.client(environment_proxies=True) as http:  # 10 s for the whole exchange
                response = http.post(channel.url, json=payload(delivery), timeout=10)
            if response.status_code >= 300:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        else:
            recipients = [a.strip() for a in channel.emails.split(",") if a.strip()]
            send_mail(
                f"[Instance Console] {delivery.title}",
                delivery.text,
                settings.DEFAULT_FROM_EMAIL,
                recipients,
            )
    except Exception as exc:  # any failure is recorded and retried; never lost silently
        delivery.last_error = str(exc)[:1000] or exc.__class__.__name__
        delivery.state = AlertDelivery.State.FAILED if delivery.attempts >= MAX_ATTEMPTS else delivery.state
        delivery.save(update_fields=["attempts", "last_error", "state"])
        log.warning("alert %s via %s failed (attempt %d): %s", delivery.pk, channel, delivery.attempts, exc)
        return False
    delivery.state, delivery.sent, delivery.last_error = AlertDelivery.State.SENT, timezone.now(), ""
    delivery.save(update_fields=["attempts", "state", "sent", "last_error"])
    return True
