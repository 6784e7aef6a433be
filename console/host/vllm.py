"""vLLM's server, seen through the model-server contract (docs/ENGINES.md).

vLLM answers /health with 200 once it listens, whether it is draining, sleeping or hung, and has no
drain, restart-in-place or figures endpoint of the console's kind. This client reads what it has:
/health and /v1/models for readiness, /metrics (Prometheus text) for the figures, turned into the
same /health body our server gives, so samples, charts, Diagnose and the watchdog read both alike.
A request queue that does not move while no token is generated, confirmed by a one-token request
that gets no answer, is an engine stall: a failed probe in state "degraded". The queue is the
engine's gauges or, where larger, the requests its HTTP server holds (GET /load, when launched with
--enable-server-load-tracking as the console launches it): an engine hung while idle never counts
the requests sent to it after it stopped.
"""

import math
import threading
import time
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from console.host.server import (
    ModelServer,
    NotOffered,
    Probe,
    Readiness,
    ServerError,
    _json_field,
    listed,
    unanswered,
)
from console.sentences import Sentence, gettext_noop
from console.untrusted import json_of

HISTOGRAMS = {
    "e2e": "vllm:e2e_request_latency_seconds",
    "ttft": "vllm:time_to_first_token_seconds",
    "itl": "vllm:inter_token_latency_seconds",
}
COUNTERS = {
    "generation_tokens": "vllm:generation_tokens",
    "prompt_tokens": "vllm:prompt_tokens",
    "requests": "vllm:request_success",
    "preemptions": "vllm:num_preemptions",
    "prefix_hits": "vllm:prefix_cache_hits",
    "prefix_queries": "vllm:prefix_cache_queries",
}
GAUGES = {
    "running": "vllm:num_requests_running",
    "waiting": "vllm:num_requests_waiting",
    "kv_cache_usage": "vllm:kv_cache_usage_perc",  # a fraction despite its name
    "rss": "process_resident_memory_bytes",
    "fds": "process_open_fds",
    "started": "process_start_time_seconds",
}


@dataclass
class Scrape:
    """The figures of one GET /metrics: counters and gauges summed over their labels, histograms as
    cumulative (upper bound, count) pairs."""

    at: float
    counters: dict = field(default_factory=dict)
    gauges: dict = field(default_factory=dict)
    buckets: dict = field(default_factory=dict)


WANTED = tuple({*HISTOGRAMS.values(), *COUNTERS.values(), *GAUGES.values()})
# A real vLLM has a few hundred lines of the wanted families; a server answering megabytes of them
# (well formed, or broken so that each is parsed alone) would otherwise cost seconds a round.
MAX_LINES, MAX_LINES_ALONE = 20_000, 5000


def _wanted(text: str) -> list[str]:
    """The lines of the families this console reads (their samples, and the TYPE and HELP comments
    that group a histogram's series), without the rest: the parser reads kilobytes, not megabytes."""
    kept = []
    for line in text.splitlines():
        if line.startswith("#"):
            words = line.split(None, 3)
            if len(words) >= 3 and words[2].startswith(WANTED):
                kept.append(line)
        elif line.startswith(WANTED):
            kept.append(line)
        if len(kept) >= MAX_LINES:
            break
    return kept


def _readable(lines: list[str]) -> str:
    """The lines without those prometheus_client's parser refuses (it stops at the first one)."""
    kept = []
    for line in lines[:MAX_LINES_ALONE]:
        try:
            if line.startswith("#") or list(text_string_to_metric_families(line + "\n")):
                kept.append(line)
        except ValueError:
            continue
    return "\n".join(kept) + "\n"


def parse_metrics(text: str, at: float | None = None) -> Scrape:
    """vLLM's /metrics, read with prometheus_client's parser; lines it cannot read are left out."""
    lines = _wanted(text)
    try:
        return _parse("\n".join(lines) + "\n", at)
    except ValueError:
        return _parse(_readable(lines), at)


def _parse(text: str, at: float | None) -> Scrape:
    scrape = Scrape(at=time.monotonic() if at is None else at)
    wanted_counters = {name: key for key, name in COUNTERS.items()}
    wanted_gauges = {name: key for key, name in GAUGES.items()}
    wanted_histograms = {name: key for key, name in HISTOGRAMS.items()}
    for family in text_string_to_metric_families(text):
        name = family.name
        if name in wanted_counters:
            key = wanted_counters[name]
            total = sum(s.value for s in family.samples if s.name.endswith("_total"))
            scrape.counters[key] = total
        elif name in wanted_gauges:
            key = wanted_gauges[name]
            scrape.gauges[key] = sum(s.value for s in family.samples)
        elif name in wanted_histograms:
            key = wanted_histograms[name]
            buckets: dict[float, float] = {}
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels.get("le", "nan"))
                    if not math.isnan(bound):
                        buckets[bound] = buckets.get(bound, 0.0) + sample.value
            scrape.buckets[key] = sorted(buckets.items())
    return scrape


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus's histogram_quantile over cumulative (bound, count) pairs; None without data."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound is all that is known
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return None


def window(now: list[tuple[float, float]], before: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    """The buckets of the requests finished between two scrapes (a restarted server starts afresh)."""
    if not before or len(before) != len(now) or any(b[1] > n[1] for b, n in zip(before, now, strict=True)):
        return now
    return [(bound, count - old) for (bound, count), (_bound, old) in zip(now, before, strict=True)]


@dataclass
class Memory:
    """What one server's earlier scrapes said: the last scrape, and since when the engine has had
    work without generating a token."""

    scrape: Scrape | None = None
    tokens: float | None = None  # generated tokens at the last probe
    stalled_since: float | None = None


# One sampler per host keeps this per server URL across rounds (the client itself lives one round).
_memory: dict[str, Memory] = {}
_memory_lock = threading.Lock()


def forget(base_url: str) -> None:
    with _memory_lock:
        _memory.pop(base_url.rstrip("/"), None)


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 2) if seconds is not None else None


class VllmServer(ModelServer):
    """vLLM's OpenAI-compatible server (vllm serve / python -m vllm.entrypoints.openai.api_server)."""

    engine = "vllm"
    # Whether a soft reset also sleeps and wakes the engine (frees and rebuilds its KV cache and the
    # allocator's pool): on GPUs only; vLLM's CPU build has no sleep mode. Set by engines.server_for.
    sleep_wake = False

    def _get(self, path: str, timeout: float) -> httpx.Response:
        return self.http.get(self.url(path), timeout=timeout)

    def scrape(self, timeout: float = 3.0) -> Scrape | None:
        try:
            response = self._get("/metrics", timeout)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            return parse_metrics(response.text)
        except ValueError:  # not Prometheus text
            return None

    # -- seeing
    def probe(self, timeout: float = 3.0) -> Probe:
        began = time.perf_counter()
        try:
            response = self._get("/health", timeout)
        except httpx.HTTPError as exc:
            return unanswered(exc, timeout)
        ms = (time.perf_counter() - began) * 1000
        if response.status_code != 200:
            return Probe(
                ok=False,
                ms=ms,
                error=Sentence(gettext_noop("/health answered HTTP %(status)s"), status=response.status_code),
            )
        scrape = self.scrape(timeout)
        health = self._health(scrape)
        held = self.held(timeout)
        if held is not None:
            health["engine"]["in_server"] = held
            health["in_flight"] = max(health.get("in_flight") or 0, held)
        stall = self._stall(scrape, health)
        if stall:
            health["state"] = "degraded"
            return Probe(ok=False, ms=ms, health=health, error=stall)
        return Probe(ok=True, ms=ms, health=health)

    def _health(self, scrape: Scrape | None) -> dict:
        """The figures of our server's /health body, from vLLM's /metrics over the window since the
        previous scrape."""
        key = self.base_url
        with _memory_lock:
            memory = _memory.setdefault(key, Memory())
            before = memory.scrape
            if scrape is not None:
                memory.scrape = scrape
        health: dict = {"state": "ready", "engine": {"name": "vllm"}}
        if scrape is None:
            return health
        gauges, counters = scrape.gauges, scrape.counters
        running, waiting = gauges.get("running"), gauges.get("waiting")
        if running is not None and waiting is not None:
            health["in_flight"] = int(running + waiting)
        elapsed = scrape.at - before.at if before is not None else 0.0

        def rate(name: str) -> float | None:
            if before is None or elapsed <= 0 or name not in counters or name not in before.counters:
                return None
            delta = counters[name] - before.counters[name]
            return round(delta / elapsed, 3) if delta >= 0 else None

        windows = {
            key: window(buckets, before.buckets.get(key) if before is not None else None)
            for key, buckets in scrape.buckets.items()
        }
        e2e = windows.get("e2e") or []
        health["timings"] = {
            "latency_p50": quantile(0.5, e2e),
            "latency_p95": quantile(0.95, e2e),
            "ttft_p50": quantile(0.5, windows.get("ttft") or []),
            "requests_per_second": rate("requests"),
            "tokens_per_second": rate("generation_tokens"),
        }
        health["process"] = {
            "rss_bytes": int(gauges["rss"]) if "rss" in gauges else None,
            "open_fds": int(gauges["fds"]) if "fds" in gauges else None,
        }
        if gauges.get("started"):
            health["uptime_seconds"] = round(max(0.0, time.time() - gauges["started"]), 1)
        health["totals"] = {"requests": int(counters["requests"]) if "requests" in counters else None}
        hits, queries = counters.get("prefix_hits"), counters.get("prefix_queries")
        health["engine"].update(
            {
                "running": int(running) if running is not None else None,
                "waiting": int(waiting) if waiting is not None else None,
                "kv_cache_usage": gauges.get("kv_cache_usage"),
                "preemptions": int(counters["preemptions"]) if "preemptions" in counters else None,
                "preemptions_per_second": rate("preemptions"),
                "prefix_cache_hit_rate": round(hits / queries, 4) if hits is not None and queries else None,
                "ttft_p95_ms": _ms(quantile(0.95, windows.get("ttft") or [])),
                "itl_p50_ms": _ms(quantile(0.5, windows.get("itl") or [])),
                "itl_p95_ms": _ms(quantile(0.95, windows.get("itl") or [])),
                "generation_tokens": counters.get("generation_tokens"),
            }
        )
        return health

    def _stall(self, scrape: Scrape | None, health: dict) -> str | None:
        """Why the engine looks hung, or None: work queued or running while the generated-token count
        has not moved for CONSOLE_STALL_SECONDS, and a one-token request gets no answer."""
        if scrape is None:
            return None
        engine = health["engine"]
        busy = max((engine.get("running") or 0) + (engine.get("waiting") or 0), engine.get("in_server") or 0)
        tokens = engine.get("generation_tokens")
        with _memory_lock:
            memory = _memory[self.base_url]
            previous_tokens, memory.tokens = memory.tokens, tokens
            if not busy or tokens is None or tokens != previous_tokens:
                memory.stalled_since = None
                return None
            if memory.stalled_since is None:
                memory.stalled_since = scrape.at
            still = scrape.at - memory.stalled_since
        if still < settings.CONSOLE_STALL_SECONDS:
            return None
        answered = self.one_token(timeout=settings.CONSOLE_STALL_PROBE_SECONDS)
        if answered:
            with _memory_lock:
                memory.stalled_since = None
            return None
        return Sentence(
            gettext_noop(
                "engine stalled: %(busy)d requests waiting or running, no token generated for %(seconds).0f s, "
                "and a one-token request got no answer in %(probe)s s"
            ),
            busy=busy,
            seconds=still,
            probe=settings.CONSOLE_STALL_PROBE_SECONDS,
        )

    def one_token(self, timeout: float) -> bool:
        """Whether a one-token completion is answered within `timeout` seconds."""
        try:
            models = self.models()
        except ServerError:
            return False
        if not models:
            return False
        try:
            response = self.http.post(
                self.url("/v1/completions"),
                json={"model": models[0], "prompt": "ping", "max_tokens": 1, "temperature": 0},
                headers={"X-Request-Id": "console-stall-probe"},
                timeout=timeout,
            )
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def held(self, timeout: float = 3.0) -> int | None:
        """Requests vLLM's HTTP server holds (GET /load), or None where it does not say (launched
        without load tracking, an older vLLM, an answer that is not its JSON)."""
        try:
            response = self._get("/load", timeout)
            value = json_of(response).get("server_load") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return None
        if type(value) is not int:
            return None
        return max(0, value)  # vLLM also counts down on a client's disconnect: never below 0

    def in_flight(self) -> int | None:
        scrape = self.scrape()
        held = self.held()
        if scrape is None or "running" not in scrape.gauges or "waiting" not in scrape.gauges:
            return held
        return max(int(scrape.gauges["running"] + scrape.gauges["waiting"]), held or 0)

    def serving_pid(self) -> int | None:
        return None  # vLLM does not say; the runtime knows its processes

    def readiness(self) -> Readiness:
        """Ready once /health answers 200 and /v1/models lists a model (vLLM answers /health before
        its model is listed only in some versions; both are cheap)."""
        try:
            health = self._get("/health", 3)
        except httpx.HTTPError as exc:
            return Readiness(False, type(exc).__name__)
        if health.status_code != 200:
            return Readiness(False, f"/health HTTP {health.status_code}")
        try:
            models = self.models()
        except ServerError as exc:
            return Readiness(False, str(exc))
        if not models:
            return Readiness(False, "/v1/models lists no model")
        return Readiness(True, "HTTP 200, serving " + listed(models))

    # -- acting
    def drain(self) -> str | None:
        """vLLM has no drain endpoint: the console waits for its queue to empty (in_flight), and its
        SIGTERM then finishes what is left, as --shutdown-timeout allows."""
        return None

    def restart_in_place(self) -> int | None:
        raise NotOffered(Sentence(gettext_noop("vLLM has no restart in place")))

    def handover(self) -> int:
        raise NotOffered(Sentence(gettext_noop("vLLM has no handover")))

    def soft_reset(self) -> dict:
        """Drop vLLM's prefix cache (POST /reset_prefix_cache, offered with VLLM_SERVER_DEV_MODE=1)."""
        try:
            response = self.http.post(self.url("/reset_prefix_cache"), timeout=60)
        except httpx.HTTPError as exc:
            raise ServerError(
                Sentence(gettext_noop("the server did not answer the soft reset (%(why)s)"), why=type(exc).__name__)
            ) from exc
        if response.status_code == 404:
            raise NotOffered(
                Sentence(
                    gettext_noop(
                        "vLLM offers POST /reset_prefix_cache only when started with VLLM_SERVER_DEV_MODE=1; "
                        "set it in the instance's environment, or restart instead"
                    )
                )
            )
        if response.status_code != 200:
            raise ServerError(
                Sentence(
                    gettext_noop("the server refused the soft reset (HTTP %(status)s: %(why)s)"),
                    status=response.status_code,
                    why=response.text[:200],
                )
            )
        body = {"prefix_cache_reset": True}
        if not self.sleep_wake:
            body["sleep"] = Sentence(gettext_noop("sleep and wake skipped: vLLM has no sleep mode on a CPU"))
            return body
        body["sleep"] = self._sleep_and_wake()
        return body

    def _sleep_and_wake(self) -> str:
        """Level-1 sleep (weights to host memory, KV cache dropped), waiting for running requests
        rather than aborting them, then wake. Needs --enable-sleep-mode; a refusal is reported, not
        raised: the prefix cache was reset."""
        try:
            slept = self.http.post(self.url("/sleep"), params={"level": 1, "mode": "wait"}, timeout=120)
            if slept.status_code != 200:
                return Sentence(
                    gettext_noop("sleep refused (HTTP %(status)s; started with --enable-sleep-mode?)"),
                    status=slept.status_code,
                )
            woke = self.http.post(self.url("/wake_up"), timeout=300)
        except httpx.HTTPError as exc:
            raise ServerError(
                Sentence(
                    gettext_noop("the server stopped answering during sleep and wake (%(why)s)"), why=type(exc).__name__
                )
            ) from exc
        if woke.status_code != 200 or _json_field(woke, "status") != "awake":
            raise ServerError(
                Sentence(gettext_noop("the engine slept but did not wake (HTTP %(status)s)"), status=woke.status_code)
            )
        return Sentence(gettext_noop("slept and woke: KV cache and memory pool rebuilt"))
