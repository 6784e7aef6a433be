from celery import shared_task

from console.alerts.models import AlertDelivery
from console.alerts.notify import MAX_ATTEMPTS, attempt


@shared_task(bind=True, acks_late=True, max_retries=MAX_ATTEMPTS)
def deliver_alert(self, delivery_id: int) -> str | None:
    delivery = AlertDelivery.objects.select_related("channel").filter(pk=delivery_id).first()
    if delivery is None or delivery.state != AlertDelivery.State.PENDING:
        return None
    if attempt(delivery):
        return "sent"
    if delivery.attempts < MAX_ATTEMPTS:
        raise self.retry(countdown=min(300, 2**delivery.attempts))
    return "failed"
