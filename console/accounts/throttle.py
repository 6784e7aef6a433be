"""Login throttling: after a few failed attempts for one account from one address, many from one
address, or many for one account from anywhere, further attempts are refused for a while (both
pages: the console's and the admin's). The address is the one the deployment's own proxy saw
(uvicorn trusts only CONSOLE_TRUSTED_PROXIES), and the per-account limit holds whatever address a
guesser claims or uses."""

from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import ValidationError

from console.audit.record import client_address


def _keys(request, username: str) -> list[tuple[str, int]]:
    address = client_address(request) or "unknown"
    account = username.lower()[:150]
    return [
        (f"login-fail:{address}:{account}", settings.LOGIN_FAILURE_LIMIT),
        (f"login-fail:{address}", settings.LOGIN_FAILURE_LIMIT * 4),
        (f"login-fail-account:{account}", settings.LOGIN_ACCOUNT_FAILURE_LIMIT),
    ]


def _count(key: str) -> int:
    value = cache.get(key)
    return value if isinstance(value, int) else 0


def locked(request, username: str) -> bool:
    return any(_count(key) >= limit for key, limit in _keys(request, username))


def failed(request, username: str) -> None:
    for key, _ in _keys(request, username):
        cache.add(key, 0, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        try:
            cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)
        except Exception:
            # Not a counter (planted, or written by something else): count again from here. If the
            # cache itself is away, the set fails too and the sign-in fails with it.
            cache.set(key, 1, timeout=settings.LOGIN_LOCKOUT_SECONDS)


def succeeded(request, username: str) -> None:
    cache.delete(_keys(request, username)[0][0])


class ThrottledMixin:
    def clean(self):
        username = self.data.get("username", "")
        if locked(self.request, username):
            minutes = max(1, settings.LOGIN_LOCKOUT_SECONDS // 60)
            raise ValidationError(f"Too many failed sign-ins. Try again in {minutes} minutes.", code="throttled")
        try:
            data = super().clean()
        except ValidationError:
            failed(self.request, username)
            raise
        succeeded(self.request, username)
        return data


class LoginForm(ThrottledMixin, AuthenticationForm):
    pass


class AdminLoginForm(ThrottledMixin, AdminAuthenticationForm):
    pass
