"""The one client for a model server's HTTP surface: health, readiness, drain, restart in place,
soft reset and the models it serves.

Nothing else in the console builds a model server's URLs. This is the seam where another engine
plugs in: a class answering the same questions from that engine's own endpoints (vllm.py), chosen
by the instance's engine (engines.server_for).
"""

import time
from dataclasses import dataclass, field

import httpx

from console import deadlines, untrusted
from console.sentences import Sentence, gettext_noop


class ServerError(Exception):
    """The model server did not do what was asked; the message is the operator's explanation."""


class NotOffered(ServerError):
    """The server has no such endpoint (HTTP 404): a capability it lacks, not a failure."""


class NoAnswer(ServerError):
    """The server did not answer at all (refused, timed out): hung or gone, not refusing."""


@dataclass
class Probe:
    """One GET /health: whether it answered sensibly, how fast, and what it said."""

    ok: bool
    ms: float | None
    health: dict = field(default_factory=dict)
    error: str = ""
    timed_out: bool = False  # connected, then no answer in time: a hung server, not a missing one

    @property
    def state(self) -> str | None:
        return self.health.get("state")


@dataclass
class Readiness:
    ready: bool
    answer: str  # what the server said, for "not ready after N s (last answer: ...)"
    failed: bool = False  # the server says it cannot load its model (answer: why): waiting longer will not help


def unanswered(exc: httpx.HTTPError, timeout: float) -> Probe:
    """A health probe that got no answer: timed out, or the server unreachable."""
    if isinstance(exc, httpx.TimeoutException):
        return Probe(
            ok=False,
            ms=None,
            error=Sentence(gettext_noop("no answer within %(seconds)s s"), seconds=f"{timeout:g}"),
            timed_out=True,
        )
    return Probe(ok=False, ms=None, error=Sentence(gettext_noop("unreachable: %(why)s"), why=str(exc)))


def _ms(seconds) -> float | None:
    return round(seconds * 1000, 2) if isinstance(seconds, int | float) and not isinstance(seconds, bool) else None


def _json_field(response: httpx.Response, key: str):
    try:
        body = untrusted.json_of(response)
    except ValueError:
        return None
    return body.get(key) if isinstance(body, dict) else None


MAX_PHASES = 64
MAX_MODELS, MODEL_ID_CHARS = 100, 200


def _handover(entry: dict) -> dict:
    """One handover of the supervisor's record in /health, in the shape the pipeline reads it (the
    server's answer is not trusted: its figures end up in an operation's steps)."""
    phases = entry.get("phases")
    ident = entry.get("id")
    return {
        "id": ident if isinstance(ident, int) and not isinstance(ident, bool) else None,
        "state": untrusted.text(entry.get("state"), 32),
        "old_pid": untrusted.pid(entry.get("old_pid")),
        "began": untrusted.number(entry.get("began")),
        "why": untrusted.text(entry.get("why"), 300) or "",
        "phases": [
            {
                "name": untrusted.text(phase.get("name"), 100) or "?",
                "seconds": untrusted.number(phase.get("seconds")),
                "pid": untrusted.pid(phase.get("pid")),
                "load_seconds": untrusted.number(phase.get("load_seconds")),
                "why": untrusted.text(phase.get("why"), 300) or "",
                "exit_code": untrusted.number(phase.get("exit_code")),
                "slots": untrusted.number(phase.get("slots")),
                "wanted": untrusted.number(phase.get("wanted")),
            }
            for phase in (phases[:MAX_PHASES] if isinstance(phases, list) else [])
            if isinstance(phase, dict)
        ],
    }


def listed(models: list[str], shown: int = 5) -> str:
    """Model ids for a step's line: the first few, then how many more."""
    more = len(models) - shown
    return ", ".join(models[:shown]) + (f" and {more} more" if more > 0 else "")


def _error_message(response: httpx.Response) -> str:
    error = _json_field(response, "error")
    message = untrusted.text(error.get("message"), 200) if isinstance(error, dict) else None
    return message or response.text[:200]


class ModelServer:
    """Our inference server's contract (inference/server.py)."""

    def __init__(self, base_url: str, admin_token: str = "", http: httpx.Client | None = None):
        self.base_url = base_url.rstrip("/")
        self.admin_token = admin_token
        self._own_http = http is None
        self.http = http or deadlines.client()

    def close(self) -> None:
        if self._own_http:
            self.http.close()

    def __enter__(self) -> "ModelServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def _admin(self) -> dict:
        return {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}

    # -- seeing
    def probe(self, timeout: float = 3.0) -> Probe:
        began = time.perf_counter()
        try:
            response = self.http.get(self.url("/health"), timeout=timeout)
            ms = (time.perf_counter() - began) * 1000
            body = untrusted.json_of(response)
        except httpx.HTTPError as exc:
            return unanswered(exc, timeout)
        except ValueError:
            not_json = Sentence(gettext_noop("/health did not return JSON"))
            return Probe(ok=False, ms=(time.perf_counter() - began) * 1000, error=not_json)
        if not isinstance(body, dict):
            return Probe(ok=False, ms=ms, error=Sentence(gettext_noop("/health did not return a JSON object")))
        # A 503 while loading or draining still carries the figures.
        return Probe(ok=response.status_code < 500 or "state" in body, ms=ms, health=body)

    @staticmethod
    def figures(health: dict) -> dict:
        """The charted figures in a /health body (other servers give fewer)."""
        timings = health.get("timings") or {}
        allocator = health.get("allocator") or {}
        process = health.get("process") or {}
        return {
            "in_flight": health.get("in_flight"),
            "rps": timings.get("requests_per_second"),
            "p50_ms": _ms(timings.get("latency_p50")),
            "p95_ms": _ms(timings.get("latency_p95")),
            "ttft_ms": _ms(timings.get("ttft_p50")),
            "allocated": allocator.get("allocated_bytes"),
            "reserved": allocator.get("reserved_bytes"),
            "fragmentation": allocator.get("fragmentation"),
            "rss": process.get("rss_bytes"),
            "fds": process.get("open_fds"),
        }

    def in_flight(self) -> int | None:
        """Requests the server is answering now; None if it does not say."""
        try:
            value = _json_field(self.http.get(self.url("/health"), timeout=3), "in_flight")
        except httpx.HTTPError:
            return None
        return value if isinstance(untrusted.number(value), int) else None

    def serving_pid(self) -> int | None:
        """The pid of the process answering now."""
        try:
            value = _json_field(self.http.get(self.url("/health"), timeout=3), "pid")
        except httpx.HTTPError:
            return None
        return untrusted.pid(value)

    def readiness(self) -> Readiness:
        try:
            response = self.http.get(self.url("/health/ready"), timeout=3)
        except httpx.HTTPError as exc:
            return Readiness(False, type(exc).__name__)
        if response.status_code == 200:
            return Readiness(True, "HTTP 200")
        if _json_field(response, "state") == "failed":
            return Readiness(False, untrusted.text(_json_field(response, "load_error"), 300) or "", failed=True)
        return Readiness(False, f"HTTP {response.status_code}")

    def models(self) -> list[str]:
        """The model ids the server answers for (GET /v1/models); NotOffered when it has no such list."""
        try:
            response = self.http.get(self.url("/v1/models"), timeout=10)
        except httpx.HTTPError as exc:
            raise ServerError(
                Sentence(gettext_noop("the server stopped answering (%(why)s)"), why=type(exc).__name__)
            ) from exc
        if response.status_code == 404:
            raise NotOffered(Sentence(gettext_noop("the server offers no GET /v1/models")))
        if response.status_code != 200:
            raise ServerError(
                Sentence(gettext_noop("GET /v1/models answered HTTP %(status)s"), status=response.status_code)
            )
        data = _json_field(response, "data")
        if not isinstance(data, list):
            return []
        ids = [m.get("id") for m in data[:MAX_MODELS] if isinstance(m, dict)]
        return [ident[:MODEL_ID_CHARS] for ident in ids if isinstance(ident, str) and ident]

    def chat_stream(self, messages: list[dict], max_tokens: int, request_id: str, timeout: float = 120.0):
        """Stream a chat completion (OpenAI's API, which every engine the console manages speaks):
        yields each piece of text as it comes. ServerError says why it failed."""
        body = {"messages": messages, "max_tokens": max_tokens, "stream": True, "temperature": 0}
        try:
            with self.http.stream(
                "POST",
                self.url("/v1/chat/completions"),
                json=body,
                headers={"X-Request-Id": request_id},
                timeout=timeout,
            ) as response:
                if response.status_code != 200:
                    response.read()
                    raise ServerError(f"HTTP {response.status_code}: {_error_message(response)}")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    try:
                        chunk = untrusted.loads(line[6:])
                    except ValueError:
                        continue
                    if not isinstance(chunk, dict):
                        continue
                    if isinstance(chunk.get("error"), dict):
                        message = untrusted.text(chunk["error"].get("message"), 300)
                        raise ServerError(message or "the server reported an error")
                    choices = chunk.get("choices")
                    for choice in choices if isinstance(choices, list) else []:
                        delta = choice.get("delta") if isinstance(choice, dict) else None
                        text = delta.get("content") if isinstance(delta, dict) else None
                        if isinstance(text, str) and text:
                            yield text
        except httpx.HTTPError as exc:
            raise ServerError(f"the server stopped answering ({type(exc).__name__})") from exc

    # -- acting
    def drain(self) -> str | None:
        """Ask the server to finish in-flight requests and take no new ones; None when it agreed,
        else why not."""
        try:
            response = self.http.post(self.url("/admin/drain"), headers=self._admin(), timeout=5)
        except httpx.HTTPError as exc:
            return Sentence(gettext_noop("did not answer the drain request (%(why)s)"), why=type(exc).__name__)
        if response.status_code >= 400:
            return Sentence(gettext_noop("refused to drain (HTTP %(status)s)"), status=response.status_code)
        return None

    def restart_in_place(self) -> int | None:
        """Ask the server's supervisor for a fresh model process; returns the old process's pid.
        ServerError says why it will not."""
        try:
            response = self.http.post(self.url("/admin/restart"), headers=self._admin(), timeout=10)
        except httpx.HTTPError as exc:
            raise ServerError(Sentence(gettext_noop("no answer: %(why)s"), why=type(exc).__name__)) from exc
        if response.status_code != 202:
            raise ServerError(
                Sentence(
                    gettext_noop("HTTP %(status)s: %(why)s"), status=response.status_code, why=_error_message(response)
                )
            )
        return untrusted.pid(_json_field(response, "pid"))

    def handover(self, reload_weights: bool = False) -> int:
        """Ask the server's supervisor for a handover: a new model process beside the old one, which
        drains once the new one serves (with `reload_weights`, mapping weights a new holder read
        again). Returns the handover's id (its record in /health)."""
        params = {"reload_weights": "true"} if reload_weights else None
        try:
            response = self.http.post(self.url("/admin/handover"), params=params, headers=self._admin(), timeout=10)
        except httpx.HTTPError as exc:
            raise NoAnswer(Sentence(gettext_noop("no answer: %(why)s"), why=type(exc).__name__)) from exc
        if response.status_code == 404:
            raise NotOffered(Sentence(gettext_noop("this server offers no handover (POST /admin/handover)")))
        handover = _json_field(response, "handover")
        if response.status_code != 202 or not isinstance(untrusted.number(handover), int):
            raise ServerError(
                Sentence(
                    gettext_noop("HTTP %(status)s: %(why)s"), status=response.status_code, why=_error_message(response)
                )
            )
        return handover

    def handover_record(self, handover: int | None, since: float = 0) -> dict | None:
        """The supervisor's record of that handover (state, pids, phases) from /health, or, without an
        id, of the newest one begun after `since` (a Unix time); None when there is no answer or no
        such record."""
        try:
            record = _json_field(self.http.get(self.url("/health"), timeout=3), "supervisor")
        except httpx.HTTPError:
            return None
        handovers = record.get("handovers") if isinstance(record, dict) else None
        entries = [_handover(e) for e in handovers if isinstance(e, dict)] if isinstance(handovers, list) else []
        if handover is None:
            begun = [e for e in entries if e["began"] is not None and e["began"] >= since]
            return begun[-1] if begun else None
        return next((e for e in entries if e["id"] == handover), None)

    def soft_reset(self) -> dict:
        """Free cached allocator memory without a restart; the body says before and after."""
        try:
            response = self.http.post(self.url("/admin/soft-reset"), headers=self._admin(), timeout=60)
        except httpx.HTTPError as exc:
            raise ServerError(
                Sentence(gettext_noop("the server did not answer the soft reset (%(why)s)"), why=type(exc).__name__)
            ) from exc
        if response.status_code != 200:
            raise ServerError(
                Sentence(
                    gettext_noop("the server refused the soft reset (HTTP %(status)s: %(why)s)"),
                    status=response.status_code,
                    why=response.text[:200],
                )
            )
        try:
            body = untrusted.json_of(response)
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}
