"""Token authentication for the JSON API (Authorization: Bearer <key>)."""

from django.utils import timezone

from console.api.models import ApiToken, hash_key


class TokenRefused(Exception):
    """A token was presented and does not authenticate; the message says why."""


def user_from_token(request):
    """The user a presented token acts for; None when the request carries no token. A token that is
    presented but refused raises TokenRefused: a script with a stale key gets its reason, and never
    acts through a session the same client may also hold."""
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("bearer", "token") or not key.strip():
        return None
    token = ApiToken.objects.select_related("user").filter(key_hash=hash_key(key.strip())).first()
    if token is None:
        raise TokenRefused("The token is not known: it was revoked, or is mistyped.")
    if token.expired:
        raise TokenRefused(
            f"The token {token.prefix}… ({token.name}) expired at {token.expires.isoformat(timespec='seconds')};"
            " issue a new one on the Tokens page."
        )
    if not token.user.is_active:
        raise TokenRefused("The token's account is disabled.")
    ApiToken.objects.filter(pk=token.pk).update(last_used=timezone.now())
    request.api_token = token  # /metrics tells its scraper when this token expires
    return token.user
