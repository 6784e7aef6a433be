"""The one way to write to the audit trail."""

import logging

from console.audit.models import AuditEntry

log = logging.getLogger(__name__)


def client_address(request) -> str | None:
    """The client's address as the ASGI server saw it (behind a proxy: uvicorn --proxy-headers)."""
    return (request.META.get("REMOTE_ADDR") or None) if request is not None else None


def record(
    action: str,
    *,
    request=None,
    user=None,
    actor: str = "",
    target: str = "",
    reason: str = "",
    outcome: str = "",
    **detail,
) -> AuditEntry:
    user = user if user is not None else getattr(request, "user", None)
    if user is not None and not user.is_authenticated:
        user = None
    try:
        return AuditEntry.objects.create(
            user_id=user.pk if user is not None else None,
            actor=(user.get_username() if user is not None else actor or "anonymous")[:150],
            address=client_address(request),
            action=action,
            target=str(target)[:200],
            reason=str(reason)[:500],
            outcome=str(outcome)[:500],
            detail=detail,
        )
    except Exception:
        # An action that cannot be recorded is an error, not silence: it fails with its record
        # (inside a transaction, it does not happen at all).
        log.exception("could not write the audit entry %s %s", action, target)
        raise
