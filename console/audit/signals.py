from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import post_save
from django.dispatch import receiver

from console.audit.record import record


@receiver(user_logged_in)
def logged_in(sender, request, user, **kwargs):
    record("login", request=request, user=user, outcome="signed in")


@receiver(user_logged_out)
def logged_out(sender, request, user, **kwargs):
    if user is not None:
        record("logout", request=request, user=user, outcome="signed out")


@receiver(user_login_failed)
def login_failed(sender, credentials, request=None, **kwargs):
    record(
        "login",
        request=request,
        actor=str(credentials.get("username", ""))[:150] or "anonymous",
        outcome="refused: wrong username or password",
    )


@receiver(post_save, sender=LogEntry)
def admin_change(sender, instance: LogEntry, created: bool, **kwargs):
    if created:
        verb = {ADDITION: "added", CHANGE: "changed", DELETION: "deleted"}.get(instance.action_flag, "changed")
        record(
            f"admin.{verb}",
            user=instance.user,
            target=f"{instance.content_type.model if instance.content_type else ''} {instance.object_repr}",
            outcome=instance.get_change_message()[:500] or verb,
        )
