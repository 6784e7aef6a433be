"""Who a host's worker is, as operations and host reports record it."""

import os
import socket

from django.conf import settings


def worker_identity() -> str:
    """The host the worker says it serves (CONSOLE_HOST_NAME), its machine and its pid."""
    return f"{settings.CONSOLE_HOST_NAME} ({socket.gethostname()}, pid {os.getpid()})"[:200]
