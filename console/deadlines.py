"""HTTP with a deadline for the whole exchange, not for each read, and a cap on the answer's size:
for every peer the console does not control (model servers, alert webhooks).

httpx's timeouts bound each connect, write and read. A server, or anything at its address, that
sends its answer a byte a second never reaches one: a health probe with a 3 s timeout then waited
for ever, and with it the host's whole sampling round (its other instances unsampled, the host seen
offline, the watchdog blind), a readiness wait, a trial, or an alert's delivery (a worker thread
each). Here every connect, read and write of a request gets at most the time left of the request's
own timeout, so the whole exchange, body included, ends within it; and an answer larger than
MAX_ANSWER_BYTES is cut off.
"""

import functools
import threading
import time

import httpcore
import httpx

MAX_ANSWER_BYTES = 8 * 1024 * 1024  # a /health is a few KiB; a trial's streamed answer far less than this

_local = threading.local()  # the deadline of the exchange under way on this thread, if any


class AnswerTooLarge(httpx.ReadError):
    """The answer went past MAX_ANSWER_BYTES."""


def client(environment_proxies: bool = False) -> httpx.Client:
    """A client whose every request ends within its timeout (see the module's docstring). Model
    servers are reached directly, on the host's or the deployment's network; with
    `environment_proxies` (webhooks leaving the site) through the proxies HTTP_PROXY, HTTPS_PROXY,
    ALL_PROXY and NO_PROXY name, read as httpx reads them for httpx.post()."""
    mounts = {}
    if environment_proxies:
        from httpx._utils import get_environment_proxies  # httpx's own reading (httpx is pinned)

        mounts = {
            pattern: None if proxy is None else DeadlineTransport(proxy)
            for pattern, proxy in get_environment_proxies().items()
        }
    return httpx.Client(transport=DeadlineTransport(), mounts=mounts)


class DeadlineTransport(httpx.HTTPTransport):
    def __init__(self, proxy: str | None = None) -> None:
        # What httpx's own __init__ builds, its pool with its default limits (so it is not called),
        # over a network backend that keeps the deadline.
        limits = {"max_connections": 100, "max_keepalive_connections": 20, "keepalive_expiry": 5.0}
        if proxy is None:
            self._pool = httpcore.ConnectionPool(ssl_context=_ssl_context(), network_backend=_Backend(), **limits)
            return
        proxy = httpx.Proxy(url=proxy)
        if proxy.url.scheme not in ("http", "https"):
            raise ValueError(f"only HTTP(S) proxies are supported, not {proxy.url.scheme}")
        self._pool = httpcore.HTTPProxy(
            proxy_url=httpcore.URL(
                scheme=proxy.url.raw_scheme, host=proxy.url.raw_host, port=proxy.url.port, target=proxy.url.raw_path
            ),
            proxy_auth=proxy.raw_auth,
            proxy_headers=proxy.headers.raw,
            ssl_context=_ssl_context(),
            proxy_ssl_context=proxy.ssl_context,
            network_backend=_Backend(),
            **limits,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = [t for t in (request.extensions.get("timeout") or {}).values() if t is not None]
        deadline = time.monotonic() + max(timeouts) if timeouts else None
        _local.deadline = deadline
        try:
            response = super().handle_request(request)
        finally:
            _local.deadline = None
        response.stream = _Body(response.stream, deadline)
        return response


@functools.cache
def _ssl_context():
    """httpx's default context, built once: it reads the CA bundle (about 25 ms), and a client is
    made for each operation's calls."""
    return httpx.create_ssl_context()


class _Body(httpx.SyncByteStream):
    """The answer's body, read within the exchange's deadline and up to MAX_ANSWER_BYTES."""

    def __init__(self, stream: httpx.SyncByteStream, deadline: float | None):
        self.stream, self.deadline = stream, deadline

    def __iter__(self):
        chunks, size = iter(self.stream), 0
        while True:
            _local.deadline = self.deadline  # read later, maybe after other requests on this thread
            try:
                chunk = next(chunks)
            except StopIteration:
                return
            finally:
                _local.deadline = None
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise AnswerTooLarge(f"the answer is larger than {MAX_ANSWER_BYTES // 2**20} MiB")
            yield chunk

    def close(self) -> None:
        self.stream.close()


def _left(timeout: float | None, late: type[Exception]) -> float | None:
    """`timeout`, or less: what is left of this thread's exchange; `late` once nothing is."""
    deadline = getattr(_local, "deadline", None)
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the whole exchange took longer than its timeout")
    return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream):
        self.stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None) -> "_Stream":
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.stream.start_tls(ssl_context, server_hostname, left))

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.backend = httpcore.SyncBackend()

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None) -> _Stream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.backend.connect_tcp(host, port, left, local_address, socket_options))

    def connect_unix_socket(self, path, timeout=None, socket_options=None) -> _Stream:
        left = _left(timeout, httpcore.ConnectTimeout)
        return _Stream(self.backend.connect_unix_socket(path, left, socket_options))

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)
